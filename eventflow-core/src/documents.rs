//! Read models as documents: JSON by collection and id, each with a version for optimistic
//! concurrency.
//!
//! A projection keeps its read model in a [`Collection`] of typed documents; the backend behind it
//! is a [`DocumentStore`] chosen at run time: [`InMemoryDocumentStore`](crate::InMemoryDocumentStore)
//! in one process, `DynamoDbDocuments` (in `eventflow-store-dynamodb`) when several instances of a
//! service must answer queries from the same data.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use eventflow_core::documents::Collection;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct OrderView { status: String, items: u32 }
//!
//! let orders: Collection<OrderView> = Collection::in_memory("orders");
//! orders.put("o-1", OrderView { status: "placed".into(), items: 2 }).await?;
//! orders.update("o-1", |o| o.status = "shipped".into()).await?;
//! let shipped = orders.select(|o| o.status == "shipped").await?;
//! assert_eq!(shipped, [OrderView { status: "shipped".into(), items: 2 }]);
//! # Ok::<(), eventflow_core::Error>(())
//! # }).unwrap();
//! ```

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backoff::Backoff;
use crate::error::{Error, Result};

/// One stored document: its id, its version and its JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Document {
    /// The id, unique within its collection.
    pub id: String,
    /// 1 after the first put, one more after each put since.
    pub version: u64,
    /// The document as JSON text.
    pub json: String,
}

impl Document {
    /// A document (used by store implementations).
    pub fn new(id: impl Into<String>, version: u64, json: impl Into<String>) -> Self {
        Document {
            id: id.into(),
            version,
            json: json.into(),
        }
    }
}

/// What a writer expects of a document it puts: the store refuses the put with
/// [`Error::DocumentConflict`] when the document is not so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExpectedDocument {
    /// Whatever is there: the last writer wins.
    #[default]
    Any,
    /// There is no such document (none was put, or it was deleted).
    Absent,
    /// The document is at this version: the one the writer read. `Version(0)` means
    /// [`Absent`](Self::Absent).
    Version(u64),
}

impl ExpectedDocument {
    /// Whether a document at `actual` (0: absent) is what this expects.
    pub fn matches(self, actual: u64) -> bool {
        match self {
            ExpectedDocument::Any => true,
            ExpectedDocument::Absent => actual == 0,
            ExpectedDocument::Version(version) => version == actual,
        }
    }
}

impl fmt::Display for ExpectedDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedDocument::Any => f.write_str("any version"),
            ExpectedDocument::Absent | ExpectedDocument::Version(0) => f.write_str("no document"),
            ExpectedDocument::Version(version) => write!(f, "version {version}"),
        }
    }
}

/// Where documents are kept, as JSON text by collection and id.
///
/// Object-safe, hence `#[async_trait]` rather than native async methods: an application picks
/// the backend at run time and hands every projection the same `Arc<dyn DocumentStore>`.
///
/// Collection names and ids are non-empty strings; ids sort by their UTF-8 bytes. A backend with
/// a size limit refuses a larger document with [`Error::LimitExceeded`] before writing anything,
/// and says so in [`max_document_bytes`](Self::max_document_bytes). The `testkit` feature's
/// `document_store_conformance` checks all of this against a backend.
#[async_trait]
pub trait DocumentStore: Send + Sync + fmt::Debug {
    /// The document `id` of `collection`, if there is one.
    async fn get(&self, collection: &str, id: &str) -> Result<Option<Document>>;

    /// Stores `json` as the document `id` of `collection` if it is as `expected`, and returns its
    /// new version; otherwise writes nothing and fails with [`Error::DocumentConflict`].
    async fn put(
        &self,
        collection: &str,
        id: &str,
        json: String,
        expected: ExpectedDocument,
    ) -> Result<u64>;

    /// Deletes the document `id` of `collection`; deleting one that is not there is not an error.
    async fn delete(&self, collection: &str, id: &str) -> Result<()>;

    /// Every document of `collection`, in id order.
    async fn list(&self, collection: &str) -> Result<Vec<Document>>;

    /// Deletes every document of `collection`, as a projection's `reset` does before a rebuild.
    async fn clear(&self, collection: &str) -> Result<()>;

    /// The largest document the backend stores, counted its way (id and collection included),
    /// when it has a limit. `None` by default.
    fn max_document_bytes(&self) -> Option<u64> {
        None
    }
}

/// Tries of [`Collection::update`] when other writers keep changing the document: a projection
/// applies one event at a time, so only instances racing each other retry, and rarely.
const UPDATE_RETRY: Backoff =
    Backoff::new(32, Duration::from_millis(1), Duration::from_millis(50)).with_full_jitter();

/// One collection of `T`s in a [`DocumentStore`], kept as JSON: what a projection writes and its
/// queries read. Clones share the store.
///
/// [`put`](Self::put) overwrites and [`update`](Self::update) is a read-modify-write that retries
/// when another writer got there first, so two instances of a projection never lose each other's
/// changes; [`put_versioned`](Self::put_versioned) and [`get_versioned`](Self::get_versioned) give
/// the version to callers who check it themselves.
pub struct Collection<T> {
    store: Arc<dyn DocumentStore>,
    name: String,
    // `fn() -> T`: the collection holds no `T`, so it is `Send + Sync` whatever `T` is.
    documents: PhantomData<fn() -> T>,
}

impl<T> Clone for Collection<T> {
    fn clone(&self) -> Self {
        Collection {
            store: Arc::clone(&self.store),
            name: self.name.clone(),
            documents: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Collection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collection")
            .field("name", &self.name)
            .field("store", &self.store)
            .finish()
    }
}

impl<T> Collection<T> {
    /// The collection `name` of `store`.
    pub fn new(store: Arc<dyn DocumentStore>, name: impl Into<String>) -> Self {
        Collection {
            store,
            name: name.into(),
            documents: PhantomData,
        }
    }

    /// The collection `name` in a store of its own in memory.
    pub fn in_memory(name: impl Into<String>) -> Self {
        Self::new(Arc::new(crate::memory::InMemoryDocumentStore::new()), name)
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store it is kept in.
    pub fn store(&self) -> &Arc<dyn DocumentStore> {
        &self.store
    }
}

impl<T: Serialize + DeserializeOwned> Collection<T> {
    /// The document `id`, if there is one.
    pub async fn get(&self, id: &str) -> Result<Option<T>> {
        Ok(self.get_versioned(id).await?.map(|(document, _)| document))
    }

    /// The document `id` and its version, if there is one.
    pub async fn get_versioned(&self, id: &str) -> Result<Option<(T, u64)>> {
        match self.store.get(&self.name, id).await? {
            Some(document) => Ok(Some((self.decode(&document.json)?, document.version))),
            None => Ok(None),
        }
    }

    /// Stores `document` (by value or by reference) as `id`, replacing what was there.
    pub async fn put(&self, id: &str, document: impl Borrow<T>) -> Result<()> {
        self.put_versioned(id, document, ExpectedDocument::Any)
            .await
            .map(drop)
    }

    /// Stores `document` as `id` if the stored one is as `expected`, and returns the new version;
    /// otherwise fails with [`Error::DocumentConflict`] and writes nothing.
    pub async fn put_versioned(
        &self,
        id: &str,
        document: impl Borrow<T>,
        expected: ExpectedDocument,
    ) -> Result<u64> {
        let json = self.encode(document.borrow())?;
        self.store.put(&self.name, id, json, expected).await
    }

    /// Changes the document `id` with `change`, if there is one. When another writer changes it
    /// between the read and the write, the write is refused and `change` runs again on the new
    /// document (up to 32 tries, then the [`Error::DocumentConflict`] is returned).
    pub async fn update(&self, id: &str, mut change: impl FnMut(&mut T)) -> Result<()> {
        let mut failures = 0;
        loop {
            let Some((mut document, version)) = self.get_versioned(id).await? else {
                return Ok(());
            };
            change(&mut document);
            let json = self.encode(&document)?;
            let expected = ExpectedDocument::Version(version);
            match self.store.put(&self.name, id, json, expected).await {
                Err(Error::DocumentConflict { .. })
                    if UPDATE_RETRY.allows_retry_after(failures + 1) =>
                {
                    failures += 1;
                    tokio::time::sleep(UPDATE_RETRY.delay(failures)).await;
                }
                written => return written.map(drop),
            }
        }
    }

    /// Deletes the document `id`, if there is one.
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.store.delete(&self.name, id).await
    }

    /// The documents `keep` selects, in id order.
    pub async fn select(&self, keep: impl Fn(&T) -> bool) -> Result<Vec<T>> {
        let mut selected = Vec::new();
        for document in self.store.list(&self.name).await? {
            let document = self.decode(&document.json)?;
            if keep(&document) {
                selected.push(document);
            }
        }
        Ok(selected)
    }

    /// Every document with its id, in id order.
    pub async fn all(&self) -> Result<Vec<(String, T)>> {
        let listed = self.store.list(&self.name).await?;
        listed
            .into_iter()
            .map(|document| Ok((document.id.clone(), self.decode(&document.json)?)))
            .collect()
    }

    /// How many documents there are.
    pub async fn len(&self) -> Result<usize> {
        Ok(self.store.list(&self.name).await?.len())
    }

    /// Whether there is no document.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Deletes every document.
    pub async fn clear(&self) -> Result<()> {
        self.store.clear(&self.name).await
    }

    fn encode(&self, document: &T) -> Result<String> {
        serde_json::to_string(document)
            .map_err(|e| Error::serialization(format!("a document of {}", self.name), e))
    }

    fn decode(&self, json: &str) -> Result<T> {
        serde_json::from_str(json)
            .map_err(|e| Error::serialization(format!("a document of {}", self.name), e))
    }
}
