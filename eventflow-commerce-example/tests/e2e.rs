//! End to end, over real sockets, against the app binary with every service in one process, in
//! memory, started by each test on free loopback ports. The scenarios are in `scenarios/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod scenarios;
mod support;

/// Where the scenarios run.
const DEPLOYMENT: support::Deployment = support::Deployment::OneProcess;
