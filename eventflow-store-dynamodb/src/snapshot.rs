//! [`DynamoDbSnapshotStore`]: the latest snapshot per stream, one item each.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use bytes::Bytes;
use eventflow_core::{Error, Result, Snapshot, SnapshotStore, StreamId};

use crate::error::sdk_error;
use crate::items::{self, Item, SNAPSHOT_PREFIX, SNAPSHOT_SK, meta_attr, n, s};
use crate::meta::put_unless_behind;

/// A [`SnapshotStore`] on DynamoDB: one item per stream in a table keyed like the meta table
/// (`pk` S = `snapshot#<stream id>`, `sk` S = `snapshot`), by default the event store's meta table
/// (see [`DynamoDbEventStore::snapshot_store`](crate::DynamoDbEventStore::snapshot_store)).
///
/// `save` is one conditional `PutItem` that never replaces a snapshot of a later version, so
/// concurrent savers cannot move a stream's snapshot backwards. `load` is a strongly consistent
/// `GetItem`. A snapshot's state must fit DynamoDB's 400 KB item limit; a larger one is refused with
/// [`Error::LimitExceeded`].
#[derive(Debug, Clone)]
pub struct DynamoDbSnapshotStore {
    client: Client,
    table: String,
}

impl DynamoDbSnapshotStore {
    /// A snapshot store in `table` (which has the meta table's key schema).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDbSnapshotStore {
            client,
            table: table.into(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }
}

fn key(stream: &StreamId) -> Item {
    HashMap::from([
        (
            meta_attr::PK.to_owned(),
            s(format!("{SNAPSHOT_PREFIX}{}", stream.as_str())),
        ),
        (meta_attr::SK.to_owned(), s(SNAPSHOT_SK)),
    ])
}

fn decode(item: &Item) -> Result<Snapshot> {
    let state = match item.get(meta_attr::STATE) {
        Some(aws_sdk_dynamodb::types::AttributeValue::S(state)) => Bytes::from(state.clone()),
        Some(aws_sdk_dynamodb::types::AttributeValue::B(state)) => {
            Bytes::from(state.clone().into_inner())
        }
        _ => {
            return Err(items::corrupt(
                meta_attr::STATE,
                "missing or neither S nor B",
            ));
        }
    };
    let mut snapshot = Snapshot::new(
        StreamId::new(items::get_s(item, meta_attr::STREAM_ID)?),
        items::get_n(item, meta_attr::VERSION)?,
        items::get_n(item, meta_attr::FORMAT_VERSION)?,
        state,
    );
    snapshot.taken_at = items::get_time(item, meta_attr::TAKEN_AT)?;
    Ok(snapshot)
}

#[async_trait]
impl SnapshotStore for DynamoDbSnapshotStore {
    async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        if stream.as_str().is_empty() {
            return Ok(None);
        }
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(stream)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        output.item().map(decode).transpose()
    }

    async fn save(&self, snapshot: Snapshot) -> Result<()> {
        if snapshot.stream_id.as_str().is_empty() {
            return Err(Error::InvalidRequest("stream id is empty".into()));
        }
        let mut item = key(&snapshot.stream_id);
        item.insert(
            meta_attr::STREAM_ID.to_owned(),
            s(snapshot.stream_id.as_str()),
        );
        item.insert(meta_attr::VERSION.to_owned(), n(snapshot.version));
        item.insert(
            meta_attr::FORMAT_VERSION.to_owned(),
            n(snapshot.format_version),
        );
        let state = match std::str::from_utf8(&snapshot.state) {
            Ok(text) => s(text),
            Err(_) => aws_sdk_dynamodb::types::AttributeValue::B(
                aws_sdk_dynamodb::primitives::Blob::new(snapshot.state.to_vec()),
            ),
        };
        item.insert(meta_attr::STATE.to_owned(), state);
        item.insert(
            meta_attr::TAKEN_AT.to_owned(),
            items::timestamp(snapshot.taken_at),
        );
        items::check_size(&item)?;
        // A snapshot of a later version stored already is kept.
        put_unless_behind(
            &self.client,
            &self.table,
            item,
            meta_attr::VERSION,
            snapshot.version,
        )
        .await
    }
}
