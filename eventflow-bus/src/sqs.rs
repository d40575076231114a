//! Amazon SQS: the [`WorkQueue`] implementation and the queue provisioning helpers the
//! EventBridge adapter builds on.
//!
//! A queue named `N` gets a dead-letter queue `N-dlq` (`N-dlq.fifo` for FIFO queues) and a redrive
//! policy with `maxReceiveCount` = [`SqsQueueOptions::max_receives`]. On AWS this is exactly what
//! happens: SQS itself moves a message that was received `maxReceiveCount` times to the DLQ on
//! the next receive; nothing here depends on the consumer staying alive.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use eventflow_core::bus::{Backoff, DeadLetter};
use eventflow_core::{Error, Message, Result};
use serde_json::json;

use eventflow_aws::{error_code, is_transient_code, sdk_error};

use crate::aws::resource_name;
use crate::batch::batch_by_size;
use crate::wire;
use crate::work_queue::{
    DeadLetterQueue, QueueSettings, Receipt, ReceivedMessage, Settlement, WorkQueue,
};

/// The backend name in errors.
pub(crate) const BACKEND: &str = "sqs";

/// The largest message SQS takes (256 KiB, the classic limit; checked before sending).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Messages per `SendMessageBatch` / `ReceiveMessage` call.
const MAX_BATCH: usize = 10;
/// SQS's longest long poll.
const MAX_WAIT_SECONDS: u64 = 20;
/// SQS's longest visibility timeout (12 hours).
const MAX_VISIBILITY_SECONDS: u64 = 43_200;
/// Queue names: at most 80 characters of `[A-Za-z0-9_-]` (the `.fifo` suffix included).
const MAX_QUEUE_NAME: usize = 80;

/// How [`SqsWorkQueue::provision`] creates a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqsQueueOptions {
    /// The queue's visibility timeout (default 30 s; SQS counts whole seconds).
    pub visibility_timeout: Duration,
    /// Receives before a message moves to the dead-letter queue (default 5); `None`: no DLQ.
    pub max_receives: Option<u32>,
    /// How long the queue keeps a message (default 4 days; the DLQ always keeps 14 days, the
    /// maximum, so dead letters outlive the messages they came from).
    pub retention: Duration,
    /// A FIFO queue (`.fifo` is appended to the name): messages with the same ordering key are
    /// received in order, one group at a time, and a message id is deduplicated for 5 minutes.
    pub fifo: bool,
}

impl Default for SqsQueueOptions {
    fn default() -> Self {
        SqsQueueOptions {
            visibility_timeout: Duration::from_secs(30),
            max_receives: Some(5),
            retention: Duration::from_secs(4 * 24 * 3600),
            fifo: false,
        }
    }
}

impl SqsQueueOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the visibility timeout.
    pub fn with_visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// Sets the receives before dead-lettering (`None`: no dead-letter queue).
    pub fn with_max_receives(mut self, max_receives: Option<u32>) -> Self {
        self.max_receives = max_receives.map(|n| n.clamp(1, 1000));
        self
    }

    /// Sets the retention period.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Makes the queue a FIFO queue.
    pub fn with_fifo(mut self, fifo: bool) -> Self {
        self.fifo = fifo;
        self
    }
}

/// A [`WorkQueue`] on an SQS queue (standard or FIFO) with its dead-letter queue.
///
/// - `send` uses `SendMessageBatch` (10 messages and 256 KiB a call); entries that fail in a
///   partially failed call are retried, and a message larger than [`MAX_MESSAGE_BYTES`] is
///   [`Error::LimitExceeded`] before anything is sent. The body is the message envelope (JSON).
/// - `receive` is a long poll (`WaitTimeSeconds` ≤ 20) asking for `ApproximateReceiveCount`, which
///   becomes [`ReceivedMessage::receive_count`]. A body that does not decode is logged and left
///   alone: the redrive policy moves it to the DLQ.
/// - `change_visibility` rounds up to whole seconds (SQS's granularity), at most 12 hours.
/// - `dead_letters` peeks the DLQ: it receives with a visibility timeout and makes what it saw
///   visible again at once, so two listings running at the same time may each see only part.
/// - `redrive` moves every DLQ message back to the queue (send, then delete from the DLQ); the
///   moved message is new, so its receive count starts over.
#[derive(Debug, Clone)]
pub struct SqsWorkQueue {
    client: Client,
    url: String,
    dlq_url: Option<String>,
    settings: QueueSettings,
    fifo: bool,
    publish_retry: Backoff,
}

impl SqsWorkQueue {
    /// Creates the queue `queue_name` (and its DLQ) if missing, or brings an existing one's
    /// attributes in line with `options`, and returns it.
    pub async fn provision(
        client: Client,
        queue_name: &str,
        options: &SqsQueueOptions,
    ) -> Result<SqsWorkQueue> {
        let base = queue_name.strip_suffix(".fifo").unwrap_or(queue_name);
        let suffix = if options.fifo { ".fifo" } else { "" };
        let name = resource_name(&[base], MAX_QUEUE_NAME - suffix.len(), false) + suffix;
        let mut attributes = vec![
            (
                QueueAttributeName::VisibilityTimeout,
                whole_seconds(options.visibility_timeout, MAX_VISIBILITY_SECONDS).to_string(),
            ),
            (
                QueueAttributeName::MessageRetentionPeriod,
                options.retention.as_secs().clamp(60, 1_209_600).to_string(),
            ),
        ];
        let mut dlq_url = None;
        if let Some(max_receives) = options.max_receives {
            let dlq_name =
                resource_name(&[base, "-dlq"], MAX_QUEUE_NAME - suffix.len(), false) + suffix;
            let dlq_attributes = vec![(
                QueueAttributeName::MessageRetentionPeriod,
                "1209600".to_owned(),
            )];
            let url = ensure_queue(&client, &dlq_name, dlq_attributes, options.fifo).await?;
            let arn = queue_arn(&client, &url).await?;
            attributes.push((
                QueueAttributeName::RedrivePolicy,
                json!({ "deadLetterTargetArn": arn, "maxReceiveCount": max_receives }).to_string(),
            ));
            dlq_url = Some(url);
        }
        let url = ensure_queue(&client, &name, attributes, options.fifo).await?;
        tracing::info!(queue = %name, dlq = ?dlq_url, "SQS queue provisioned");
        Ok(SqsWorkQueue {
            client,
            url,
            dlq_url,
            settings: QueueSettings::new(queue_name)
                .with_visibility_timeout(Duration::from_secs(whole_seconds(
                    options.visibility_timeout,
                    MAX_VISIBILITY_SECONDS,
                )))
                .with_max_receives(options.max_receives),
            fifo: options.fifo,
            publish_retry: default_publish_retry(),
        })
    }

    /// An existing queue, by name: reads its visibility timeout and redrive policy.
    pub async fn open(client: Client, queue_name: &str) -> Result<SqsWorkQueue> {
        let url = queue_url(&client, queue_name).await?.ok_or_else(|| {
            Error::InvalidRequest(format!("SQS queue {queue_name:?} does not exist"))
        })?;
        Self::open_url(client, queue_name, url).await
    }

    /// An existing queue, by URL; `name` is its logical name in deliveries and dead letters.
    pub async fn open_url(client: Client, name: &str, url: String) -> Result<SqsWorkQueue> {
        let attributes = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| sdk_error(BACKEND, "GetQueueAttributes", e))?;
        let attributes = attributes.attributes().cloned().unwrap_or_default();
        let visibility = attributes
            .get(&QueueAttributeName::VisibilityTimeout)
            .and_then(|v| v.parse().ok())
            .unwrap_or(30);
        let fifo = attributes
            .get(&QueueAttributeName::FifoQueue)
            .is_some_and(|v| v == "true");
        let mut max_receives = None;
        let mut dlq_url = None;
        if let Some(policy) = attributes.get(&QueueAttributeName::RedrivePolicy) {
            let policy: serde_json::Value =
                serde_json::from_str(policy).map_err(|source| Error::Serialization {
                    what: format!("redrive policy of SQS queue {name}"),
                    source,
                })?;
            max_receives = policy["maxReceiveCount"]
                .as_u64()
                .or_else(|| policy["maxReceiveCount"].as_str()?.parse().ok())
                .and_then(|n| u32::try_from(n).ok());
            if let Some(arn) = policy["deadLetterTargetArn"].as_str() {
                let dlq_name = arn.rsplit(':').next().unwrap_or(arn);
                dlq_url = queue_url(&client, dlq_name).await?;
            }
        }
        Ok(SqsWorkQueue {
            client,
            url,
            dlq_url,
            settings: QueueSettings::new(name)
                .with_visibility_timeout(Duration::from_secs(visibility))
                .with_max_receives(max_receives),
            fifo,
            publish_retry: default_publish_retry(),
        })
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The dead-letter queue's URL, if the queue has one.
    pub fn dead_letter_url(&self) -> Option<&str> {
        self.dlq_url.as_deref()
    }

    /// The queue's ARN.
    pub async fn arn(&self) -> Result<String> {
        queue_arn(&self.client, &self.url).await
    }

    /// Sets how `send` retries entries of a partially failed batch (default: 8 attempts, 100 ms
    /// doubling to 5 s).
    pub fn with_publish_retry(mut self, retry: Backoff) -> Self {
        self.publish_retry = retry;
        self
    }

    /// Sets the queue's access policy (a JSON policy document).
    pub async fn set_policy(&self, policy: &str) -> Result<()> {
        self.client
            .set_queue_attributes()
            .queue_url(&self.url)
            .attributes(QueueAttributeName::Policy, policy)
            .send()
            .await
            .map_err(|e| sdk_error(BACKEND, "SetQueueAttributes", e))?;
        Ok(())
    }

    /// Deletes the queue and its dead-letter queue (development and tests).
    pub async fn delete(&self) -> Result<()> {
        for url in std::iter::once(&self.url).chain(self.dlq_url.as_ref()) {
            self.client
                .delete_queue()
                .queue_url(url)
                .send()
                .await
                .map_err(|e| sdk_error(BACKEND, "DeleteQueue", e))?;
        }
        Ok(())
    }

    /// Sends raw bodies to `url`, retrying failed entries; `group` gives FIFO group ids.
    async fn send_bodies(&self, url: &str, bodies: Vec<(String, Option<String>)>) -> Result<()> {
        let sized = bodies
            .into_iter()
            .map(|(body, key)| (body.len(), (body, key)));
        for batch in batch_by_size(sized, MAX_BATCH, MAX_MESSAGE_BYTES) {
            self.send_batch(url, batch).await?;
        }
        Ok(())
    }

    /// One `SendMessageBatch`, then its failed entries again until none is left.
    async fn send_batch(&self, url: &str, batch: Vec<(String, Option<String>)>) -> Result<()> {
        // (entry id, body, ordering key, dedup id)
        let mut pending: Vec<(String, String, Option<String>)> = batch
            .into_iter()
            .enumerate()
            .map(|(i, (body, key))| (i.to_string(), body, key))
            .collect();
        let mut attempt = 1;
        loop {
            let mut request = self.client.send_message_batch().queue_url(url);
            for (id, body, key) in &pending {
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(id)
                    .message_body(body);
                if self.fifo || url.ends_with(".fifo") {
                    let dedup = wire::decode_body(body)
                        .map(|m| m.id)
                        .unwrap_or_else(|_| format!("{:x}", body.len()));
                    entry = entry
                        .message_group_id(key.clone().unwrap_or_else(|| "default".to_owned()))
                        .message_deduplication_id(resource_name(&[&dedup], 128, true));
                }
                request = request.entries(entry.build().map_err(|e| Error::backend(BACKEND, e))?);
            }
            let output = request
                .send()
                .await
                .map_err(|e| sdk_error(BACKEND, "SendMessageBatch", e))?;
            if output.failed().is_empty() {
                return Ok(());
            }
            let failed: HashMap<&str, (&str, bool)> = output
                .failed()
                .iter()
                .map(|f| (f.id(), (f.code(), f.sender_fault())))
                .collect();
            let permanent: Vec<String> = failed
                .iter()
                .filter(|(_, (code, sender_fault))| *sender_fault && !is_transient_code(code))
                .map(|(id, (code, _))| format!("entry {id}: {code}"))
                .collect();
            if !permanent.is_empty() {
                return Err(Error::backend(
                    BACKEND,
                    format!("SendMessageBatch refused entries: {}", permanent.join(", ")),
                ));
            }
            tracing::warn!(queue = %url, failed = failed.len(), attempt, "SendMessageBatch partially failed; retrying the failed entries");
            pending.retain(|(id, _, _)| failed.contains_key(id.as_str()));
            if attempt >= self.publish_retry.max_attempts {
                return Err(Error::transient(
                    BACKEND,
                    format!(
                        "SendMessageBatch: {} entries still failing after {attempt} attempts",
                        pending.len()
                    ),
                ));
            }
            tokio::time::sleep(self.publish_retry.delay(attempt)).await;
            attempt += 1;
        }
    }

    /// Receives from `url` with the given visibility timeout (seconds).
    async fn receive_raw(
        &self,
        url: &str,
        max: usize,
        wait: Duration,
        visibility: Option<i32>,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>> {
        let output = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(whole_seconds(wait, MAX_WAIT_SECONDS) as i32)
            .set_visibility_timeout(visibility)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| sdk_error(BACKEND, "ReceiveMessage", e))?;
        Ok(output.messages.unwrap_or_default())
    }

    /// Everything in the DLQ, up to `max`, hidden for `hold` seconds (peek or move).
    async fn drain_dlq(
        &self,
        dlq: &str,
        max: usize,
        hold: i32,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>> {
        let mut got = Vec::new();
        while got.len() < max {
            // The first receive long-polls briefly, so SQS asks all its servers, not a sample.
            let wait = if got.is_empty() {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            };
            let batch = self
                .receive_raw(dlq, (max - got.len()).min(MAX_BATCH), wait, Some(hold))
                .await?;
            if batch.is_empty() {
                break;
            }
            got.extend(batch);
        }
        Ok(got)
    }

    fn dead_letter(&self, message: &aws_sdk_sqs::types::Message) -> DeadLetter {
        let body = message.body().unwrap_or_default();
        let decoded = wire::decode_body(body).unwrap_or_else(|error| {
            tracing::warn!(queue = %self.settings.name, %error, "undecodable dead letter");
            Message::new(
                "eventflow.UndecodableMessage",
                "eventflow-bus",
                json!({ "body": body, "error": error.to_string() }),
            )
            .with_id(message.message_id().unwrap_or_default())
        });
        let receive_count = system_attribute(
            message,
            &MessageSystemAttributeName::ApproximateReceiveCount,
        )
        .unwrap_or(0);
        // SQS moved it after exactly maxReceiveCount receives; peeks of the DLQ count too, so the
        // DLQ's own count is not the number of deliveries.
        let attempts = self
            .settings
            .max_receives
            .map_or(receive_count as u32, |n| n);
        DeadLetter::new(decoded, &self.settings.name, attempts)
    }

    /// Renames the queue's logical name (the EventBridge adapter names it after the subscription).
    pub(crate) fn with_logical_name(mut self, name: &str) -> Self {
        self.settings.name = name.to_owned();
        self
    }
}

fn default_publish_retry() -> Backoff {
    Backoff::new(8, Duration::from_millis(100), Duration::from_secs(5))
}

/// Whole seconds, rounded up, at most `max`.
pub(crate) fn whole_seconds(duration: Duration, max: u64) -> u64 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    seconds.min(max)
}

fn system_attribute(
    message: &aws_sdk_sqs::types::Message,
    name: &MessageSystemAttributeName,
) -> Option<u64> {
    message.attributes()?.get(name)?.parse().ok()
}

/// The queue's URL, or `None` when it does not exist.
pub(crate) async fn queue_url(client: &Client, name: &str) -> Result<Option<String>> {
    match client.get_queue_url().queue_name(name).send().await {
        Ok(output) => Ok(output.queue_url().map(str::to_owned)),
        Err(error) => {
            let missing = error
                .as_service_error()
                .is_some_and(|e| e.is_queue_does_not_exist());
            let error = sdk_error(BACKEND, "GetQueueUrl", error);
            if missing || error_code(&error).is_some_and(|c| c.contains("NonExistentQueue")) {
                Ok(None)
            } else {
                Err(error)
            }
        }
    }
}

async fn queue_arn(client: &Client, url: &str) -> Result<String> {
    let output = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| sdk_error(BACKEND, "GetQueueAttributes", e))?;
    output
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| Error::backend(BACKEND, format!("queue {url} has no QueueArn attribute")))
}

/// Creates the queue with `attributes`, or sets them on the existing one; returns its URL.
async fn ensure_queue(
    client: &Client,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
    fifo: bool,
) -> Result<String> {
    if let Some(url) = queue_url(client, name).await? {
        let mut request = client.set_queue_attributes().queue_url(&url);
        for (key, value) in attributes {
            request = request.attributes(key, value);
        }
        request
            .send()
            .await
            .map_err(|e| sdk_error(BACKEND, "SetQueueAttributes", e))?;
        return Ok(url);
    }
    let mut request = client.create_queue().queue_name(name);
    for (key, value) in attributes {
        request = request.attributes(key, value);
    }
    if fifo {
        request = request.attributes(QueueAttributeName::FifoQueue, "true");
    }
    let output = request
        .send()
        .await
        .map_err(|e| sdk_error(BACKEND, "CreateQueue", e))?;
    output
        .queue_url()
        .map(str::to_owned)
        .ok_or_else(|| Error::backend(BACKEND, format!("CreateQueue {name} returned no URL")))
}

#[async_trait]
impl WorkQueue for SqsWorkQueue {
    fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// `GetQueueAttributes` on the queue.
    async fn health_check(&self) -> Result<()> {
        queue_arn(&self.client, &self.url).await.map(drop)
    }

    async fn send(&self, messages: Vec<Message>) -> Result<()> {
        let mut bodies = Vec::with_capacity(messages.len());
        for message in &messages {
            if message.id.is_empty() || message.message_type.is_empty() {
                return Err(Error::InvalidRequest(format!(
                    "message {:?} has an empty id or message type",
                    message.id
                )));
            }
            let body = wire::encode(message)?;
            if body.len() > MAX_MESSAGE_BYTES {
                return Err(Error::LimitExceeded {
                    limit: "SQS message size (bytes)",
                    actual: body.len() as u64,
                    max: MAX_MESSAGE_BYTES as u64,
                });
            }
            bodies.push((body, message.ordering_key.clone()));
        }
        self.send_bodies(&self.url, bodies).await
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let raw = self.receive_raw(&self.url, max, wait, None).await?;
        let mut received = Vec::with_capacity(raw.len());
        for message in raw {
            let Some(receipt) = message.receipt_handle() else {
                continue;
            };
            let count = system_attribute(
                &message,
                &MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .unwrap_or(1);
            match wire::decode_body(message.body().unwrap_or_default()) {
                Ok(decoded) => received.push(ReceivedMessage::new(
                    decoded,
                    Receipt::new(receipt),
                    u32::try_from(count).unwrap_or(u32::MAX),
                )),
                Err(error) => tracing::error!(
                    queue = %self.settings.name,
                    sqs_message_id = message.message_id().unwrap_or_default(),
                    receive_count = count,
                    %error,
                    "undecodable SQS message left in the queue; its redrive policy will dead-letter it"
                ),
            }
        }
        Ok(received)
    }

    async fn settle(&self, receipt: &Receipt, settlement: Settlement) -> Result<()> {
        match settlement {
            Settlement::Ack => self.delete_message(receipt).await,
            Settlement::Hide(timeout) => self.hide(receipt, timeout).await,
            // `Settlement` is the core's and may grow: a kind this adapter predates is refused.
            _ => Err(Error::Unsupported {
                backend: BACKEND,
                operation: "a settlement newer than this adapter",
            }),
        }
    }
}

#[async_trait]
impl DeadLetterQueue for SqsWorkQueue {
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>> {
        let Some(dlq) = self.dlq_url.as_deref() else {
            return Ok(Vec::new());
        };
        if max == 0 {
            return Ok(Vec::new());
        }
        let peeked = self.drain_dlq(dlq, max, 30).await?;
        // Visible again at once: listing does not take them.
        for chunk in peeked.chunks(MAX_BATCH) {
            let mut request = self.client.change_message_visibility_batch().queue_url(dlq);
            for (i, message) in chunk.iter().enumerate() {
                request = request.entries(
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(message.receipt_handle().unwrap_or_default())
                        .visibility_timeout(0)
                        .build()
                        .map_err(|e| Error::backend(BACKEND, e))?,
                );
            }
            request
                .send()
                .await
                .map_err(|e| sdk_error(BACKEND, "ChangeMessageVisibilityBatch", e))?;
        }
        let mut peeked: Vec<(u64, DeadLetter)> = peeked
            .iter()
            .map(|m| {
                let sent =
                    system_attribute(m, &MessageSystemAttributeName::SentTimestamp).unwrap_or(0);
                (sent, self.dead_letter(m))
            })
            .collect();
        peeked.sort_by_key(|(sent, _)| *sent);
        Ok(peeked
            .into_iter()
            .map(|(_, letter)| letter)
            .take(max)
            .collect())
    }

    async fn redrive(&self) -> Result<usize> {
        let Some(dlq) = self.dlq_url.clone() else {
            return Ok(0);
        };
        let mut moved = 0;
        loop {
            let batch = self.drain_dlq(&dlq, MAX_BATCH, 60).await?;
            if batch.is_empty() {
                break;
            }
            let bodies = batch
                .iter()
                .map(|m| {
                    let body = m.body().unwrap_or_default().to_owned();
                    let key = wire::decode_body(&body).ok().and_then(|m| m.ordering_key);
                    (body, key)
                })
                .collect();
            self.send_bodies(&self.url, bodies).await?;
            let mut request = self.client.delete_message_batch().queue_url(&dlq);
            for (i, message) in batch.iter().enumerate() {
                request = request.entries(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(message.receipt_handle().unwrap_or_default())
                        .build()
                        .map_err(|e| Error::backend(BACKEND, e))?,
                );
            }
            request
                .send()
                .await
                .map_err(|e| sdk_error(BACKEND, "DeleteMessageBatch", e))?;
            moved += batch.len();
        }
        tracing::info!(queue = %self.settings.name, moved, "dead letters redriven");
        Ok(moved)
    }
}

impl SqsWorkQueue {
    async fn delete_message(&self, receipt: &Receipt) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt.as_str())
            .send()
            .await
            .map_err(|e| sdk_error(BACKEND, "DeleteMessage", e))?;
        Ok(())
    }

    async fn hide(&self, receipt: &Receipt, timeout: Duration) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt.as_str())
            .visibility_timeout(whole_seconds(timeout, MAX_VISIBILITY_SECONDS) as i32)
            .send()
            .await
            .map_err(|e| sdk_error(BACKEND, "ChangeMessageVisibility", e))?;
        Ok(())
    }
}

/// The message an SQS message body carries, as the EventBridge adapter's queues and work queues
/// carry it: an EventBridge event (`detail-type`, `source`, `detail`) whose detail is the message
/// envelope, or the envelope itself. For consumers that receive SQS records from elsewhere than
/// [`SqsWorkQueue`], such as an AWS Lambda function on an SQS event source.
pub fn message_from_body(body: &str) -> Result<Message> {
    wire::decode_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(whole_seconds(Duration::from_millis(100), 20), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2), 20), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001), 20), 3);
        assert_eq!(whole_seconds(Duration::from_secs(60), 20), 20);
        assert_eq!(whole_seconds(Duration::ZERO, 20), 0);
    }
}
