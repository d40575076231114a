//! The Lambda handlers fed the events AWS sends them, on the in-memory backends: API Gateway
//! REST (v1, with a stage in the path) and HTTP API (v2) requests, authorizer requests, SQS
//! batches as EventBridge rules fill the queues (one poison record among them), and the relay
//! publishing what a command recorded. The test plays EventBridge: what the relays publish is
//! handed to the consumers as SQS records.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequest;
use aws_lambda_events::sqs::SqsEvent;
use axum::http::StatusCode;
use eventflow_core::{Delivery, HandlerError, Message, MessageHandler, Subscription};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{Consumer, Invoked, consume, edge};
use crate::platform::auth::Jwt;
use crate::platform::backends::Backends;
use crate::platform::config::{Backend, Config};

/// What the relays publish, as EventBridge would receive it.
#[derive(Default)]
struct Published(Mutex<Vec<Message>>);

#[async_trait]
impl MessageHandler for Published {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        self.0.lock().expect("lock").push(delivery.message);
        Ok(())
    }
}

/// A REST API (v1) proxy event for `method path` on stage `test`, the path as API Gateway sends
/// it (with the stage).
pub(super) fn rest_event(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> String {
    let mut headers = json!({"Host": "abc.execute-api.us-east-1.amazonaws.com", "Content-Type": "application/json"});
    if let Some(token) = token {
        headers["Authorization"] = json!(format!("Bearer {token}"));
    }
    json!({
        "resource": "/{proxy+}",
        "path": format!("/test{path}"),
        "httpMethod": method,
        "headers": headers,
        "queryStringParameters": null,
        "pathParameters": {"proxy": path.trim_start_matches('/')},
        "requestContext": {
            "accountId": "123456789012", "resourceId": "us4z18", "stage": "test",
            "requestId": "41b45ea3-70b5-11e6-b7bd-69b5aaebc7d9", "requestTimeEpoch": 1583798639428u64,
            "identity": {"sourceIp": "192.168.100.1"},
            "resourcePath": "/{proxy+}", "httpMethod": method, "apiId": "abc"
        },
        "body": body.map(|b| b.to_string()),
        "isBase64Encoded": false
    })
    .to_string()
}

/// An HTTP API (v2) event for `method path`.
pub(super) fn http_api_event(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> String {
    let mut headers = json!({"host": "abc.execute-api.us-east-1.amazonaws.com", "content-type": "application/json"});
    if let Some(token) = token {
        headers["authorization"] = json!(format!("Bearer {token}"));
    }
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc", "domainName": "abc.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "65.78.31.245", "userAgent": "test"},
            "requestId": "MIZRNhJtIAMEMDw=", "routeKey": "$default", "stage": "$default",
            "time": "06/May/2020:22:36:55 +0000", "timeEpoch": 1588804615616u64
        },
        "body": body.map(|b| b.to_string()),
        "isBase64Encoded": false
    })
    .to_string()
}

pub(super) type Http =
    tower::util::MapRequest<axum::Router, fn(lambda_http::Request) -> lambda_http::Request>;

/// Sends `event` to an HTTP function; its status and JSON body.
pub(super) async fn call(router: &Http, event: &str) -> (StatusCode, Value) {
    let request = lambda_http::request::from_str(event).expect("an API Gateway event");
    let response = router.clone().oneshot(request).await.expect("a response");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The bodies an EventBridge rule puts on a queue for `messages`, with record ids.
fn eventbridge_bodies(messages: &[Message]) -> Vec<(String, String)> {
    messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let event = json!({
                "version": "0", "id": format!("event-{i}"), "detail-type": message.message_type,
                "source": message.source, "account": "123456789012",
                "time": "2026-12-08T00:00:00Z", "region": "us-east-1", "resources": [],
                "detail": message,
            });
            (format!("record-{i}"), event.to_string())
        })
        .collect()
}

/// An SQS batch of records (id, body).
pub(super) fn sqs_event(records: &[(&str, &str)]) -> SqsEvent {
    let records: Vec<Value> = records
        .iter()
        .map(|(id, body)| sqs_record(id, body))
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("an SQS event")
}

/// An SQS batch whose records carry `messages` as an EventBridge rule puts them on a queue.
pub(super) fn sqs_batch_of(messages: &[Message]) -> SqsEvent {
    let bodies = eventbridge_bodies(messages);
    let records: Vec<(&str, &str)> = bodies
        .iter()
        .map(|(i, b)| (i.as_str(), b.as_str()))
        .collect();
    sqs_event(&records)
}

/// [`sqs_batch_of`] `messages`, then one record that is not an event at all.
fn sqs_batch(messages: &[Message], poison: &str) -> SqsEvent {
    let mut bodies = eventbridge_bodies(messages);
    bodies.push((poison.to_owned(), "this is not an event".to_owned()));
    let records: Vec<(&str, &str)> = bodies
        .iter()
        .map(|(i, b)| (i.as_str(), b.as_str()))
        .collect();
    sqs_event(&records)
}

fn sqs_record(id: &str, body: &str) -> Value {
    json!({
        "messageId": id, "receiptHandle": "handle", "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1588804615616"},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:commerce-ordering", "awsRegion": "us-east-1"
    })
}

/// The contexts on shared in-memory backends, started as their functions start them (the
/// configuration seeds, as `provision` does), and what their relays publish.
pub(super) struct Deployment {
    published: Arc<Published>,
    config: Config,
    backends: Backends,
}

impl Deployment {
    pub(super) async fn new() -> Deployment {
        let config = Config::ephemeral();
        let backends = Backends::connect(&Backend::Local).await.expect("memory");
        let bus = backends.bus();
        let published = Arc::new(Published::default());
        let _ = bus
            .subscribe(
                Subscription::new("eventbridge"),
                Arc::clone(&published) as _,
            )
            .await
            .expect("subscribe");
        Deployment {
            published,
            config,
            backends,
        }
    }

    pub(super) async fn start(&self, service: &str) -> Invoked {
        Invoked::start(service, &self.config, self.backends.clone())
            .await
            .expect("the context starts")
    }

    /// Relays `invoked`'s outbox (the stream relay's work) and takes what reached the bus.
    pub(super) async fn relay(&self, relay: &eventflow_core::OutboxRelay) -> Vec<Message> {
        relay.relay_pending().await.expect("relayed");
        let Backends::Local { bus } = &self.backends else {
            unreachable!("in memory")
        };
        bus.wait_idle().await;
        std::mem::take(&mut *self.published.0.lock().expect("lock"))
    }
}

#[tokio::test]
async fn an_order_through_api_gateway_the_relay_and_sqs_consumers() {
    let deployment = Deployment::new().await;
    let identity = deployment.start("identity").await;
    let catalog = deployment.start("catalog").await;
    let ordering = deployment.start("ordering").await;
    let (identity_relay, catalog_relay) = (Arc::clone(&identity.relay), Arc::clone(&catalog.relay));
    let consumer = Consumer::of(&ordering, None);
    let catalog_consumer = Consumer::of(&catalog, None);
    let ordering_relay = Arc::clone(&ordering.relay);
    let (identity, catalog, ordering) = (
        edge::router(identity),
        edge::router(catalog),
        edge::router(ordering),
    );

    // The seed's customers and products reach ordering the serverless way: relay, rule, queue.
    let mut facts = deployment.relay(&identity_relay).await;
    facts.extend(deployment.relay(&catalog_relay).await);
    assert!(facts.iter().any(|m| m.message_type == "CustomerRegistered"));
    assert!(facts.iter().any(|m| m.message_type == "ProductListed"));
    let response = consume(&consumer, sqs_batch(&facts, "poison-1")).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["poison-1"], "only the poison record fails");
    // Catalog's own read model is fed the same way.
    let response = consume(&catalog_consumer, sqs_batch(&facts, "poison-3")).await;
    assert_eq!(response.batch_item_failures.len(), 1);

    // Log in through a REST API (v1) with a stage in the path.
    let login = json!({"username": "user@example.com", "password": "password"});
    let (status, body) = call(
        &identity,
        &rest_event("POST", "/auth/login", None, Some(login)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().expect("a token").to_owned();

    // The catalog through an HTTP API (v2).
    let (status, body) = call(&catalog, &http_api_event("GET", "/catalog", None, None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.to_string().contains("prod-1"), "{body}");

    // Place an order (v2) and read it (v1); without a token or with a forged one: 401.
    let order = json!({"items": [{"productId": "prod-1", "quantity": 1}],
        "shippingAddress": {"street": "1 Main St", "city": "Seattle", "state": "WA", "zip": "98101"}});
    let (status, body) = call(
        &ordering,
        &http_api_event("POST", "/orders", None, Some(order.clone())),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let forged = format!("{token}x");
    let (status, _) = call(
        &ordering,
        &http_api_event("POST", "/orders", Some(&forged), Some(order.clone())),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(
        &ordering,
        &http_api_event("POST", "/orders", Some(&token), Some(order)),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let order_id = body["orderId"].as_str().expect("an order id").to_owned();

    // OrderPlaced goes out through ordering's relay and comes back to its order view.
    let placed = deployment.relay(&ordering_relay).await;
    assert_eq!(placed.len(), 1, "{placed:?}");
    assert_eq!(placed[0].message_type, "OrderPlaced");
    let response = consume(&consumer, sqs_batch(&placed, "poison-2")).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    let path = format!("/orders/{order_id}");
    let (status, body) = call(&ordering, &rest_event("GET", &path, Some(&token), None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "PENDING", "{body}");
    let (status, _) = call(&ordering, &rest_event("GET", &path, None, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

fn authorizer_request(token: &str) -> ApiGatewayCustomAuthorizerRequest {
    serde_json::from_value(json!({
        "type": "TOKEN",
        "authorizationToken": token,
        "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abc/prod/POST/orders",
    }))
    .expect("an authorizer request")
}

#[test]
fn the_authorizer_allows_a_valid_token_on_the_stage_and_refuses_the_rest() {
    let jwt = Jwt::new(
        b"a secret of thirty-two characters!",
        std::time::Duration::from_secs(3600),
    );
    let (token, _) = jwt
        .issue("customer-1", crate::platform::auth::Role::Customer)
        .expect("a token");
    let allowed =
        edge::authorize(&jwt, &authorizer_request(&format!("Bearer {token}"))).expect("allowed");
    assert_eq!(allowed["principalId"], "customer-1");
    assert_eq!(allowed["context"]["role"], "customer");
    let statement = &allowed["policyDocument"]["Statement"][0];
    assert_eq!(statement["Effect"], "Allow");
    assert_eq!(statement["Action"], "execute-api:Invoke");
    assert_eq!(
        statement["Resource"],
        "arn:aws:execute-api:us-east-1:123456789012:abc/prod/*/*"
    );

    let other = Jwt::new(
        b"another secret, also 32 characters",
        std::time::Duration::from_secs(3600),
    );
    let (foreign, _) = other
        .issue("customer-1", crate::platform::auth::Role::Operator)
        .expect("a token");
    for refused in [
        String::new(),
        token.clone(),
        format!("Bearer {foreign}"),
        format!("Bearer {token}x"),
        format!("Basic {token}"),
    ] {
        assert_eq!(
            edge::authorize(&jwt, &authorizer_request(&refused)),
            Err(edge::UNAUTHORIZED.to_owned()),
            "{refused:?}"
        );
    }
}

#[test]
fn a_request_from_api_gateway_has_no_stage_and_the_clients_address() {
    use std::net::SocketAddr;

    use axum::extract::ConnectInfo;

    for (event, path, client) in [
        (
            rest_event("GET", "/orders/o-1", None, None),
            "/orders/o-1",
            "192.168.100.1",
        ),
        (
            http_api_event("GET", "/catalog", None, None),
            "/catalog",
            "65.78.31.245",
        ),
    ] {
        let request = lambda_http::request::from_str(&event).expect("an API Gateway event");
        let request = edge::from_api_gateway(request);
        assert_eq!(request.uri().path(), path);
        let ConnectInfo(address) = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .expect("the client's address");
        assert_eq!(address.ip().to_string(), client);
    }
}
