//! Test helpers that are part of the product: given/when/then for aggregates, and the conformance
//! suites a backend crate runs against its own event store, bus, document store or work queue.
//!
//! A suite runs every check against a fresh backend from the factory, panics with the check's name
//! on the first violation, and returns a [`ConformanceReport`] that names what passed and what the
//! backend declared unsupported, so nothing is skipped silently.
//!
//! [`Recorder`] is the handler the suites and the adapters' tests record deliveries with. The
//! emulators backend crates test against (moto, the Pub/Sub emulator) are the `eventflow-testkit`
//! crate's.

mod aggregate_test;
mod bus_conformance;
mod check;
mod document_conformance;
mod recorder;
mod store_conformance;
mod streams_test;
mod work_queue_conformance;

use std::fmt;
use std::future::Future;
use std::time::Duration;

pub use aggregate_test::{AggregateTest, Then};
pub use bus_conformance::bus_conformance;
pub use document_conformance::document_store_conformance;
pub use recorder::{Recorded, Recorder};
pub use store_conformance::{feed_conformance, store_conformance};
pub use streams_test::{Decided, StreamsTest, ThenStreams};
pub use work_queue_conformance::work_queue_conformance;

/// What a conformance suite checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConformanceReport {
    /// The backend's name, as the caller gave it.
    pub backend: String,
    /// Checks that ran and passed.
    pub passed: Vec<&'static str>,
    /// Checks not run because the backend does not offer the feature, with the reason.
    pub unsupported: Vec<(&'static str, String)>,
}

impl ConformanceReport {
    fn new(backend: &str) -> Self {
        ConformanceReport {
            backend: backend.to_owned(),
            ..Self::default()
        }
    }

    fn pass(&mut self, check: &'static str) {
        tracing::info!(backend = %self.backend, check, "conformance check passed");
        self.passed.push(check);
    }

    fn unsupported(&mut self, check: &'static str, reason: impl Into<String>) {
        let reason = reason.into();
        // Loud on purpose: a backend that lacks a feature must say so wherever the suite runs.
        eprintln!(
            "conformance [{}]: {check} NOT CHECKED: unsupported by this backend ({reason})",
            self.backend
        );
        self.unsupported.push((check, reason));
    }
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} checks passed, {} unsupported",
            self.backend,
            self.passed.len(),
            self.unsupported.len()
        )?;
        for check in &self.passed {
            writeln!(f, "  pass         {check}")?;
        }
        for (check, reason) in &self.unsupported {
            writeln!(f, "  unsupported  {check}: {reason}")?;
        }
        Ok(())
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
/// Emulated backends deliver in seconds, not microseconds, so suites wait rather than sleep.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
