//! The repository's full path: load (cache, snapshot, events), handle, append, retry, idempotency.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::{Account, AccountCommand, AccountError, AccountEvent};
use eventflow_core::{
    AppendRequest, AppendResult, Backoff, CommandContext, CommandError, Envelope, Error,
    EventStore, EventStoreExt, ExpectedVersion, InMemoryEventStore, InMemorySnapshotStore,
    Metadata, NewEvent, RecordedEvent, Repository, Snapshot, SnapshotPolicy, SnapshotStore,
    StreamId,
};

fn open(owner: &str) -> AccountCommand {
    AccountCommand::Open {
        owner: owner.into(),
    }
}

fn deposit(amount: i64) -> AccountCommand {
    AccountCommand::Deposit { amount }
}

async fn run(repo: &Repository<Account>, id: &str, commands: &[AccountCommand]) {
    for command in commands {
        repo.execute(id, command, CommandContext::new())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn executes_commands_and_records_envelopes() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(store.clone());
    let context = CommandContext::new()
        .with_correlation_id("corr-9")
        .with_metadata(
            Metadata::new()
                .with_correlation_id("corr-9")
                .with_actor("alice"),
        );
    let opened = repo.execute("a1", &open("alice"), context).await.unwrap();
    assert_eq!(opened.version, 1);
    assert_eq!(opened.stream_id.as_str(), "account-a1");
    assert_eq!(opened.events[0].version, 1);
    assert_eq!(opened.events[0].metadata.actor.as_deref(), Some("alice"));
    assert!(!opened.deduplicated);

    let stored = store
        .read_stream_to_end(&opened.stream_id, 1)
        .await
        .unwrap();
    assert_eq!(stored[0].event_id, opened.events[0].event_id);
    assert_eq!(stored[0].event_type, "AccountOpened");
    assert_eq!(stored[0].schema_version, 2);
    assert_eq!(stored[0].metadata.correlation_id.as_deref(), Some("corr-9"));

    let rejected = repo
        .execute(
            "a1",
            &AccountCommand::Withdraw { amount: 5 },
            CommandContext::new(),
        )
        .await;
    assert!(matches!(
        rejected,
        Err(CommandError::Rejected(AccountError::InsufficientFunds {
            balance: 0,
            asked: 5
        }))
    ));
    let noop = repo
        .execute("a1", &AccountCommand::Noop, CommandContext::new())
        .await
        .unwrap();
    assert!(noop.events.is_empty());
    assert_eq!(noop.version, 1);
    assert_eq!(
        store.len(),
        1,
        "a rejected or empty command appends nothing"
    );
}

/// cqrs-es 0.5.0 applies events twice when loading through a snapshot (3 events show as 6). This
/// goes through the whole path: commands → snapshots → a fresh repository loads.
#[tokio::test]
async fn snapshots_never_apply_an_event_twice() {
    for every in [1, 2, 3, 4] {
        for cached in [false, true] {
            let store = Arc::new(InMemoryEventStore::new());
            let snapshots = Arc::new(InMemorySnapshotStore::new());
            let mut writer = Repository::<Account>::new(store.clone())
                .with_snapshots(snapshots.clone(), SnapshotPolicy::every(every));
            if cached {
                writer = writer.with_cache(16);
            }
            run(
                &writer,
                "s",
                &[open("bo"), deposit(10), deposit(5), deposit(1)],
            )
            .await;
            let snapshot = snapshots.load(&StreamId::new("account-s")).await.unwrap();
            assert!(snapshot.is_some(), "every {every}: a snapshot was taken");

            let reader = Repository::<Account>::new(store.clone())
                .with_snapshots(snapshots.clone(), SnapshotPolicy::every(every));
            let loaded = reader.load("s").await.unwrap();
            assert_eq!(loaded.version, 4, "every {every}, cached {cached}");
            assert_eq!(
                loaded.state.applied, 4,
                "every {every}, cached {cached}: each event once"
            );
            assert_eq!(loaded.state.balance, 16, "every {every}, cached {cached}");
            // And the state the writer keeps deciding on is right too.
            writer
                .execute(
                    "s",
                    &AccountCommand::Withdraw { amount: 16 },
                    CommandContext::new(),
                )
                .await
                .unwrap();
            let after = reader.load("s").await.unwrap();
            assert_eq!((after.state.balance, after.state.applied), (0, 5));
        }
    }
}

#[tokio::test]
async fn a_snapshot_that_no_longer_deserialises_falls_back_to_replay() {
    let store = Arc::new(InMemoryEventStore::new());
    let snapshots = Arc::new(InMemorySnapshotStore::new());
    let repo = Repository::<Account>::new(store.clone())
        .with_snapshots(snapshots.clone(), SnapshotPolicy::every(100));
    run(&repo, "x", &[open("cy"), deposit(7), deposit(8)]).await;
    let stream = StreamId::new("account-x");
    let garbage = Snapshot::new(
        stream.clone(),
        3,
        1,
        Bytes::from_static(b"{\"balance\":\"lots\"}"),
    );
    snapshots.save(garbage).await.unwrap();
    let loaded = repo.load("x").await.unwrap();
    assert_eq!(
        (loaded.state.balance, loaded.state.applied, loaded.version),
        (15, 3, 3)
    );

    // A snapshot of another format version is ignored, even if it deserialises.
    let wrong = Account {
        opened: true,
        owner: "evil".into(),
        balance: 999,
        applied: 3,
    };
    let other_format = Snapshot::new(
        stream,
        4,
        7,
        Bytes::from(serde_json::to_vec(&wrong).unwrap()),
    );
    snapshots.save(other_format).await.unwrap();
    let loaded = repo.load("x").await.unwrap();
    assert_eq!(
        (loaded.state.owner.as_str(), loaded.state.balance),
        ("cy", 15)
    );
}

#[tokio::test]
async fn upcasters_migrate_old_events_while_loading() {
    let store = Arc::new(InMemoryEventStore::new());
    let old = |stream: &str, payload: &'static [u8], schema_version| {
        AppendRequest::new(
            StreamId::new(stream),
            ExpectedVersion::NoStream,
            vec![NewEvent::new(
                "AccountOpened",
                schema_version,
                Bytes::from_static(payload),
                Metadata::new(),
            )],
        )
    };
    // Version 1 of AccountOpened called the owner "name"; the event type's upcaster renames it.
    store
        .append(old("account-old", b"{\"Opened\":{\"name\":\"dee\"}}", 1))
        .await
        .unwrap();
    let repo = Repository::<Account>::new(store.clone());
    let loaded = repo.load("old").await.unwrap();
    assert_eq!(loaded.state.owner, "dee");
    repo.execute("old", &deposit(3), CommandContext::new())
        .await
        .unwrap();

    // A v1 payload the upcaster cannot migrate: the error names the event and the reason.
    store
        .append(old("account-broken", b"{\"Opened\":{}}", 1))
        .await
        .unwrap();
    match repo.load("broken").await {
        Err(Error::Upcast {
            stream,
            version: 1,
            event_type,
            from_version: 1,
            reason,
        }) => {
            assert_eq!(
                (stream.as_str(), event_type.as_str(), reason.as_str()),
                ("account-broken", "AccountOpened", "no name")
            );
        }
        other => panic!("expected an upcast error, got {other:?}"),
    }

    // A current payload that does not fit the type: stream, version, type and serde's reason.
    store
        .append(old("account-bad", b"{\"Opened\":{\"owner\":7}}", 2))
        .await
        .unwrap();
    let error = repo.load("bad").await.unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(
            &error,
            Error::Decode {
                version: 1,
                schema_version: 2,
                ..
            }
        ),
        "{error:?}"
    );
    for part in ["AccountOpened", "account-bad", "version 1", "invalid type"] {
        assert!(text.contains(part), "{text:?} names {part}");
    }
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retried_command_return_the_original() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(store.clone());
    run(&repo, "i", &[open("ed")]).await;
    let ctx = || CommandContext::new().with_idempotency_key("deposit-1");
    let first = repo.execute("i", &deposit(10), ctx()).await.unwrap();
    let second = repo.execute("i", &deposit(10), ctx()).await.unwrap();
    assert!(second.deduplicated);
    assert_eq!(first.events, second.events);
    assert_eq!(second.version, 2);
    assert_eq!(repo.load("i").await.unwrap().state.balance, 10);

    // A command that records nothing still records its key.
    let noop = repo
        .execute(
            "i",
            &AccountCommand::Noop,
            CommandContext::new().with_idempotency_key("noop"),
        )
        .await
        .unwrap();
    assert!(!noop.deduplicated);
    let again = repo
        .execute(
            "i",
            &deposit(99),
            CommandContext::new().with_idempotency_key("noop"),
        )
        .await
        .unwrap();
    assert!(again.deduplicated && again.events.is_empty());
    assert_eq!(repo.load("i").await.unwrap().state.balance, 10);
}

#[tokio::test]
async fn an_idempotency_key_from_another_stream_is_refused_not_decoded() {
    let repo = Repository::<Account>::new(Arc::new(InMemoryEventStore::new()));
    run(&repo, "k1", &[open("jo")]).await;
    run(&repo, "k2", &[open("kim")]).await;
    let key = || CommandContext::new().with_idempotency_key("shared");
    repo.execute("k1", &deposit(1), key()).await.unwrap();
    match repo.execute("k2", &deposit(1), key()).await {
        Err(CommandError::Store(Error::DuplicateIdempotencyKey { key, original })) => {
            assert_eq!(key, "shared");
            assert_eq!(original.stream.as_str(), "account-k1");
        }
        other => panic!("expected DuplicateIdempotencyKey, got {other:?}"),
    }
    assert_eq!(repo.load("k2").await.unwrap().state.balance, 0);
    // Looked up directly, the key tells which command used it, typed.
    let executed = repo.find_executed("shared").await.unwrap().unwrap();
    assert_eq!(repo.id_of(&executed.stream_id), Some("k1"));
    assert!(matches!(
        executed.events[..],
        [Envelope {
            event: AccountEvent::Deposited { amount: 1 },
            ..
        }]
    ));
    assert!(repo.find_executed("unused").await.unwrap().is_none());
}

/// The same key sent concurrently: one append, every caller gets the same result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_with_one_idempotency_key_append_once() {
    for round in 0..20 {
        let store = Arc::new(InMemoryEventStore::new());
        let repo = Arc::new(Repository::<Account>::new(store.clone()));
        run(&repo, "c", &[open("fi")]).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (repo, barrier) = (repo.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let ctx = CommandContext::new().with_idempotency_key("pay-once");
                    repo.execute("c", &deposit(25), ctx).await.unwrap()
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        assert_eq!(
            store.len(),
            2,
            "round {round}: exactly one deposit appended"
        );
        assert_eq!(
            results.iter().filter(|r| !r.deduplicated).count(),
            1,
            "round {round}"
        );
        assert!(
            results.iter().all(|r| r.events == results[0].events),
            "round {round}: same result"
        );
        assert_eq!(repo.load("c").await.unwrap().state.balance, 25);
    }
}

/// A store wrapper that lets a rival writer slip in an event just before the next `races` appends.
struct RacingStore {
    inner: InMemoryEventStore,
    races: AtomicU32,
}

#[async_trait]
impl EventStore for RacingStore {
    async fn append(&self, request: AppendRequest) -> eventflow_core::Result<AppendResult> {
        if self.races.load(Ordering::SeqCst) > 0 {
            self.races.fetch_sub(1, Ordering::SeqCst);
            let rival = NewEvent::encode(&AccountEvent::Deposited { amount: 1 }, Metadata::new())?;
            self.inner
                .append(AppendRequest::new(
                    request.stream.clone(),
                    ExpectedVersion::Any,
                    vec![rival],
                ))
                .await?;
        }
        self.inner.append(request).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        max: usize,
    ) -> eventflow_core::Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, from, max).await
    }
    async fn find_idempotency_key(
        &self,
        key: &str,
    ) -> eventflow_core::Result<Option<AppendResult>> {
        self.inner.find_idempotency_key(key).await
    }
}

#[tokio::test]
async fn conflicts_are_retried_then_reported() {
    let store = Arc::new(RacingStore {
        inner: InMemoryEventStore::new(),
        races: AtomicU32::new(0),
    });
    let repo = Repository::<Account>::new(store.clone())
        .with_cache(8)
        .with_conflict_retry(Backoff::new(
            4,
            Duration::from_millis(1),
            Duration::from_millis(20),
        ));
    run(&repo, "r", &[open("gus")]).await;

    store.races.store(3, Ordering::SeqCst);
    let done = repo
        .execute("r", &deposit(100), CommandContext::new())
        .await
        .unwrap();
    assert_eq!(done.version, 5, "three rival events, then ours");
    let loaded = repo.load("r").await.unwrap();
    assert_eq!(loaded.state.balance, 103);

    store.races.store(4, Ordering::SeqCst);
    match repo.execute("r", &deposit(1), CommandContext::new()).await {
        Err(CommandError::Store(Error::Conflict {
            expected, actual, ..
        })) => {
            assert_eq!(
                expected,
                ExpectedVersion::Observed(8),
                "the version it loaded"
            );
            assert_eq!(actual, 9);
        }
        other => panic!("expected a conflict after the retries, got {other:?}"),
    }
    // The cache was invalidated by the conflict: the next command sees every rival event.
    let next = repo
        .execute(
            "r",
            &AccountCommand::Withdraw { amount: 107 },
            CommandContext::new(),
        )
        .await;
    assert!(
        next.is_ok(),
        "balance is 107 after 4 more rival deposits: {next:?}"
    );
}

#[tokio::test]
async fn the_cache_sees_other_writers() {
    let store = Arc::new(InMemoryEventStore::new());
    let cached = Repository::<Account>::new(store.clone()).with_cache(1);
    let other = Repository::<Account>::new(store.clone());
    run(&cached, "w", &[open("hal"), deposit(5)]).await;
    run(&other, "w", &[deposit(7)]).await;
    // Cached at version 2, the store is at 3: the withdrawal of 12 must see the other deposit.
    cached
        .execute(
            "w",
            &AccountCommand::Withdraw { amount: 12 },
            CommandContext::new(),
        )
        .await
        .unwrap();
    // Capacity 1: another aggregate evicts "w", which still loads correctly.
    run(&cached, "v", &[open("ivy")]).await;
    let w = cached.load("w").await.unwrap();
    assert_eq!((w.state.balance, w.version), (0, 4));
}

/// Transfers between accounts: every withdrawal of a batch or none, never below zero under
/// concurrent batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_all_writes_every_stream_or_none() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Arc::new(
        Repository::<Account>::new(store.clone()).with_conflict_retry(
            Backoff::new(51, Duration::from_millis(1), Duration::from_millis(20))
                .with_full_jitter(),
        ),
    );
    for id in ["x", "y"] {
        run(&repo, id, &[open(id), deposit(10)]).await;
    }
    let withdraw = |x: i64, y: i64| {
        vec![
            ("x".to_owned(), AccountCommand::Withdraw { amount: x }),
            ("y".to_owned(), AccountCommand::Withdraw { amount: y }),
        ]
    };

    // y cannot pay 11: nothing is written, x included.
    let refused = repo
        .execute_all(&withdraw(1, 11), CommandContext::new())
        .await;
    assert!(matches!(refused, Err(CommandError::Rejected(_))));
    assert_eq!(repo.load("x").await.unwrap().version, 2);

    let done = repo
        .execute_all(
            &withdraw(2, 3),
            CommandContext::new().with_idempotency_key("batch-1"),
        )
        .await
        .unwrap();
    assert_eq!(
        done.iter().map(|e| e.version).collect::<Vec<_>>(),
        [3, 3],
        "one event on each stream"
    );
    // The retry is answered from the key, and changes nothing.
    let again = repo
        .execute_all(
            &withdraw(2, 3),
            CommandContext::new().with_idempotency_key("batch-1"),
        )
        .await
        .unwrap();
    let shape = |executed: &[eventflow_core::Executed<AccountEvent>]| {
        executed
            .iter()
            .map(|e| {
                let events: Vec<_> = e.events.iter().map(|e| (e.event_id, e.version)).collect();
                (e.stream_id.clone(), e.version, events)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shape(&again),
        shape(&done),
        "a replay has the first call's shape"
    );
    assert!(again.iter().all(|e| e.deduplicated));
    assert_eq!(repo.load("y").await.unwrap().state.balance, 7);
    // Ids as `&str`, and a stream whose command decides nothing stays out of the append.
    let partial = repo
        .execute_all(
            &[("x", deposit(1)), ("y", AccountCommand::Noop)],
            CommandContext::new().with_idempotency_key("batch-2"),
        )
        .await
        .unwrap();
    let replayed = repo
        .execute_all(
            &[("x", deposit(1)), ("y", AccountCommand::Noop)],
            CommandContext::new().with_idempotency_key("batch-2"),
        )
        .await
        .unwrap();
    assert_eq!(shape(&replayed), shape(&partial));
    assert_eq!(partial[1].events.len(), 0);

    // 20 concurrent batches of (1, 1) against balances 9 and 7: exactly 7 succeed.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let repo = Arc::clone(&repo);
            tokio::spawn(async move {
                repo.execute_all(&withdraw(1, 1), CommandContext::new())
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        succeeded += u32::from(task.await.unwrap());
    }
    assert_eq!(succeeded, 7);
    assert_eq!(repo.load("x").await.unwrap().state.balance, 2);
    assert_eq!(repo.load("y").await.unwrap().state.balance, 0);

    let twice = repo
        .execute_all(
            &[("x".to_owned(), deposit(1)), ("x".to_owned(), deposit(1))],
            CommandContext::new(),
        )
        .await;
    assert!(matches!(
        twice,
        Err(CommandError::Store(Error::InvalidRequest(_)))
    ));
}
