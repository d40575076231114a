//! [`DynamoDbDocuments`]: read models as versioned JSON documents, one item each.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};
use eventflow_core::documents::{Document, DocumentStore, ExpectedDocument};
use eventflow_core::{Error, Result};

use crate::error::sdk_error;
use crate::items::{self, DOCUMENT_PREFIX, Item, meta_attr, n, s};
use crate::meta::{delete_partition, each_item};

/// A [`DocumentStore`] on DynamoDB, in a table keyed like the meta table (`pk` S =
/// `doc#<collection>`, `sk` S = the id, `json` S = the document, `version` N), by default the event
/// store's meta table (see
/// [`DynamoDbEventStore::documents`](crate::DynamoDbEventStore::documents)): where a projection
/// keeps its read model, next to its checkpoints, so that every instance of a service answers
/// queries from the same data.
///
/// A put is one `UpdateItem` that sets the JSON and adds one to the version, with a condition on
/// the version when the writer expects one; DynamoDB's `ConditionalCheckFailed` becomes
/// [`Error::DocumentConflict`] with the version the item had. A document whose item would exceed
/// DynamoDB's 400 KB is refused with [`Error::LimitExceeded`] before any call. Reads are strongly
/// consistent. A collection is one partition: [`list`](DocumentStore::list) is one paginated
/// `Query`, fit for the small collections of a service's own read model (a catalog, a customer's
/// orders in an example); a large one wants a table and indexes of its own.
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

    /// The stored version of a document (0: none), read after a refused put that did not return
    /// the item.
    async fn version_of(&self, collection: &str, id: &str) -> Result<u64> {
        Ok(self
            .get(collection, id)
            .await?
            .map_or(0, |document| document.version))
    }
}

fn partition(collection: &str) -> Result<String> {
    if collection.is_empty() {
        return Err(Error::InvalidRequest("a collection needs a name".into()));
    }
    Ok(format!("{DOCUMENT_PREFIX}{collection}"))
}

fn checked_id<'a>(collection: &str, id: &'a str) -> Result<&'a str> {
    if id.is_empty() {
        return Err(Error::InvalidRequest(format!(
            "a document of {collection} needs an id"
        )));
    }
    Ok(id)
}

fn key(collection: &str, id: &str) -> Result<Item> {
    Ok(HashMap::from([
        (meta_attr::PK.to_owned(), s(partition(collection)?)),
        (meta_attr::SK.to_owned(), s(checked_id(collection, id)?)),
    ]))
}

/// `update` with the condition `expected` asks for. A kind of expectation newer than this backend
/// is refused rather than written without its check.
fn conditioned(
    update: UpdateItemFluentBuilder,
    expected: ExpectedDocument,
) -> Result<UpdateItemFluentBuilder> {
    Ok(match expected {
        ExpectedDocument::Any => update,
        ExpectedDocument::Absent | ExpectedDocument::Version(0) => update
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", meta_attr::PK),
        ExpectedDocument::Version(version) => update
            .condition_expression("#v = :expected")
            .expression_attribute_values(":expected", n(version)),
        _ => {
            return Err(Error::Unsupported {
                backend: crate::BACKEND,
                operation: "a document expectation newer than this backend",
            });
        }
    })
}

fn document(item: &Item) -> Result<Document> {
    Ok(Document::new(
        items::get_s(item, meta_attr::SK)?,
        items::get_n(item, meta_attr::VERSION)?,
        items::get_s(item, meta_attr::JSON)?,
    ))
}

#[async_trait]
impl DocumentStore for DynamoDbDocuments {
    async fn get(&self, collection: &str, id: &str) -> Result<Option<Document>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(collection, id)?))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        output.item().map(document).transpose()
    }

    async fn put(
        &self,
        collection: &str,
        id: &str,
        json: String,
        expected: ExpectedDocument,
    ) -> Result<u64> {
        let key = key(collection, id)?;
        items::check_document_size(&key, &json)?;
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET #json = :json, #v = if_not_exists(#v, :zero) + :one")
            .expression_attribute_names("#json", meta_attr::JSON)
            .expression_attribute_names("#v", meta_attr::VERSION)
            .set_expression_attribute_values(Some(HashMap::from([
                (":json".to_owned(), s(json)),
                (":zero".to_owned(), n(0u64)),
                (":one".to_owned(), n(1u64)),
            ])))
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let sent = conditioned(update, expected)?.send().await;
        if let Err(SdkError::ServiceError(e)) = &sent
            && let UpdateItemError::ConditionalCheckFailedException(failed) = e.err()
        {
            let actual = match failed.item() {
                Some(item) => items::get_n(item, meta_attr::VERSION)?,
                None => self.version_of(collection, id).await?,
            };
            return Err(Error::DocumentConflict {
                collection: collection.to_owned(),
                id: id.to_owned(),
                expected,
                actual,
            });
        }
        let output = sent.map_err(|e| sdk_error("UpdateItem", e))?;
        let attributes = output
            .attributes()
            .ok_or_else(|| Error::backend(crate::BACKEND, "UpdateItem returned no version"))?;
        items::get_n(attributes, meta_attr::VERSION)
    }

    async fn delete(&self, collection: &str, id: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(collection, id)?))
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem", e))?;
        Ok(())
    }

    async fn list(&self, collection: &str) -> Result<Vec<Document>> {
        let mut documents = Vec::new();
        each_item(&self.client, &self.table, &partition(collection)?, |item| {
            documents.push(document(item)?);
            Ok(())
        })
        .await?;
        Ok(documents)
    }

    async fn clear(&self, collection: &str) -> Result<()> {
        delete_partition(&self.client, &self.table, &partition(collection)?).await
    }

    fn max_document_bytes(&self) -> Option<u64> {
        Some(crate::limits::MAX_ITEM_BYTES)
    }
}
