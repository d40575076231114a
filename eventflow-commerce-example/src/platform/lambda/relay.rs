//! The outbox relay on DynamoDB Streams. A context's command commits its events and their
//! outbox entries in one transaction; the meta table's stream invokes this function, which
//! publishes what that context's outbox holds and removes it, as the relay loop of a service
//! does between requests. The stream record says only which table moved: the outbox itself is
//! read, so an entry whose invocation failed is published by the next one.

use std::collections::BTreeSet;

use eventflow_core::{OutboxRelay, Result};
use serde::Deserialize;

use crate::platform::backends::Backends;
use crate::platform::config::{Backend, Config, SERVICES};

/// The relay of each context, by its meta table.
pub(crate) struct Relays {
    by_table: Vec<(String, &'static str, OutboxRelay)>,
}

/// The part of a DynamoDB Streams event the relay reads.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamEvent {
    #[serde(rename = "Records", default)]
    records: Vec<StreamRecord>,
}

#[derive(Debug, Deserialize)]
struct StreamRecord {
    #[serde(rename = "eventSourceARN", default)]
    event_source_arn: String,
}

impl Relays {
    /// A relay for every context's outbox on `backends`, publishing to its bus.
    pub(crate) fn new(config: &Config, backends: &Backends) -> Relays {
        let bus = backends.bus();
        let by_table = SERVICES
            .iter()
            .map(|service| {
                let table = match &config.backend {
                    Backend::Cloud(settings) => settings.tables_of(service).1,
                    Backend::Local => format!("{service}-meta"),
                };
                let outbox = backends.persistence(service).outbox;
                let relay = OutboxRelay::new(outbox, std::sync::Arc::clone(&bus), *service);
                (table, *service, relay)
            })
            .collect();
        Relays { by_table }
    }

    /// Relays the outbox of every context whose meta table is in `event`; the number of
    /// messages published. A failure fails the invocation, so the stream delivers it again.
    pub(crate) async fn relay(&self, event: StreamEvent) -> Result<usize> {
        let tables: BTreeSet<&str> = event
            .records
            .iter()
            .filter_map(|record| table_of(&record.event_source_arn))
            .collect();
        let mut published = 0;
        for (table, service, relay) in &self.by_table {
            if tables.contains(table.as_str()) {
                let count = relay.relay_pending().await?;
                tracing::info!(service, count, "outbox relayed");
                published += count;
            }
        }
        Ok(published)
    }
}

/// `arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL` → `NAME`.
fn table_of(arn: &str) -> Option<&str> {
    arn.split_once(":table/")?.1.split('/').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_record_names_its_table() {
        let event: StreamEvent = serde_json::from_value(serde_json::json!({"Records": [
            {"eventID": "1", "eventName": "INSERT", "eventSource": "aws:dynamodb",
             "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/commerce-ordering-meta/stream/2026-12-08T00:00:00.000",
             "dynamodb": {"Keys": {"pk": {"S": "outbox#0"}}}},
        ]}))
        .expect("a DynamoDB Streams event");
        assert_eq!(
            table_of(&event.records[0].event_source_arn),
            Some("commerce-ordering-meta")
        );
        assert_eq!(table_of("not an arn"), None);
    }
}
