//! Error mapping and retries against a scripted stand-in for DynamoDB (no emulator needed): DynamoDB's
//! throttling, 5xx and `TransactionConflict` responses are hard to provoke on moto, so a loopback
//! HTTP server answers with exactly those.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use eventflow_core::{
    AppendRequest, Backoff, Error, EventStore, ExpectedVersion, Metadata, NewEvent, StreamId,
};
use eventflow_store_dynamodb::{DynamoDbConfig, DynamoDbError, DynamoDbEventStore, testkit};

/// A server that answers requests with the scripted responses in order, then `200 {}`.
struct Scripted {
    endpoint: String,
    requests: Arc<AtomicUsize>,
}

fn scripted(responses: Vec<(u16, &'static str)>) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(Mutex::new(VecDeque::from(responses)));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for connection in listener.incoming().flatten() {
            let mut reader = BufReader::new(connection.try_clone().unwrap());
            let mut writer = connection;
            let mut length = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            counter.fetch_add(1, Ordering::SeqCst);
            let (status, body) = script.lock().unwrap().pop_front().unwrap_or((200, "{}"));
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.0\r\n\
                 connection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = writer.write_all(response.as_bytes());
        }
    });
    Scripted { endpoint, requests }
}

const CONFLICT: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [TransactionConflict]","CancellationReasons":[{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"}]}"#;
const PUT_CONFLICT: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionConflictException","message":"Transaction is ongoing for the item"}"#;
const THROTTLED: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#;
const INTERNAL: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}"#;
const VALIDATION: &str = r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"One or more parameter values were invalid"}"#;

fn store(endpoint: &str) -> DynamoDbEventStore {
    let config = DynamoDbConfig::new("events", "meta").with_retry(Backoff::new(
        3,
        Duration::from_millis(1),
        Duration::from_millis(5),
    ));
    DynamoDbEventStore::new(testkit::local_client(endpoint), config)
}

/// One event: written with a conditional `PutItem`.
fn append_one() -> AppendRequest {
    let event = NewEvent::new("E", 1, Bytes::from_static(b"{}"), Metadata::new());
    AppendRequest::new(StreamId::new("s"), ExpectedVersion::NoStream, vec![event])
}

/// One event and its outbox entry: two items, written with `TransactWriteItems`.
fn append_transaction() -> AppendRequest {
    append_one().with_outbox(true)
}

fn dynamo_source(error: &Error) -> &DynamoDbError {
    let (Error::Transient { source, .. } | Error::Backend { source, .. }) = error else {
        panic!("expected a transient or backend error, got {error:?}");
    };
    source.downcast_ref::<DynamoDbError>().unwrap()
}

#[tokio::test]
async fn transaction_conflicts_are_retried_with_backoff() {
    let server = scripted(vec![(400, CONFLICT), (400, CONFLICT)]);
    let result = store(&server.endpoint)
        .append(append_transaction())
        .await
        .unwrap();
    assert_eq!(result.last_version, 1);
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        3,
        "two cancelled, the third commits"
    );
}

#[tokio::test]
async fn transaction_conflicts_become_transient_when_attempts_run_out() {
    let server = scripted(vec![(400, CONFLICT); 3]);
    let error = store(&server.endpoint)
        .append(append_transaction())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Transient {
                backend: "dynamodb",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());
    let source = dynamo_source(&error);
    assert_eq!(source.operation(), "TransactWriteItems");
    assert!(
        source.to_string().contains("TransactionConflict"),
        "{source}"
    );
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        3,
        "the retry policy's 3 attempts"
    );
}

#[tokio::test]
async fn throttling_is_retried_by_the_sdk_then_transient() {
    // The test client allows 2 attempts: one throttled answer is absorbed.
    let server = scripted(vec![(400, THROTTLED)]);
    store(&server.endpoint).append(append_one()).await.unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);

    let server = scripted(vec![(400, THROTTLED); 2]);
    let error = store(&server.endpoint)
        .read_stream(&StreamId::new("s"), 1, 10)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Transient { .. }), "{error:?}");
    assert!(
        dynamo_source(&error)
            .to_string()
            .contains("ThrottlingException")
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_single_put_meeting_a_transaction_is_transient() {
    let server = scripted(vec![(400, PUT_CONFLICT); 2]);
    let error = store(&server.endpoint)
        .append(append_one())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Transient { .. }), "{error:?}");
    assert_eq!(dynamo_source(&error).operation(), "PutItem");
}

#[tokio::test]
async fn server_errors_are_transient() {
    let server = scripted(vec![(500, INTERNAL); 2]);
    let error = store(&server.endpoint)
        .append(append_one())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Transient { .. }), "{error:?}");
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        2,
        "retried by the SDK"
    );
}

#[tokio::test]
async fn other_errors_are_backend_errors_and_not_retried() {
    let server = scripted(vec![(400, VALIDATION)]);
    let error = store(&server.endpoint)
        .append(append_one())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    assert!(!error.is_retryable());
    assert!(
        dynamo_source(&error)
            .to_string()
            .contains("ValidationException")
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}
