//! The saga state machine, driven input by input.

use std::time::Duration;

use chrono::TimeZone;
use serde_json::json;

use super::*;
use eventflow_core::Backoff;

fn definition() -> SagaDefinition {
    crate::testkit::place_order(
        Duration::from_secs(10),
        Backoff::new(3, Duration::from_secs(1), Duration::from_secs(10)),
    )
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("time")
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

/// Runs inputs through decide + apply, like the shell does, and returns the state.
struct Run {
    def: SagaDefinition,
    state: SagaState,
    log: Vec<SagaEvent>,
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

impl Run {
    fn start() -> Self {
        let mut run = Run {
            def: definition(),
            state: SagaState::new("order-1"),
            log: Vec::new(),
        };
        let data = json!({"orderId": "order-1"});
        let d = run.feed(
            Input::Start {
                data: &data,
                correlation_id: Some("req-1"),
                traceparent: Some(TRACEPARENT),
            },
            0,
        );
        assert_eq!(d, Disposition::Applied);
        run
    }

    fn feed(&mut self, input: Input<'_>, now: i64) -> Disposition {
        let decision = decide(&self.def, &self.state, input, at(now));
        for e in &decision.events {
            self.state.apply(e);
        }
        self.log.extend(decision.events);
        decision.disposition
    }

    fn reply(
        &mut self,
        kind: CommandKind,
        step: &str,
        attempt: u32,
        ty: &str,
        now: i64,
    ) -> Disposition {
        let reply = Reply {
            saga_id: "order-1".into(),
            kind,
            step: step.into(),
            attempt,
            message_type: ty.into(),
            message_id: format!("{step}-{ty}-{attempt}"),
            payload: json!({"reason": "nope", "ref": step}),
        };
        self.feed(Input::Reply(&reply), now)
    }

    fn ok(&mut self, step: &str, ty: &str) -> Disposition {
        self.reply(CommandKind::Action, step, 1, ty, 1)
    }

    fn sent_compensations(&self) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|e| match e {
                SagaEvent::CompensationSent {
                    target, attempt: 1, ..
                } => Some(target.to_string()),
                _ => None,
            })
            .collect()
    }

    fn compensate_all(&mut self) {
        let mut guard = 0;
        while let Some(c) = self.state.compensation.clone() {
            let Some(target) = c.current().cloned() else {
                break;
            };
            let (kind, step, ty) = match &target {
                CompensationTarget::Step { name, step } => {
                    let cmd = self.def.steps[*step as usize]
                        .compensation
                        .clone()
                        .expect("comp");
                    (
                        CommandKind::Compensation,
                        name.clone(),
                        cmd.success[0].clone(),
                    )
                }
                CompensationTarget::Final { command } => (
                    CommandKind::Final,
                    command.clone(),
                    "OrderCancellationRecorded".to_owned(),
                ),
            };
            assert_eq!(
                self.reply(kind, &step, c.attempt, &ty, 2),
                Disposition::Applied
            );
            guard += 1;
            assert!(guard < 10);
        }
    }
}

#[test]
fn happy_path_sends_each_step_in_order_and_completes() {
    let mut run = Run::start();
    for (step, reply) in [
        ("ReserveInventory", "InventoryReserved"),
        ("AuthorizePayment", "PaymentAuthorized"),
        ("CreateShipment", "ShipmentCreated"),
        ("CompleteOrder", "OrderCompletionRecorded"),
    ] {
        assert_eq!(
            run.state
                .pending_step()
                .map(|s| run.def.steps[s as usize].name.as_str()),
            Some(step)
        );
        assert_eq!(run.ok(step, reply), Disposition::Applied);
    }
    assert_eq!(run.state.status, Some(SagaStatus::Completed));
    assert!(run.sent_compensations().is_empty());
    assert_eq!(
        run.log.last(),
        Some(&SagaEvent::Finished {
            outcome: SagaOutcome::Completed
        })
    );
}

#[test]
fn failure_at_step_three_compensates_completed_steps_in_reverse() {
    let mut run = Run::start();
    run.ok("ReserveInventory", "InventoryReserved");
    run.ok("AuthorizePayment", "PaymentAuthorized");
    assert_eq!(
        run.ok("CreateShipment", "ShipmentFailed"),
        Disposition::Applied
    );
    assert_eq!(run.state.status, Some(SagaStatus::Compensating));
    run.compensate_all();
    assert_eq!(
        run.sent_compensations(),
        [
            "compensation of AuthorizePayment",
            "compensation of ReserveInventory",
            "final command CancelOrder"
        ]
    );
    assert_eq!(run.state.status, Some(SagaStatus::Compensated));
    assert!(
        run.state
            .failure
            .as_deref()
            .is_some_and(|r| r.contains("CreateShipment failed: nope"))
    );
}

#[test]
fn failure_at_first_step_only_runs_the_final_command() {
    let mut run = Run::start();
    run.ok("ReserveInventory", "InventoryReservationFailed");
    run.compensate_all();
    assert_eq!(run.sent_compensations(), ["final command CancelOrder"]);
    assert_eq!(run.state.status, Some(SagaStatus::Compensated));
}

#[test]
fn failure_of_the_last_step_skips_steps_without_compensation() {
    let mut run = Run::start();
    run.def.steps[3].pivot = false;
    run.ok("ReserveInventory", "InventoryReserved");
    run.ok("AuthorizePayment", "PaymentAuthorized");
    run.ok("CreateShipment", "ShipmentCreated");
    run.ok("CompleteOrder", "OrderCompletionFailed");
    run.compensate_all();
    assert_eq!(
        run.sent_compensations(),
        [
            "compensation of CreateShipment",
            "compensation of AuthorizePayment",
            "compensation of ReserveInventory",
            "final command CancelOrder"
        ]
    );
}

/// Lets every deadline of the pending step pass, resend after resend, until the budget is
/// spent or `sends` sends went out; returns the time it got to.
fn miss_deadlines(run: &mut Run, step: u32, sends: u32) -> i64 {
    let mut now = 1;
    loop {
        let obligations = obligations(&run.def, &run.state);
        let Some((due, key)) = obligations.timer else {
            return now;
        };
        if matches!(key, TimerKey::StepResend { attempt, .. } if attempt >= sends) {
            return now;
        }
        now = (due - t0()).num_seconds();
        assert_eq!(run.feed(Input::Timer(&key), now), Disposition::Applied);
        if run.state.pending_step() != Some(step) {
            return now;
        }
    }
}

#[test]
fn a_deadline_resends_the_same_command_and_a_reply_to_any_send_counts() {
    let mut run = Run::start();
    run.ok("ReserveInventory", "InventoryReserved");
    // AuthorizePayment was sent at t=1 with the definition's 10 s timeout.
    let key = TimerKey::Step {
        step: 1,
        attempt: 1,
    };
    assert_eq!(
        run.feed(Input::Timer(&key), 5),
        Disposition::Late,
        "not due yet"
    );
    assert_eq!(run.feed(Input::Timer(&key), 11), Disposition::Applied);
    assert_eq!(run.state.steps[1].status, StepStatus::Pending, "not failed");
    assert_eq!(run.state.steps[1].resend_at, Some(at(12)), "1 s later");
    let waiting = obligations(&run.def, &run.state);
    assert_eq!(
        waiting.command, None,
        "nothing is sent while the resend waits"
    );
    let resend = TimerKey::StepResend {
        step: 1,
        attempt: 1,
    };
    assert_eq!(waiting.timer, Some((at(12), resend.clone())));
    assert_eq!(run.feed(Input::Timer(&resend), 12), Disposition::Applied);
    let again = obligations(&run.def, &run.state)
        .command
        .expect("the command again");
    assert_eq!(
        (again.attempt, again.idempotency_key.as_str()),
        (2, "PlaceOrder/order-1/AuthorizePayment/action"),
        "same command, same key"
    );
    // The first send's deadline timer, firing late, changes nothing.
    assert_eq!(run.feed(Input::Timer(&key), 30), Disposition::Late);
    // The reply to the first send arrives now: the step succeeded.
    assert_eq!(
        run.ok("AuthorizePayment", "PaymentAuthorized"),
        Disposition::Applied
    );
    assert_eq!(run.state.pending_step(), Some(2));
    assert!(run.sent_compensations().is_empty());
}

#[test]
fn a_step_whose_budget_is_spent_is_compensated_first_because_its_outcome_is_unknown() {
    let mut run = Run::start();
    run.ok("ReserveInventory", "InventoryReserved");
    let budget = run.def.steps[1].budget();
    assert_eq!(budget, Duration::from_secs(5 * 10 + 1 + 2 + 4 + 8));
    let failed_at = miss_deadlines(&mut run, 1, u32::MAX);
    assert_eq!(failed_at, 1 + budget.as_secs() as i64, "exactly the budget");
    assert_eq!(run.state.steps[1].status, StepStatus::TimedOut);
    assert_eq!(run.state.steps[1].attempt, 5, "five sends");
    assert!(
        run.state
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("5 sends unanswered")),
        "{:?}",
        run.state.failure
    );
    // The late success reply changes nothing.
    assert_eq!(
        run.ok("AuthorizePayment", "PaymentAuthorized"),
        Disposition::Late
    );
    run.compensate_all();
    assert_eq!(
        run.sent_compensations(),
        [
            "compensation of AuthorizePayment",
            "compensation of ReserveInventory",
            "final command CancelOrder"
        ]
    );
}

#[test]
fn past_the_pivot_a_step_is_resent_beyond_its_budget_and_never_compensated() {
    let mut run = Run::start();
    run.ok("ReserveInventory", "InventoryReserved");
    run.ok("AuthorizePayment", "PaymentAuthorized");
    run.ok("CreateShipment", "ShipmentCreated");
    assert_eq!(run.def.pivot(), Some(3));
    // Twenty sends of CompleteOrder, four times its budget, and it is still waiting.
    miss_deadlines(&mut run, 3, 20);
    assert_eq!(run.state.status, Some(SagaStatus::Running));
    assert_eq!(run.state.steps[3].attempt, 20);
    assert_eq!(run.state.compensation, None);
    assert!(
        !run.log
            .iter()
            .any(|e| matches!(e, SagaEvent::StepTimedOut { .. }))
    );
    assert_eq!(
        run.reply(
            CommandKind::Action,
            "CompleteOrder",
            20,
            "OrderCompletionRecorded",
            999
        ),
        Disposition::Applied
    );
    assert_eq!(run.state.status, Some(SagaStatus::Completed));
}

#[test]
fn a_refusal_past_the_pivot_needs_attention_and_undoes_nothing() {
    let mut run = Run::start();
    run.ok("ReserveInventory", "InventoryReserved");
    run.ok("AuthorizePayment", "PaymentAuthorized");
    run.ok("CreateShipment", "ShipmentCreated");
    assert_eq!(
        run.ok("CompleteOrder", "OrderCompletionFailed"),
        Disposition::Applied
    );
    assert_eq!(run.state.status, Some(SagaStatus::NeedsAttention));
    assert_eq!(run.state.compensation, None);
    assert!(
        run.state
            .attention
            .as_deref()
            .is_some_and(|a| a.contains("CompleteOrder was refused after the pivot")),
        "{:?}",
        run.state.attention
    );
    assert_eq!(obligations(&run.def, &run.state), Obligations::default());
    assert_eq!(
        run.feed(Input::RetryCompensation { requested_by: None }, 5),
        Disposition::Refused,
        "there is no compensation to retry"
    );
    assert!(run.sent_compensations().is_empty());
}

#[test]
fn duplicate_and_stray_replies_change_nothing() {
    let mut run = Run::start();
    assert_eq!(
        run.ok("ReserveInventory", "InventoryReserved"),
        Disposition::Applied
    );
    assert_eq!(
        run.ok("ReserveInventory", "InventoryReserved"),
        Disposition::Duplicate
    );
    // A failure for a step that already succeeded is late, not a reason to compensate.
    assert_eq!(
        run.ok("ReserveInventory", "InventoryReservationFailed"),
        Disposition::Late
    );
    // A reply for a step not sent yet, or of an unknown type, is ignored.
    assert_eq!(
        run.ok("CreateShipment", "ShipmentCreated"),
        Disposition::Ignored
    );
    assert_eq!(
        run.ok("AuthorizePayment", "SomethingElse"),
        Disposition::Ignored
    );
    assert_eq!(
        run.ok("NoSuchStep", "PaymentAuthorized"),
        Disposition::Ignored
    );
    assert_eq!(run.state.status, Some(SagaStatus::Running));
    assert_eq!(run.state.pending_step(), Some(1));
    let data = json!({});
    assert_eq!(
        run.feed(
            Input::Start {
                data: &data,
                correlation_id: None,
                traceparent: None,
            },
            5
        ),
        Disposition::Duplicate
    );
}

/// Uses up ReleaseInventory's three attempts: a failure, a timeout, a failure, with the backoff
/// between them checked.
fn exhaust_release_attempts(run: &mut Run) {
    // Plan: ReleaseInventory, CancelOrder. Attempt 1 fails.
    assert_eq!(
        run.reply(
            CommandKind::Compensation,
            "ReserveInventory",
            1,
            "InventoryReleaseFailed",
            2
        ),
        Disposition::Applied
    );
    let retry_at = match run.state.compensation.as_ref().map(|c| c.phase.clone()) {
        Some(CompensationPhase::RetryAt(at)) => at,
        other => panic!("expected a retry, got {other:?}"),
    };
    assert_eq!(retry_at, at(3), "1 s backoff after the first failure");
    // A repeated failure reply of attempt 1 is late.
    assert_eq!(
        run.reply(
            CommandKind::Compensation,
            "ReserveInventory",
            1,
            "InventoryReleaseFailed",
            2
        ),
        Disposition::Late
    );
    let retry = TimerKey::CompensationRetry {
        position: 0,
        attempt: 1,
    };
    assert_eq!(run.feed(Input::Timer(&retry), 3), Disposition::Applied);
    // Attempt 2 times out (deadline = 3 + 10 s), attempt 3 fails: retries used up.
    let timeout = TimerKey::Compensation {
        position: 0,
        attempt: 2,
    };
    assert_eq!(run.feed(Input::Timer(&timeout), 13), Disposition::Applied);
    let retry = TimerKey::CompensationRetry {
        position: 0,
        attempt: 2,
    };
    assert_eq!(
        run.feed(Input::Timer(&retry), 15),
        Disposition::Applied,
        "2 s backoff"
    );
    assert_eq!(
        run.reply(
            CommandKind::Compensation,
            "ReserveInventory",
            3,
            "InventoryReleaseFailed",
            16
        ),
        Disposition::Applied
    );
}

#[test]
fn failed_compensations_retry_with_backoff_then_need_attention_then_resume() {
    let mut run = Run::start();
    run.ok("ReserveInventory", "InventoryReserved");
    run.ok("AuthorizePayment", "PaymentDeclined");
    exhaust_release_attempts(&mut run);
    assert_eq!(run.state.status, Some(SagaStatus::NeedsAttention));
    assert!(
        run.state
            .attention
            .as_deref()
            .is_some_and(|a| a.contains("failed 3 times"))
    );
    assert_eq!(
        obligations(&run.def, &run.state),
        Obligations::default(),
        "parked: nothing in flight"
    );
    // An operator retries: attempt 4 is sent and succeeds; the saga finishes.
    assert_eq!(
        run.feed(
            Input::RetryCompensation {
                requested_by: Some("ops")
            },
            100
        ),
        Disposition::Applied
    );
    assert_eq!(run.state.compensation.as_ref().map(|c| c.attempt), Some(4));
    run.compensate_all();
    assert_eq!(run.state.status, Some(SagaStatus::Compensated));
    assert_eq!(
        run.state.compensation.as_ref().map(|c| c.done.len()),
        Some(2)
    );
}

#[test]
fn a_late_success_of_an_earlier_compensation_attempt_counts() {
    let mut run = Run::start();
    run.ok("ReserveInventory", "InventoryReserved");
    run.ok("AuthorizePayment", "PaymentDeclined");
    let timeout = TimerKey::Compensation {
        position: 0,
        attempt: 1,
    };
    assert_eq!(run.feed(Input::Timer(&timeout), 40), Disposition::Applied);
    let retry = TimerKey::CompensationRetry {
        position: 0,
        attempt: 1,
    };
    assert_eq!(run.feed(Input::Timer(&retry), 41), Disposition::Applied);
    // Attempt 1's success arrives while attempt 2 is in flight.
    assert_eq!(
        run.reply(
            CommandKind::Compensation,
            "ReserveInventory",
            1,
            "InventoryReleased",
            42
        ),
        Disposition::Applied
    );
    assert_eq!(
        run.reply(
            CommandKind::Compensation,
            "ReserveInventory",
            2,
            "InventoryReleased",
            43
        ),
        Disposition::Duplicate
    );
    let stale = TimerKey::Compensation {
        position: 0,
        attempt: 2,
    };
    assert_eq!(run.feed(Input::Timer(&stale), 90), Disposition::Late);
}

#[test]
fn retry_is_refused_unless_the_saga_needs_attention() {
    let mut run = Run::start();
    assert_eq!(
        run.feed(Input::RetryCompensation { requested_by: None }, 1),
        Disposition::Refused
    );
}

#[test]
fn obligations_are_the_complete_command_in_flight_and_its_timer() {
    let mut run = Run::start();
    let first = obligations(&run.def, &run.state);
    let command = first.command.expect("step 0 in flight");
    assert_eq!(
        (
            command.command_type.as_str(),
            command.step.as_str(),
            command.kind
        ),
        ("ReserveInventory", "ReserveInventory", CommandKind::Action)
    );
    assert_eq!(
        command.idempotency_key,
        "PlaceOrder/order-1/ReserveInventory/action"
    );
    assert_eq!(command.data, json!({"orderId": "order-1"}));
    assert_eq!(command.correlation_id.as_deref(), Some("req-1"));
    assert_eq!(command.traceparent.as_deref(), Some(TRACEPARENT));
    let message = command.to_message("saga").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(message.traceparent(), Some(TRACEPARENT));
    assert_eq!(
        first.timer,
        Some((
            at(10),
            TimerKey::Step {
                step: 0,
                attempt: 1
            }
        ))
    );
    run.ok("ReserveInventory", "InventoryReservationFailed");
    let compensating = obligations(&run.def, &run.state);
    let command = compensating.command.expect("the final command in flight");
    assert_eq!(
        (command.command_type.as_str(), command.kind, command.attempt),
        ("CancelOrder", CommandKind::Final, 1)
    );
    assert!(command.reason.is_some());
    assert_eq!(
        compensating.timer,
        Some((
            at(11),
            TimerKey::Compensation {
                position: 0,
                attempt: 1
            }
        ))
    );
    run.compensate_all();
    assert_eq!(obligations(&run.def, &run.state), Obligations::default());
}

#[test]
fn a_compensation_command_carries_the_step_result() {
    let mut run = Run::start();
    run.ok("ReserveInventory", "InventoryReserved");
    run.ok("AuthorizePayment", "PaymentDeclined");
    let command = obligations(&run.def, &run.state)
        .command
        .expect("compensation in flight");
    assert_eq!(
        (
            command.command_type.as_str(),
            command.step.as_str(),
            command.kind
        ),
        (
            "ReleaseInventory",
            "ReserveInventory",
            CommandKind::Compensation
        )
    );
    assert_eq!(
        command.result,
        Some(json!({"reason": "nope", "ref": "ReserveInventory"}))
    );
}

#[test]
fn state_is_a_fold_of_the_recorded_events() {
    let mut run = Run::start();
    run.ok("ReserveInventory", "InventoryReserved");
    run.ok("AuthorizePayment", "PaymentDeclined");
    run.compensate_all();
    let replayed = SagaState::from_events("order-1", &run.log);
    assert_eq!(replayed, run.state);
    // And events survive a JSON round trip.
    let json = serde_json::to_string(&run.log).expect("serialise");
    let back: Vec<SagaEvent> = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, run.log);
}
