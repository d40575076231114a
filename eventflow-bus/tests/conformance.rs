//! The core's bus conformance suite, unchanged, against every adapter: the in-memory bus (as
//! `from_env` builds it), EventBridge + SQS on `moto_server`, and Pub/Sub on Google's emulator.
//! Each check gets a fresh bus with uniquely named resources on one emulator per test process.

use eventflow_bus::{Adapter, config, testkit};
use eventflow_core::testkit::{ConformanceReport, bus_conformance};

const ALL_CHECKS: [&str; 10] = [
    "publish_subscribe",
    "filter_by_type",
    "filter_by_source",
    "fan_out",
    "redelivery_after_error",
    "dead_letter",
    "attributes",
    "ordering_per_key",
    "unsubscribe",
    "many_messages",
];

fn passed_all_but(report: &ConformanceReport, unsupported: &[&str]) {
    let expected: Vec<&str> = ALL_CHECKS
        .iter()
        .copied()
        .filter(|c| !unsupported.contains(c))
        .collect();
    assert_eq!(report.passed, expected, "{report}");
    let reported: Vec<&str> = report.unsupported.iter().map(|(c, _)| *c).collect();
    assert_eq!(reported, unsupported, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_bus_from_env_passes_the_conformance_suite() {
    let report = bus_conformance("local (from_env)", || async {
        let bus = config::from_lookup(|_| None).await.expect("local bus");
        assert_eq!(bus.adapter(), Adapter::Local);
        bus
    })
    .await;
    eprintln!("{report}");
    passed_all_but(&report, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eventbridge_bus_passes_the_conformance_suite() {
    if testkit::moto_endpoint().is_none() {
        return;
    }
    let report = bus_conformance("eventbridge+sqs (moto)", || async {
        testkit::fresh_eventbridge_bus()
            .await
            .expect("moto was available a moment ago")
    })
    .await;
    eprintln!("{report}");
    // EventBridge keeps no order and an SQS target gets one static message group: the adapter
    // says so, and the suite reports it instead of skipping it silently.
    passed_all_but(&report, &["ordering_per_key"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pubsub_bus_passes_the_conformance_suite() {
    if testkit::pubsub_emulator_host().is_none() {
        return;
    }
    let report = bus_conformance("pubsub (emulator)", || async {
        testkit::fresh_pubsub_bus()
            .await
            .expect("the emulator was available a moment ago")
    })
    .await;
    eprintln!("{report}");
    passed_all_but(&report, &[]);
}
