//! Creating and deleting the tables, for development and tests.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::delete_table::DeleteTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use eventflow_core::Result;

use crate::config::DynamoDbConfig;
use crate::error::{other_error, sdk_error};
use crate::items::{event_attr, meta_attr};

/// How long [`create_tables`] waits for a table to become active.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Creates the events table (`stream_id` S hash, `version` N range) and the meta table (`pk` S
/// hash, `sk` S range), both on-demand, unless they exist; waits until both are `ACTIVE`.
pub async fn create_tables(client: &Client, config: &DynamoDbConfig) -> Result<()> {
    create_table(
        client,
        config.events_table(),
        (event_attr::STREAM_ID, ScalarAttributeType::S),
        (event_attr::VERSION, ScalarAttributeType::N),
    )
    .await?;
    create_table(
        client,
        config.meta_table(),
        (meta_attr::PK, ScalarAttributeType::S),
        (meta_attr::SK, ScalarAttributeType::S),
    )
    .await?;
    wait_active(client, config.events_table()).await?;
    wait_active(client, config.meta_table()).await
}

/// Deletes both tables; a table that does not exist is not an error.
pub async fn delete_tables(client: &Client, config: &DynamoDbConfig) -> Result<()> {
    for table in [config.events_table(), config.meta_table()] {
        match client.delete_table().table_name(table).send().await {
            Ok(_) => {}
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), DeleteTableError::ResourceNotFoundException(_)) => {}
            Err(e) => return Err(sdk_error("DeleteTable", e)),
        }
    }
    Ok(())
}

async fn create_table(
    client: &Client,
    table: &str,
    hash: (&str, ScalarAttributeType),
    range: (&str, ScalarAttributeType),
) -> Result<()> {
    let build =
        |e: aws_sdk_dynamodb::error::BuildError| other_error("CreateTable", e.to_string(), false);
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest);
    for ((name, kind), key_type) in [(hash, KeyType::Hash), (range, KeyType::Range)] {
        request = request
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(kind)
                    .build()
                    .map_err(build)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(key_type)
                    .build()
                    .map_err(build)?,
            );
    }
    match request.send().await {
        Ok(_) => Ok(()),
        Err(SdkError::ServiceError(e))
            if matches!(e.err(), CreateTableError::ResourceInUseException(_)) =>
        {
            Ok(())
        }
        Err(e) => Err(sdk_error("CreateTable", e)),
    }
}

async fn wait_active(client: &Client, table: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + ACTIVE_TIMEOUT;
    loop {
        let output = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeTable", e))?;
        let status = output.table().and_then(|t| t.table_status());
        if status == Some(&TableStatus::Active) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(other_error(
                "DescribeTable",
                format!("table {table} not active after {ACTIVE_TIMEOUT:?} (status {status:?})"),
                true,
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
