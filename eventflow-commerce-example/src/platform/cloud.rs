//! The distributed mode's backends: each context's event store, outbox, snapshots, checkpoints
//! and read models in its own pair of DynamoDB tables; events on EventBridge + SQS or Pub/Sub;
//! the notification work queue on SQS.

use std::sync::Arc;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;
use eventflow_bus::{AnyBus, DeadLetterQueue, QueueSettings};
use eventflow_core::{EventBus, Result};
use eventflow_store_dynamodb::{DynamoDbConfig, DynamoDbEventStore};

use crate::platform::config::{CloudSettings, SERVICES};
use crate::platform::startup::StartError;

/// Connected cloud backends, shared by the contexts of one process.
#[derive(Debug)]
pub(crate) struct Cloud {
    settings: CloudSettings,
    bus: Arc<AnyBus>,
    dynamodb: aws_sdk_dynamodb::Client,
}

impl Cloud {
    /// Connects the bus the settings name (creating its topic or bus, and later each
    /// subscription's queue, unless `EVENTFLOW_PROVISION=false`) and a DynamoDB client.
    pub(crate) async fn connect(settings: &CloudSettings) -> Result<Cloud, StartError> {
        let bus = eventflow_bus::from_lookup(|name| settings.get(name))
            .await
            .map_err(|e| StartError::wiring("event bus", e))?;
        Ok(Cloud {
            settings: settings.clone(),
            bus: Arc::new(bus),
            dynamodb: dynamodb_client(settings).await,
        })
    }

    /// How long the bus may take to deliver again a message a dead process held.
    pub(crate) fn redelivery(&self) -> Option<eventflow_bus::Redelivery> {
        self.bus.redelivery()
    }

    pub(crate) fn bus(&self) -> Arc<dyn EventBus> {
        Arc::clone(&self.bus) as Arc<dyn EventBus>
    }

    /// `service`'s event store, on its own tables.
    pub(crate) fn event_store(&self, service: &str) -> DynamoDbEventStore {
        let (events, meta) = self.settings.tables_of(service);
        DynamoDbEventStore::new(self.dynamodb.clone(), DynamoDbConfig::new(events, meta))
    }

    /// Creates every service's tables that do not exist yet, and waits until they are active.
    pub(crate) async fn create_tables(&self) -> Result<(), StartError> {
        for service in SERVICES {
            self.event_store(service)
                .create_tables()
                .await
                .map_err(|e| StartError::wiring("creating tables", e))?;
        }
        Ok(())
    }

    /// The SQS queue `settings` names, shared by every instance of its consumer, with a
    /// dead-letter queue after `max_receives`.
    pub(crate) async fn work_queue(
        &self,
        settings: &QueueSettings,
    ) -> Result<Arc<dyn DeadLetterQueue>, StartError> {
        eventflow_bus::work_queue_from_lookup(settings.clone(), |name| match name {
            "WORK_QUEUE_ADAPTER" => Some("sqs".to_owned()),
            other => self.settings.get(other),
        })
        .await
        .map_err(|e| StartError::wiring("work queue", e))
    }
}

/// A DynamoDB client for the settings' region and endpoint (`AWS_ENDPOINT_URL_DYNAMODB`, else
/// `AWS_ENDPOINT_URL`), with short timeouts so that an unreachable database shows as a failed
/// readiness check rather than a hung request.
async fn dynamodb_client(settings: &CloudSettings) -> aws_sdk_dynamodb::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_attempt_timeout(Duration::from_secs(10))
            .build(),
    );
    if let Some(region) = settings
        .get("AWS_REGION")
        .or_else(|| settings.get("AWS_DEFAULT_REGION"))
    {
        loader = loader.region(Region::new(region));
    }
    if let Some(endpoint) = settings
        .get("AWS_ENDPOINT_URL_DYNAMODB")
        .or_else(|| settings.get("AWS_ENDPOINT_URL"))
    {
        loader = loader.endpoint_url(endpoint);
    }
    if let (Some(key), Some(secret)) = (
        settings.get("AWS_ACCESS_KEY_ID"),
        settings.get("AWS_SECRET_ACCESS_KEY"),
    ) {
        loader = loader.credentials_provider(Credentials::new(
            key,
            secret,
            settings.get("AWS_SESSION_TOKEN"),
            None,
            "environment",
        ));
    }
    aws_sdk_dynamodb::Client::new(&loader.load().await)
}
