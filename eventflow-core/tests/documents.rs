//! The in-memory document store against the conformance suite, and the typed [`Collection`] over
//! it: what a projection's read model relies on.
#![cfg(feature = "testkit")]
// A failed unwrap is a failed test, with the error in the message.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use eventflow_core::documents::{Collection, Document, DocumentStore, ExpectedDocument};
use eventflow_core::testkit::document_store_conformance;
use eventflow_core::{Error, InMemoryDocumentStore, Result};
use serde::{Deserialize, Serialize};

const ALL_CHECKS: [&str; 11] = [
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
];

#[tokio::test]
async fn in_memory_document_store_passes_the_conformance_suite() {
    let report =
        document_store_conformance("in-memory", || async { InMemoryDocumentStore::new() }).await;
    eprintln!("{report}");
    assert_eq!(report.passed, ALL_CHECKS, "{report}");
    assert!(report.unsupported.is_empty(), "{report}");
}

#[tokio::test]
async fn a_store_without_a_size_limit_reports_the_check_unsupported() {
    let report = document_store_conformance("in-memory, unlimited", || async {
        InMemoryDocumentStore::new().with_max_document_bytes(None)
    })
    .await;
    assert_eq!(report.passed, ALL_CHECKS[..10], "{report}");
    assert_eq!(report.unsupported.len(), 1, "{report}");
    assert_eq!(report.unsupported[0].0, "size_limit");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct View {
    status: String,
    count: u32,
}

fn view(status: &str, count: u32) -> View {
    View {
        status: status.to_owned(),
        count,
    }
}

#[tokio::test]
async fn a_collection_reads_and_writes_typed_documents() {
    let store: Arc<dyn DocumentStore> = Arc::new(InMemoryDocumentStore::new());
    let views: Collection<View> = Collection::new(Arc::clone(&store), "views");
    let other: Collection<View> = Collection::new(store, "other");
    views.put("b", view("open", 2)).await.unwrap();
    views.put("a", &view("open", 1)).await.unwrap();
    other.put("a", view("elsewhere", 100)).await.unwrap();
    views.update("a", |v| v.count += 10).await.unwrap();
    views.update("missing", |v| v.count += 10).await.unwrap();
    assert_eq!(views.get("a").await.unwrap(), Some(view("open", 11)));
    assert_eq!(
        views.get_versioned("a").await.unwrap(),
        Some((view("open", 11), 2))
    );
    assert_eq!(views.get("missing").await.unwrap(), None);
    assert_eq!(
        views.select(|v| v.status == "open").await.unwrap(),
        [view("open", 11), view("open", 2)],
        "in id order"
    );
    assert_eq!(
        views.all().await.unwrap(),
        [
            ("a".to_owned(), view("open", 11)),
            ("b".to_owned(), view("open", 2))
        ]
    );
    assert_eq!(views.len().await.unwrap(), 2);
    views.delete("b").await.unwrap();
    assert_eq!(views.len().await.unwrap(), 1);
    views.clear().await.unwrap();
    assert!(views.is_empty().await.unwrap());
    assert_eq!(other.get("a").await.unwrap(), Some(view("elsewhere", 100)));
    assert_eq!(other.name(), "other");
}

#[tokio::test]
async fn put_versioned_refuses_a_stale_write() {
    let views: Collection<View> = Collection::in_memory("views");
    let v1 = views
        .put_versioned("a", view("new", 0), ExpectedDocument::Absent)
        .await
        .unwrap();
    views.put("a", view("changed", 1)).await.unwrap();
    let stale = views
        .put_versioned("a", view("stale", 0), ExpectedDocument::Version(v1))
        .await;
    match stale {
        Err(Error::DocumentConflict {
            ref collection,
            ref id,
            expected,
            actual,
        }) => {
            assert_eq!((collection.as_str(), id.as_str()), ("views", "a"));
            assert_eq!((expected, actual), (ExpectedDocument::Version(1), 2));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let error = stale.unwrap_err();
    assert!(error.is_retryable());
    assert_eq!(
        error.to_string(),
        r#"conflict on document "a" of views: expected version 1, it is at version 2"#
    );
    assert_eq!(views.get("a").await.unwrap(), Some(view("changed", 1)));
}

/// Instances of a projection racing on one document: every change lands, none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_lose_nothing() {
    let counters: Collection<u32> = Collection::in_memory("counters");
    counters.put("c", 0u32).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let counters = counters.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    counters.update("c", |n| *n += 1).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(counters.get("c").await.unwrap(), Some(80));
}

/// A store whose puts with an expected version always lose the race.
#[derive(Debug, Default)]
struct AlwaysRaced {
    inner: InMemoryDocumentStore,
    refused: AtomicU32,
}

#[async_trait]
impl DocumentStore for AlwaysRaced {
    async fn get(&self, collection: &str, id: &str) -> Result<Option<Document>> {
        self.inner.get(collection, id).await
    }
    async fn put(
        &self,
        collection: &str,
        id: &str,
        json: String,
        expected: ExpectedDocument,
    ) -> Result<u64> {
        if let ExpectedDocument::Version(version) = expected {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::DocumentConflict {
                collection: collection.to_owned(),
                id: id.to_owned(),
                expected,
                actual: version + 1,
            });
        }
        self.inner.put(collection, id, json, expected).await
    }
    async fn delete(&self, collection: &str, id: &str) -> Result<()> {
        self.inner.delete(collection, id).await
    }
    async fn list(&self, collection: &str) -> Result<Vec<Document>> {
        self.inner.list(collection).await
    }
    async fn clear(&self, collection: &str) -> Result<()> {
        self.inner.clear(collection).await
    }
}

#[tokio::test]
async fn an_update_that_keeps_losing_gives_up_with_the_conflict() {
    let store = Arc::new(AlwaysRaced::default());
    let counters: Collection<u32> = Collection::new(store.clone(), "counters");
    counters.put("c", 0u32).await.unwrap();
    let mut calls = 0;
    let result = counters.update("c", |n| {
        calls += 1;
        *n += 1;
    });
    let result = result.await;
    assert!(
        matches!(result, Err(Error::DocumentConflict { .. })),
        "{result:?}"
    );
    assert_eq!(calls, 32, "the change ran once per try");
    assert_eq!(store.refused.load(Ordering::Relaxed), 32);
    assert_eq!(counters.get("c").await.unwrap(), Some(0), "nothing written");
}

#[tokio::test]
async fn a_document_of_another_shape_is_a_serialization_error() {
    let store: Arc<dyn DocumentStore> = Arc::new(InMemoryDocumentStore::new());
    let text: Collection<String> = Collection::new(Arc::clone(&store), "mixed");
    let numbers: Collection<u64> = Collection::new(store, "mixed");
    text.put("a", "not a number".to_owned()).await.unwrap();
    let read = numbers.get("a").await;
    assert!(
        matches!(&read, Err(Error::Serialization { what, .. }) if what == "a document of mixed"),
        "{read:?}"
    );
}
