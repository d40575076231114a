//! Amazon EventBridge, consumed through SQS: [`EventBridgeBus`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::types::{PutEventsRequestEntry, RuleState, Target};
use eventflow_core::bus::{Backoff, BusCapabilities, DeadLetter, DeadLetters, Filter};
use eventflow_core::extension::lock;
use eventflow_core::{
    Error, EventBus, Message, MessageHandler, Result, Subscription, SubscriptionHandle,
};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tokio::sync::OnceCell;
use tracing::Instrument;

use eventflow_aws::{is_transient_code, sdk_error};

use crate::aws::resource_name;
use crate::batch::batch_by_size;
use crate::sqs::{self, SqsQueueOptions, SqsWorkQueue};
use crate::wire;
use crate::work_queue::{DeadLetterQueue, WorkQueue, Worker, WorkerOptions};

/// The backend name in errors.
const BACKEND: &str = "eventbridge";
/// Entries per `PutEvents` call.
pub const MAX_ENTRIES_PER_CALL: usize = 10;
/// Bytes per `PutEvents` call and per entry (256 KiB), counted as AWS counts them: the UTF-8
/// bytes of source, detail-type and detail.
pub const MAX_CALL_BYTES: usize = 256 * 1024;
/// Rule names: at most 64 characters of `[.\-_A-Za-z0-9]`.
const MAX_RULE_NAME: usize = 64;
/// The id of the SQS target on each subscription's rule.
const TARGET_ID: &str = "eventflow-sqs";

/// Configuration of an [`EventBridgeBus`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventBridgeConfig {
    /// The event bus to publish to and to create rules on (`"default"` is the account's default
    /// bus, which is never created).
    pub bus_name: String,
    /// Prefix of every rule and queue name, e.g. `"commerce-"` (default empty).
    pub resource_prefix: String,
    /// Whether `subscribe` creates or updates the rule, the queue, its DLQ and its policy (default
    /// `true`). With `false` the queue `prefix + subscription name` must exist (created by your
    /// infrastructure code) and `subscribe` only consumes it.
    pub provision: bool,
    /// Visibility timeout and retention of provisioned queues; `max_receives` is taken from each
    /// subscription's [`Backoff::max_attempts`]. The visibility timeout defaults to 10 s (the
    /// consumer extends it while a handler runs): it is how long a message a dead consumer held
    /// stays hidden.
    pub queue: SqsQueueOptions,
    /// How long the consumer's long poll waits (default 10 s; also bounds how long `unsubscribe`
    /// takes).
    pub wait_time: Duration,
    /// How entries that failed in a partially failed `PutEvents` are retried (default 8 attempts,
    /// 100 ms doubling to 5 s). Entries still failing after that make `publish` fail with their
    /// error codes; nothing is dropped silently.
    pub publish_retry: Backoff,
    /// `PutEvents` calls of one `publish` in flight at once (default 4).
    pub publish_concurrency: usize,
}

impl EventBridgeConfig {
    /// A configuration for the bus `bus_name` with the defaults.
    pub fn new(bus_name: impl Into<String>) -> Self {
        EventBridgeConfig {
            bus_name: bus_name.into(),
            resource_prefix: String::new(),
            provision: true,
            queue: SqsQueueOptions::default().with_visibility_timeout(Duration::from_secs(10)),
            wait_time: Duration::from_secs(10),
            publish_retry: Backoff::new(8, Duration::from_millis(100), Duration::from_secs(5)),
            publish_concurrency: 4,
        }
    }

    /// Sets the prefix of rule and queue names.
    pub fn with_resource_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.resource_prefix = prefix.into();
        self
    }

    /// Sets whether `subscribe` provisions the rule and queues.
    pub fn with_provision(mut self, provision: bool) -> Self {
        self.provision = provision;
        self
    }

    /// Sets the options of provisioned queues.
    pub fn with_queue_options(mut self, queue: SqsQueueOptions) -> Self {
        self.queue = queue;
        self
    }

    /// Sets the consumer's long-poll wait.
    pub fn with_wait_time(mut self, wait_time: Duration) -> Self {
        self.wait_time = wait_time;
        self
    }

    /// Sets how failed `PutEvents` entries are retried.
    pub fn with_publish_retry(mut self, retry: Backoff) -> Self {
        self.publish_retry = retry;
        self
    }

    /// Sets how many `PutEvents` calls run at once.
    pub fn with_publish_concurrency(mut self, concurrency: usize) -> Self {
        self.publish_concurrency = concurrency.max(1);
        self
    }
}

/// An [`EventBus`] on Amazon EventBridge, each subscription an EventBridge rule targeting an SQS
/// queue with a dead-letter queue.
///
/// **Publish** sends `PutEvents` entries with `detail-type` = message type, `source` = message
/// source and `detail` = the message envelope (id, type, source, payload, attributes, ordering
/// key), batched to at most [`MAX_ENTRIES_PER_CALL`] entries and [`MAX_CALL_BYTES`] per call. An
/// entry over 256 KiB is [`Error::LimitExceeded`] and nothing of the publish is sent. Entries that
/// fail in a partially failed call are sent again (see [`EventBridgeConfig::publish_retry`]).
///
/// **Subscribe** provisions (unless [`EventBridgeConfig::provision`] is off) a rule named after
/// the subscription whose event pattern matches the filter's types (`detail-type`) and sources
/// (`source`), an SQS queue as its target with a policy that lets only that rule send, and a DLQ
/// with a redrive policy of `maxReceiveCount` = `retry.max_attempts`; then it runs a [`Worker`]
/// on the queue: long polls with at most `max_in_flight` messages in flight, unwraps the
/// EventBridge event, deletes on `Ok`, and on `Err` makes the message visible again after
/// `retry.delay(receive count)` rounded up to whole seconds. [`Delivery::attempt`] is SQS's
/// `ApproximateReceiveCount`.
///
/// **Subscriptions are durable**: `unsubscribe` stops the consumer, the rule and the queue stay,
/// and messages published meanwhile wait in the queue for the next `subscribe` of that name.
/// [`delete_subscription`](Self::delete_subscription) removes them.
///
/// **Guarantees on AWS**: at-least-once delivery (SQS standard queues may also deliver a message
/// twice); **no ordering** (EventBridge does not keep order, and an SQS target gets one static
/// message group, so per-key order cannot be had): [`capabilities`](EventBus::capabilities) says
/// `ordering_per_key: false`. Dead letters are SQS's own redrive to the DLQ, listed and redriven
/// through [`DeadLetters`]. A new rule can take a few seconds to apply on AWS (immediately on
/// moto): events put before that do not reach its queue.
///
/// [`Delivery::attempt`]: eventflow_core::Delivery::attempt
#[derive(Clone)]
pub struct EventBridgeBus {
    inner: Arc<Inner>,
}

struct Inner {
    events: aws_sdk_eventbridge::Client,
    sqs: aws_sdk_sqs::Client,
    config: EventBridgeConfig,
    bus_ready: OnceCell<()>,
    /// Subscriptions consumed by this bus value right now (a name is consumed once per bus).
    active: Mutex<HashSet<String>>,
    /// Queues by subscription name, once known.
    queues: Mutex<HashMap<String, SqsWorkQueue>>,
}

impl fmt::Debug for EventBridgeBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBridgeBus")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl EventBridgeBus {
    /// A bus from SDK clients (build them from an `aws_config::SdkConfig`, which reads
    /// `AWS_ENDPOINT_URL`, the region and credentials).
    pub fn new(
        events: aws_sdk_eventbridge::Client,
        sqs: aws_sdk_sqs::Client,
        config: EventBridgeConfig,
    ) -> Self {
        EventBridgeBus {
            inner: Arc::new(Inner {
                events,
                sqs,
                config,
                bus_ready: OnceCell::new(),
                active: Mutex::new(HashSet::new()),
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A bus whose clients come from `sdk_config`.
    pub fn from_sdk_config(sdk_config: &aws_config::SdkConfig, config: EventBridgeConfig) -> Self {
        Self::new(
            aws_sdk_eventbridge::Client::new(sdk_config),
            aws_sdk_sqs::Client::new(sdk_config),
            config,
        )
    }

    /// The configuration.
    pub fn config(&self) -> &EventBridgeConfig {
        &self.inner.config
    }

    /// The SQS queue name of a subscription (its DLQ adds `-dlq`).
    pub fn queue_name(&self, subscription: &str) -> String {
        resource_name(
            &[&self.inner.config.resource_prefix, subscription],
            76,
            false,
        )
    }

    /// The rule name of a subscription.
    pub fn rule_name(&self, subscription: &str) -> String {
        resource_name(
            &[&self.inner.config.resource_prefix, subscription],
            MAX_RULE_NAME,
            true,
        )
    }

    /// The event pattern a subscription's rule uses for `filter`. Every eventflow event matches
    /// the empty filter's pattern (its `detail` has a `messageType`).
    pub fn event_pattern(filter: &Filter) -> serde_json::Value {
        let mut pattern = serde_json::Map::new();
        if !filter.message_types.is_empty() {
            pattern.insert("detail-type".into(), json!(filter.message_types));
        }
        if !filter.sources.is_empty() {
            pattern.insert("source".into(), json!(filter.sources));
        }
        if pattern.is_empty() {
            pattern.insert(
                "detail".into(),
                json!({ "messageType": [{ "exists": true }] }),
            );
        }
        serde_json::Value::Object(pattern)
    }

    /// Creates the event bus if it does not exist (never the `"default"` bus).
    pub async fn ensure_event_bus(&self) -> Result<()> {
        self.inner
            .bus_ready
            .get_or_try_init(|| async {
                let name = &self.inner.config.bus_name;
                if name == "default" {
                    return Ok(());
                }
                match self.inner.events.create_event_bus().name(name).send().await {
                    Ok(_) => {
                        tracing::info!(bus = %name, "EventBridge bus created");
                        Ok(())
                    }
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_resource_already_exists_exception()) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(sdk_error(BACKEND, "CreateEventBus", e)),
                }
            })
            .await
            .map(|_| ())
    }

    /// Creates or updates everything a subscription needs: the bus, the queue and its DLQ (redrive
    /// after `retry.max_attempts` receives), the rule with the filter's pattern, the queue policy
    /// that lets the rule send, and the rule's target. Idempotent.
    pub async fn provision_subscription(
        &self,
        subscription: &Subscription,
    ) -> Result<SqsWorkQueue> {
        self.ensure_event_bus().await?;
        let config = &self.inner.config;
        let queue_name = self.queue_name(&subscription.name);
        let options = config
            .queue
            .clone()
            .with_max_receives(Some(subscription.retry.max_attempts))
            .with_fifo(false);
        let queue = SqsWorkQueue::provision(self.inner.sqs.clone(), &queue_name, &options)
            .await?
            .with_logical_name(&subscription.name);
        let queue_arn = queue.arn().await?;
        let rule_name = self.rule_name(&subscription.name);
        let rule = self
            .inner
            .events
            .put_rule()
            .name(&rule_name)
            .event_bus_name(&config.bus_name)
            .event_pattern(Self::event_pattern(&subscription.filter).to_string())
            .state(RuleState::Enabled)
            .description(format!("eventflow subscription {}", subscription.name))
            .send()
            .await
            .map_err(|e| sdk_error(BACKEND, "PutRule", e))?;
        let rule_arn = rule.rule_arn().unwrap_or_default().to_owned();
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "eventflow-eventbridge-to-sqs",
                "Effect": "Allow",
                "Principal": { "Service": "events.amazonaws.com" },
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": { "ArnEquals": { "aws:SourceArn": rule_arn } },
            }],
        });
        queue.set_policy(&policy.to_string()).await?;
        let target = Target::builder()
            .id(TARGET_ID)
            .arn(&queue_arn)
            .build()
            .map_err(|e| Error::backend(BACKEND, e))?;
        let targets = self
            .inner
            .events
            .put_targets()
            .rule(&rule_name)
            .event_bus_name(&config.bus_name)
            .targets(target)
            .send()
            .await
            .map_err(|e| sdk_error(BACKEND, "PutTargets", e))?;
        if targets.failed_entry_count() > 0 {
            return Err(Error::backend(
                BACKEND,
                format!(
                    "PutTargets failed for rule {rule_name}: {:?}",
                    targets.failed_entries()
                ),
            ));
        }
        tracing::info!(subscription = %subscription.name, rule = %rule_name, queue = %queue_name, "EventBridge subscription provisioned");
        lock(&self.inner.queues).insert(subscription.name.clone(), queue.clone());
        Ok(queue)
    }

    /// Removes a subscription's rule, queue and DLQ (development and tests). Missing pieces are
    /// not an error.
    pub async fn delete_subscription(&self, subscription: &str) -> Result<()> {
        let config = &self.inner.config;
        let rule_name = self.rule_name(subscription);
        let removed = self
            .inner
            .events
            .remove_targets()
            .rule(&rule_name)
            .event_bus_name(&config.bus_name)
            .ids(TARGET_ID)
            .send()
            .await;
        if let Err(e) = removed
            && !e
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception())
        {
            return Err(sdk_error(BACKEND, "RemoveTargets", e));
        }
        let deleted = self
            .inner
            .events
            .delete_rule()
            .name(&rule_name)
            .event_bus_name(&config.bus_name)
            .send()
            .await;
        if let Err(e) = deleted
            && !e
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception())
        {
            return Err(sdk_error(BACKEND, "DeleteRule", e));
        }
        lock(&self.inner.queues).remove(subscription);
        if let Some(queue) = self.existing_queue(subscription).await? {
            queue.delete().await?;
        }
        Ok(())
    }

    /// The subscription's queue, if it exists.
    async fn existing_queue(&self, subscription: &str) -> Result<Option<SqsWorkQueue>> {
        if let Some(queue) = lock(&self.inner.queues).get(subscription) {
            return Ok(Some(queue.clone()));
        }
        let name = self.queue_name(subscription);
        let Some(url) = sqs::queue_url(&self.inner.sqs, &name).await? else {
            return Ok(None);
        };
        let queue = SqsWorkQueue::open_url(self.inner.sqs.clone(), subscription, url).await?;
        lock(&self.inner.queues).insert(subscription.to_owned(), queue.clone());
        Ok(Some(queue))
    }

    fn entry(&self, message: &Message) -> Result<(PutEventsRequestEntry, usize)> {
        if message.id.is_empty() || message.message_type.is_empty() || message.source.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "message {:?}: EventBridge needs a non-empty id, message type and source",
                message.id
            )));
        }
        let detail_type = message.message_type.chars().count();
        if detail_type > MAX_DETAIL_TYPE_CHARS {
            return Err(Error::LimitExceeded {
                limit: "EventBridge DetailType (characters)",
                actual: detail_type as u64,
                max: MAX_DETAIL_TYPE_CHARS as u64,
            });
        }
        let detail = wire::encode(message)?;
        let size = message.source.len() + message.message_type.len() + detail.len();
        if size > MAX_CALL_BYTES {
            return Err(Error::LimitExceeded {
                limit: "EventBridge PutEvents entry size (bytes)",
                actual: size as u64,
                max: MAX_CALL_BYTES as u64,
            });
        }
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.inner.config.bus_name)
            .source(&message.source)
            .detail_type(&message.message_type)
            .detail(detail)
            .build();
        Ok((entry, size))
    }

    /// One batch: `PutEvents`, then the failed entries again until none is left.
    async fn put_batch(&self, batch: Vec<(String, PutEventsRequestEntry)>) -> Result<()> {
        let retry = self.inner.config.publish_retry;
        let mut pending = batch;
        let mut attempt = 1;
        loop {
            let entries: Vec<PutEventsRequestEntry> =
                pending.iter().map(|(_, entry)| entry.clone()).collect();
            let output = self
                .inner
                .events
                .put_events()
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_error(BACKEND, "PutEvents", e))?;
            if output.failed_entry_count() == 0 {
                return Ok(());
            }
            // Result entries are in request order.
            let mut failed = Vec::new();
            let mut codes = Vec::new();
            for (item, result) in pending.into_iter().zip(output.entries()) {
                if let Some(code) = result.error_code() {
                    codes.push(format!(
                        "{} ({code}: {})",
                        item.0,
                        result.error_message().unwrap_or_default()
                    ));
                    failed.push((item, code.to_owned()));
                }
            }
            if failed.iter().any(|(_, code)| entry_refused_for_good(code)) {
                // Retrying cannot help: the relay publishes entry by entry and parks the refused.
                return Err(Error::InvalidRequest(format!(
                    "PutEvents refused {} entries: {}",
                    failed.len(),
                    codes.join(", ")
                )));
            }
            tracing::warn!(failed = failed.len(), attempt, errors = ?codes, "PutEvents partially failed; retrying the failed entries");
            if attempt >= retry.max_attempts {
                let message = format!(
                    "PutEvents: {} entries still failing after {attempt} attempts: {}",
                    failed.len(),
                    codes.join(", ")
                );
                return Err(if failed.iter().any(|(_, code)| is_transient_code(code)) {
                    Error::transient(BACKEND, message)
                } else {
                    Error::backend(BACKEND, message)
                });
            }
            pending = failed.into_iter().map(|(item, _)| item).collect();
            tokio::time::sleep(retry.delay(attempt)).await;
            attempt += 1;
        }
    }
}

/// The longest `DetailType` (a message's type) EventBridge accepts.
const MAX_DETAIL_TYPE_CHARS: usize = 128;

/// Whether a `PutEvents` entry's error code says the entry itself is invalid, so that sending it
/// again can never succeed. `MalformedDetail` is not among them: eventflow always sends the JSON
/// it encoded, so that code means the entry was damaged on the way, and is retried.
fn entry_refused_for_good(code: &str) -> bool {
    matches!(code, "InvalidArgument" | "ValidationException")
}

#[async_trait]
impl EventBus for EventBridgeBus {
    async fn publish(&self, messages: Vec<Message>) -> Result<()> {
        let mut sized = Vec::with_capacity(messages.len());
        for message in &messages {
            let (entry, size) = self.entry(message)?;
            sized.push((size, (message.id.clone(), entry)));
        }
        let batches = batch_by_size(sized, MAX_ENTRIES_PER_CALL, MAX_CALL_BYTES);
        let span = tracing::info_span!(
            "eventflow.publish",
            backend = BACKEND,
            messages = messages.len(),
            calls = batches.len()
        );
        futures::stream::iter(batches.into_iter().map(|batch| self.put_batch(batch)))
            .buffer_unordered(self.inner.config.publish_concurrency.max(1))
            .try_collect::<Vec<()>>()
            .instrument(span)
            .await?;
        Ok(())
    }

    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<SubscriptionHandle> {
        let name = subscription.name.clone();
        if name.is_empty() {
            return Err(Error::InvalidRequest("subscription name is empty".into()));
        }
        if !lock(&self.inner.active).insert(name.clone()) {
            return Err(Error::InvalidRequest(format!(
                "subscription {name:?} is already active on this bus"
            )));
        }
        let started = self.start_consumer(&subscription, handler).await;
        let worker = match started {
            Ok(worker) => worker,
            Err(error) => {
                lock(&self.inner.active).remove(&name);
                return Err(error);
            }
        };
        let inner = Arc::clone(&self.inner);
        Ok(SubscriptionHandle::new(name.clone(), move || async move {
            worker.unsubscribe().await;
            lock(&inner.active).remove(&name);
        }))
    }

    fn capabilities(&self) -> BusCapabilities {
        BusCapabilities::new(false, true)
    }

    /// `DescribeEventBus` on the bus.
    async fn health_check(&self) -> Result<()> {
        self.inner
            .events
            .describe_event_bus()
            .name(&self.inner.config.bus_name)
            .send()
            .await
            .map(drop)
            .map_err(|e| sdk_error(BACKEND, "DescribeEventBus", e))
    }
}

impl EventBridgeBus {
    async fn start_consumer(
        &self,
        subscription: &Subscription,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<SubscriptionHandle> {
        let queue =
            if self.inner.config.provision {
                self.provision_subscription(subscription).await?
            } else {
                self.existing_queue(&subscription.name).await?.ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "SQS queue {} of subscription {:?} does not exist (provisioning is off)",
                    self.queue_name(&subscription.name),
                    subscription.name
                ))
            })?
            };
        let options = WorkerOptions::new()
            .with_max_in_flight(subscription.max_in_flight)
            .with_retry(subscription.retry)
            .with_filter(subscription.filter.clone())
            .with_wait_time(self.inner.config.wait_time);
        let queue: Arc<dyn WorkQueue> = Arc::new(queue);
        Worker::new(queue, handler)
            .with_options(options)
            .with_backend(BACKEND)
            .start()
    }
}

#[async_trait]
impl DeadLetters for EventBridgeBus {
    /// Peeks the subscription's DLQ (see [`SqsWorkQueue`]); an unknown subscription has none.
    async fn dead_letters(&self, subscription: &str, max: usize) -> Result<Vec<DeadLetter>> {
        match self.existing_queue(subscription).await? {
            Some(queue) => queue.dead_letters(max).await,
            None => Ok(Vec::new()),
        }
    }

    /// Moves the subscription's dead letters back to its queue, where they wait for a consumer
    /// if none is running; an unknown subscription is [`Error::InvalidRequest`].
    async fn redrive(&self, subscription: &str) -> Result<usize> {
        let queue = self.existing_queue(subscription).await?.ok_or_else(|| {
            Error::InvalidRequest(format!(
                "cannot redrive: no queue for subscription {subscription:?}"
            ))
        })?;
        queue.redrive().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_patterns() {
        assert_eq!(
            EventBridgeBus::event_pattern(&Filter::all()),
            json!({ "detail": { "messageType": [{ "exists": true }] } })
        );
        assert_eq!(
            EventBridgeBus::event_pattern(&Filter::all().message_type("A").source("s")),
            json!({ "detail-type": ["A"], "source": ["s"] })
        );
    }
}
