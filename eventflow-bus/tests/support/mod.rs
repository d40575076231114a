//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventflow_core::bus::{Delivery, HandlerError, MessageHandler, handler_fn};
use eventflow_core::testkit::wait_until;

pub use eventflow_core::sync::lock;

/// Records deliveries; fails the ones `fail` says to.
#[derive(Clone, Default)]
pub struct Recorder {
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl Recorder {
    pub fn handler(
        &self,
        fail: impl Fn(&Delivery) -> bool + Send + Sync + 'static,
    ) -> Arc<dyn MessageHandler> {
        let deliveries = Arc::clone(&self.deliveries);
        let fail = Arc::new(fail);
        handler_fn(move |delivery: Delivery| {
            let deliveries = Arc::clone(&deliveries);
            let fail = Arc::clone(&fail);
            async move {
                let failed = fail(&delivery);
                lock(&deliveries).push(delivery);
                if failed {
                    Err(HandlerError::msg("failing on purpose"))
                } else {
                    Ok(())
                }
            }
        })
    }

    pub fn acking(&self) -> Arc<dyn MessageHandler> {
        self.handler(|_| false)
    }

    pub fn all(&self) -> Vec<Delivery> {
        lock(&self.deliveries).clone()
    }

    /// Deliveries per message id.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for d in lock(&self.deliveries).iter() {
            *counts.entry(d.message.id.clone()).or_insert(0) += 1;
        }
        counts
    }

    pub fn attempts_of(&self, id: &str) -> Vec<u32> {
        lock(&self.deliveries)
            .iter()
            .filter(|d| d.message.id == id)
            .map(|d| d.attempt)
            .collect()
    }

    /// Waits until every id was delivered at least once.
    pub async fn wait_for_all(&self, ids: &[String], timeout: Duration) -> bool {
        wait_until(timeout, || {
            let counts = self.counts();
            std::future::ready(ids.iter().all(|id| counts.contains_key(id)))
        })
        .await
    }
}
