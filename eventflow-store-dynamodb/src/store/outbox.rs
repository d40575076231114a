//! The outbox of [`DynamoDbEventStore`]: sharded pointers in the meta table, their events read
//! back in batches, parking and redriving.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, Put, TransactWriteItem, WriteRequest,
};
use chrono::Utc;
use eventflow_core::{
    EventStore, Metadata, Outbox, ParkedEntries, ParkedEntry, RecordedEvent, Result, StreamId,
};
use uuid::Uuid;

use crate::error::{other_error, sdk_error};
use crate::items::{self, Item, meta_attr, s};

use super::{BATCH_GET_KEYS, BATCH_WRITE_ITEMS, DynamoDbEventStore, names};

impl DynamoDbEventStore {
    /// Up to `max` outbox pointers of `shard`, in (stream, version) order, skipping the streams
    /// in `held` (those with a parked entry).
    pub(super) async fn outbox_shard(
        &self,
        shard: u32,
        max: usize,
        held: &HashSet<StreamId>,
        into: &mut Vec<(StreamId, u64)>,
    ) -> Result<()> {
        self.query_entries(
            &items::outbox_pk(shard),
            max,
            |item, into| {
                let (stream, version) = items::decode_outbox(item)?;
                if !held.contains(&stream) {
                    into.push((stream, version));
                }
                Ok(())
            },
            into,
        )
        .await
    }

    /// Reads the items of meta partition `pk` in sort-key order, strongly consistent, handing each
    /// to `keep`, until `into` holds `max` or the partition ends.
    pub(super) async fn query_entries<T>(
        &self,
        pk: &str,
        max: usize,
        keep: impl Fn(&Item, &mut Vec<T>) -> Result<()>,
        into: &mut Vec<T>,
    ) -> Result<()> {
        let mut start: Option<Item> = None;
        loop {
            let remaining = max.saturating_sub(into.len());
            if remaining == 0 {
                return Ok(());
            }
            let output = self
                .client
                .query()
                .table_name(self.config.meta_table())
                .consistent_read(true)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", meta_attr::PK)
                .expression_attribute_values(":pk", s(pk))
                .limit(i32::try_from(remaining).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in output.items() {
                keep(item, into)?;
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(()),
            }
        }
    }

    /// The events `keys` point at, strongly consistent, in the order of `keys`.
    /// The events `keys` point at, in key order, and the keys whose event item is missing or
    /// does not decode, with why.
    pub(super) async fn batch_get_events(
        &self,
        keys: &[(StreamId, u64)],
    ) -> Result<(Vec<RecordedEvent>, Vec<BrokenEntry>)> {
        let table = self.config.events_table();
        let mut found: HashMap<(StreamId, u64), RecordedEvent> = HashMap::new();
        let mut broken: Vec<BrokenEntry> = Vec::new();
        for chunk in keys.chunks(BATCH_GET_KEYS) {
            let mut request = KeysAndAttributes::builder().consistent_read(true);
            for (stream, version) in chunk {
                request = request.keys(items::event_key(stream, *version));
            }
            let mut pending = Some(HashMap::from([(
                table.to_owned(),
                request
                    .build()
                    .map_err(|e| other_error("BatchGetItem", e.to_string(), false))?,
            )]));
            let mut stalled = 0;
            while let Some(request) = pending.take() {
                let output = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(request))
                    .send()
                    .await
                    .map_err(|e| sdk_error("BatchGetItem", e))?;
                let mut progress = false;
                for item in output
                    .responses()
                    .and_then(|r| r.get(table))
                    .into_iter()
                    .flatten()
                {
                    progress = true;
                    match items::decode_event(item) {
                        Ok(event) => {
                            found.insert((event.stream_id.clone(), event.version), event);
                        }
                        // An item that does not decode would fail every round: set it aside.
                        Err(error) => {
                            let Some(key) = items::event_key_of(item) else {
                                return Err(error);
                            };
                            broken.push((key, format!("its event item does not decode: {error}")));
                        }
                    }
                }
                pending = output.unprocessed_keys.filter(|u| !u.is_empty());
                if pending.is_some() {
                    stalled = self
                        .backoff_unless(progress, stalled, "BatchGetItem")
                        .await?;
                }
            }
        }
        let mut events = Vec::with_capacity(keys.len());
        for key in keys {
            match found.remove(key) {
                Some(event) => events.push(event),
                None if broken.iter().any(|(b, _)| b == key) => {}
                None => broken.push((key.clone(), "its event item does not exist".to_owned())),
            }
        }
        Ok((events, broken))
    }

    /// Before resending the unprocessed part of a batch: no wait when the last call made progress,
    /// otherwise backoff, and a transient error once the retry policy's attempts are used up.
    /// Returns the new count of calls in a row without progress.
    pub(super) async fn backoff_unless(
        &self,
        progress: bool,
        stalled: u32,
        operation: &'static str,
    ) -> Result<u32> {
        if progress {
            return Ok(0);
        }
        let stalled = stalled + 1;
        let retry = self.config.retry();
        if stalled >= retry.max_attempts {
            return Err(other_error(
                operation,
                format!("no progress on unprocessed items after {stalled} attempts"),
                true,
            ));
        }
        tokio::time::sleep(retry.delay(stalled)).await;
        Ok(stalled)
    }

    /// Sends `requests` as `BatchWriteItem`s to `table`, resending unprocessed items with backoff.
    pub(super) async fn batch_write(&self, table: &str, requests: Vec<WriteRequest>) -> Result<()> {
        let mut requests = requests;
        while !requests.is_empty() {
            let rest = requests.split_off(requests.len().min(BATCH_WRITE_ITEMS));
            let mut pending = Some(HashMap::from([(table.to_owned(), requests)]));
            let mut stalled = 0;
            while let Some(batch) = pending.take() {
                let sent: usize = batch.values().map(Vec::len).sum();
                let output = self
                    .client
                    .batch_write_item()
                    .set_request_items(Some(batch))
                    .send()
                    .await
                    .map_err(|e| sdk_error("BatchWriteItem", e))?;
                pending = output.unprocessed_items.filter(|u| !u.is_empty());
                if let Some(unprocessed) = &pending {
                    let left: usize = unprocessed.values().map(Vec::len).sum();
                    stalled = self
                        .backoff_unless(left < sent, stalled, "BatchWriteItem")
                        .await?;
                }
            }
            requests = rest;
        }
        Ok(())
    }
}

#[async_trait]
impl Outbox for DynamoDbEventStore {
    /// Up to `max` entries: the outbox shards are queried in turn (strongly consistent, starting
    /// from a rotating shard), then the events are fetched with `BatchGetItem`. A stream's entries
    /// are all in one shard, sorted by version, so they come in version order.
    async fn pending(&self, max: usize) -> Result<Vec<RecordedEvent>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let shards = self.config.outbox_shards();
        let first = self.next_shard.fetch_add(1, Ordering::Relaxed) % shards;
        let held: HashSet<StreamId> = self
            .parked_pointers(usize::MAX)
            .await?
            .into_iter()
            .map(|(stream, ..)| stream)
            .collect();
        let mut keys = Vec::new();
        for i in 0..shards {
            if keys.len() >= max {
                break;
            }
            self.outbox_shard((first + i) % shards, max, &held, &mut keys)
                .await?;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (events, broken) = self.batch_get_events(&keys).await?;
        // Left in the outbox, such an entry would come back every round, in place of entries
        // that can go, and hold its stream forever without anyone seeing why: parked, it is
        // listed with the reason (and its stream's later entries wait behind it).
        for ((stream, version), reason) in broken {
            tracing::error!(%stream, version, %reason, "outbox entry cannot be relayed; parked");
            self.park_entry(&stream, version, Uuid::nil(), &reason)
                .await?;
        }
        Ok(events)
    }

    /// Deletes the entries with `BatchWriteItem`. Deleting an entry that is gone is not an error.
    async fn mark_published(&self, events: &[RecordedEvent]) -> Result<()> {
        let shards = self.config.outbox_shards();
        let mut seen = HashSet::new();
        let mut requests = Vec::with_capacity(events.len());
        for event in events {
            if !seen.insert((&event.stream_id, event.version)) {
                continue;
            }
            let key = items::outbox_key(&event.stream_id, event.version, shards);
            let delete = DeleteRequest::builder()
                .set_key(Some(key))
                .build()
                .map_err(|e| other_error("BatchWriteItem", e.to_string(), false))?;
            requests.push(WriteRequest::builder().delete_request(delete).build());
        }
        self.batch_write(self.config.meta_table(), requests).await
    }

    /// Moves the entry from its outbox shard to the parked partition, in one transaction; an
    /// entry that is no longer pending (published meanwhile) is left alone.
    async fn park(&self, event: &RecordedEvent, reason: &str) -> Result<()> {
        let (stream, version) = (&event.stream_id, event.version);
        let moved = self
            .park_entry(stream, version, event.event_id, reason)
            .await?;
        if !moved {
            tracing::debug!(%stream, version, "outbox entry to park was no longer pending");
        }
        Ok(())
    }
}

#[async_trait]
impl ParkedEntries for DynamoDbEventStore {
    async fn parked(&self, max: usize) -> Result<Vec<ParkedEntry>> {
        let pointers = self.parked_pointers(max).await?;
        let keys: Vec<(StreamId, u64)> = pointers
            .iter()
            .map(|(stream, version, ..)| (stream.clone(), *version))
            .collect();
        let (found, _) = self.batch_get_events(&keys).await?;
        let mut events: HashMap<(StreamId, u64), RecordedEvent> = found
            .into_iter()
            .map(|e| ((e.stream_id.clone(), e.version), e))
            .collect();
        Ok(pointers
            .into_iter()
            .map(|(stream, version, reason, at)| {
                // An entry parked because its event cannot be read is listed all the same, with
                // an empty record naming the stream and version; its reason says why.
                let event = events
                    .remove(&(stream.clone(), version))
                    .unwrap_or_else(|| unreadable(stream, version, at));
                ParkedEntry::new(event, reason, at)
            })
            .collect())
    }

    async fn redrive(&self, stream: &StreamId, version: u64) -> Result<bool> {
        let Some(event_id) = self
            .read_stream(stream, version, 1)
            .await?
            .into_iter()
            .find(|e| e.version == version)
            .map(|e| e.event_id)
        else {
            return Ok(false);
        };
        let shards = self.config.outbox_shards();
        let entry = items::outbox_item(stream, version, event_id, shards);
        self.move_entry(items::parked_key(stream, version), entry)
            .await
    }
}

impl DynamoDbEventStore {
    /// The parked entries' pointers: (stream, version, reason, parked at), at most `max`.
    async fn parked_pointers(
        &self,
        max: usize,
    ) -> Result<Vec<(StreamId, u64, String, chrono::DateTime<Utc>)>> {
        let mut pointers = Vec::new();
        self.query_entries(
            items::PARKED_PK,
            max,
            |item, into| {
                into.push(items::decode_parked(item)?);
                Ok(())
            },
            &mut pointers,
        )
        .await?;
        Ok(pointers)
    }

    /// Moves the outbox entry of `stream` at `version` to the parked entries with `reason`; false
    /// when it was no longer pending.
    async fn park_entry(
        &self,
        stream: &StreamId,
        version: u64,
        event_id: Uuid,
        reason: &str,
    ) -> Result<bool> {
        let shards = self.config.outbox_shards();
        let parked = items::parked_item(stream, version, event_id, reason, Utc::now());
        self.move_entry(items::outbox_key(stream, version, shards), parked)
            .await
    }

    /// Deletes the meta item `from` (which must exist) and puts `to`, in one transaction; false
    /// when `from` was not there.
    async fn move_entry(&self, from: Item, to: Item) -> Result<bool> {
        let table = self.config.meta_table();
        let delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(table)
            .set_key(Some(from))
            .condition_expression("attribute_exists(#pk)")
            .set_expression_attribute_names(Some(names(meta_attr::PK)))
            .build()
            .map_err(|e| other_error("TransactWriteItems", e.to_string(), false))?;
        let items = vec![
            TransactWriteItem::builder().delete(delete).build(),
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(table)
                        .set_item(Some(to))
                        .build()
                        .map_err(|e| other_error("TransactWriteItems", e.to_string(), false))?,
                )
                .build(),
        ];
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(service))
                if matches!(
                    service.err(),
                    TransactWriteItemsError::TransactionCanceledException(c)
                        if c.cancellation_reasons().first().and_then(|r| r.code())
                            == Some("ConditionalCheckFailed")
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(sdk_error("TransactWriteItems", error)),
        }
    }
}

// Stores are moved into tasks and shared behind `Arc`.
const _: () = {
    const fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<DynamoDbEventStore>();
    assert_send_sync::<AttributeValue>();
};

/// An outbox entry whose event cannot be relayed: its key, and why.
pub(super) type BrokenEntry = ((StreamId, u64), String);

/// The record listed for a parked entry whose event item is missing or does not decode.
fn unreadable(stream: StreamId, version: u64, at: chrono::DateTime<Utc>) -> RecordedEvent {
    let empty = eventflow_core::NewEvent::new("", 0, bytes::Bytes::new(), Metadata::new());
    let mut event = RecordedEvent::from_new(empty, stream, version, None, at);
    event.event_id = Uuid::nil();
    event
}
