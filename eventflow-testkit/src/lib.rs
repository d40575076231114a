//! Local emulators for eventflow's backend tests and benches: [`moto`] (DynamoDB, SQS,
//! EventBridge, Step Functions) and Google's [`pubsub`] emulator, on free loopback ports, waited
//! for over HTTP and stopped by PID, built on the process management of [`emulator`].
//!
//! A test that needs an emulator asks for it and gets `None` after a loud `SKIPPED` line when it
//! is missing, or a panic when `CI=true`, where a test that cannot run is a failure:
//!
//! ```no_run
//! use eventflow_testkit::moto::{self, Role};
//!
//! let Some(moto) = moto::shared(Role::Data) else { return };
//! let endpoint = moto.serial(); // give it to a DynamoDB client
//! # let _ = endpoint;
//! ```
//!
//! Why a crate of its own: this is process management, a shell watchdog and raw HTTP readiness
//! checks, which no application of `eventflow-core` should compile. The backend crates' `testkit`
//! features build on it (clients, fresh tables, buses); the contract suites that say what a
//! backend must do stay in `eventflow-core`'s `testkit`, next to the traits they test.

pub mod emulator;
pub mod moto;
pub mod pubsub;
