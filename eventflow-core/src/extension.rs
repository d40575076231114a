//! For crates that extend eventflow, not for applications: backends (an event store, a bus, a
//! work queue) and frameworks built on the repository (the saga crate). An application's code
//! needs none of this; it is kept here so the crate's root shows the application's concepts.
//!
//! - Bus adapters: [`Dispatcher`] and [`Settle`] (the delivery engine of push-style buses),
//!   [`call_handler`] (how every adapter calls a handler: span, panic capture, error log).
//! - Event stores: [`check_outbox_entry`] (what no bus can carry, refused at append).
//! - Frameworks on the repository: [`RepositoryExt`] (put a state into the cache, drop it,
//!   snapshot a loaded state, run a command and see the state it ended on).
//! - Everyone: [`lock`], the one way eventflow's crates take a mutex.

use crate::bus::{Delivery, MessageHandler};
use crate::error::Result;
use crate::store::NewEvent;

pub use crate::dispatcher::{Dispatcher, Settle};
pub use crate::mutex::lock;
pub use crate::repository::RepositoryExt;

/// Calls `handler` with `delivery` the same way in every backend: in an `eventflow.deliver` span
/// that carries `backend`, the subscription, the message's id, type, source, correlation id and
/// `traceparent` (the *handler context* side of end-to-end tracing) and the attempt, with a panic
/// caught and counted as a failure. On failure it logs `delivery failed` in that span and returns
/// the handler's error, or `handler panicked: <message>`, as text.
pub async fn call_handler(
    backend: &'static str,
    handler: &dyn MessageHandler,
    delivery: Delivery,
) -> std::result::Result<(), String> {
    crate::bus::deliver(backend, handler, delivery).await
}

/// Refuses, before anything is written, an event whose outbox entry no bus could carry: a payload
/// that is not JSON (a message payload is a JSON value) or larger than `max_payload_bytes`.
/// Backends call it for every event of an append with outbox entries.
pub fn check_outbox_entry(event: &NewEvent, max_payload_bytes: Option<u64>) -> Result<()> {
    crate::limits::outbox_entry_fits(event, max_payload_bytes)
}
