//! The bench domain, defined twice with identical event payloads: once for eventflow and once for
//! cqrs-es 0.5.0, plus the raw-loop baseline and seeding helpers shared by the bench binaries.
//!
//! The aggregate is a bank account with one command (`Deposit`) and one event (`Deposited`). Both
//! frameworks store the very same `AccountEvent` type, so payloads and serialised bytes match.

// Each bench binary uses a different subset of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt;
use std::hint::black_box;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::mem_store::{MemStore, MemStoreAggregateContext};
use cqrs_es::{AggregateError, EventEnvelope};
use eventflow_core::{
    AppendRequest, EventStore, ExpectedVersion, InMemoryEventStore, InMemorySnapshotStore,
    Metadata, NewEvent, Snapshot, SnapshotStore, StoreLimits, StreamId,
};
use serde::{Deserialize, Serialize};

/// Sends stdout to `/dev/null` while it lives: cqrs-es 0.5.0's `MemStore` prints a line on every
/// load and every commit, which would otherwise cost it a terminal write each time (or whatever
/// the caller's stdout is). Create it outside the timed region; what was buffered is flushed
/// before stdout comes back, so criterion's report is not lost.
pub(crate) struct Quiet(Option<gag::Gag>);

impl Quiet {
    pub(crate) fn stdout() -> Quiet {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        Quiet(gag::Gag::stdout().ok())
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        self.0.take();
    }
}

/// How many aggregates (streams) the "spread" benches cycle through.
pub(crate) const SPREAD: usize = 10_000;

/// A current-thread tokio runtime: both frameworks run their commands one after another on it.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The command, shared by both aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deposit {
    pub(crate) amount: i64,
}

/// The only event; the same type is stored by eventflow and by cqrs-es.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum AccountEvent {
    Deposited { amount: i64 },
}

/// The event every bench writes.
pub(crate) const DEPOSITED: AccountEvent = AccountEvent::Deposited { amount: 1 };
/// The command every bench sends.
pub(crate) const DEPOSIT: Deposit = Deposit { amount: 1 };

impl eventflow_core::DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

impl cqrs_es::DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        "Deposited".to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// The refusal, shared by both aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NonPositiveAmount;

impl fmt::Display for NonPositiveAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("amount must be positive")
    }
}

impl std::error::Error for NonPositiveAmount {}

/// The eventflow aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Account {
    pub(crate) balance: i64,
    pub(crate) deposits: u64,
}

impl Account {
    fn fold(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Deposited { amount } => {
                self.balance += amount;
                self.deposits += 1;
            }
        }
    }
}

impl eventflow_core::Aggregate for Account {
    const STREAM_TYPE: &'static str = "account";
    type Command = Deposit;
    type Event = AccountEvent;
    type Error = NonPositiveAmount;

    fn handle(&self, command: &Deposit) -> Result<Vec<AccountEvent>, NonPositiveAmount> {
        if command.amount <= 0 {
            return Err(NonPositiveAmount);
        }
        Ok(vec![AccountEvent::Deposited {
            amount: command.amount,
        }])
    }

    fn apply(&mut self, event: &AccountEvent) {
        self.fold(event);
    }
}

/// The cqrs-es aggregate: same state, same rule, same event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CqrsAccount {
    pub(crate) balance: i64,
    pub(crate) deposits: u64,
}

impl cqrs_es::Aggregate for CqrsAccount {
    const TYPE: &'static str = "account";
    type Command = Deposit;
    type Event = AccountEvent;
    type Error = NonPositiveAmount;
    type Services = ();

    async fn handle(
        &mut self,
        command: Deposit,
        _service: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), NonPositiveAmount> {
        if command.amount <= 0 {
            return Err(NonPositiveAmount);
        }
        sink.write(
            AccountEvent::Deposited {
                amount: command.amount,
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::Deposited { amount } => {
                self.balance += amount;
                self.deposits += 1;
            }
        }
    }
}

/// Aggregate ids `"0"`, `"1"`, ... (eventflow prefixes them: stream `account-0`).
pub(crate) fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// The baseline: serialise the event and push the bytes into a `Mutex<Vec<_>>`. Nothing an
/// in-memory store does per event can be cheaper than this.
#[derive(Debug, Default)]
pub(crate) struct RawLog(Mutex<Vec<Vec<u8>>>);

impl RawLog {
    pub(crate) fn push(&self, event: &AccountEvent) {
        let bytes = serde_json::to_vec(black_box(event)).expect("serialise");
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(bytes);
    }

    pub(crate) fn push_batch(&self, events: &[AccountEvent]) {
        let encoded: Vec<Vec<u8>> = black_box(events)
            .iter()
            .map(|e| serde_json::to_vec(e).expect("serialise"))
            .collect();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(encoded);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// `iters` pushes into a [`RawLog`], replaced (untimed) every 100,000 events so memory stays flat.
pub(crate) fn raw_loop(iters: u64) -> Duration {
    let mut log = RawLog::default();
    let mut elapsed = Duration::ZERO;
    let mut start = Instant::now();
    for i in 0..iters {
        if i > 0 && i % 100_000 == 0 {
            elapsed += start.elapsed();
            drop(std::mem::take(&mut log));
            start = Instant::now();
        }
        log.push(&DEPOSITED);
    }
    elapsed + start.elapsed()
}

/// `n` encoded `Deposited` events, ready to append, sharing one metadata as the repository's
/// events of one command do.
pub(crate) fn new_events(n: usize) -> Vec<NewEvent> {
    let metadata = Arc::new(Metadata::new());
    (0..n)
        .map(|_| NewEvent::encode(black_box(&DEPOSITED), Arc::clone(&metadata)).expect("encode"))
        .collect()
}

/// A fresh eventflow store holding `seed` (a clone of it) in the stream of aggregate `id`. The
/// seed goes in as one append of up to 10,000 events, more than DynamoDB's limits (which the store
/// enforces by default) allow in one transaction: this store has none.
pub(crate) async fn seeded_store(id: &str, seed: &[NewEvent]) -> Arc<InMemoryEventStore> {
    let store = Arc::new(InMemoryEventStore::new().with_limits(StoreLimits::unlimited()));
    if !seed.is_empty() {
        let stream = StreamId::for_aggregate("account", id);
        store
            .append(AppendRequest::new(
                stream,
                ExpectedVersion::NoStream,
                seed.to_vec(),
            ))
            .await
            .expect("seed append");
    }
    store
}

/// A fresh snapshot store holding the state after `version` deposits of 1 for aggregate `id`,
/// exactly as `Repository::with_snapshots` would have written it (format version 1).
pub(crate) async fn seeded_snapshots(id: &str, version: u64) -> Arc<InMemorySnapshotStore> {
    let snapshots = Arc::new(InMemorySnapshotStore::new());
    let state = Account {
        balance: version as i64,
        deposits: version,
    };
    let bytes = serde_json::to_vec(&state).expect("serialise state");
    snapshots
        .save(Snapshot::new(
            StreamId::for_aggregate("account", id),
            version,
            1,
            bytes.into(),
        ))
        .await
        .expect("save snapshot");
    snapshots
}

/// `n` cqrs-es envelopes of aggregate `id`, sequences `1..=n`.
pub(crate) fn cqrs_envelopes(id: &str, n: usize) -> Vec<EventEnvelope<CqrsAccount>> {
    (1..=n)
        .map(|sequence| EventEnvelope {
            aggregate_id: id.to_string(),
            sequence,
            payload: DEPOSITED,
            metadata: HashMap::new(),
        })
        .collect()
}

/// A fresh cqrs-es `MemStore` holding a clone of `seed` for aggregate `id`, written straight into
/// its map (committing them one by one through the framework would take O(n²)).
pub(crate) fn seeded_mem_store(
    id: &str,
    seed: &[EventEnvelope<CqrsAccount>],
) -> MemStore<CqrsAccount> {
    let store = MemStore::default();
    if !seed.is_empty() {
        #[allow(deprecated)] // the only way in; cloning the store shares the same map anyway
        let events = store.get_events();
        events
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), seed.to_vec());
    }
    store
}

/// cqrs-es 0.5.0's `MemStore` **with its two `println!`s removed**, and nothing else changed: the
/// same map of typed envelopes behind a `RwLock`, a load that clones the stream, a commit that
/// clones the stream, appends and writes it back. Used only for the rows labelled "without
/// printing", so the peer is also measured at its best.
#[derive(Debug, Default)]
pub(crate) struct SilentMemStore {
    events: RwLock<HashMap<String, Vec<EventEnvelope<CqrsAccount>>>>,
}

type CqrsResult<T> = Result<T, AggregateError<NonPositiveAmount>>;

impl SilentMemStore {
    fn committed(&self, aggregate_id: &str) -> Vec<EventEnvelope<CqrsAccount>> {
        let events = self.events.read().unwrap_or_else(|e| e.into_inner());
        events
            .get(aggregate_id)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

impl cqrs_es::EventStore<CqrsAccount> for SilentMemStore {
    type AC = MemStoreAggregateContext<CqrsAccount>;

    async fn load_events(&self, aggregate_id: &str) -> CqrsResult<Vec<EventEnvelope<CqrsAccount>>> {
        Ok(self.committed(aggregate_id))
    }

    async fn load_aggregate(&self, aggregate_id: &str) -> CqrsResult<Self::AC> {
        let mut aggregate = CqrsAccount::default();
        let mut current_sequence = 0;
        for envelope in self.committed(aggregate_id) {
            current_sequence = envelope.sequence;
            cqrs_es::Aggregate::apply(&mut aggregate, envelope.payload);
        }
        Ok(MemStoreAggregateContext {
            aggregate_id: aggregate_id.to_string(),
            aggregate,
            current_sequence,
        })
    }

    async fn commit(
        &self,
        events: Vec<AccountEvent>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> CqrsResult<Vec<EventEnvelope<CqrsAccount>>> {
        let mut sequence = context.current_sequence;
        let wrapped: Vec<EventEnvelope<CqrsAccount>> = events
            .into_iter()
            .map(|payload| {
                sequence += 1;
                EventEnvelope {
                    aggregate_id: context.aggregate_id.clone(),
                    sequence,
                    payload,
                    metadata: metadata.clone(),
                }
            })
            .collect();
        if wrapped.is_empty() {
            return Ok(wrapped);
        }
        let mut stream = self.committed(&context.aggregate_id);
        stream.extend(wrapped.iter().cloned());
        self.events
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(context.aggregate_id, stream);
        Ok(wrapped)
    }
}
