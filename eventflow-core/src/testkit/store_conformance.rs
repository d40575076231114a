//! placeholder
use super::ConformanceReport;
use crate::outbox::Outbox;
use crate::store::EventStore;
use std::future::Future;
/// placeholder
pub async fn store_conformance<S, F, Fut>(_backend: &str, _factory: F) -> ConformanceReport
where
    S: EventStore + Outbox + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    todo!()
}
