//! [`DynamoDbCheckpointStore`]: a projection's progress, one item per key.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use eventflow_core::{CheckpointStore, Error, Result};

use crate::error::sdk_error;
use crate::items::{self, CHECKPOINT_PREFIX, Item, meta_attr, n, s};
use crate::meta::{delete_partition, put_unless_behind};

/// A [`CheckpointStore`] on DynamoDB, in a table keyed like the meta table: one item per
/// checkpoint (`pk` S = `checkpoint#<projection>`, `sk` S = the key, `value` N), by default the
/// event store's meta table (see
/// [`DynamoDbEventStore::checkpoint_store`](crate::DynamoDbEventStore::checkpoint_store)).
///
/// `save` is one conditional `PutItem` that never moves a checkpoint backwards, so two instances
/// of one projector (competing consumers of one queue) cannot undo each other's progress; `load`
/// is a strongly consistent `GetItem`; `reset` deletes the projection's partition.
#[derive(Debug, Clone)]
pub struct DynamoDbCheckpointStore {
    client: Client,
    table: String,
}

impl DynamoDbCheckpointStore {
    /// A checkpoint store in `table` (which has the meta table's key schema).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDbCheckpointStore {
            client,
            table: table.into(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }
}

fn partition(projection: &str) -> String {
    format!("{CHECKPOINT_PREFIX}{projection}")
}

fn key(projection: &str, key: &str) -> Result<Item> {
    if projection.is_empty() || key.is_empty() {
        return Err(Error::InvalidRequest(
            "a checkpoint needs a projection name and a key".into(),
        ));
    }
    Ok(HashMap::from([
        (meta_attr::PK.to_owned(), s(partition(projection))),
        (meta_attr::SK.to_owned(), s(key)),
    ]))
}

#[async_trait]
impl CheckpointStore for DynamoDbCheckpointStore {
    async fn load(&self, projection: &str, checkpoint: &str) -> Result<Option<u64>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(projection, checkpoint)?))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        output
            .item()
            .map(|item| items::get_n(item, meta_attr::VALUE))
            .transpose()
    }

    async fn save(&self, projection: &str, checkpoint: &str, value: u64) -> Result<()> {
        let mut item = key(projection, checkpoint)?;
        item.insert(meta_attr::VALUE.to_owned(), n(value));
        // Another instance that got further keeps its checkpoint.
        put_unless_behind(&self.client, &self.table, item, meta_attr::VALUE, value).await
    }

    async fn reset(&self, projection: &str) -> Result<()> {
        delete_partition(&self.client, &self.table, &partition(projection)).await
    }
}
