//! Property tests: the repository agrees with a plain fold of the events, snapshots agree with full
#![allow(clippy::unwrap_used)]
//! replays, and concurrent appenders never leave a gap or a duplicate version.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use common::{Account, AccountCommand};
use eventflow_core::{
    Aggregate, AppendRequest, CommandContext, Error, EventStore, EventStoreExt, ExpectedVersion,
    InMemoryEventStore, InMemorySnapshotStore, Metadata, NewEvent, Repository, SnapshotPolicy,
    StreamId,
};
use proptest::prelude::*;

fn command() -> impl Strategy<Value = AccountCommand> {
    prop_oneof![
        1 => "[a-z]{1,8}".prop_map(|owner| AccountCommand::Open { owner }),
        4 => (-5i64..50).prop_map(|amount| AccountCommand::Deposit { amount }),
        3 => (-5i64..60).prop_map(|amount| AccountCommand::Withdraw { amount }),
        1 => Just(AccountCommand::Noop),
    ]
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the commands, the state the repository decides on equals the fold of the stored
    /// events, and loading through snapshots (every `every` events) or the cache changes nothing.
    #[test]
    fn repository_state_is_the_fold_of_its_events(
        commands in proptest::collection::vec(command(), 1..60),
        every in 1u64..8,
    ) {
        runtime(1).block_on(async {
            let store = Arc::new(InMemoryEventStore::new());
            let snapshots = Arc::new(InMemorySnapshotStore::new());
            let plain = Repository::<Account>::new(store.clone());
            let snapshotted = Repository::<Account>::new(store.clone())
                .with_snapshots(snapshots.clone(), SnapshotPolicy::every(every))
                .with_cache(4);
            let mut model = Account::default();
            for (i, command) in commands.iter().enumerate() {
                // Alternate writers so the cache and snapshots must catch up with the other one.
                let repo = if i % 3 == 0 { &plain } else { &snapshotted };
                let expected = model.handle(command);
                let result = repo.execute("p", command, CommandContext::new()).await;
                match (expected, result) {
                    (Ok(events), Ok(executed)) => {
                        let recorded: Vec<_> = executed.events.iter().map(|e| e.event.clone()).collect();
                        prop_assert_eq!(&events, &recorded);
                        for event in &events {
                            model.apply(event);
                        }
                    }
                    (Err(expected), Err(eventflow_core::CommandError::Rejected(actual))) => {
                        prop_assert_eq!(expected, actual);
                    }
                    (expected, actual) => prop_assert!(false, "model {:?} but repository {:?}", expected, actual),
                }
            }
            let stream = StreamId::new("account-p");
            let mut folded = Account::default();
            for recorded in store.read_stream_to_end(&stream, 1).await.map_err(|e| TestCaseError::fail(e.to_string()))? {
                folded.apply(&recorded.decode_as_stored().map_err(|e| TestCaseError::fail(e.to_string()))?);
            }
            let from_plain = plain.load("p").await.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let from_snapshot = snapshotted.load("p").await.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&folded, &model);
            prop_assert_eq!(&from_plain.state, &model);
            prop_assert_eq!(&from_snapshot.state, &model);
            prop_assert_eq!(from_snapshot.version, model.applied);
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Concurrent appenders with `Exact` versions and batches: versions stay gapless and unique, and
    /// exactly the acknowledged events are stored.
    #[test]
    fn concurrent_appenders_never_leave_a_gap(
        writers in 2usize..12,
        appends_each in 1usize..8,
        batch in 1usize..4,
    ) {
        runtime(2).block_on(async {
            let store = Arc::new(InMemoryEventStore::new());
            let stream = StreamId::new("race");
            let tasks: Vec<_> = (0..writers).map(|_| {
                let (store, stream) = (store.clone(), stream.clone());
                tokio::spawn(async move {
                    let mut acknowledged = Vec::new();
                    let mut done = 0;
                    while done < appends_each {
                        let version = store.read_stream_to_end(&stream, 1).await?.len() as u64;
                        let events: Vec<NewEvent> = (0..batch)
                            .map(|_| NewEvent::new("E", 1, Bytes::from_static(b"{}"), Metadata::new()))
                            .collect();
                        let ids: Vec<_> = events.iter().map(|e| e.event_id).collect();
                        let request = AppendRequest::new(stream.clone(), ExpectedVersion::Exact(version), events);
                        match store.append(request).await {
                            Ok(_) => { acknowledged.extend(ids); done += 1; }
                            Err(Error::Conflict { .. }) => tokio::task::yield_now().await,
                            Err(other) => return Err(other),
                        }
                    }
                    Ok(acknowledged)
                })
            }).collect();
            let mut acknowledged = HashSet::new();
            for task in tasks {
                let ids = task.await.map_err(|e| TestCaseError::fail(e.to_string()))?
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                acknowledged.extend(ids);
            }
            let stored = store.read_stream_to_end(&stream, 1).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
            let expected: Vec<u64> = (1..=(writers * appends_each * batch) as u64).collect();
            prop_assert_eq!(versions, expected);
            let ids: HashSet<_> = stored.iter().map(|e| e.event_id).collect();
            prop_assert_eq!(ids, acknowledged);
            Ok(())
        })?;
    }
}
