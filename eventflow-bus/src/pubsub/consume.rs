//! Consuming: a streaming pull per subscription (and one for its redrive subscription) hands
//! messages to eventflow's shared [`Dispatcher`], which orders, limits and retries their
//! deliveries; [`PubSubSettle`] acknowledges, dead-letters or nacks them, and the consumer keeps
//! their leases while they are held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventflow_core::bus::Filter;
use eventflow_core::extension::lock;
use eventflow_core::extension::{Dispatcher, Settle};
use eventflow_core::{
    Backoff, Error, Message, MessageHandler, Result, Subscription, SubscriptionHandle,
};
use gcloud_gax::grpc::{Status, Streaming};
use gcloud_googleapis::pubsub::v1::subscriber_client::SubscriberClient as RawSubscriberClient;
use gcloud_googleapis::pubsub::v1::{
    ModifyAckDeadlineRequest, PubsubMessage, ReceivedMessage, StreamingPullRequest,
    StreamingPullResponse,
};
use gcloud_pubsub::apiv1::subscriber_client::SubscriberClient;
use gcloud_pubsub::publisher::Publisher;
// A message pulled from Pub/Sub with what acknowledging it takes; renamed so it is not taken for
// the work queue's `ReceivedMessage`.
use gcloud_pubsub::subscriber::ReceivedMessage as PulledMessage;
use tokio::sync::{OnceCell, mpsc, watch};

use super::dead_letters::dead_letter_message;
use super::publish::immediate_publisher;
use super::{
    BACKEND, DEAD_LETTER_SUFFIX, MAX_MESSAGE_BYTES, PubSubBus, REDRIVE_SUFFIX, status_error,
};
use crate::wire;

/// Pauses before reopening a failed stream: 100 ms doubling to at most 10 s.
const RECONNECT: Backoff = Backoff::new(
    u32::MAX,
    Duration::from_millis(100),
    Duration::from_secs(10),
);

/// One subscription's streams, feeding its dispatcher.
struct Consumer {
    filter: Filter,
    max_in_flight: usize,
    dispatcher: Dispatcher<PubSubSettle>,
    /// Becomes `true` when the subscription is stopped: the streams end.
    stopped: watch::Sender<bool>,
}

/// How a Pub/Sub message ends: acknowledged, published to `S.dead-letters` then acknowledged,
/// or nacked (redelivered at once, to this or another consumer).
struct PubSubSettle {
    bus: PubSubBus,
    name: String,
    /// Ack ids of held messages (received, not yet acked or nacked), by subscription name.
    leases: Mutex<HashMap<String, String>>,
    dead_letter_publisher: OnceCell<Publisher>,
}

#[async_trait]
impl Settle for PubSubSettle {
    type Receipt = PulledMessage;

    async fn ack(&self, received: PulledMessage) {
        self.unlease(&received);
        ack(&received).await;
    }

    async fn dead_letter(
        &self,
        received: PulledMessage,
        message: &Message,
        attempts: u32,
        error: String,
    ) {
        self.unlease(&received);
        match self
            .publish_dead_letter(&received.message, attempts, &error)
            .await
        {
            Ok(()) => ack(&received).await,
            Err(publish_error) => {
                tracing::error!(subscription = %self.name, message_id = %message.id, %publish_error, "could not dead-letter; nacking so Pub/Sub redelivers it");
                nack(&received).await;
            }
        }
    }

    async fn release(&self, received: PulledMessage) {
        self.unlease(&received);
        nack(&received).await;
    }
}

impl PubSubSettle {
    fn unlease(&self, received: &PulledMessage) {
        lock(&self.leases).remove(&received.ack_id);
    }

    /// Publishes `original` to `S.dead-letters` with the dead-letter attributes.
    async fn publish_dead_letter(
        &self,
        original: &PubsubMessage,
        attempts: u32,
        error: &str,
    ) -> Result<()> {
        let publisher = self
            .dead_letter_publisher
            .get_or_init(|| async {
                immediate_publisher(&self.bus, &format!("{}{DEAD_LETTER_SUFFIX}", self.name))
            })
            .await;
        let letter = dead_letter_message(&self.name, original, attempts, error);
        publisher
            .publish_immediately(vec![letter], None)
            .await
            .map_err(|s| status_error("Publish", s))?;
        tracing::error!(
            subscription = %self.name,
            message_id = original.attributes.get(super::ID_ATTRIBUTE).map(String::as_str).unwrap_or_default(),
            attempts,
            error,
            "message dead-lettered"
        );
        Ok(())
    }
}

impl PubSubBus {
    pub(super) async fn start_consumer(
        &self,
        subscription: Subscription,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<SubscriptionHandle> {
        let name = subscription.name.clone();
        if self.inner.config.provision {
            self.provision_subscription(&subscription).await?;
        } else if !self.subscription_exists(&name).await? {
            return Err(Error::InvalidRequest(format!(
                "Pub/Sub subscription {name} does not exist (provisioning is off)"
            )));
        }
        let redrive_id = format!("{name}{REDRIVE_SUFFIX}");
        let redrive = self.subscription_exists(&redrive_id).await?;

        let settle = PubSubSettle {
            bus: self.clone(),
            name: name.clone(),
            leases: Mutex::new(HashMap::new()),
            dead_letter_publisher: OnceCell::new(),
        };
        let consumer = Arc::new(Consumer {
            filter: subscription.filter.clone(),
            max_in_flight: subscription.max_in_flight,
            dispatcher: Dispatcher::new(BACKEND, &subscription, handler, settle)?,
            stopped: watch::Sender::new(false),
        });
        let mut streams = vec![tokio::spawn(Arc::clone(&consumer).stream(name.clone()))];
        if redrive {
            streams.push(tokio::spawn(Arc::clone(&consumer).stream(redrive_id)));
        }
        let leaser = tokio::spawn(Arc::clone(&consumer).extend_leases());
        tracing::info!(subscription = %name, "Pub/Sub subscription consuming");

        let inner = Arc::clone(&self.inner);
        Ok(SubscriptionHandle::new(name.clone(), move || async move {
            consumer.stopped.send_replace(true);
            consumer.dispatcher.close().await;
            for stream in streams {
                if let Err(error) = stream.await {
                    tracing::error!(%error, "Pub/Sub stream task failed");
                }
            }
            consumer.dispatcher.wait_idle().await;
            leaser.abort();
            lock(&inner.active).remove(&name);
            tracing::info!(subscription = %name, "Pub/Sub subscription stopped");
        }))
    }

    pub(super) async fn modify_deadline(
        &self,
        subscription: &str,
        ack_ids: Vec<String>,
        seconds: i32,
    ) -> Result<()> {
        if ack_ids.is_empty() {
            return Ok(());
        }
        let sub = self.inner.client.subscription(subscription);
        for chunk in ack_ids.chunks(1000) {
            let request = ModifyAckDeadlineRequest {
                subscription: sub.fully_qualified_name().to_owned(),
                ack_ids: chunk.to_vec(),
                ack_deadline_seconds: seconds,
            };
            sub.get_client()
                .modify_ack_deadline(request, None)
                .await
                .map_err(|s| status_error("ModifyAckDeadline", s))?;
        }
        Ok(())
    }
}

impl Consumer {
    /// The bus, as the settler holds it.
    fn bus(&self) -> &PubSubBus {
        &self.dispatcher.settler().bus
    }

    /// The subscription's name, as the settler holds it.
    fn name(&self) -> &str {
        &self.dispatcher.settler().name
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Streams `subscription_id` until stopped, reconnecting after errors.
    ///
    /// The consumer drives the `StreamingPull` itself and owns its request stream, so stopping
    /// half-closes it and the server ends the stream; what the server sent meanwhile is nacked. (A
    /// stream whose requests never end, as `gcloud-pubsub`'s own subscriber keeps it, stays open on
    /// the server after the client stops reading, and the server keeps handing it messages that
    /// nobody reads: a re-created consumer of the subscription would then get nothing.)
    async fn stream(self: Arc<Self>, subscription_id: String) {
        let stream = PullStream::new(&self, &subscription_id);
        let mut stopped = self.stopped.subscribe();
        let mut failures = 0u32;
        while !self.is_stopped() {
            let (requests, receiver) = mpsc::channel::<StreamingPullRequest>(4);
            if requests.try_send(stream.initial_request()).is_err() {
                break;
            }
            let opened = tokio::select! {
                opened = stream.open(&self, receiver) => opened,
                stop = stopped.wait_for(|s| *s) => {
                    drop(stop);
                    break;
                }
            };
            let mut responses = match opened {
                Ok(responses) => responses,
                Err(status) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(subscription = %subscription_id, %status, "could not open the Pub/Sub stream; retrying");
                    if !self.pause(failures).await {
                        break;
                    }
                    continue;
                }
            };
            match self.read(&stream, &mut responses, &requests).await {
                Ended::Stopped => {
                    drop(requests);
                    self.nack_unread(&subscription_id, &mut responses).await;
                    break;
                }
                Ended::ByServer => failures = 0,
                Ended::Failed => failures = failures.saturating_add(1),
            }
            if failures > 0 && !self.pause(failures).await {
                break;
            }
        }
    }

    /// Reads an open stream, dispatching what arrives, until it ends or the consumer stops.
    async fn read(
        &self,
        stream: &PullStream,
        responses: &mut Streaming<StreamingPullResponse>,
        requests: &mpsc::Sender<StreamingPullRequest>,
    ) -> Ended {
        let mut stopped = self.stopped.subscribe();
        let mut ping = tokio::time::interval(Duration::from_secs(10));
        ping.tick().await;
        loop {
            let next = tokio::select! {
                next = responses.message() => next,
                _ = ping.tick() => {
                    // Keeps the stream alive through proxies; an empty request changes nothing.
                    let _ = requests.try_send(StreamingPullRequest::default());
                    continue;
                }
                stop = stopped.wait_for(|s| *s) => {
                    drop(stop);
                    return Ended::Stopped;
                }
            };
            match next {
                Ok(Some(response)) => {
                    for received in response.received_messages {
                        if let Some(pulled) = stream.pulled(received) {
                            self.dispatch(pulled).await;
                        }
                    }
                }
                Ok(None) => {
                    tracing::debug!(subscription = %stream.id, "the server ended the Pub/Sub stream; reopening");
                    return Ended::ByServer;
                }
                Err(status) => {
                    tracing::warn!(subscription = %stream.id, %status, "Pub/Sub stream failed; reopening");
                    return Ended::Failed;
                }
            }
        }
    }

    /// After the half-close: nacks what the server still sends until it ends the stream (5 s at
    /// most), so another consumer gets it at once.
    async fn nack_unread(
        &self,
        subscription_id: &str,
        responses: &mut Streaming<StreamingPullResponse>,
    ) {
        let drain = async {
            while let Ok(Some(response)) = responses.message().await {
                let ack_ids = response
                    .received_messages
                    .into_iter()
                    .map(|m| m.ack_id)
                    .collect();
                if let Err(error) = self
                    .bus()
                    .modify_deadline(subscription_id, ack_ids, 0)
                    .await
                {
                    tracing::warn!(subscription = %subscription_id, %error, "nack of undelivered messages failed");
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            tracing::warn!(subscription = %subscription_id, "the server did not end the stream within 5 s of the half-close");
        }
    }

    /// Waits before reconnecting; `false` when stopped meanwhile.
    async fn pause(&self, failures: u32) -> bool {
        let mut stopped = self.stopped.subscribe();
        tokio::select! {
            () = tokio::time::sleep(RECONNECT.delay(failures)) => true,
            stop = stopped.wait_for(|s| *s) => {
                drop(stop);
                false
            }
        }
    }

    /// Hands a pulled message to the dispatcher; an undecodable one is dead-lettered at once, one
    /// the filter does not match is acknowledged.
    async fn dispatch(&self, received: PulledMessage) {
        let settle = self.dispatcher.settler();
        let attempt = received
            .delivery_attempt()
            .map_or(1, |a| u32::try_from(a).unwrap_or(u32::MAX).max(1));
        let mut message = match wire::decode(&received.message.data) {
            Ok(message) => message,
            Err(error) => {
                tracing::error!(subscription = %self.name(), pubsub_message_id = %received.message.message_id, %error, "undecodable message; dead-lettering it");
                if settle
                    .publish_dead_letter(&received.message, attempt, &error.to_string())
                    .await
                    .is_ok()
                {
                    ack(&received).await;
                }
                return;
            }
        };
        if !self.filter.matches(&message) {
            tracing::debug!(subscription = %self.name(), message_id = %message.id, "filtered out; acknowledged");
            ack(&received).await;
            return;
        }
        // Pub/Sub's "no ordering key" is the empty key.
        message.ordering_key = message.ordering_key.filter(|key| !key.is_empty());
        lock(&settle.leases).insert(received.ack_id.clone(), received.subscription.clone());
        if let Err(received) = self.dispatcher.dispatch(message, received, attempt) {
            settle.release(received).await;
        }
    }

    /// Extends the ack deadline of every held message every third of the deadline.
    async fn extend_leases(self: Arc<Self>) {
        let deadline = self.bus().inner.config.ack_deadline_seconds();
        let period = Duration::from_secs(u64::from(deadline.unsigned_abs()) / 3);
        loop {
            tokio::time::sleep(period).await;
            let mut by_subscription: HashMap<String, Vec<String>> = HashMap::new();
            for (ack_id, fqsn) in lock(&self.dispatcher.settler().leases).iter() {
                by_subscription
                    .entry(fqsn.clone())
                    .or_default()
                    .push(ack_id.clone());
            }
            for (fqsn, ack_ids) in by_subscription {
                let id = fqsn.rsplit('/').next().unwrap_or(&fqsn).to_owned();
                if let Err(error) = self.bus().modify_deadline(&id, ack_ids, deadline).await {
                    tracing::warn!(subscription = %self.name(), %error, "could not extend ack deadlines");
                }
            }
        }
    }
}

/// How reading a stream ended.
enum Ended {
    /// The consumer stopped: the stream is to be half-closed and drained.
    Stopped,
    /// The server ended it (it does every so often): reopen at once.
    ByServer,
    /// It failed: reopen after a pause.
    Failed,
}

/// What one subscription's streaming pulls are opened with.
struct PullStream {
    id: String,
    /// The fully qualified subscription name.
    fqsn: String,
    subscriber_client: SubscriberClient,
    ack_deadline_seconds: i32,
    max_outstanding_messages: i64,
    /// One id for every stream of this consumer, so the server treats reconnections as one client.
    client_id: String,
}

impl PullStream {
    fn new(consumer: &Consumer, id: &str) -> Self {
        let client = &consumer.bus().inner.client;
        PullStream {
            id: id.to_owned(),
            fqsn: client.fully_qualified_subscription_name(id),
            subscriber_client: client.subscription(id).get_client(),
            ack_deadline_seconds: consumer.bus().inner.config.ack_deadline_seconds(),
            max_outstanding_messages: (consumer.max_in_flight as i64 * 4).max(100),
            client_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    fn initial_request(&self) -> StreamingPullRequest {
        StreamingPullRequest {
            subscription: self.fqsn.clone(),
            stream_ack_deadline_seconds: self.ack_deadline_seconds,
            max_outstanding_messages: self.max_outstanding_messages,
            client_id: self.client_id.clone(),
            ..StreamingPullRequest::default()
        }
    }

    /// Opens a `StreamingPull` whose requests are what `requests` yields (the initial one first):
    /// dropping its sender half-closes the stream.
    async fn open(
        &self,
        consumer: &Consumer,
        requests: mpsc::Receiver<StreamingPullRequest>,
    ) -> Result<Streaming<StreamingPullResponse>, Status> {
        let outgoing = futures::stream::unfold(requests, |mut receiver| async move {
            receiver.recv().await.map(|request| (request, receiver))
        });
        let mut request = gcloud_gax::grpc::Request::new(outgoing);
        if let Ok(value) = format!("subscription={}", self.fqsn).parse() {
            request
                .metadata_mut()
                .insert("x-goog-request-params", value);
        }
        let mut raw = RawSubscriberClient::new(consumer.bus().inner.streaming.conn())
            .max_decoding_message_size(MAX_MESSAGE_BYTES * 2);
        raw.streaming_pull(request)
            .await
            .map(gcloud_gax::grpc::Response::into_inner)
    }

    /// A received message, with what acknowledging it takes.
    fn pulled(&self, received: ReceivedMessage) -> Option<PulledMessage> {
        let message = received.message?;
        let delivery_attempt = usize::try_from(received.delivery_attempt)
            .ok()
            .filter(|a| *a > 0);
        Some(PulledMessage {
            message,
            ack_id: received.ack_id,
            subscription: self.fqsn.clone(),
            subscriber_client: self.subscriber_client.clone(),
            delivery_attempt,
        })
    }
}

async fn ack(received: &PulledMessage) {
    if let Err(status) = received.ack().await {
        // Pub/Sub redelivers it: at least once.
        tracing::warn!(%status, "ack failed; the message will be redelivered");
    }
}

async fn nack(received: &PulledMessage) {
    if let Err(status) = received.nack().await {
        tracing::warn!(%status, "nack failed; the ack deadline will release the message");
    }
}
