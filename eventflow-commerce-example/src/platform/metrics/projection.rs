//! The projection families: events applied, and how late they arrive.
//!
//! The app's projections are fed by the bus, not by a global feed (DynamoDB has none), so there
//! is no feed head to measure a position against; the lag is measured in time instead, from the
//! event's `recorded_at` to its delivery.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use eventflow_core::outbox::message_to_event;
use eventflow_core::{Applied, Delivery, HandlerError, MessageHandler, Projection, Projector};
use metrics::{Counter, Histogram};

use super::{Metrics, PROJECTION_EVENTS, PROJECTION_LAG};

/// A bus-fed [`Projector`], counted: what [`Projector`]'s own handler does (decode, apply, skip
/// what was applied before, refuse what came early), plus the projection's families.
pub(crate) struct MeasuredProjector<P: Projection> {
    projector: Arc<Projector<P>>,
    applied: Counter,
    duplicate: Counter,
    lag: Histogram,
}

impl<P: Projection> MeasuredProjector<P> {
    /// `projector`, counted in `metrics` under its projection's name.
    pub(crate) fn new(projector: &Arc<Projector<P>>, metrics: &Metrics) -> Self {
        let name = projector.projection().name();
        let events = |outcome| {
            metrics.counter(
                PROJECTION_EVENTS,
                &[("projection", name), ("outcome", outcome)],
            )
        };
        MeasuredProjector {
            projector: Arc::clone(projector),
            applied: events("applied"),
            duplicate: events("duplicate"),
            lag: metrics.histogram(PROJECTION_LAG, &[("projection", name)]),
        }
    }
}

#[async_trait]
impl<P: Projection> MessageHandler for MeasuredProjector<P> {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let event = message_to_event(&delivery.message)?;
        let (recorded_at, version) = (event.recorded_at, event.version);
        let applied = self.projector.apply(event).await?;
        tracing::debug!(
            projection = self.projector.projection().name(),
            stream = ?delivery.message.ordering_key,
            version,
            outcome = ?applied,
            "projected a delivery"
        );
        let counter = match applied {
            Applied::Applied => &self.applied,
            Applied::AlreadyApplied => &self.duplicate,
            // Not the projection's: the subscription's filter should not have let it through.
            _ => return Ok(()),
        };
        counter.increment(1);
        let lag = (Utc::now() - recorded_at).to_std().unwrap_or_default();
        self.lag.record(lag);
        Ok(())
    }
}
