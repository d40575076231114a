//! The work queue conformance suite: the behaviour every [`WorkQueue`] + [`DeadLetterQueue`]
//! promises (see [`crate::work_queue`]).
//!
//! Written for emulated queues as well as memory: the visibility timeout is a few whole seconds
//! (SQS counts seconds), receives long-poll, and "nothing came" is asserted after waiting past the
//! moment something wrongly could have.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use serde_json::json;

use super::ConformanceReport;
use super::check::Check;
use crate::bus::Message;
use crate::work_queue::{DeadLetterQueue, QueueSettings, ReceivedMessage, WorkQueue};

const SUITE: &str = "work queue";
/// The visibility timeout of the suite's queues.
const VISIBILITY: Duration = Duration::from_secs(3);
/// The receives after which the suite's queues dead-letter a message.
const MAX_RECEIVES: u32 = 3;
/// How long a receive that should find a visible message waits for it.
const WAIT: Duration = Duration::from_secs(2);

/// Runs every work queue check against fresh queues and returns what was checked.
///
/// `factory` gets the settings of the queue to create (a unique name, a 3 s visibility timeout,
/// dead-lettering after 3 receives) and returns it; a queue's
/// [`settings`](WorkQueue::settings) may name it differently (a backend may decorate names), but
/// must report that timeout and count. Each check gets its own queue and panics, naming the
/// check, on the first violation. The suite takes 10 to 30 s, most of it waiting out visibility
/// timeouts (so this example is not run; `tests/work_queue.rs` runs it).
///
/// ```no_run
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use eventflow_core::InMemoryWorkQueue;
/// use eventflow_core::testkit::work_queue_conformance;
///
/// let report =
///     work_queue_conformance("in-memory", |settings| async { InMemoryWorkQueue::new(settings) })
///         .await;
/// assert!(report.unsupported.is_empty());
/// # });
/// ```
pub async fn work_queue_conformance<Q, F, Fut>(backend: &str, factory: F) -> ConformanceReport
where
    Q: DeadLetterQueue + 'static,
    F: Fn(QueueSettings) -> Fut,
    Fut: Future<Output = Q>,
{
    let mut report = ConformanceReport::new(backend);
    let check = |name| Check::new(SUITE, backend, name);
    let queue = |check: &Check| {
        factory(
            QueueSettings::new(check.unique("q"))
                .with_visibility_timeout(VISIBILITY)
                .with_max_receives(Some(MAX_RECEIVES)),
        )
    };

    let c = check("settings");
    settings(&c, &queue(&c).await);
    report.pass("settings");
    let c = check("competing_consumers");
    competing_consumers(&c, &queue(&c).await).await;
    report.pass("competing_consumers");
    let c = check("visibility_timeout_redelivers");
    visibility_timeout_redelivers(&c, &queue(&c).await).await;
    report.pass("visibility_timeout_redelivers");
    let c = check("ack_deletes");
    ack_deletes(&c, &queue(&c).await).await;
    report.pass("ack_deletes");
    let c = check("nack_redelivers_at_once");
    nack_redelivers_at_once(&c, &queue(&c).await).await;
    report.pass("nack_redelivers_at_once");
    let c = check("dead_letter_after_max_receives");
    dead_letter_after_max_receives(&c, &queue(&c).await).await;
    report.pass("dead_letter_after_max_receives");
    let c = check("redrive");
    redrive(&c, &queue(&c).await).await;
    report.pass("redrive");
    report
}

fn jobs(check: &Check, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            Message::new(
                "Job",
                "eventflow.conformance",
                json!({ "n": i, "text": "é ✓" }),
            )
            .with_correlation_id(format!("{}-{i}", check.name))
        })
        .collect()
}

async fn send<Q: WorkQueue>(check: &Check, queue: &Q, messages: &[Message]) {
    for batch in messages.chunks(10) {
        check.ok("send", queue.send(batch.to_vec()).await);
    }
}

async fn receive<Q: WorkQueue>(
    check: &Check,
    queue: &Q,
    max: usize,
    wait: Duration,
) -> Vec<ReceivedMessage> {
    check.ok("receive", queue.receive(max, wait).await)
}

/// The one message a receive must hand out.
async fn receive_one<Q: WorkQueue>(check: &Check, queue: &Q, what: &str) -> ReceivedMessage {
    let mut got = receive(check, queue, 1, WAIT).await;
    check.equal(got.len(), 1, what);
    got.remove(0)
}

/// Receives until a receive comes back empty.
async fn drain<Q: WorkQueue>(check: &Check, queue: &Q) -> Vec<ReceivedMessage> {
    let mut all = Vec::new();
    loop {
        let got = receive(check, queue, 10, Duration::from_millis(500)).await;
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

fn settings<Q: WorkQueue>(check: &Check, queue: &Q) {
    let settings = queue.settings();
    check.equal(
        settings.visibility_timeout,
        VISIBILITY,
        "visibility timeout",
    );
    check.equal(settings.max_receives, Some(MAX_RECEIVES), "max receives");
    check.ensure(!settings.name.is_empty(), || "the queue has no name".into());
}

/// Two consumers draining one queue at once each get a share, and no message twice.
async fn competing_consumers<Q: WorkQueue>(check: &Check, queue: &Q) {
    let sent = jobs(check, 25);
    send(check, queue, &sent).await;
    let (a, b) = tokio::join!(drain(check, queue), drain(check, queue));
    let received: Vec<&ReceivedMessage> = a.iter().chain(&b).collect();
    let ids: HashSet<&str> = received.iter().map(|r| r.message.id.as_str()).collect();
    check.equal(received.len(), 25, "messages handed out while in flight");
    check.equal(ids.len(), 25, "distinct messages handed out");
    for r in &received {
        let original = sent.iter().find(|m| m.id == r.message.id);
        check.equal(Some(&r.message), original, "a message as it was sent");
        check.equal(r.receive_count, 1, "the first receive's count");
        check.ok("ack", queue.ack(&r.receipt).await);
    }
    let left = receive(check, queue, 10, Duration::ZERO).await;
    check.ensure(left.is_empty(), || format!("acknowledged, yet {left:?}"));
}

async fn visibility_timeout_redelivers<Q: WorkQueue>(check: &Check, queue: &Q) {
    let sent = jobs(check, 1);
    send(check, queue, &sent).await;
    let first = receive_one(check, queue, "the first receive").await;
    check.equal(first.receive_count, 1, "the first receive's count");
    let hidden = receive(check, queue, 1, Duration::ZERO).await;
    check.ensure(hidden.is_empty(), || {
        format!("in flight, yet received again: {hidden:?}")
    });
    let again = receive(check, queue, 1, VISIBILITY + Duration::from_secs(3)).await;
    check.equal(again.len(), 1, "redelivered after the visibility timeout");
    check.equal(&again[0].message, &sent[0], "the redelivered message");
    check.equal(again[0].receive_count, 2, "the second receive's count");
    check.ok("ack", queue.ack(&again[0].receipt).await);
}

async fn ack_deletes<Q: WorkQueue>(check: &Check, queue: &Q) {
    send(check, queue, &jobs(check, 1)).await;
    let received = receive_one(check, queue, "the first receive").await;
    check.ok("ack", queue.ack(&received.receipt).await);
    check.ok("a second ack", queue.ack(&received.receipt).await);
    let later = receive(check, queue, 1, VISIBILITY + Duration::from_secs(1)).await;
    check.ensure(later.is_empty(), || {
        format!("acknowledged, yet redelivered after the visibility timeout: {later:?}")
    });
}

async fn nack_redelivers_at_once<Q: WorkQueue>(check: &Check, queue: &Q) {
    let sent = jobs(check, 1);
    send(check, queue, &sent).await;
    let first = receive_one(check, queue, "the first receive").await;
    check.ok(
        "change_visibility(0)",
        queue
            .change_visibility(&first.receipt, Duration::ZERO)
            .await,
    );
    // Sooner than the visibility timeout would have made it visible.
    let again = receive(check, queue, 1, VISIBILITY - Duration::from_secs(1)).await;
    check.equal(again.len(), 1, "visible again at once after a nack");
    check.equal(&again[0].message, &sent[0], "the nacked message");
    check.equal(again[0].receive_count, 2, "the second receive's count");
    check.ok("ack", queue.ack(&again[0].receipt).await);
}

/// Receives and nacks a message `MAX_RECEIVES` times; the next receive moves it to the dead-letter
/// queue instead of handing it out.
async fn exhaust<Q: WorkQueue>(check: &Check, queue: &Q) {
    for count in 1..=MAX_RECEIVES {
        let received = receive_one(check, queue, "a receive before dead-lettering").await;
        check.equal(received.receive_count, count, "the receive count");
        check.ok(
            "change_visibility(0)",
            queue
                .change_visibility(&received.receipt, Duration::ZERO)
                .await,
        );
    }
    let after = receive(check, queue, 1, Duration::from_secs(1)).await;
    check.ensure(after.is_empty(), || {
        format!("received more than {MAX_RECEIVES} times: {after:?}")
    });
}

async fn dead_letter_after_max_receives<Q: DeadLetterQueue>(check: &Check, queue: &Q) {
    let sent = jobs(check, 1);
    send(check, queue, &sent).await;
    exhaust(check, queue).await;
    let letters = check.ok("dead_letters", queue.dead_letters(10).await);
    check.equal(letters.len(), 1, "dead letters");
    check.equal(&letters[0].message, &sent[0], "the dead letter's message");
    check.equal(
        letters[0].attempts,
        MAX_RECEIVES,
        "the dead letter's attempts",
    );
    check.equal(
        letters[0].subscription.as_str(),
        queue.settings().name.as_str(),
        "the dead letter names the queue",
    );
    let again = check.ok("dead_letters", queue.dead_letters(10).await);
    check.equal(again.len(), 1, "dead letters after listing them once");
}

async fn redrive<Q: DeadLetterQueue>(check: &Check, queue: &Q) {
    let sent = jobs(check, 1);
    send(check, queue, &sent).await;
    exhaust(check, queue).await;
    check.equal(check.ok("redrive", queue.redrive().await), 1, "redriven");
    let letters = check.ok("dead_letters", queue.dead_letters(10).await);
    check.ensure(letters.is_empty(), || {
        format!("dead letters after a redrive: {letters:?}")
    });
    let back = receive_one(check, queue, "the redriven message").await;
    check.equal(&back.message, &sent[0], "the redriven message");
    check.equal(
        back.receive_count,
        1,
        "a redriven message's count starts over",
    );
    check.ok("ack", queue.ack(&back.receipt).await);
    check.equal(
        check.ok("redrive", queue.redrive().await),
        0,
        "nothing to redrive",
    );
}
