//! The document store conformance suite: the behaviour every [`DocumentStore`] promises.

use std::future::Future;

use futures::future::join_all;

use super::ConformanceReport;
use super::check::Check;
use crate::documents::{Document, DocumentStore, ExpectedDocument};
use crate::error::{Error, Result};

const SUITE: &str = "document store";

/// Runs every document store check against fresh stores from `factory` and returns what was
/// checked.
///
/// Each check gets its own store and uniquely named collections, and panics, naming the check, on
/// the first violation. The size limit is checked when the store declares one
/// ([`DocumentStore::max_document_bytes`]) and reported as unsupported otherwise.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use eventflow_core::InMemoryDocumentStore;
/// use eventflow_core::testkit::document_store_conformance;
///
/// let report =
///     document_store_conformance("in-memory", || async { InMemoryDocumentStore::new() }).await;
/// assert!(report.unsupported.is_empty());
/// # });
/// ```
pub async fn document_store_conformance<S, F, Fut>(backend: &str, factory: F) -> ConformanceReport
where
    S: DocumentStore + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let mut report = ConformanceReport::new(backend);
    let check = |name| Check::new(SUITE, backend, name);
    get_missing(&check("get_missing"), &factory().await).await;
    report.pass("get_missing");
    put_and_get(&check("put_and_get"), &factory().await).await;
    report.pass("put_and_get");
    versions_increase(&check("versions_increase"), &factory().await).await;
    report.pass("versions_increase");
    expected_versions(&check("expected_versions"), &factory().await).await;
    report.pass("expected_versions");
    concurrent_writers(&check("concurrent_writers"), &factory().await).await;
    report.pass("concurrent_writers");
    delete(&check("delete"), &factory().await).await;
    report.pass("delete");
    list_in_id_order(&check("list_in_id_order"), &factory().await).await;
    report.pass("list_in_id_order");
    collections_isolated(&check("collections_isolated"), &factory().await).await;
    report.pass("collections_isolated");
    clear(&check("clear"), &factory().await).await;
    report.pass("clear");
    empty_names_refused(&check("empty_names_refused"), &factory().await).await;
    report.pass("empty_names_refused");
    let store = factory().await;
    match store.max_document_bytes() {
        Some(max) => {
            size_limit(&check("size_limit"), &store, max).await;
            report.pass("size_limit");
        }
        None => report.unsupported("size_limit", "max_document_bytes() is None"),
    }
    report
}

/// A JSON document of `n` in a shape with nesting, unicode and escapes.
fn json(n: u64) -> String {
    serde_json::json!({ "n": n, "text": "é ✓ \"quoted\" \u{1F600}", "nested": { "list": [1, 2, 3] } })
        .to_string()
}

async fn put<S: DocumentStore>(
    store: &S,
    collection: &str,
    id: &str,
    n: u64,
    expected: ExpectedDocument,
) -> Result<u64> {
    store.put(collection, id, json(n), expected).await
}

#[track_caller]
fn expect_conflict(check: &Check, result: Result<u64>, expected: ExpectedDocument, actual: u64) {
    match result {
        Err(Error::DocumentConflict {
            expected: e,
            actual: a,
            ..
        }) => {
            check.equal(e, expected, "the conflict's expected version");
            check.equal(a, actual, "the conflict's actual version");
        }
        other => check.fail(format_args!(
            "a put expecting {expected} of a document at {actual}: expected a DocumentConflict, got {other:?}"
        )),
    }
}

async fn get_missing<S: DocumentStore>(check: &Check, store: &S) {
    let collection = check.unique("c");
    let got = check.ok("get", store.get(&collection, "missing").await);
    check.equal(got, None, "a document never put");
    let listed = check.ok("list", store.list(&collection).await);
    check.ensure(listed.is_empty(), || {
        format!("an unknown collection lists {listed:?}")
    });
}

async fn put_and_get<S: DocumentStore>(check: &Check, store: &S) {
    let collection = check.unique("c");
    let id = "order #1/é ✓";
    let version = check.ok(
        "put",
        put(store, &collection, id, 1, ExpectedDocument::Any).await,
    );
    check.equal(version, 1, "the first put's version");
    let got = check.ok("get", store.get(&collection, id).await);
    check.equal(
        got,
        Some(Document::new(id, 1, json(1))),
        "the document read back",
    );
}

async fn versions_increase<S: DocumentStore>(check: &Check, store: &S) {
    let collection = check.unique("c");
    for n in 1..=3 {
        let version = check.ok(
            "put",
            put(store, &collection, "d", n, ExpectedDocument::Any).await,
        );
        check.equal(version, n, "a put's version");
    }
    let got = check.ok("get", store.get(&collection, "d").await);
    check.equal(
        got.map(|d| (d.version, d.json)),
        Some((3, json(3))),
        "the last put wins",
    );
}

async fn expected_versions<S: DocumentStore>(check: &Check, store: &S) {
    let collection = check.unique("c");
    let c = collection.as_str();
    expect_conflict(
        check,
        put(store, c, "d", 0, ExpectedDocument::Version(1)).await,
        ExpectedDocument::Version(1),
        0,
    );
    let created = put(store, c, "d", 1, ExpectedDocument::Absent).await;
    check.equal(check.ok("put Absent", created), 1, "created");
    expect_conflict(
        check,
        put(store, c, "d", 2, ExpectedDocument::Absent).await,
        ExpectedDocument::Absent,
        1,
    );
    expect_conflict(
        check,
        put(store, c, "d", 2, ExpectedDocument::Version(0)).await,
        ExpectedDocument::Version(0),
        1,
    );
    let updated = put(store, c, "d", 2, ExpectedDocument::Version(1)).await;
    check.equal(check.ok("put Version(1)", updated), 2, "updated");
    expect_conflict(
        check,
        put(store, c, "d", 3, ExpectedDocument::Version(1)).await,
        ExpectedDocument::Version(1),
        2,
    );
    expect_conflict(
        check,
        put(store, c, "d", 3, ExpectedDocument::Version(7)).await,
        ExpectedDocument::Version(7),
        2,
    );
    let got = check.ok("get", store.get(c, "d").await);
    check.equal(
        got.map(|d| (d.version, d.json)),
        Some((2, json(2))),
        "a refused put writes nothing",
    );
}

/// Writers that read the same version race to put: one wins each round, every other one gets the
/// typed conflict, and the winner's document is the one stored.
async fn concurrent_writers<S: DocumentStore>(check: &Check, store: &S) {
    const WRITERS: u64 = 4;
    let collection = check.unique("c");
    let c = collection.as_str();
    check.ok("put", put(store, c, "d", 0, ExpectedDocument::Absent).await);
    for round in 1..=5u64 {
        let expected = ExpectedDocument::Version(round);
        let writes = (0..WRITERS).map(|w| put(store, c, "d", round * 100 + w, expected));
        let results = join_all(writes).await;
        let mut winners = Vec::new();
        for (writer, result) in (0..WRITERS).zip(results) {
            match result {
                Ok(version) => {
                    check.equal(version, round + 1, "the winner's version");
                    winners.push(round * 100 + writer);
                }
                Err(Error::DocumentConflict { actual, .. }) => {
                    check.equal(actual, round + 1, "a loser sees the winner's version");
                }
                Err(e) => check.fail(format_args!("round {round}: unexpected error {e}")),
            }
        }
        check.equal(winners.len(), 1, "writers that won a round");
        let got = check.ok("get", store.get(c, "d").await);
        check.equal(
            got.map(|d| d.json),
            Some(json(winners[0])),
            "the stored document is the winner's",
        );
    }
}

async fn delete<S: DocumentStore>(check: &Check, store: &S) {
    let collection = check.unique("c");
    let c = collection.as_str();
    check.ok("put", put(store, c, "a", 1, ExpectedDocument::Any).await);
    check.ok("put", put(store, c, "b", 2, ExpectedDocument::Any).await);
    check.ok("delete", store.delete(c, "a").await);
    check.equal(check.ok("get", store.get(c, "a").await), None, "deleted");
    let listed = check.ok("list", store.list(c).await);
    check.equal(
        listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        vec!["b"],
        "what is left",
    );
    check.ok("delete again", store.delete(c, "a").await);
    check.ok("delete missing", store.delete(c, "never").await);
    let recreated = put(store, c, "a", 3, ExpectedDocument::Absent).await;
    check.ok("put Absent after delete", recreated);
}

async fn list_in_id_order<S: DocumentStore>(check: &Check, store: &S) {
    let collection = check.unique("c");
    let ids = ["b", "a", "c", "aa", "B", "10", "9", "é", "a-1"];
    for (n, id) in (1..).zip(ids) {
        check.ok(
            "put",
            put(store, &collection, id, n, ExpectedDocument::Any).await,
        );
    }
    check.ok(
        "put",
        put(store, &collection, "a", 99, ExpectedDocument::Any).await,
    );
    let listed = check.ok("list", store.list(&collection).await);
    let mut expected: Vec<&str> = ids.to_vec();
    // UTF-8 byte order, which is what `str`'s `Ord` is.
    expected.sort_unstable();
    check.equal(
        listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        expected,
        "ids in order",
    );
    let a = listed.iter().find(|d| d.id == "a");
    check.equal(
        a.map(|d| (d.version, d.json.clone())),
        Some((2, json(99))),
        "a listed document's version and JSON",
    );
}

async fn collections_isolated<S: DocumentStore>(check: &Check, store: &S) {
    let one = check.unique("one");
    // A name that extends the other's: a backend keyed by prefix must still keep them apart.
    let two = format!("{one}-two");
    check.ok("put", put(store, &one, "d", 1, ExpectedDocument::Any).await);
    check.ok("put", put(store, &two, "d", 2, ExpectedDocument::Any).await);
    check.ok("put", put(store, &two, "e", 3, ExpectedDocument::Any).await);
    let got = check.ok("get", store.get(&one, "d").await);
    check.equal(got.map(|d| d.json), Some(json(1)), "one's document");
    let listed = check.ok("list", store.list(&one).await);
    check.equal(listed.len(), 1, "one's documents");
    check.ok("clear", store.clear(&one).await);
    let listed = check.ok("list", store.list(&two).await);
    check.equal(listed.len(), 2, "two's documents after one was cleared");
}

async fn clear<S: DocumentStore>(check: &Check, store: &S) {
    let collection = check.unique("c");
    let c = collection.as_str();
    check.ok("clear empty", store.clear(c).await);
    for n in 0..30 {
        check.ok(
            "put",
            put(store, c, &format!("d-{n:02}"), n, ExpectedDocument::Any).await,
        );
    }
    check.ok("clear", store.clear(c).await);
    let listed = check.ok("list", store.list(c).await);
    check.ensure(listed.is_empty(), || {
        format!("left after clear: {listed:?}")
    });
    check.equal(check.ok("get", store.get(c, "d-01").await), None, "cleared");
    let again = put(store, c, "d-01", 1, ExpectedDocument::Absent).await;
    check.equal(check.ok("put after clear", again), 1, "version after clear");
}

async fn empty_names_refused<S: DocumentStore>(check: &Check, store: &S) {
    let collection = check.unique("c");
    let refused = [
        (
            "put with an empty id",
            put(store, &collection, "", 1, ExpectedDocument::Any).await,
        ),
        (
            "put to an unnamed collection",
            put(store, "", "d", 1, ExpectedDocument::Any).await,
        ),
        (
            "get with an empty id",
            store.get(&collection, "").await.map(|_| 0),
        ),
        (
            "list an unnamed collection",
            store.list("").await.map(|_| 0),
        ),
    ];
    for (what, result) in refused {
        check.ensure(matches!(result, Err(Error::InvalidRequest(_))), || {
            format!("{what}: expected InvalidRequest, got {result:?}")
        });
    }
}

async fn size_limit<S: DocumentStore>(check: &Check, store: &S, max: u64) {
    let collection = check.unique("c");
    let c = collection.as_str();
    let string = |bytes: u64| {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        format!("\"{}\"", "x".repeat(bytes.saturating_sub(2)))
    };
    let big = string(max + 1024);
    let refused = store.put(c, "big", big, ExpectedDocument::Any).await;
    check.ensure(matches!(refused, Err(Error::LimitExceeded { .. })), || {
        format!("a document over {max} bytes: expected LimitExceeded, got {refused:?}")
    });
    check.equal(check.ok("get", store.get(c, "big").await), None, "refused");
    // Well under the limit (emulators cap a little lower than the real service).
    let large = string(max.saturating_sub(16 * 1024));
    let stored = store
        .put(c, "large", large.clone(), ExpectedDocument::Any)
        .await;
    check.ok("put a large document", stored);
    let got = check.ok("get", store.get(c, "large").await);
    check.ensure(got.is_some_and(|d| d.json == large), || {
        "the large document read back differs".to_owned()
    });
}
