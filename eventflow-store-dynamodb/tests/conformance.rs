//! The core's store and document store conformance suites, unchanged, against DynamoDB
//! (moto_server on a free loopback port, or `EVENTFLOW_MOTO_ENDPOINT`). Each check gets a store
//! with tables of its own.

use eventflow_core::testkit::{ConformanceReport, document_store_conformance, store_conformance};
use eventflow_store_dynamodb::{DynamoDbConfig, testkit};

async fn run(name: &str, config: impl Fn() -> DynamoDbConfig) -> Option<ConformanceReport> {
    testkit::shared_endpoint()?;
    let report = store_conformance(name, || async {
        testkit::fresh_store_with(config())
            .await
            .unwrap_or_else(|| panic!("the endpoint was available a moment ago"))
    })
    .await;
    eprintln!("{report}");
    Some(report)
}

fn assert_report(report: &ConformanceReport) {
    assert_eq!(
        report.passed,
        [
            "append_and_read",
            "missing_stream_reads_empty",
            "expected_versions",
            "conflict_writes_nothing",
            "paged_reads",
            "visited_reads",
            "concurrent_writers",
            "idempotency_keys",
            "concurrent_idempotency",
            "outbox",
            "outbox_parking",
            "invalid_stream_id",
            "multi_stream_appends",
            "multi_stream_all_or_nothing",
            "concurrent_multi_stream",
        ],
        "every check runs and passes"
    );
    // DynamoDB has no global order: the store does not implement `GlobalFeed`, so the feed suite
    // cannot even be called on it (a compile error, see the `DynamoDbEventStore` docs).
    assert!(report.unsupported.is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_passes_the_conformance_suite() {
    let Some(report) = run("dynamodb", testkit::unique_config).await else {
        return;
    };
    assert_report(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_with_a_sharded_outbox_passes_the_conformance_suite() {
    let sharded = || testkit::unique_config().with_outbox_shards(4);
    let Some(report) = run("dynamodb, 4 outbox shards", sharded).await else {
        return;
    };
    assert_report(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_documents_pass_the_document_store_conformance_suite() {
    if testkit::shared_endpoint().is_none() {
        return;
    }
    let report = document_store_conformance("dynamodb documents", || async {
        testkit::fresh_store()
            .await
            .unwrap_or_else(|| panic!("the endpoint was available a moment ago"))
            .documents()
    })
    .await;
    eprintln!("{report}");
    assert_eq!(
        report.passed,
        [
            "get_missing",
            "put_and_get",
            "versions_increase",
            "expected_versions",
            "concurrent_writers",
            "delete",
            "list_in_id_order",
            "collections_isolated",
            "clear",
            "empty_names_refused",
            "size_limit",
        ],
        "every check runs and passes"
    );
    assert!(report.unsupported.is_empty(), "{report}");
}
