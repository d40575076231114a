//! What every context shares: HTTP errors and extractors, the request context (correlation id,
//! trace context), bearer tokens, JSON logs, serving, Prometheus metrics, and the bus plumbing
//! (outbox relays and handlers that run in the context's span).

pub(crate) mod auth;
pub(crate) mod backends;
#[cfg(feature = "cloud")]
pub(crate) mod cloud;
pub(crate) mod config;
pub(crate) mod context;
pub(crate) mod customers;
pub(crate) mod error;
#[cfg(feature = "lambda")]
pub(crate) mod lambda;
pub(crate) mod logging;
pub(crate) mod messaging;
pub(crate) mod metrics;
pub(crate) mod read_model;
pub(crate) mod records;
pub(crate) mod server;
pub(crate) mod started;
pub(crate) mod startup;
pub(crate) mod telemetry;
pub(crate) mod text;
