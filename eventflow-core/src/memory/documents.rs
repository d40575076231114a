use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::documents::{Document, DocumentStore, ExpectedDocument};
use crate::error::{Error, Result};
use crate::limits::{MAX_DOCUMENT_BYTES, names};

/// What a document costs besides its collection, id and JSON, counted the way DynamoDB counts the
/// item `eventflow-store-dynamodb` writes: the attribute names, the `doc#` prefix and a 20-digit
/// version.
const DOCUMENT_OVERHEAD_BYTES: u64 = 40;

/// Collection → id → (version, JSON).
type Collections = HashMap<String, BTreeMap<String, (u64, String)>>;

/// A [`DocumentStore`] in process memory.
///
/// By default it refuses a document larger than DynamoDB would store
/// ([`MAX_DOCUMENT_BYTES`], counted as DynamoDB counts the item), so a read model that outgrows
/// the limit fails in tests rather than in production; see
/// [`with_max_document_bytes`](Self::with_max_document_bytes).
#[derive(Debug)]
pub struct InMemoryDocumentStore {
    collections: Mutex<Collections>,
    max_document_bytes: Option<u64>,
}

impl Default for InMemoryDocumentStore {
    fn default() -> Self {
        InMemoryDocumentStore {
            collections: Mutex::default(),
            max_document_bytes: Some(MAX_DOCUMENT_BYTES),
        }
    }
}

impl InMemoryDocumentStore {
    /// An empty store with DynamoDB's item size limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses documents larger than `max` bytes instead (`None`: no limit).
    pub fn with_max_document_bytes(mut self, max: Option<u64>) -> Self {
        self.max_document_bytes = max;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Collections> {
        // Every change is one insert or remove after the checks: a poisoned map is consistent.
        crate::mutex::lock(&self.collections)
    }
}

/// Refuses the empty names DynamoDB refuses as keys.
fn checked(collection: &str, id: Option<&str>) -> Result<()> {
    if collection.is_empty() {
        return Err(Error::InvalidRequest("a collection needs a name".into()));
    }
    match id {
        Some("") => Err(Error::InvalidRequest(format!(
            "a document of {collection} needs an id"
        ))),
        _ => Ok(()),
    }
}

#[async_trait]
impl DocumentStore for InMemoryDocumentStore {
    async fn get(&self, collection: &str, id: &str) -> Result<Option<Document>> {
        checked(collection, Some(id))?;
        Ok(self
            .lock()
            .get(collection)
            .and_then(|documents| documents.get(id))
            .map(|(version, json)| Document::new(id, *version, json.clone())))
    }

    async fn put(
        &self,
        collection: &str,
        id: &str,
        json: String,
        expected: ExpectedDocument,
    ) -> Result<u64> {
        checked(collection, Some(id))?;
        let size = collection.len() as u64 + id.len() as u64 + json.len() as u64;
        let size = size + DOCUMENT_OVERHEAD_BYTES;
        if let Some(max) = self.max_document_bytes.filter(|max| size > *max) {
            return Err(Error::LimitExceeded {
                limit: names::DOCUMENT_BYTES,
                actual: size,
                max,
            });
        }
        let mut collections = self.lock();
        let documents = collections.entry(collection.to_owned()).or_default();
        let actual = documents.get(id).map_or(0, |(version, _)| *version);
        if !expected.matches(actual) {
            return Err(Error::DocumentConflict {
                collection: collection.to_owned(),
                id: id.to_owned(),
                expected,
                actual,
            });
        }
        documents.insert(id.to_owned(), (actual + 1, json));
        Ok(actual + 1)
    }

    async fn delete(&self, collection: &str, id: &str) -> Result<()> {
        checked(collection, Some(id))?;
        if let Some(documents) = self.lock().get_mut(collection) {
            documents.remove(id);
        }
        Ok(())
    }

    async fn list(&self, collection: &str) -> Result<Vec<Document>> {
        checked(collection, None)?;
        Ok(self
            .lock()
            .get(collection)
            .map_or_else(Vec::new, |documents| {
                documents
                    .iter()
                    .map(|(id, (version, json))| {
                        Document::new(id.as_str(), *version, json.as_str())
                    })
                    .collect()
            }))
    }

    async fn clear(&self, collection: &str) -> Result<()> {
        checked(collection, None)?;
        self.lock().remove(collection);
        Ok(())
    }

    fn max_document_bytes(&self) -> Option<u64> {
        self.max_document_bytes
    }
}
