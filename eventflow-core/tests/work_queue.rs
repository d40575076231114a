//! The in-memory work queue against the work queue conformance suite (SQS runs the same suite in
//! `eventflow-bus`).
#![cfg(feature = "testkit")]

use eventflow_core::InMemoryWorkQueue;
use eventflow_core::testkit::work_queue_conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_work_queue_passes_the_conformance_suite() {
    let report = work_queue_conformance("in-memory", |settings| async {
        InMemoryWorkQueue::new(settings)
    })
    .await;
    eprintln!("{report}");
    assert_eq!(
        report.passed,
        [
            "settings",
            "competing_consumers",
            "visibility_timeout_redelivers",
            "ack_deletes",
            "nack_redelivers_at_once",
            "dead_letter_after_max_receives",
            "redrive",
        ],
        "{report}"
    );
    assert!(report.unsupported.is_empty(), "{report}");
}
