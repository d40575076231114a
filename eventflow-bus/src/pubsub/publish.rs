//! Publishing: messages as Pub/Sub messages (the wire envelope as data, native attributes where
//! they fit), in requests of at most 1,000 messages and 9 MB.

use std::collections::HashMap;

use eventflow_core::{Error, Message, Result};
use gcloud_googleapis::pubsub::v1::PubsubMessage;
use gcloud_pubsub::publisher::{Publisher, PublisherConfig};

use super::{
    ID_ATTRIBUTE, MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTE_VALUE, MAX_ATTRIBUTES, MAX_MESSAGE_BYTES,
    MAX_MESSAGES_PER_REQUEST, MAX_REQUEST_BYTES, PubSubBus, SOURCE_ATTRIBUTE, TYPE_ATTRIBUTE,
    status_error,
};
use crate::batch::batch_by_size;
use crate::wire;

impl PubSubBus {
    pub(super) async fn publish_messages(&self, messages: Vec<Message>) -> Result<()> {
        let encoded = messages.iter().map(to_pubsub).collect::<Result<Vec<_>>>()?;
        let publisher = self.publisher().await?;
        for batch in request_batches(encoded) {
            publisher
                .publish_immediately(batch, None)
                .await
                .map_err(publish_error)?;
        }
        Ok(())
    }

    async fn publisher(&self) -> Result<&Publisher> {
        self.inner
            .publisher
            .get_or_try_init(|| async {
                if self.inner.config.provision {
                    self.ensure_topic().await?;
                }
                let config = PublisherConfig {
                    workers: 1,
                    ..PublisherConfig::default()
                };
                Ok::<_, Error>(
                    self.inner
                        .client
                        .topic(&self.inner.config.topic)
                        .new_publisher(Some(config)),
                )
            })
            .await
    }
}

/// A publisher to the topic `topic` that sends each request at once.
pub(super) fn immediate_publisher(bus: &PubSubBus, topic: &str) -> Publisher {
    bus.inner
        .client
        .topic(topic)
        .new_publisher(Some(PublisherConfig {
            workers: 1,
            ..PublisherConfig::default()
        }))
}

/// The Pub/Sub message for `message`.
pub(super) fn to_pubsub(message: &Message) -> Result<PubsubMessage> {
    if message.id.is_empty() || message.message_type.is_empty() {
        return Err(Error::InvalidRequest(format!(
            "message {:?} has an empty id or message type",
            message.id
        )));
    }
    let data = wire::encode(message)?.into_bytes();
    let mut attributes = HashMap::new();
    attributes.insert(TYPE_ATTRIBUTE.to_owned(), message.message_type.clone());
    attributes.insert(SOURCE_ATTRIBUTE.to_owned(), message.source.clone());
    attributes.insert(ID_ATTRIBUTE.to_owned(), message.id.clone());
    for (key, value) in &message.attributes {
        // The envelope carries every attribute; native ones are a copy for filters and tools.
        let fits = key.len() <= MAX_ATTRIBUTE_KEY
            && value.len() <= MAX_ATTRIBUTE_VALUE
            && !key.is_empty()
            && !key.to_ascii_lowercase().starts_with("goog")
            && attributes.len() < MAX_ATTRIBUTES;
        if fits {
            attributes
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
    }
    let size = data.len()
        + attributes
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if size > MAX_MESSAGE_BYTES {
        return Err(Error::LimitExceeded {
            limit: "Pub/Sub message size (bytes)",
            actual: size as u64,
            max: MAX_MESSAGE_BYTES as u64,
        });
    }
    Ok(PubsubMessage {
        data,
        attributes,
        ordering_key: message.ordering_key.clone().unwrap_or_default(),
        ..PubsubMessage::default()
    })
}

/// `messages` cut into `Publish` requests of at most 1,000 messages and 9 MB.
pub(super) fn request_batches(messages: Vec<PubsubMessage>) -> Vec<Vec<PubsubMessage>> {
    let sized = messages.into_iter().map(|m| (m.data.len() + 64, m));
    batch_by_size(sized, MAX_MESSAGES_PER_REQUEST, MAX_REQUEST_BYTES)
}

/// A refused `Publish`. `INVALID_ARGUMENT` is the messages' own fault (an attribute or ordering
/// key Pub/Sub does not accept): sending them again cannot succeed, so it is
/// [`Error::InvalidRequest`], which the outbox relay answers by publishing entry by entry and
/// parking the refused ones. Anything else is classified as for every call.
fn publish_error(status: gcloud_gax::grpc::Status) -> eventflow_core::Error {
    if status.code() == gcloud_gax::grpc::Code::InvalidArgument {
        return eventflow_core::Error::InvalidRequest(format!(
            "Pub/Sub refused the messages: {}",
            status.message()
        ));
    }
    status_error("Publish", status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_copied_where_they_fit() {
        let message = Message::new("T", "s", serde_json::json!({}))
            .with_correlation_id("c")
            .with_attribute("big", "x".repeat(2000))
            .with_attribute("goog-reserved", "v");
        let encoded = to_pubsub(&message).expect("encode");
        assert_eq!(encoded.attributes["correlation-id"], "c");
        assert_eq!(encoded.attributes[TYPE_ATTRIBUTE], "T");
        assert!(!encoded.attributes.contains_key("big"));
        assert!(!encoded.attributes.contains_key("goog-reserved"));
        assert_eq!(
            wire::decode(&encoded.data).expect("decode"),
            message,
            "the envelope keeps all"
        );
    }
}
