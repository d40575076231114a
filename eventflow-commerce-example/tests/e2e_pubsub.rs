//! The end-to-end scenarios against the distributed mode: provisioned on the emulators (moto for
//! DynamoDB and SQS, Google Pub/Sub (its emulator) for events) and started as eight `serve <service>` processes
//! per test, each test on its own tables, bus and queues. Needs the `cloud` feature.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod scenarios;
mod support;

/// Where the scenarios run.
const DEPLOYMENT: support::Deployment = support::Deployment::Services("pubsub");
