//! Operations on meta-table partitions shared by snapshots, checkpoints and documents.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use eventflow_core::Result;

use crate::error::sdk_error;
use crate::items::{self, Item, meta_attr, n, s};

/// Puts `item` unless the stored item has a greater `attribute` than `value`: what never moves
/// backwards (a snapshot's version, a checkpoint) keeps its latest value whichever writer is
/// slower. A refused put is not an error.
pub(crate) async fn put_unless_behind(
    client: &Client,
    table: &str,
    item: Item,
    attribute: &str,
    value: u64,
) -> Result<()> {
    let sent = client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#pk) OR #v <= :v")
        .expression_attribute_names("#pk", meta_attr::PK)
        .expression_attribute_names("#v", attribute)
        .expression_attribute_values(":v", n(value))
        .send()
        .await;
    match sent {
        Ok(_) => Ok(()),
        Err(SdkError::ServiceError(e))
            if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
        {
            Ok(())
        }
        Err(e) => Err(sdk_error("PutItem", e)),
    }
}

/// Calls `each` with every item of the partition `pk`, in sort-key order.
pub(crate) async fn each_item(
    client: &Client,
    table: &str,
    pk: &str,
    mut each: impl FnMut(&items::Item) -> Result<()>,
) -> Result<()> {
    let mut start = None;
    loop {
        let page = client
            .query()
            .table_name(table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", meta_attr::PK)
            .expression_attribute_values(":pk", s(pk))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| sdk_error("Query", e))?;
        for item in page.items() {
            each(item)?;
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(());
        }
    }
}

/// Deletes every item of the partition `pk` (one `DeleteItem` each: for rare resets).
pub(crate) async fn delete_partition(client: &Client, table: &str, pk: &str) -> Result<()> {
    let mut sort_keys = Vec::new();
    each_item(client, table, pk, |item| {
        sort_keys.push(items::get_s(item, meta_attr::SK)?.to_owned());
        Ok(())
    })
    .await?;
    for sk in sort_keys {
        client
            .delete_item()
            .table_name(table)
            .key(meta_attr::PK, s(pk))
            .key(meta_attr::SK, s(sk))
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem", e))?;
    }
    Ok(())
}
