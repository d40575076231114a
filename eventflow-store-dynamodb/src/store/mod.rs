//! [`DynamoDbEventStore`]: the [`EventStore`] and [`Outbox`](eventflow_core::Outbox) on DynamoDB.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    ConditionCheck, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use chrono::Utc;
use eventflow_core::{
    AppendRequest, AppendResult, Error, EventStore, ExpectedVersion, RecordedEvent, Result,
    StreamId,
};
use tracing::Instrument;

use crate::checkpoint::DynamoDbCheckpointStore;
use crate::config::DynamoDbConfig;
use crate::documents::DynamoDbDocuments;
use crate::error::{TRANSIENT_REASONS, classified_sdk_error, other_error, sdk_error};
use crate::items::{self, Item, event_attr, meta_attr, n, s};
use crate::limits;
use crate::snapshot::DynamoDbSnapshotStore;
use crate::{BACKEND, tables};

/// Most keys in one `BatchGetItem`.
const BATCH_GET_KEYS: usize = 100;
/// Most requests in one `BatchWriteItem`.
const BATCH_WRITE_ITEMS: usize = 25;

/// An event store, outbox and (through [`DynamoDbEventStore::snapshot_store`]) snapshot store on
/// Amazon DynamoDB.
///
/// Cheap to clone: clones share the SDK client.
///
/// - **Events** live in the events table, one item per event: partition key `stream_id` (S), sort
///   key `version` (N).
/// - **Idempotency keys** and **outbox entries** live in the meta table (`pk` S, `sk` S) and are
///   written in the same `TransactWriteItems` as the events, each under a condition, so an append is
///   all or nothing and a reused key can never slip through.
/// - **Reads** are strongly consistent `Query`s that follow `LastEvaluatedKey` to the end.
/// - An append may span **several streams** ([`AppendRequest::with_stream`]): all their items go
///   into the one transaction, so they are written all or nothing.
/// - There is **no global feed**: this store does not implement
///   [`GlobalFeed`](eventflow_core::GlobalFeed), so a
///   [`ProjectionRunner`](eventflow_core::ProjectionRunner) over it does not compile. Feed
///   projections from the outbox through a bus ([`Projector`](eventflow_core::Projector) is a
///   message handler), or from DynamoDB Streams (see the crate docs).
///
/// ```compile_fail
/// # async fn f(store: eventflow_store_dynamodb::DynamoDbEventStore, p: std::sync::Arc<impl eventflow_core::Projection>) {
/// use std::sync::Arc;
/// // error: the trait `GlobalFeed` is not implemented for `DynamoDbEventStore`
/// let checkpoints = Arc::new(store.checkpoint_store());
/// let runner = eventflow_core::ProjectionRunner::new(Arc::new(store), p, checkpoints);
/// # }
/// ```
#[derive(Debug)]
pub struct DynamoDbEventStore {
    client: Client,
    config: DynamoDbConfig,
    /// The outbox shard `pending` starts from, rotated so that no shard starves.
    next_shard: AtomicU32,
}

impl Clone for DynamoDbEventStore {
    fn clone(&self) -> Self {
        DynamoDbEventStore {
            client: self.client.clone(),
            config: self.config.clone(),
            next_shard: AtomicU32::new(self.next_shard.load(Ordering::Relaxed)),
        }
    }
}

/// How a transaction ended, when it did not fail outright.
enum Outcome {
    Committed,
    /// The idempotency key was recorded before; the key item's old image, when DynamoDB returned it.
    DuplicateKey(Option<Item>),
    /// A version condition of the request's stream at this index failed.
    VersionConflict(usize),
}

/// Where one stream of a request starts: the version its events follow, whether that version is
/// the caller's condition (`Exact`, `Observed`, `NoStream`) or was just read (`Any`), and whether
/// the transaction must also prove that the stream has reached it. The puts' own
/// `attribute_not_exists` proves nothing was appended after it; only a caller's `Exact` needs the
/// extra existence check, since an `Observed` version was read from the stream and versions never
/// go backwards.
#[derive(Debug, Clone, Copy)]
struct Base {
    version: u64,
    checked: bool,
    must_exist: bool,
}

/// A transaction ready to send, and what it will have written.
struct Plan {
    items: Vec<TransactWriteItem>,
    /// The index (in request order) of the stream each item belongs to; `None` for the key.
    owners: Vec<Option<usize>>,
    /// Index of the idempotency key's put in `items`.
    key_index: Option<usize>,
    result: AppendResult,
}

/// What `request` writes when its streams start at `bases`.
fn result_of(request: &AppendRequest, bases: &[Base], now: chrono::DateTime<Utc>) -> AppendResult {
    let mut streams = request
        .streams()
        .zip(bases)
        .map(|((stream, _, events), base)| {
            let count = events.len() as u64;
            AppendResult::new(
                stream.clone(),
                base.version + 1,
                base.version + count,
                None,
                now,
            )
        });
    let mut result = streams
        .next()
        .unwrap_or_else(|| AppendResult::new(request.stream.clone(), 1, 0, None, now));
    result.other_streams = streams.collect();
    result
}

impl DynamoDbEventStore {
    /// A store using `client` and the tables named in `config`. The tables must exist (see
    /// [`DynamoDbEventStore::create_tables`] and the crate docs for their definitions).
    pub fn new(client: Client, config: DynamoDbConfig) -> Self {
        DynamoDbEventStore {
            client,
            config,
            next_shard: AtomicU32::new(0),
        }
    }

    /// A store configured from the environment: the SDK's usual chain (region, credentials,
    /// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_DYNAMODB`) and [`DynamoDbConfig::from_env`].
    pub async fn from_env() -> Self {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        DynamoDbEventStore::new(Client::new(&sdk), DynamoDbConfig::from_env())
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The configuration.
    pub fn config(&self) -> &DynamoDbConfig {
        &self.config
    }

    /// A snapshot store in this store's meta table.
    pub fn snapshot_store(&self) -> DynamoDbSnapshotStore {
        DynamoDbSnapshotStore::new(self.client.clone(), self.config.meta_table())
    }

    /// A checkpoint store for projections in this store's meta table.
    pub fn checkpoint_store(&self) -> DynamoDbCheckpointStore {
        DynamoDbCheckpointStore::new(self.client.clone(), self.config.meta_table())
    }

    /// Read-model documents in this store's meta table.
    pub fn documents(&self) -> DynamoDbDocuments {
        DynamoDbDocuments::new(self.client.clone(), self.config.meta_table())
    }

    /// Creates the events and meta tables (on-demand capacity) unless they exist, and waits until
    /// they are active. Meant for development and tests; provision production tables with your
    /// infrastructure code (a CloudFormation definition is in the crate docs).
    pub async fn create_tables(&self) -> Result<()> {
        tables::create_tables(&self.client, &self.config).await
    }

    /// Deletes the events and meta tables, and everything in them. For tests and development.
    pub async fn delete_tables(&self) -> Result<()> {
        tables::delete_tables(&self.client, &self.config).await
    }

    /// The stream's current version (0 when it has no events): one strongly consistent `Query`
    /// for the last item.
    pub async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        if stream.as_str().is_empty() {
            return Ok(0);
        }
        let output = self
            .client
            .query()
            .table_name(self.config.events_table())
            .consistent_read(true)
            .key_condition_expression("#s = :s")
            .expression_attribute_names("#s", event_attr::STREAM_ID)
            .expression_attribute_names("#v", event_attr::VERSION)
            .expression_attribute_values(":s", s(stream.as_str()))
            .projection_expression("#v")
            .scan_index_forward(false)
            .limit(1)
            .send()
            .await
            .map_err(|e| sdk_error("Query", e))?;
        match output.items().first() {
            Some(item) => items::get_n(item, event_attr::VERSION),
            None => Ok(0),
        }
    }

    /// Builds the transaction of `request` with its streams at `bases`.
    fn plan(&self, request: &AppendRequest, bases: &[Base]) -> Result<Plan> {
        let events_table = self.config.events_table();
        let meta_table = self.config.meta_table();
        let shards = self.config.outbox_shards();
        let result = result_of(request, bases, Utc::now());
        let now = result.recorded_at;
        let capacity = request.event_count() * if request.outbox { 2 } else { 1 } + 3;
        let mut transaction = Vec::with_capacity(capacity);
        let mut owners = Vec::with_capacity(capacity);
        let mut key_index = None;
        if let Some(key) = &request.idempotency_key {
            key_index = Some(transaction.len());
            transaction.push(put(
                meta_table,
                items::idempotency_item(key, &result),
                meta_attr::PK,
                true,
            )?);
            owners.push(None);
        }
        for (index, ((stream, _, events), base)) in request.streams().zip(bases).enumerate() {
            let mut push = |item| {
                transaction.push(item);
                owners.push(Some(index));
            };
            if base.must_exist && base.version > 0 {
                push(condition_check(
                    events_table,
                    items::event_key(stream, base.version),
                    true,
                )?);
            }
            if events.is_empty() {
                if base.checked {
                    // Nothing to put at base + 1: check it is still free.
                    push(condition_check(
                        events_table,
                        items::event_key(stream, base.version + 1),
                        false,
                    )?);
                }
                continue;
            }
            for (offset, event) in events.iter().enumerate() {
                let version = base.version + 1 + offset as u64;
                let item = items::event_item(stream, version, event, now)?;
                push(put(events_table, item, event_attr::STREAM_ID, false)?);
            }
            if request.outbox {
                for (offset, event) in events.iter().enumerate() {
                    let version = base.version + 1 + offset as u64;
                    let item = items::outbox_item(stream, version, event.event_id, shards);
                    push(put(meta_table, item, meta_attr::PK, false)?);
                }
            }
        }
        Ok(Plan {
            items: transaction,
            owners,
            key_index,
            result,
        })
    }

    /// Builds and sends the transaction of `request` with its streams at `bases`, retrying
    /// cancellations that a retry may cure. The plan is rebuilt for each attempt rather than
    /// cloned, so the common case moves the items into the request without copying them.
    async fn transact(
        &self,
        request: &AppendRequest,
        bases: &[Base],
    ) -> Result<(Outcome, AppendResult)> {
        let retry = self.config.retry();
        let mut attempt = 1;
        loop {
            let Plan {
                mut items,
                owners,
                key_index,
                result,
            } = self.plan(request, bases)?;
            if matches!(items.as_slice(), [only] if only.put.is_some())
                && let Some(put) = items.pop().and_then(|item| item.put)
            {
                let outcome = self.put_one(put, owners[0], key_index.is_some()).await?;
                return Ok((outcome, result));
            }
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await;
            let error = match sent {
                Ok(_) => return Ok((Outcome::Committed, result)),
                Err(error) => error,
            };
            let SdkError::ServiceError(service) = &error else {
                return Err(sdk_error("TransactWriteItems", error));
            };
            let TransactWriteItemsError::TransactionCanceledException(cancelled) = service.err()
            else {
                return Err(sdk_error("TransactWriteItems", error));
            };
            let reasons = cancelled.cancellation_reasons();
            let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
            let failed = |i: usize| code(i) == "ConditionalCheckFailed";
            if let Some(k) = key_index
                && failed(k)
            {
                let image = reasons.get(k).and_then(|r| r.item()).cloned();
                return Ok((Outcome::DuplicateKey(image), result));
            }
            let conflict = (0..owners.len())
                .find(|&i| failed(i))
                .and_then(|i| owners[i]);
            if let Some(stream) = conflict {
                return Ok((Outcome::VersionConflict(stream), result));
            }
            let codes: Vec<&str> = (0..reasons.len()).map(code).collect();
            let transient = codes.iter().any(|c| TRANSIENT_REASONS.contains(c));
            if transient && attempt < retry.max_attempts {
                tracing::debug!(?codes, attempt, "transaction cancelled; retrying");
                tokio::time::sleep(retry.delay(attempt)).await;
                attempt += 1;
                continue;
            }
            tracing::debug!(?codes, attempt, "transaction cancelled; giving up");
            return Err(classified_sdk_error("TransactWriteItems", error, transient));
        }
    }

    /// Writes a plan of one put (one event, no key, no outbox: most commands) as a conditional
    /// `PutItem`. One item is atomic either way, and a `PutItem` costs half the write capacity of a
    /// one-item transaction on DynamoDB (and one table copy less on moto).
    async fn put_one(&self, put: Put, owner: Option<usize>, is_key: bool) -> Result<Outcome> {
        let sent = self
            .client
            .put_item()
            .table_name(put.table_name)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_names(put.expression_attribute_names)
            .set_expression_attribute_values(put.expression_attribute_values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let error = match sent {
            Ok(_) => return Ok(Outcome::Committed),
            Err(error) => error,
        };
        if let SdkError::ServiceError(service) = &error
            && let PutItemError::ConditionalCheckFailedException(failed) = service.err()
        {
            return Ok(match (is_key, owner) {
                (true, _) => Outcome::DuplicateKey(failed.item().cloned()),
                (false, Some(stream)) => Outcome::VersionConflict(stream),
                (false, None) => {
                    return Err(other_error(
                        "PutItem",
                        "the condition of an item of no stream failed",
                        false,
                    ));
                }
            });
        }
        Err(sdk_error("PutItem", error))
    }

    /// The error for a reused idempotency key, with the original result.
    async fn duplicate(&self, key: &str, old_image: Option<Item>) -> Error {
        let original = match old_image {
            Some(item) => items::decode_idempotency(&item).map(Some),
            None => self.find_idempotency_key(key).await,
        };
        match original {
            Ok(Some(original)) => Error::DuplicateIdempotencyKey {
                key: key.to_owned(),
                original: Box::new(original),
            },
            Ok(None) => other_error(
                "TransactWriteItems",
                format!("idempotency key {key:?} was refused as used but cannot be read back"),
                false,
            ),
            Err(error) => error,
        }
    }

    /// Where each stream of `request` starts: the caller's expected version (checked by the
    /// transaction), or for `Any` the head read now.
    async fn bases(&self, request: &AppendRequest) -> Result<Vec<Base>> {
        let mut bases = Vec::with_capacity(1 + request.other_streams.len());
        for (stream, expected, events) in request.streams() {
            let base = match expected {
                ExpectedVersion::Any => Base {
                    version: self.stream_version(stream).await?,
                    checked: false,
                    must_exist: false,
                },
                ExpectedVersion::NoStream => Base {
                    version: 0,
                    checked: true,
                    must_exist: false,
                },
                ExpectedVersion::Exact(version) | ExpectedVersion::Observed(version) => {
                    if version.checked_add(events.len() as u64 + 1).is_none() {
                        return Err(Error::InvalidRequest(format!(
                            "expected version {version} of {stream} leaves no room for {} more events",
                            events.len()
                        )));
                    }
                    Base {
                        version,
                        checked: true,
                        must_exist: matches!(expected, ExpectedVersion::Exact(_)),
                    }
                }
                other => {
                    return Err(Error::InvalidRequest(format!(
                        "expected version {other} is not supported by {BACKEND}"
                    )));
                }
            };
            bases.push(base);
        }
        Ok(bases)
    }

    /// An append that writes nothing (no events, no key) only checks the caller's versions.
    async fn check_versions(
        &self,
        request: &AppendRequest,
        bases: &[Base],
    ) -> Result<AppendResult> {
        for ((stream, expected, _), base) in request.streams().zip(bases) {
            if !base.checked {
                continue;
            }
            let actual = self.stream_version(stream).await?;
            if actual != base.version {
                return Err(Error::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual,
                });
            }
        }
        Ok(result_of(request, bases, Utc::now()))
    }

    /// Appends `request` in one transaction. A conflict on an `Any` stream (its head moved between
    /// the read and the write) is retried from a fresh read; a failed check of a caller's version
    /// is retried only when the stream has since reached that version (it was behind, not ahead).
    async fn append_checked(&self, request: AppendRequest) -> Result<AppendResult> {
        let mut attempt = 1;
        loop {
            let bases = self.bases(&request).await?;
            if request.event_count() == 0 && request.idempotency_key.is_none() {
                return self.check_versions(&request, &bases).await;
            }
            let (outcome, result) = self.transact(&request, &bases).await?;
            let index = match outcome {
                Outcome::Committed => return Ok(result),
                Outcome::DuplicateKey(image) => {
                    let key = request.idempotency_key.as_deref().unwrap_or_default();
                    return Err(self.duplicate(key, image).await);
                }
                Outcome::VersionConflict(index) => index,
            };
            let Some((stream, expected, _)) = request.streams().nth(index) else {
                return Err(other_error(
                    "TransactWriteItems",
                    format!(
                        "a condition of stream #{index} failed, which the request does not have"
                    ),
                    false,
                ));
            };
            let actual = self.stream_version(stream).await?;
            let retry = match expected {
                ExpectedVersion::Any => attempt < self.config.any_attempts(),
                _ => actual == bases[index].version && attempt < self.config.retry().max_attempts,
            };
            if !retry {
                return Err(Error::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual,
                });
            }
            tracing::debug!(%stream, attempt, "append raced; retrying");
            if expected == ExpectedVersion::Any {
                tokio::time::sleep(self.config.retry().delay(attempt)).await;
            }
            attempt += 1;
        }
    }
}

fn names(attribute: &str) -> HashMap<String, String> {
    HashMap::from([("#pk".to_owned(), attribute.to_owned())])
}

/// A put guarded by `attribute_not_exists` on the partition key: it never overwrites.
fn put(
    table: &str,
    item: Item,
    partition_key: &str,
    return_old: bool,
) -> Result<TransactWriteItem> {
    let mut put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#pk)")
        .set_expression_attribute_names(Some(names(partition_key)));
    if return_old {
        put = put
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
    }
    let put = put
        .build()
        .map_err(|e| other_error("TransactWriteItems", e.to_string(), false))?;
    Ok(TransactWriteItem::builder().put(put).build())
}

/// A check that the event item `key` exists (or does not).
fn condition_check(table: &str, key: Item, exists: bool) -> Result<TransactWriteItem> {
    let condition = if exists {
        "attribute_exists(#pk)"
    } else {
        "attribute_not_exists(#pk)"
    };
    let check = ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(key))
        .condition_expression(condition)
        .set_expression_attribute_names(Some(names(event_attr::STREAM_ID)))
        .build()
        .map_err(|e| other_error("TransactWriteItems", e.to_string(), false))?;
    Ok(TransactWriteItem::builder().condition_check(check).build())
}

#[async_trait]
impl EventStore for DynamoDbEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        let footprint = limits::check(&request, self.config.max_outbox_payload_bytes())?;
        let span = tracing::debug_span!(
            "eventflow.dynamodb.append",
            stream = %request.stream,
            expected = %request.expected,
            streams = 1 + request.other_streams.len(),
            events = request.event_count(),
            items = footprint.items,
            bytes = footprint.bytes,
        );
        self.append_checked(request).instrument(span).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        if max_count == 0 || stream.as_str().is_empty() {
            return Ok(Vec::new());
        }
        let from = from_version.max(1);
        let to = from.saturating_add(max_count as u64 - 1);
        let query = self
            .client
            .query()
            .table_name(self.config.events_table())
            .consistent_read(true)
            .key_condition_expression("#s = :s AND #v BETWEEN :from AND :to")
            .expression_attribute_names("#s", event_attr::STREAM_ID)
            .expression_attribute_names("#v", event_attr::VERSION)
            .expression_attribute_values(":s", s(stream.as_str()))
            .expression_attribute_values(":from", n(from))
            .expression_attribute_values(":to", n(to));
        let mut events = Vec::with_capacity(max_count.min(1_000));
        let mut start: Option<Item> = None;
        let mut pages = 0u32;
        loop {
            let remaining = max_count - events.len();
            let output = query
                .clone()
                .limit(i32::try_from(remaining).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            pages += 1;
            for item in output.items() {
                events.push(items::decode_event(item)?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() && events.len() < max_count => start = Some(key),
                _ => break,
            }
        }
        tracing::trace!(stream = %stream, from, count = events.len(), pages, "read stream");
        Ok(events)
    }

    async fn find_idempotency_key(&self, key: &str) -> Result<Option<AppendResult>> {
        let output = self
            .client
            .get_item()
            .table_name(self.config.meta_table())
            .set_key(Some(items::idempotency_key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        output.item().map(items::decode_idempotency).transpose()
    }
}

mod outbox;
