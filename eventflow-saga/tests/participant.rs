//! Participant features beyond one aggregate command: commands that change several aggregates
//! all or none (`handles_all`), and actions whose events record a failure (`fails_when`).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use eventflow_core::{Aggregate, DomainEvent, InMemoryBus, InMemoryEventStore, Repository};
use eventflow_saga::{Participant, SagaCommand};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Stock of one SKU.
#[derive(Debug, Default)]
struct Stock {
    available: i64,
}

enum StockCommand {
    Restock(i64),
    Take(i64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum StockEvent {
    Restocked(i64),
    Taken(i64),
}

impl DomainEvent for StockEvent {
    fn event_type(&self) -> &'static str {
        match self {
            StockEvent::Restocked(_) => "Restocked",
            StockEvent::Taken(_) => "Taken",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("only {0} left")]
struct OutOfStock(i64);

impl Aggregate for Stock {
    const STREAM_TYPE: &'static str = "stock";
    type Command = StockCommand;
    type Event = StockEvent;
    type Error = OutOfStock;

    fn handle(&self, command: &StockCommand) -> Result<Vec<StockEvent>, OutOfStock> {
        match command {
            StockCommand::Restock(n) => Ok(vec![StockEvent::Restocked(*n)]),
            StockCommand::Take(n) if *n > self.available => Err(OutOfStock(self.available)),
            StockCommand::Take(n) => Ok(vec![StockEvent::Taken(*n)]),
        }
    }

    fn apply(&mut self, event: &StockEvent) {
        match event {
            StockEvent::Restocked(n) => self.available += n,
            StockEvent::Taken(n) => self.available -= n,
        }
    }
}

fn command(saga_id: &str, step: &str, lines: &Value) -> SagaCommand {
    let detail = json!({
        "sagaId": saga_id, "sagaType": "PlaceOrder", "step": step, "kind": "action",
        "data": { "lines": lines },
    });
    SagaCommand::from_step_functions_detail(step, &detail).unwrap()
}

fn lines(command: &SagaCommand) -> Vec<(String, StockCommand)> {
    let lines: Vec<(String, i64)> = serde_json::from_value(command.data["lines"].clone()).unwrap();
    lines
        .into_iter()
        .map(|(sku, n)| (sku, StockCommand::Take(n)))
        .collect()
}

#[tokio::test]
async fn handles_all_changes_every_aggregate_or_none() {
    let store = Arc::new(InMemoryEventStore::new());
    let repository = Repository::<Stock>::new(store.clone());
    for (sku, n) in [("a", 5), ("b", 1)] {
        repository
            .execute(sku, &StockCommand::Restock(n), Default::default())
            .await
            .unwrap();
    }
    let participant = Participant::new(
        "inventory",
        Repository::<Stock>::new(store.clone()),
        Arc::new(InMemoryBus::new()),
    )
    .handles_all("Reserve", "Reserved", "ReservationFailed", |c| Ok(lines(c)));

    // b has 1: the whole order is refused, and a keeps its 5.
    let short = command("o1", "Reserve", &json!([["a", 2], ["b", 2]]));
    let reply = participant.execute(&short).await.unwrap().unwrap();
    assert!(!reply.success);
    assert_eq!(reply.payload["reason"], "only 1 left");
    assert_eq!(repository.load("a").await.unwrap().state.available, 5);

    let fits = command("o2", "Reserve", &json!([["a", 2], ["b", 1]]));
    let reply = participant.execute(&fits).await.unwrap().unwrap();
    assert!(reply.success && !reply.deduplicated);
    assert_eq!(reply.payload["events"].as_array().unwrap().len(), 2);
    let again = participant.execute(&fits).await.unwrap().unwrap();
    assert!(again.success && again.deduplicated);
    assert_eq!(repository.load("a").await.unwrap().state.available, 3);
    assert_eq!(repository.load("b").await.unwrap().state.available, 0);
}

#[tokio::test]
async fn fails_when_turns_a_recorded_event_into_a_failure_reply() {
    let store = Arc::new(InMemoryEventStore::new());
    let repository = Repository::<Stock>::new(store.clone());
    let participant = Participant::new(
        "inventory",
        Repository::<Stock>::new(store.clone()),
        Arc::new(InMemoryBus::new()),
    )
    // A restock of nothing is recorded, and is a failure.
    .handles("Note", "Noted", "NoteFailed", |c| {
        Ok((c.saga_id.clone(), StockCommand::Restock(0)))
    })
    .fails_when(|event| match event {
        StockEvent::Restocked(0) => Some("nothing to restock".to_owned()),
        _ => None,
    });

    let note = command("o3", "Note", &json!([]));
    let reply = participant.execute(&note).await.unwrap().unwrap();
    assert!(!reply.success && !reply.deduplicated);
    assert_eq!(reply.payload["reason"], "nothing to restock");
    // The fact is recorded, once; a redelivery gets the same failure.
    assert_eq!(repository.load("o3").await.unwrap().version, 1);
    let again = participant.execute(&note).await.unwrap().unwrap();
    assert!(!again.success && again.deduplicated);
    assert_eq!(again.reply_type, "NoteFailed");
    assert_eq!(repository.load("o3").await.unwrap().version, 1);
}
