//! [`DynamoDbDocuments`]: read models as JSON documents, one item each.

use aws_sdk_dynamodb::Client;
use eventflow_core::{Error, Result};

use crate::error::sdk_error;
use crate::items::{self, DOCUMENT_PREFIX, meta_attr, s};
use crate::meta::{delete_partition, each_item};

/// JSON documents by collection and id, in a table keyed like the meta table (`pk` S =
/// `doc#<collection>`, `sk` S = the id, `json` S = the document), by default the event store's
/// meta table (see [`DynamoDbEventStore::documents`](crate::DynamoDbEventStore::documents)): where
/// a projection keeps its read model, next to its checkpoints, so that every instance of a service
/// answers queries from the same data.
///
/// Reads are strongly consistent. A collection is one partition: [`all`](Self::all) is one
/// paginated `Query`, fit for the small collections of a service's own read model (a catalog, a
/// customer's orders in an example); a large one wants a table and indexes of its own.
#[derive(Debug, Clone)]
pub struct DynamoDbDocuments {
    client: Client,
    table: String,
}

impl DynamoDbDocuments {
    /// Documents in `table` (which has the meta table's key schema).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDbDocuments {
            client,
            table: table.into(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The document `id` of `collection`, if there is one.
    pub async fn get(&self, collection: &str, id: &str) -> Result<Option<String>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(meta_attr::PK, s(partition(collection)?))
            .key(meta_attr::SK, s(checked_id(id)?))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        output
            .item()
            .map(|item| items::get_s(item, meta_attr::JSON).map(str::to_owned))
            .transpose()
    }

    /// Stores `json` as the document `id` of `collection`, replacing what was there. A document
    /// over DynamoDB's item size limit is refused with [`Error::LimitExceeded`].
    pub async fn put(&self, collection: &str, id: &str, json: String) -> Result<()> {
        let item = std::collections::HashMap::from([
            (meta_attr::PK.to_owned(), s(partition(collection)?)),
            (meta_attr::SK.to_owned(), s(checked_id(id)?)),
            (meta_attr::JSON.to_owned(), s(json)),
        ]);
        items::check_size(&item)?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_error("PutItem", e))?;
        Ok(())
    }

    /// Every document of `collection`, in id order.
    pub async fn all(&self, collection: &str) -> Result<Vec<String>> {
        let mut documents = Vec::new();
        each_item(&self.client, &self.table, &partition(collection)?, |item| {
            documents.push(items::get_s(item, meta_attr::JSON)?.to_owned());
            Ok(())
        })
        .await?;
        Ok(documents)
    }

    /// Deletes every document of `collection`.
    pub async fn clear(&self, collection: &str) -> Result<()> {
        delete_partition(&self.client, &self.table, &partition(collection)?).await
    }
}

fn partition(collection: &str) -> Result<String> {
    if collection.is_empty() {
        return Err(Error::InvalidRequest("a collection needs a name".into()));
    }
    Ok(format!("{DOCUMENT_PREFIX}{collection}"))
}

fn checked_id(id: &str) -> Result<&str> {
    if id.is_empty() {
        return Err(Error::InvalidRequest("a document needs an id".into()));
    }
    Ok(id)
}
