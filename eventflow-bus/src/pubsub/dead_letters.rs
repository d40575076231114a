//! Dead letters: `S.dead-letters` holds what the consumer gave up on; listing pulls it without
//! consuming, redrive moves it to `S.redrive`, which the consumer of `S` reads.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventflow_core::bus::{DeadLetter, DeadLetters};
use eventflow_core::{Error, Message, Result};
use gcloud_googleapis::pubsub::v1::{PubsubMessage, PullRequest};

use super::publish::{immediate_publisher, request_batches};
use super::{
    DEAD_LETTER_ATTEMPTS, DEAD_LETTER_ERROR, DEAD_LETTER_SUBSCRIPTION, DEAD_LETTER_SUFFIX,
    DEAD_LETTERED_AT, ID_ATTRIBUTE, MAX_ATTRIBUTE_VALUE, PubSubBus, REDRIVE_SUFFIX, status_error,
    valid_resource_id,
};
use crate::wire;

impl PubSubBus {
    /// Pulls up to `max` messages from `subscription` without waiting; they stay leased until
    /// acknowledged or released.
    async fn pull_now(
        &self,
        subscription: &str,
        max: usize,
    ) -> Result<Vec<gcloud_googleapis::pubsub::v1::ReceivedMessage>> {
        let sub = self.inner.client.subscription(subscription);
        let mut got = Vec::new();
        while got.len() < max {
            #[allow(deprecated)]
            let request = PullRequest {
                subscription: sub.fully_qualified_name().to_owned(),
                return_immediately: true,
                max_messages: (max - got.len()).min(1000) as i32,
            };
            let response = sub
                .get_client()
                .pull(request, None)
                .await
                .map_err(|s| status_error("Pull", s))?
                .into_inner();
            if response.received_messages.is_empty() {
                break;
            }
            got.extend(response.received_messages);
        }
        Ok(got)
    }
}

#[async_trait]
impl DeadLetters for PubSubBus {
    /// Pulls `S.dead-letters` without waiting and releases what it saw at once.
    async fn dead_letters(&self, subscription: &str, max: usize) -> Result<Vec<DeadLetter>> {
        let id = format!("{subscription}{DEAD_LETTER_SUFFIX}");
        if max == 0 || !valid_resource_id(&id) || !self.subscription_exists(&id).await? {
            return Ok(Vec::new());
        }
        let pulled = self.pull_now(&id, max).await?;
        let ack_ids = pulled.iter().map(|m| m.ack_id.clone()).collect();
        self.modify_deadline(&id, ack_ids, 0).await?;
        let mut letters: Vec<(i64, DeadLetter)> = pulled
            .into_iter()
            .filter_map(|received| received.message)
            .map(|m| {
                let published = m
                    .publish_time
                    .map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos));
                (published, dead_letter_from(subscription, &m))
            })
            .collect();
        letters.sort_by_key(|(published, _)| *published);
        Ok(letters.into_iter().map(|(_, l)| l).take(max).collect())
    }

    /// Moves every message of `S.dead-letters` to `S.redrive`, which the consumer of `S` reads.
    async fn redrive(&self, subscription: &str) -> Result<usize> {
        let dead = format!("{subscription}{DEAD_LETTER_SUFFIX}");
        if !valid_resource_id(&dead) || !self.subscription_exists(&dead).await? {
            return Err(Error::InvalidRequest(format!(
                "cannot redrive: subscription {subscription:?} has no dead-letter subscription"
            )));
        }
        let target = immediate_publisher(self, &format!("{subscription}{REDRIVE_SUFFIX}"));
        let mut moved = 0;
        loop {
            let pulled = self.pull_now(&dead, 500).await?;
            if pulled.is_empty() {
                break;
            }
            let mut ack_ids = Vec::with_capacity(pulled.len());
            let mut messages = Vec::with_capacity(pulled.len());
            for received in pulled {
                ack_ids.push(received.ack_id);
                let Some(mut message) = received.message else {
                    continue;
                };
                for key in [
                    DEAD_LETTER_SUBSCRIPTION,
                    DEAD_LETTER_ATTEMPTS,
                    DEAD_LETTER_ERROR,
                    DEAD_LETTERED_AT,
                ] {
                    message.attributes.remove(key);
                }
                message
                    .attributes
                    .retain(|k, _| !k.starts_with("CloudPubSubDeadLetter"));
                message.ordering_key = wire::decode(&message.data)
                    .ok()
                    .and_then(|m| m.ordering_key)
                    .unwrap_or_default();
                message.message_id.clear();
                message.publish_time = None;
                messages.push(message);
            }
            for batch in request_batches(messages) {
                let count = batch.len();
                target
                    .publish_immediately(batch, None)
                    .await
                    .map_err(|s| status_error("Publish", s))?;
                moved += count;
            }
            self.inner
                .client
                .subscription(&dead)
                .ack(ack_ids)
                .await
                .map_err(|s| status_error("Acknowledge", s))?;
        }
        tracing::info!(subscription, moved, "dead letters redriven");
        Ok(moved)
    }
}

/// A dead letter from a message of `S.dead-letters`: ours carry attributes; ones forwarded by a
/// server-side dead-letter policy carry Pub/Sub's.
fn dead_letter_from(subscription: &str, message: &PubsubMessage) -> DeadLetter {
    let attribute = |k: &str| message.attributes.get(k).map(String::as_str);
    let decoded = wire::decode(&message.data).unwrap_or_else(|error| {
        Message::new(
            "eventflow.UndecodableMessage",
            "eventflow-bus",
            serde_json::json!({
                "data": String::from_utf8_lossy(&message.data),
                "error": error.to_string(),
            }),
        )
        .with_id(attribute(ID_ATTRIBUTE).unwrap_or(&message.message_id))
    });
    let attempts = attribute(DEAD_LETTER_ATTEMPTS)
        .or_else(|| attribute("CloudPubSubDeadLetterSourceDeliveryCount"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let mut letter = DeadLetter::new(decoded, subscription, attempts);
    if let Some(error) = attribute(DEAD_LETTER_ERROR) {
        letter = letter.with_last_error(error);
    }
    let at = attribute(DEAD_LETTERED_AT)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            let t = message.publish_time.as_ref()?;
            DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
        });
    if let Some(at) = at {
        letter = letter.with_dead_lettered_at(at);
    }
    letter
}

/// `original` as a dead letter of `subscription`: the same data, with the attempts, the last
/// error and the time as attributes.
pub(super) fn dead_letter_message(
    subscription: &str,
    original: &PubsubMessage,
    attempts: u32,
    error: &str,
) -> PubsubMessage {
    let mut attributes = original.attributes.clone();
    attributes.insert(DEAD_LETTER_SUBSCRIPTION.to_owned(), subscription.to_owned());
    attributes.insert(DEAD_LETTER_ATTEMPTS.to_owned(), attempts.to_string());
    attributes.insert(
        DEAD_LETTER_ERROR.to_owned(),
        truncate(error, MAX_ATTRIBUTE_VALUE),
    );
    attributes.insert(DEAD_LETTERED_AT.to_owned(), Utc::now().to_rfc3339());
    PubsubMessage {
        data: original.data.clone(),
        attributes,
        ..PubsubMessage::default()
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
