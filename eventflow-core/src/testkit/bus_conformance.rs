//! placeholder
use super::ConformanceReport;
use crate::bus::{DeadLetters, EventBus};
use std::future::Future;
/// placeholder
pub async fn bus_conformance<B, F, Fut>(_backend: &str, _factory: F) -> ConformanceReport
where
    B: EventBus + DeadLetters + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = B>,
{
    todo!()
}
