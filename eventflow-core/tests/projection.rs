//! Projections fed from the global feed: catch-up, resume from the checkpoint, idempotence, rebuild.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "testkit")]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::{Account, AccountCommand, AccountEvent};
use eventflow_core::{
    CheckpointStore, CommandContext, Error, InMemoryCheckpointStore, InMemoryEventStore,
    Projection, ProjectionRunner, RecordedEvent, Repository,
};

/// Balances per account, idempotent by remembering the last version applied per stream.
#[derive(Default)]
struct Balances {
    rows: Mutex<HashMap<String, (u64, i64)>>,
    applied: Mutex<u64>,
    fail_on_amount: Mutex<Option<i64>>,
}

impl Balances {
    fn balance(&self, stream: &str) -> Option<i64> {
        self.rows.lock().unwrap().get(stream).map(|r| r.1)
    }
}

#[async_trait]
impl Projection for Balances {
    fn name(&self) -> &str {
        "balances"
    }

    async fn apply(&self, event: &RecordedEvent) -> eventflow_core::Result<()> {
        let decoded: AccountEvent = event.decode()?;
        let delta = match decoded {
            AccountEvent::Opened { .. } => 0,
            AccountEvent::Deposited { amount } => amount,
            AccountEvent::Withdrawn { amount } => -amount,
        };
        if *self.fail_on_amount.lock().unwrap() == Some(delta) {
            return Err(Error::InvalidRequest("read model unavailable".into()));
        }
        let mut rows = self.rows.lock().unwrap();
        let row = rows.entry(event.stream_id.to_string()).or_default();
        if event.version <= row.0 {
            return Ok(()); // seen already: at-least-once delivery
        }
        *row = (event.version, row.1 + delta);
        *self.applied.lock().unwrap() += 1;
        Ok(())
    }

    async fn reset(&self) -> eventflow_core::Result<()> {
        self.rows.lock().unwrap().clear();
        Ok(())
    }
}

#[tokio::test]
async fn catches_up_resumes_and_rebuilds() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(store.clone());
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let balances = Arc::new(Balances::default());
    let runner = ProjectionRunner::new(store.clone(), checkpoints.clone(), balances.clone())
        .with_batch_size(4);

    for id in ["a", "b"] {
        repo.execute(
            id,
            &AccountCommand::Open { owner: id.into() },
            CommandContext::new(),
        )
        .await
        .unwrap();
        for amount in 1..=5 {
            repo.execute(
                id,
                &AccountCommand::Deposit { amount },
                CommandContext::new(),
            )
            .await
            .unwrap();
        }
    }
    assert_eq!(runner.catch_up().await.unwrap(), 12);
    assert_eq!(balances.balance("account-a"), Some(15));
    assert_eq!(checkpoints.load("balances").await.unwrap(), Some(12));
    assert_eq!(runner.catch_up().await.unwrap(), 0, "nothing new");

    // A failure stops at the last completed batch; the next run resumes there.
    repo.execute(
        "a",
        &AccountCommand::Deposit { amount: 100 },
        CommandContext::new(),
    )
    .await
    .unwrap();
    repo.execute(
        "b",
        &AccountCommand::Deposit { amount: 7 },
        CommandContext::new(),
    )
    .await
    .unwrap();
    *balances.fail_on_amount.lock().unwrap() = Some(7);
    assert!(runner.catch_up().await.is_err());
    assert_eq!(checkpoints.load("balances").await.unwrap(), Some(12));
    assert_eq!(
        balances.balance("account-a"),
        Some(115),
        "applied before the failure"
    );
    *balances.fail_on_amount.lock().unwrap() = None;
    assert_eq!(runner.catch_up().await.unwrap(), 2, "the batch is replayed");
    assert_eq!(
        balances.balance("account-a"),
        Some(115),
        "the replayed event was skipped"
    );
    assert_eq!(balances.balance("account-b"), Some(22));

    *balances.applied.lock().unwrap() = 0;
    assert_eq!(runner.rebuild().await.unwrap(), 14);
    assert_eq!(*balances.applied.lock().unwrap(), 14);
    assert_eq!(balances.balance("account-a"), Some(115));
    assert_eq!(balances.balance("account-b"), Some(22));
}

#[tokio::test]
async fn run_polls_until_shutdown() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(store.clone());
    let balances = Arc::new(Balances::default());
    let runner = ProjectionRunner::new(
        store.clone(),
        Arc::new(InMemoryCheckpointStore::new()),
        balances.clone(),
    );
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = Arc::new(AtomicBool::new(false));
    let task = {
        let (stop, stopped) = (stop.clone(), stopped.clone());
        tokio::spawn(async move {
            runner
                .run(std::time::Duration::from_millis(5), stop.notified())
                .await;
            stopped.store(true, Ordering::SeqCst);
        })
    };
    repo.execute(
        "p",
        &AccountCommand::Open { owner: "p".into() },
        CommandContext::new(),
    )
    .await
    .unwrap();
    repo.execute(
        "p",
        &AccountCommand::Deposit { amount: 3 },
        CommandContext::new(),
    )
    .await
    .unwrap();
    let seen = eventflow_core::testkit::wait_until(std::time::Duration::from_secs(5), || async {
        balances.balance("account-p") == Some(3)
    })
    .await;
    assert!(seen, "the running projection picked up new events");
    stop.notify_one();
    task.await.unwrap();
    assert!(stopped.load(Ordering::SeqCst));
}
