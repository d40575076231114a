//! The saga orchestrator service: runs PlaceOrder (started by `OrderPlaced`) on eventflow-saga,
//! and shows each saga's status and history, compensations and failure reasons included; counts
//! saga outcomes and times each step for `/metrics`.

pub(crate) mod http;
pub(crate) mod infrastructure;
pub(crate) mod metrics;

/// How the app starts this context: the one signature every context has.
pub(crate) use infrastructure::start;
