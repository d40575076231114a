//! The exported Amazon States Language document, checked by executing it in moto.
//!
//! Each case starts its own `moto_server` (Step Functions execution enabled, `MOTO_PORT` set) and
//! runs its single execution in its own region: moto 5.2.1 fails a second `StartExecution` in one
//! account and region (fixed in 5.2.3), so nothing here relies on that being fixed.
//!
//! The state machine sends each command with `events:putEvents.waitForTaskToken`; an EventBridge
//! rule routes them to an SQS queue; the test plays the participants: it consumes the queue, runs
//! each command through the real `Participant`s (aggregates on in-memory stores), and answers with
//! `SendTaskSuccess` / `SendTaskFailure`. Every case then checks the terminal state, the exact
//! commands sent, and the participants' state after compensating (not only that tasks returned).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_eventbridge::types::Target;
use aws_sdk_sfn::types::ExecutionStatus;
use eventflow_core::{CommandContext, InMemoryBus, InMemoryEventStore, Repository};
use eventflow_saga::step_functions::execution_input;
use eventflow_saga::{Backoff, SagaCommand, SagaDefinition, StepFunctionsOptions};
use serde_json::Value;
use support::moto::{self, Moto};
use support::*;

const SOURCE: &str = "eventflow.saga.test";
const STOCK: i64 = 10;

struct Aws {
    sfn: aws_sdk_sfn::Client,
    sqs: aws_sdk_sqs::Client,
    events: aws_sdk_eventbridge::Client,
}

fn clients(moto: &Moto, region: &'static str) -> Aws {
    macro_rules! config {
        ($krate:ident) => {
            $krate::Config::builder()
                .behavior_version($krate::config::BehaviorVersion::latest())
                .region($krate::config::Region::new(region))
                .endpoint_url(moto.endpoint())
                .credentials_provider($krate::config::Credentials::new(
                    "test", "test", None, None, "moto",
                ))
                .retry_config($krate::config::retry::RetryConfig::standard().with_max_attempts(2))
                .build()
        };
    }
    Aws {
        sfn: aws_sdk_sfn::Client::from_conf(config!(aws_sdk_sfn)),
        sqs: aws_sdk_sqs::Client::from_conf(config!(aws_sdk_sqs)),
        events: aws_sdk_eventbridge::Client::from_conf(config!(aws_sdk_eventbridge)),
    }
}

/// How the test answers one command.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// Run it through the participants and report their reply.
    Participant,
    /// Say nothing (the task times out); the command is kept and run late, after the execution.
    Silent,
}

struct Case {
    name: &'static str,
    region: &'static str,
    definition: SagaDefinition,
    order: PlaceOrder,
    faults: Arc<dyn ShopFaults>,
    answer: fn(&SagaCommand) -> Answer,
}

struct Outcome {
    status: ExecutionStatus,
    error: Option<String>,
    commands: Vec<String>,
    stores: ShopStores,
}

fn definition(timeout: Duration, retry: Backoff) -> SagaDefinition {
    place_order(timeout, retry)
}

fn fast_retry(attempts: u32) -> Backoff {
    Backoff::new(attempts, Duration::from_secs(1), Duration::from_secs(1))
}

async fn run(case: Case) -> Option<Outcome> {
    let moto = moto::start(case.name)?;
    let aws = clients(&moto, case.region);

    // Participants: the real aggregates behind the real Participant wrapper.
    let stores = ShopStores {
        inventory: Arc::new(InMemoryEventStore::new()),
        payments: Arc::new(InMemoryEventStore::new()),
        shipping: Arc::new(InMemoryEventStore::new()),
        ordering: Arc::new(InMemoryEventStore::new()),
    };
    Repository::<Warehouse>::new(Arc::clone(&stores.inventory))
        .execute(
            "main",
            &WarehouseCommand::Restock(vec![Item {
                sku: "sku-1".into(),
                quantity: STOCK,
            }]),
            CommandContext::new(),
        )
        .await
        .expect("restock");
    let bus: Arc<dyn eventflow_core::EventBus> = Arc::new(InMemoryBus::new());
    let shop = shop(&stores, &bus, &case.faults);

    // Bus rule -> queue, then the state machine.
    let queue_url = aws
        .sqs
        .create_queue()
        .queue_name(format!("commands-{}", case.name))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    let queue_arn = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .expect("queue arn");
    aws.events
        .put_rule()
        .name("saga-commands")
        .event_pattern(serde_json::json!({ "source": [SOURCE] }).to_string())
        .send()
        .await
        .expect("put rule");
    aws.events
        .put_targets()
        .rule("saga-commands")
        .targets(
            Target::builder()
                .id("queue")
                .arn(queue_arn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("put targets");
    let asl = case
        .definition
        .to_step_functions(&StepFunctionsOptions::new("default", SOURCE));
    let machine = aws
        .sfn
        .create_state_machine()
        .name("PlaceOrder")
        .definition(asl.to_string())
        .role_arn("arn:aws:iam::123456789012:role/saga")
        .send()
        .await
        .expect("create state machine")
        .state_machine_arn;
    let saga_id = case.order.order_id.clone();
    let input = execution_input(
        &saga_id,
        Some("corr-1"),
        serde_json::to_value(&case.order).expect("order json"),
    );
    let execution = aws
        .sfn
        .start_execution()
        .state_machine_arn(machine)
        .name(&saga_id)
        .input(input.to_string())
        .send()
        .await
        .expect("start execution")
        .execution_arn;

    // Play the participants until the execution ends.
    let mut commands = Vec::new();
    let mut silenced = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let (status, error) = loop {
        assert!(
            Instant::now() < deadline,
            "{}: execution did not end",
            case.name
        );
        let received = aws
            .sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for message in received.messages.unwrap_or_default() {
            let body: Value =
                serde_json::from_str(message.body().unwrap_or("{}")).expect("json body");
            let detail_type = body["detail-type"].as_str().unwrap_or_default();
            let command = SagaCommand::from_step_functions_detail(detail_type, &body["detail"])
                .expect("a saga command");
            assert_eq!(command.saga_id, saga_id);
            assert_eq!(command.correlation_id.as_deref(), Some("corr-1"));
            commands.push(command.command_type.clone());
            let token = command.task_token.clone().expect("a task token");
            match (case.answer)(&command) {
                Answer::Silent => silenced.push(command),
                Answer::Participant => {
                    let reply = shop
                        .execute(&command)
                        .await
                        .expect("participant")
                        .expect("a participant handles it");
                    if std::env::var("SAGA_SFN_TRACE").is_ok() {
                        eprintln!(
                            "{}: {} token {}.. -> {} {}",
                            case.name,
                            command.command_type,
                            &token[..12.min(token.len())],
                            reply.reply_type,
                            reply.payload
                        );
                    }
                    if reply.success {
                        aws.sfn
                            .send_task_success()
                            .task_token(token)
                            .output(reply.payload.to_string())
                            .send()
                            .await
                            .expect("send task success");
                    } else {
                        aws.sfn
                            .send_task_failure()
                            .task_token(token)
                            .error(reply.reply_type.clone())
                            .cause(reply.payload["reason"].as_str().unwrap_or_default())
                            .send()
                            .await
                            .expect("send task failure");
                    }
                }
            }
            if let Some(handle) = message.receipt_handle() {
                aws.sqs
                    .delete_message()
                    .queue_url(&queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .expect("delete");
            }
        }
        let described = aws
            .sfn
            .describe_execution()
            .execution_arn(&execution)
            .send()
            .await
            .expect("describe execution");
        if described.status != ExecutionStatus::Running {
            break (described.status, described.error);
        }
    };
    if std::env::var("SAGA_SFN_TRACE").is_ok() {
        let history = aws
            .sfn
            .get_execution_history()
            .execution_arn(&execution)
            .send()
            .await
            .expect("history");
        for e in history.events() {
            eprintln!("{}: history {} {:?}", case.name, e.id(), e.r#type());
        }
    }
    // Commands whose task timed out arrive late at their participant: they must change nothing.
    for command in silenced {
        let reply = shop
            .execute(&command)
            .await
            .expect("participant")
            .expect("handled");
        assert!(
            !reply.success,
            "{}: a late {} was applied after its compensation",
            case.name, command.command_type
        );
    }
    Some(Outcome {
        status,
        error,
        commands,
        stores,
    })
}

async fn stock(stores: &ShopStores) -> i64 {
    load::<Warehouse>(&stores.inventory, "main")
        .await
        .stock
        .get("sku-1")
        .copied()
        .unwrap_or(0)
}

async fn assert_undone(name: &str, stores: &ShopStores, order: &str) {
    assert_eq!(stock(stores).await, STOCK, "{name}: stock restored");
    assert_eq!(
        load::<Payment>(&stores.payments, order).await.authorized,
        0,
        "{name}: nothing charged"
    );
    assert_eq!(
        load::<Shipment>(&stores.shipping, order).await.active,
        0,
        "{name}: no shipment"
    );
    let ordering = load::<Order>(&stores.ordering, order).await;
    assert!(
        ordering.cancelled && !ordering.completed,
        "{name}: order cancelled"
    );
}

fn answer_all(_: &SagaCommand) -> Answer {
    Answer::Participant
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_succeeds() {
    let Some(out) = run(Case {
        name: "happy",
        region: "us-east-1",
        definition: definition(Duration::from_secs(20), fast_retry(3)),
        order: PlaceOrder::new("order-happy", 2, 25_00),
        faults: Arc::new(NoFaults),
        answer: answer_all,
    })
    .await
    else {
        return;
    };
    assert_eq!(out.status, ExecutionStatus::Succeeded, "{:?}", out.error);
    assert_eq!(out.commands, PLACE_ORDER_STEPS);
    assert_eq!(stock(&out.stores).await, STOCK - 2);
    assert_eq!(
        load::<Payment>(&out.stores.payments, "order-happy")
            .await
            .authorized,
        25_00
    );
    assert!(
        load::<Order>(&out.stores.ordering, "order-happy")
            .await
            .completed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_at_step_2_releases_inventory_and_cancels_the_order() {
    let Some(out) = run(Case {
        name: "fail-step-2",
        region: "us-east-2",
        definition: definition(Duration::from_secs(20), fast_retry(3)),
        // Above the card limit: the payment participant declines.
        order: PlaceOrder::new("order-f2", 3, CARD_LIMIT + 1),
        faults: Arc::new(NoFaults),
        answer: answer_all,
    })
    .await
    else {
        return;
    };
    assert_eq!(out.status, ExecutionStatus::Failed);
    assert_eq!(out.error.as_deref(), Some("Saga.Compensated"));
    assert_eq!(
        out.commands,
        [
            "ReserveInventory",
            "AuthorizePayment",
            "ReleaseInventory",
            "CancelOrder"
        ]
    );
    assert_undone("fail-step-2", &out.stores, "order-f2").await;
}

struct RefuseShipment;
impl ShopFaults for RefuseShipment {
    fn refuse(&self, _order: &str, step: &str) -> Option<String> {
        (step == "CreateShipment").then(|| "no courier".to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_at_step_3_cancels_payment_then_releases_inventory() {
    let Some(out) = run(Case {
        name: "fail-step-3",
        region: "us-west-1",
        definition: definition(Duration::from_secs(20), fast_retry(3)),
        order: PlaceOrder::new("order-f3", 1, 10_00),
        faults: Arc::new(RefuseShipment),
        answer: answer_all,
    })
    .await
    else {
        return;
    };
    assert_eq!(out.status, ExecutionStatus::Failed);
    assert_eq!(out.error.as_deref(), Some("Saga.Compensated"));
    assert_eq!(
        out.commands,
        [
            "ReserveInventory",
            "AuthorizePayment",
            "CreateShipment",
            "CancelPayment",
            "ReleaseInventory",
            "CancelOrder"
        ]
    );
    assert_undone("fail-step-3", &out.stores, "order-f3").await;
}

fn silent_shipment(command: &SagaCommand) -> Answer {
    if command.command_type == "CreateShipment" {
        Answer::Silent
    } else {
        Answer::Participant
    }
}

/// CreateShipment is never answered: its deadline resends it (the `Retry` on `States.Timeout`)
/// once, then the budget is spent and it is compensated first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_timeout_resends_then_compensates_the_timed_out_step_first() {
    let mut definition = definition(Duration::from_secs(3), fast_retry(3));
    for step in &mut definition.steps {
        step.resend = fast_retry(2);
    }
    let Some(out) = run(Case {
        name: "timeout",
        region: "us-west-2",
        definition,
        order: PlaceOrder::new("order-to", 4, 30_00),
        faults: Arc::new(NoFaults),
        answer: silent_shipment,
    })
    .await
    else {
        return;
    };
    assert_eq!(out.status, ExecutionStatus::Failed);
    assert_eq!(out.error.as_deref(), Some("Saga.Compensated"));
    assert_eq!(
        out.commands,
        [
            "ReserveInventory",
            "AuthorizePayment",
            "CreateShipment",
            "CreateShipment",
            "CancelShipment",
            "CancelPayment",
            "ReleaseInventory",
            "CancelOrder"
        ]
    );
    // run() also delivered the silenced CreateShipment late: the tombstone refused it.
    assert_undone("timeout", &out.stores, "order-to").await;
}

/// Fails the first `n` attempts of ReleaseInventory.
struct FlakyRelease(std::sync::atomic::AtomicU32);
impl ShopFaults for FlakyRelease {
    fn fail_compensation(&self, _order: &str, step: &str) -> bool {
        use std::sync::atomic::Ordering;
        step == "ReserveInventory"
            && self
                .0
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_compensation_is_retried_until_it_succeeds() {
    let Some(out) = run(Case {
        name: "retry",
        region: "eu-west-1",
        definition: definition(Duration::from_secs(20), fast_retry(3)),
        order: PlaceOrder::new("order-rt", 1, CARD_LIMIT + 1),
        faults: Arc::new(FlakyRelease(1.into())),
        answer: answer_all,
    })
    .await
    else {
        return;
    };
    assert_eq!(out.status, ExecutionStatus::Failed);
    assert_eq!(out.error.as_deref(), Some("Saga.Compensated"));
    // moto 5.2.1 reuses one task token across Retry attempts (AWS issues a new one per attempt),
    // so the failure answered for attempt 1 is read again by attempt 2 and a third attempt is
    // sent. Either way: retried at least once, then applied exactly once.
    let releases = out
        .commands
        .iter()
        .filter(|c| *c == "ReleaseInventory")
        .count();
    assert!(releases >= 2, "{:?}", out.commands);
    assert_eq!(
        out.commands[..3],
        ["ReserveInventory", "AuthorizePayment", "ReleaseInventory"]
    );
    assert_eq!(out.commands.last().map(String::as_str), Some("CancelOrder"));
    assert_eq!(out.commands.len(), 3 + releases);
    // Stock is back to exactly STOCK: released once, not once per attempt.
    assert_undone("retry", &out.stores, "order-rt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_that_never_succeeds_ends_in_needs_attention() {
    let Some(out) = run(Case {
        name: "needs-attention",
        region: "eu-central-1",
        definition: definition(Duration::from_secs(20), fast_retry(2)),
        order: PlaceOrder::new("order-na", 1, CARD_LIMIT + 1),
        faults: Arc::new(FlakyRelease(100.into())),
        answer: answer_all,
    })
    .await
    else {
        return;
    };
    assert_eq!(out.status, ExecutionStatus::Failed);
    assert_eq!(out.error.as_deref(), Some("Saga.NeedsAttention"));
    assert_eq!(out.commands[..2], ["ReserveInventory", "AuthorizePayment"]);
    assert!(
        out.commands[2..].iter().all(|c| c == "ReleaseInventory") && out.commands.len() >= 4,
        "a failed release is retried, then the saga needs attention: {:?}",
        out.commands
    );
    // Visible, not silent: the reservation is still held and the order is not cancelled.
    assert_eq!(stock(&out.stores).await, STOCK - 1);
}

#[test]
fn the_export_routes_failures_into_the_reverse_compensation_chain() {
    let asl = definition(Duration::from_secs(30), fast_retry(4))
        .to_step_functions(&StepFunctionsOptions::new("orders-bus", SOURCE));
    let states = &asl["States"];
    let next_on = |state: &str, error: &str| -> String {
        states[state]["Catch"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["ErrorEquals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e == error)
            })
            .map(|c| c["Next"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(asl["StartAt"], "Prepare");
    assert_eq!(states["Prepare"]["Next"], "Step_ReserveInventory");
    assert_eq!(
        next_on("Step_ReserveInventory", "States.ALL"),
        "Final_CancelOrder"
    );
    assert_eq!(
        next_on("Step_ReserveInventory", "States.Timeout"),
        "Compensate_ReserveInventory"
    );
    assert_eq!(
        next_on("Step_AuthorizePayment", "States.ALL"),
        "Compensate_ReserveInventory"
    );
    assert_eq!(
        next_on("Step_CreateShipment", "States.ALL"),
        "Compensate_AuthorizePayment"
    );
    assert_eq!(
        next_on("Step_CreateShipment", "States.Timeout"),
        "Compensate_CreateShipment"
    );
    // CompleteOrder is the pivot: past it nothing is compensated.
    assert_eq!(
        next_on("Step_CompleteOrder", "States.ALL"),
        "NeedsAttention"
    );
    let timeout_retry = |state: &str| states[state]["Retry"][0].clone();
    for step in ["ReserveInventory", "AuthorizePayment", "CreateShipment"] {
        let retry = timeout_retry(&format!("Step_{step}"));
        assert_eq!(retry["ErrorEquals"][0], "States.Timeout", "{step}");
        assert_eq!(
            retry["MaxAttempts"], 4,
            "{step}: DEFAULT_RESEND sends 5 times"
        );
        assert_eq!(retry["IntervalSeconds"], 1, "{step}");
    }
    assert_eq!(
        timeout_retry("Step_CompleteOrder")["MaxAttempts"],
        99_999_999,
        "the pivot is resent until it answers"
    );
    assert_eq!(states["Step_CompleteOrder"]["Next"], "Completed");
    assert_eq!(
        states["Compensate_CreateShipment"]["Next"],
        "Compensate_AuthorizePayment"
    );
    assert_eq!(
        states["Compensate_AuthorizePayment"]["Next"],
        "Compensate_ReserveInventory"
    );
    assert_eq!(
        states["Compensate_ReserveInventory"]["Next"],
        "Final_CancelOrder"
    );
    assert_eq!(states["Final_CancelOrder"]["Next"], "Compensated");
    for state in [
        "Compensate_CreateShipment",
        "Compensate_AuthorizePayment",
        "Compensate_ReserveInventory",
        "Final_CancelOrder",
    ] {
        assert_eq!(states[state]["Retry"][0]["MaxAttempts"], 3, "{state}");
        assert_eq!(next_on(state, "States.ALL"), "NeedsAttention");
    }
    let task = &states["Step_AuthorizePayment"];
    assert_eq!(
        task["Resource"],
        "arn:aws:states:::events:putEvents.waitForTaskToken"
    );
    assert_eq!(task["TimeoutSeconds"], 30);
    let entry = &task["Parameters"]["Entries"][0];
    assert_eq!(entry["EventBusName"], "orders-bus");
    assert_eq!(entry["DetailType"], "AuthorizePayment");
    assert_eq!(entry["Detail"]["taskToken.$"], "$$.Task.Token");
    // Every Next points at a state that exists.
    for (name, state) in states.as_object().unwrap() {
        let mut targets: Vec<&Value> = vec![&state["Next"]];
        if let Some(catch) = state["Catch"].as_array() {
            targets.extend(catch.iter().map(|c| &c["Next"]));
        }
        for target in targets.into_iter().filter_map(Value::as_str) {
            assert!(
                states.get(target).is_some(),
                "{name} -> {target} does not exist"
            );
        }
    }
}
