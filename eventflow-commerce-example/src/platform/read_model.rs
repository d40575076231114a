//! A projection's read model: documents by id, ordered by id. Projections own one collection
//! each and decide what goes in it; queries read copies.
//!
//! In one process the documents live in memory, as typed values. As separate services they live
//! in the context's DynamoDB meta table (`pk` = `doc#<collection>`, `sk` = the id, the document
//! as JSON), next to the projection's checkpoints, so a restarted or second instance serves the
//! same answers and carries on where the projection stopped.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use eventflow_core::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where a durable collection's documents are kept, as JSON text.
#[async_trait]
pub(crate) trait DocumentStore: Send + Sync + std::fmt::Debug {
    async fn get(&self, collection: &str, id: &str) -> Result<Option<String>>;
    async fn put(&self, collection: &str, id: &str, json: String) -> Result<()>;
    /// Every document of the collection, in id order.
    async fn all(&self, collection: &str) -> Result<Vec<String>>;
    async fn clear(&self, collection: &str) -> Result<()>;
}

/// One collection of `T`s.
#[derive(Debug)]
pub(crate) struct Documents<T> {
    kept: Kept<T>,
}

#[derive(Debug)]
enum Kept<T> {
    InMemory(RwLock<BTreeMap<String, T>>),
    Durable {
        store: Arc<dyn DocumentStore>,
        collection: String,
    },
}

impl<T> Documents<T> {
    pub(crate) fn in_memory() -> Self {
        Documents {
            kept: Kept::InMemory(RwLock::new(BTreeMap::new())),
        }
    }

    pub(crate) fn durable(store: Arc<dyn DocumentStore>, collection: &str) -> Self {
        Documents {
            kept: Kept::Durable {
                store,
                collection: collection.to_owned(),
            },
        }
    }
}

fn read<T>(map: &RwLock<BTreeMap<String, T>>) -> RwLockReadGuard<'_, BTreeMap<String, T>> {
    // A panic while writing leaves a document either old or new, never torn: keep serving.
    map.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(map: &RwLock<BTreeMap<String, T>>) -> RwLockWriteGuard<'_, BTreeMap<String, T>> {
    map.write().unwrap_or_else(|e| e.into_inner())
}

fn decode<T: DeserializeOwned>(collection: &str, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| Error::Serialization {
        what: format!("a document of {collection}"),
        source: e,
    })
}

impl<T: Clone + Serialize + DeserializeOwned> Documents<T> {
    pub(crate) async fn get(&self, id: &str) -> Result<Option<T>> {
        match &self.kept {
            Kept::InMemory(map) => Ok(read(map).get(id).cloned()),
            Kept::Durable { store, collection } => store
                .get(collection, id)
                .await?
                .map(|json| decode(collection, &json))
                .transpose(),
        }
    }

    /// The documents `keep` selects, in id order.
    pub(crate) async fn select(&self, keep: impl Fn(&T) -> bool) -> Result<Vec<T>> {
        match &self.kept {
            Kept::InMemory(map) => Ok(read(map).values().filter(|d| keep(d)).cloned().collect()),
            Kept::Durable { store, collection } => {
                let mut selected = Vec::new();
                for json in store.all(collection).await? {
                    let document: T = decode(collection, &json)?;
                    if keep(&document) {
                        selected.push(document);
                    }
                }
                Ok(selected)
            }
        }
    }

    pub(crate) async fn len(&self) -> Result<usize> {
        match &self.kept {
            Kept::InMemory(map) => Ok(read(map).len()),
            Kept::Durable { store, collection } => Ok(store.all(collection).await?.len()),
        }
    }

    pub(crate) async fn put(&self, id: &str, document: T) -> Result<()> {
        match &self.kept {
            Kept::InMemory(map) => {
                write(map).insert(id.to_owned(), document);
                Ok(())
            }
            Kept::Durable { store, collection } => {
                let json = serde_json::to_string(&document).map_err(|e| Error::Serialization {
                    what: format!("a document of {collection}"),
                    source: e,
                })?;
                store.put(collection, id, json).await
            }
        }
    }

    /// Changes the document `id`, if there is one. The projector applies one event at a time per
    /// projection, so a read-modify-write here is not raced by another event of the projection.
    pub(crate) async fn update(&self, id: &str, change: impl FnOnce(&mut T)) -> Result<()> {
        match &self.kept {
            Kept::InMemory(map) => {
                if let Some(document) = write(map).get_mut(id) {
                    change(document);
                }
                Ok(())
            }
            Kept::Durable { .. } => match self.get(id).await? {
                Some(mut document) => {
                    change(&mut document);
                    self.put(id, document).await
                }
                None => Ok(()),
            },
        }
    }

    pub(crate) async fn clear(&self) -> Result<()> {
        match &self.kept {
            Kept::InMemory(map) => {
                write(map).clear();
                Ok(())
            }
            Kept::Durable { store, collection } => store.clear(collection).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The durable path through a store kept in a map: what the DynamoDB store is asked to do.
    #[derive(Debug, Default)]
    struct MapStore(std::sync::Mutex<BTreeMap<(String, String), String>>);

    #[async_trait]
    impl DocumentStore for MapStore {
        async fn get(&self, collection: &str, id: &str) -> Result<Option<String>> {
            let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            Ok(map.get(&(collection.to_owned(), id.to_owned())).cloned())
        }
        async fn put(&self, collection: &str, id: &str, json: String) -> Result<()> {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            map.insert((collection.to_owned(), id.to_owned()), json);
            Ok(())
        }
        async fn all(&self, collection: &str) -> Result<Vec<String>> {
            let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            Ok(map
                .iter()
                .filter(|((c, _), _)| c == collection)
                .map(|(_, json)| json.clone())
                .collect())
        }
        async fn clear(&self, collection: &str) -> Result<()> {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|(c, _), _| c != collection);
            Ok(())
        }
    }

    async fn exercise(documents: Documents<u64>, other: Documents<u64>) {
        documents.put("b", 2).await.unwrap();
        documents.put("a", 1).await.unwrap();
        other.put("a", 100).await.unwrap();
        documents.update("a", |n| *n += 10).await.unwrap();
        documents.update("missing", |n| *n += 10).await.unwrap();
        assert_eq!(documents.get("a").await.unwrap(), Some(11));
        assert_eq!(documents.get("missing").await.unwrap(), None);
        assert_eq!(documents.select(|_| true).await.unwrap(), vec![11, 2]);
        assert_eq!(documents.len().await.unwrap(), 2);
        documents.clear().await.unwrap();
        assert_eq!(documents.len().await.unwrap(), 0);
        assert_eq!(other.get("a").await.unwrap(), Some(100));
    }

    #[tokio::test]
    async fn in_memory_and_durable_documents_behave_alike() {
        exercise(Documents::in_memory(), Documents::in_memory()).await;
        let store: Arc<dyn DocumentStore> = Arc::new(MapStore::default());
        exercise(
            Documents::durable(Arc::clone(&store), "one"),
            Documents::durable(store, "two"),
        )
        .await;
    }
}
