//! The serverless saga path on moto: the PlaceOrder state machine exactly as checked in for the
//! CDK app (`deploy/aws/state-machine`), executed by moto's Step Functions; its commands go
//! through an EventBridge rule to an SQS queue; the harness hands what the queue receives to the
//! contexts' consumer functions as SQS events (routed per command as the CDK app's rules route
//! them), and they answer the task tokens. The order itself is placed through ordering's HTTP
//! function and started by the saga starter, as deployed. Each case runs in its own region
//! (moto 5.2.1 fails a second execution in one region).

use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use eventflow_testkit::emulator::{on_path, skip_or_fail};
use eventflow_testkit::moto::Moto;
use serde_json::{Value, json};

use super::Invoked;
use super::artifacts::{BUS_PLACEHOLDER, COMMAND_SOURCE, STATE_MACHINE_FILE};
use super::consumer::{Consumer, consume};
use super::edge;
use super::starter::{Starter, start_sagas};
use super::tests::{Deployment, call, http_api_event, sqs_batch_of};
use crate::contract::saga;
use crate::platform::backends::Backends;
use crate::platform::config::Config;

/// Which context's queue a command's rule feeds (the CDK app's rules).
fn context_of(command: &str) -> &'static str {
    match command {
        saga::RESERVE_INVENTORY | saga::RELEASE_INVENTORY => "inventory",
        saga::AUTHORIZE_PAYMENT | saga::CANCEL_PAYMENT => "payment",
        saga::CREATE_SHIPMENT | saga::CANCEL_SHIPMENT => "shipping",
        _ => "ordering",
    }
}

/// A moto of the test's own, or `None` after a loud SKIPPED line (a failure under `CI=true`).
fn moto(test: &str) -> Option<Moto> {
    if !on_path("moto_server") {
        skip_or_fail(&format!(
            "{test} needs moto_server (pip install 'moto[server]'); it fails under CI=true"
        ));
        return None;
    }
    Some(Moto::start().expect("moto starts"))
}

struct Case {
    name: &'static str,
    region: &'static str,
    items: Value,
    zip: &'static str,
    status: ExecutionStatus,
    commands: &'static [&'static str],
    order_status: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "happy",
            region: "us-east-1",
            items: json!([{"productId": "prod-1", "quantity": 1}]),
            zip: "98101",
            status: ExecutionStatus::Succeeded,
            commands: &[
                "ReserveInventory",
                "AuthorizePayment",
                "CreateShipment",
                "CompleteOrder",
            ],
            order_status: "COMPLETED",
        },
        Case {
            name: "declined",
            region: "us-east-2",
            // 30 keyboards: over the payment limit, within stock.
            items: json!([{"productId": "prod-1", "quantity": 30}]),
            zip: "98101",
            status: ExecutionStatus::Failed,
            commands: &[
                "ReserveInventory",
                "AuthorizePayment",
                "ReleaseInventory",
                "CancelOrder",
            ],
            order_status: "CANCELLED",
        },
        Case {
            name: "out of stock",
            region: "us-west-1",
            items: json!([{"productId": "prod-5", "quantity": 6}]),
            zip: "98101",
            status: ExecutionStatus::Failed,
            commands: &["ReserveInventory", "CancelOrder"],
            order_status: "CANCELLED",
        },
        Case {
            name: "undeliverable",
            region: "us-west-2",
            items: json!([{"productId": "prod-3", "quantity": 1}]),
            zip: crate::shipping::domain::UNDELIVERABLE_ZIP,
            status: ExecutionStatus::Failed,
            commands: &[
                "ReserveInventory",
                "AuthorizePayment",
                "CreateShipment",
                "CancelPayment",
                "ReleaseInventory",
                "CancelOrder",
            ],
            order_status: "CANCELLED",
        },
    ]
}

macro_rules! client {
    ($krate:ident, $moto:expr, $region:expr) => {
        $krate::Client::from_conf(
            $krate::Config::builder()
                .behavior_version($krate::config::BehaviorVersion::latest())
                .region($krate::config::Region::new($region))
                .endpoint_url($moto.endpoint())
                .credentials_provider($krate::config::Credentials::new(
                    "test", "test", None, None, "moto",
                ))
                .build(),
        )
    };
}

#[tokio::test]
async fn placeorder_runs_as_a_state_machine_with_participants_on_sqs() {
    let Some(moto) = moto("the serverless saga test") else {
        return;
    };
    moto.configure(r#"{"stepfunctions":{"execute_state_machine":true}}"#)
        .expect("moto executes state machines");
    for case in cases() {
        run(&moto, &case).await;
    }
}

async fn run(moto: &Moto, case: &Case) {
    let name = case.name;
    let sfn = client!(aws_sdk_sfn, moto, case.region);
    let events = client!(aws_sdk_eventbridge, moto, case.region);
    let sqs = client!(aws_sdk_sqs, moto, case.region);

    // The bus, the commands' rule and queue, the state machine as checked in.
    events
        .create_event_bus()
        .name("commerce")
        .send()
        .await
        .expect("bus");
    let queue_url = sqs
        .create_queue()
        .queue_name("commands")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("a queue url");
    let queue_arn = format!("arn:aws:sqs:{}:123456789012:commands", case.region);
    events
        .put_rule()
        .name("saga-commands")
        .event_bus_name("commerce")
        .event_pattern(json!({"source": [COMMAND_SOURCE]}).to_string())
        .send()
        .await
        .expect("rule");
    events
        .put_targets()
        .rule("saga-commands")
        .event_bus_name("commerce")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("commands")
                .arn(&queue_arn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("targets");
    let asl = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(STATE_MACHINE_FILE),
    )
    .expect("the checked-in state machine")
    .replace(BUS_PLACEHOLDER, "commerce");
    let state_machine_arn = sfn
        .create_state_machine()
        .name("PlaceOrder")
        .definition(asl)
        .role_arn("arn:aws:iam::123456789012:role/place-order")
        .send()
        .await
        .expect("state machine")
        .state_machine_arn;

    // The contexts as their functions start them, and an order placed through ordering's.
    let deployment = Deployment::new().await;
    let mut contexts = Vec::new();
    for service in [
        "identity",
        "catalog",
        "ordering",
        "inventory",
        "payment",
        "shipping",
    ] {
        contexts.push((service, deployment.start(service).await));
    }
    let consumers: Vec<(&str, Consumer)> = contexts
        .iter()
        .map(|(service, invoked)| (*service, Consumer::of(invoked, Some(sfn.clone()))))
        .collect();
    let consumer = |service: &str| {
        consumers
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, c)| c.clone())
            .expect("a consumer")
    };
    let relays: Vec<_> = contexts
        .iter()
        .map(|(service, invoked)| (*service, std::sync::Arc::clone(&invoked.relay)))
        .collect();
    let routers: Vec<_> = contexts
        .into_iter()
        .map(|(service, invoked)| (service, edge::router(invoked)))
        .collect();
    let router = |service: &str| {
        &routers
            .iter()
            .find(|(s, _)| *s == service)
            .expect("a router")
            .1
    };
    // The seed's facts reach ordering (customers, prices) through the relays and its queue.
    let mut facts = Vec::new();
    for (_, relay) in &relays {
        facts.extend(deployment.relay(relay).await);
    }
    let ordering = consumer("ordering");
    assert!(
        consume(&ordering, sqs_batch_of(&facts))
            .await
            .batch_item_failures
            .is_empty()
    );
    let login = json!({"username": "user@example.com", "password": "password"});
    let (_, body) = call(
        router("identity"),
        &http_api_event("POST", "/auth/login", None, Some(login)),
    )
    .await;
    let token = body["token"].as_str().expect("a token").to_owned();
    let order = json!({"items": case.items, "shippingAddress":
        {"street": "1 Main St", "city": "Seattle", "state": "WA", "zip": case.zip}});
    let (status, body) = call(
        router("ordering"),
        &http_api_event("POST", "/orders", Some(&token), Some(order)),
    )
    .await;
    assert_eq!(status.as_u16(), 202, "{name}: {body}");
    let order_id = body["orderId"].as_str().expect("an order id").to_owned();

    // OrderPlaced, relayed, starts the saga (twice: a redelivery starts nothing new).
    let ordering_relay = &relays
        .iter()
        .find(|(s, _)| *s == "ordering")
        .expect("ordering")
        .1;
    let placed = deployment.relay(ordering_relay).await;
    let starter = Starter {
        client: sfn.clone(),
        state_machine_arn: state_machine_arn.clone(),
    };
    for _ in 0..2 {
        let response = start_sagas(&starter, sqs_batch_of(&placed)).await;
        assert!(
            response.batch_item_failures.is_empty(),
            "{name}: the saga starts"
        );
    }
    let execution_arn = format!(
        "{}:{order_id}",
        state_machine_arn.replace(":stateMachine:", ":execution:")
    );

    // Pump: the queue's messages to the consumer of the context each command's rule names.
    let mut commands = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        let described = sfn
            .describe_execution()
            .execution_arn(&execution_arn)
            .send()
            .await
            .expect("describe");
        if described.status != ExecutionStatus::Running {
            break described.status;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: the execution did not end; commands {commands:?}"
        );
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for message in received.messages.unwrap_or_default() {
            let body = message.body().unwrap_or_default().to_owned();
            let event: Value = serde_json::from_str(&body).expect("an EventBridge event");
            let command = event["detail-type"].as_str().unwrap_or_default().to_owned();
            let batch =
                super::tests::sqs_event(&[(message.message_id().unwrap_or("m"), body.as_str())]);
            let response = consume(&consumer(context_of(&command)), batch).await;
            assert!(
                response.batch_item_failures.is_empty(),
                "{name}: {command} failed"
            );
            commands.push(command);
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    };
    assert_eq!(status, case.status, "{name}: commands {commands:?}");
    assert_eq!(commands, case.commands, "{name}");

    // Ordering's view of the order, fed its own events the same way.
    let settled = deployment.relay(ordering_relay).await;
    assert!(
        consume(&ordering, sqs_batch_of(&settled))
            .await
            .batch_item_failures
            .is_empty()
    );
    let (_, body) = call(
        router("ordering"),
        &http_api_event("GET", &format!("/orders/{order_id}"), Some(&token), None),
    )
    .await;
    assert_eq!(body["status"], case.order_status, "{name}: {body}");
}

/// `EVENTFLOW_HANDLER=seed` on DynamoDB and EventBridge (moto): the seed lands in the contexts'
/// tables, identity's HTTP function logs a seeded user in from them, and the outbox relay
/// publishes what the seed recorded when the meta table's stream names it.
#[tokio::test]
async fn the_seed_lands_in_dynamodb_and_the_relay_publishes_it() {
    let Some(moto) = moto("the seed test") else {
        return;
    };
    let settings = [
        ("EVENT_BUS_ADAPTER", "eventbridge"),
        ("EVENT_BUS_NAME", "commerce"),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("WORK_QUEUE_ADAPTER", "sqs"),
        ("JWT_SECRET", "a secret of thirty-two characters!"),
    ];
    let env = |name: &str| {
        settings
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
    };
    let config = |args: &[&str]| match Config::parse(env, args.iter().map(|a| (*a).to_owned())) {
        Ok(crate::platform::config::Parsed::Run(config)) => config,
        other => panic!("settings: {other:?}"),
    };
    let backends = Backends::connect(&config(&["provision"]).backend)
        .await
        .expect("cloud");
    let Backends::Cloud(cloud) = &backends else {
        unreachable!("cloud settings")
    };
    cloud.create_tables().await.expect("tables");
    super::seed(&config(&["provision"]), &backends)
        .await
        .expect("seeded");

    let identity = Invoked::start(
        "identity",
        &config(&["serve", "identity"]),
        backends.clone(),
    )
    .await
    .expect("identity starts");
    let login = json!({"username": "operator@example.com", "password": "password"});
    let (status, body) = call(
        &edge::router(identity),
        &http_api_event("POST", "/auth/login", None, Some(login)),
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{body}");

    let relays = super::relay::Relays::new(&config(&["serve", "identity"]), &backends);
    let record = json!({"Records": [{"eventSourceARN":
        "arn:aws:dynamodb:eu-west-1:123456789012:table/commerce-identity-meta/stream/2026"}]});
    let published = relays
        .relay(serde_json::from_value(record).expect("a stream event"))
        .await
        .expect("relayed");
    assert_eq!(
        published,
        crate::contract::SEED_CUSTOMERS.len(),
        "one CustomerRegistered per seeded user"
    );
}
