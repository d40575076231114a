//! The crash scenarios (`crash_scenarios/mod.rs`) on eight processes on DynamoDB (moto) and
//! Google Pub/Sub (its emulator): SIGKILLed orchestrator and participants cancel no order. Needs the
//! `cloud` feature.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crash_scenarios;
mod support;

/// Where the scenarios run.
const DEPLOYMENT: support::Deployment = support::Deployment::Services("pubsub");
