//! Helpers shared by the integration tests.
#![allow(unused_imports, unreachable_pub)]

pub use eventflow_core::extension::lock;
pub use eventflow_core::testkit::Recorder;
