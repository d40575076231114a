//! The wire format every cloud adapter shares: a [`Message`] serialised as JSON (the *wire envelope*;
//! not to be confused with a typed `eventflow_core::Envelope`, an event read back from the store).
//!
//! - EventBridge: the envelope is the event's `detail`; `detail-type` is the message type and
//!   `source` the message source, so rules can match on them. SQS then carries the whole
//!   EventBridge event (`{"version", "id", "detail-type", "source", "account"?, "time", "region",
//!   "resources", "detail"}`) as the message body; [`decode_body`] unwraps it.
//! - SQS work queue: the envelope is the message body.
//! - Pub/Sub: the envelope is the message data; type, source, id and the attributes that fit
//!   Pub/Sub's limits are also copied into native attributes for filtering and observability.
//!
//! The envelope is authoritative: attributes, ordering key and id always come from it, so nothing
//! depends on a broker's attribute limits or reserved names.

use eventflow_core::{Error, Message, Result};
use serde::Deserialize;

/// Serialises a message as its envelope.
#[cfg_attr(not(any(feature = "sqs", feature = "pubsub")), allow(dead_code))]
pub(crate) fn encode(message: &Message) -> Result<String> {
    serde_json::to_string(message).map_err(|source| Error::Serialization {
        what: format!("message {} ({})", message.id, message.message_type),
        source,
    })
}

/// Parses an envelope.
#[cfg_attr(not(any(feature = "pubsub", test)), allow(dead_code))]
pub(crate) fn decode(bytes: &[u8]) -> Result<Message> {
    serde_json::from_slice(bytes).map_err(|source| Error::Serialization {
        what: "message envelope".to_owned(),
        source,
    })
}

/// The part of an EventBridge event (as EventBridge hands it to an SQS target) that we read.
/// `account` is absent on moto, present on AWS: it is not read.
#[derive(Deserialize)]
struct EventBridgeEvent {
    #[serde(rename = "detail-type")]
    detail_type: String,
    source: String,
    detail: serde_json::Value,
}

/// Parses an SQS message body: an EventBridge event whose `detail` is the envelope, or the
/// envelope itself (work queues, redriven messages).
#[cfg_attr(not(any(feature = "sqs", test)), allow(dead_code))]
pub(crate) fn decode_body(body: &str) -> Result<Message> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|source| Error::Serialization {
            what: "SQS message body".to_owned(),
            source,
        })?;
    let is_event = value.get("detail-type").is_some() && value.get("detail").is_some();
    let envelope = if is_event {
        let event: EventBridgeEvent =
            serde_json::from_value(value).map_err(|source| Error::Serialization {
                what: "EventBridge event in an SQS message body".to_owned(),
                source,
            })?;
        let message: Message =
            serde_json::from_value(event.detail).map_err(|source| Error::Serialization {
                what: format!("detail of EventBridge event {}", event.detail_type),
                source,
            })?;
        if message.message_type != event.detail_type || message.source != event.source {
            tracing::warn!(
                detail_type = %event.detail_type,
                source = %event.source,
                message_type = %message.message_type,
                message_source = %message.source,
                "EventBridge detail-type/source differ from the envelope; the envelope wins"
            );
        }
        message
    } else {
        serde_json::from_value(value).map_err(|source| Error::Serialization {
            what: "message envelope in an SQS message body".to_owned(),
            source,
        })?
    };
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message() -> Message {
        Message::new(
            "OrderPlaced",
            "ordering",
            json!({"total": 42, "text": "ünï \"q\""}),
        )
        .with_correlation_id("c-1")
        .with_ordering_key("order-1")
    }

    #[test]
    fn envelope_round_trips() {
        let m = message();
        let text = encode(&m).expect("encode");
        assert_eq!(decode(text.as_bytes()).expect("decode"), m);
        assert_eq!(decode_body(&text).expect("decode body"), m);
    }

    #[test]
    fn eventbridge_event_is_unwrapped_with_or_without_account() {
        let m = message();
        let detail: serde_json::Value =
            serde_json::from_str(&encode(&m).expect("encode")).expect("json");
        for account in [Some("123456789012"), None] {
            let mut event = json!({
                "version": "0", "id": "e-1", "detail-type": "OrderPlaced", "source": "ordering",
                "time": "2026-11-24T09:00:00Z", "region": "us-east-1", "resources": [],
                "detail": detail,
            });
            if let Some(account) = account {
                event["account"] = json!(account);
            }
            assert_eq!(decode_body(&event.to_string()).expect("decode"), m);
        }
    }

    #[test]
    fn garbage_is_a_serialization_error() {
        assert!(matches!(
            decode_body("not json"),
            Err(Error::Serialization { .. })
        ));
        assert!(matches!(
            decode_body(r#"{"detail-type":"X","source":"s","detail":{"nope":1}}"#),
            Err(Error::Serialization { .. })
        ));
    }
}
