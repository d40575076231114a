//! A projection's read model: documents by id, kept in memory, ordered by id. Projections own
//! one each and decide what goes in it; queries read copies.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Debug)]
pub(crate) struct Documents<T> {
    documents: RwLock<BTreeMap<String, T>>,
}

impl<T> Default for Documents<T> {
    fn default() -> Self {
        Documents {
            documents: RwLock::new(BTreeMap::new()),
        }
    }
}

impl<T: Clone> Documents<T> {
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, T>> {
        // A panic while writing leaves a document either old or new, never torn: keep serving.
        self.documents.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, T>> {
        self.documents.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, id: &str) -> Option<T> {
        self.read().get(id).cloned()
    }

    /// The documents `keep` selects, in id order.
    pub(crate) fn select(&self, keep: impl Fn(&T) -> bool) -> Vec<T> {
        self.read().values().filter(|d| keep(d)).cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    pub(crate) fn put(&self, id: &str, document: T) {
        self.write().insert(id.to_owned(), document);
    }

    /// Changes the document `id`, if there is one.
    pub(crate) fn update(&self, id: &str, change: impl FnOnce(&mut T)) {
        if let Some(document) = self.write().get_mut(id) {
            change(document);
        }
    }

    pub(crate) fn clear(&self) {
        self.write().clear();
    }
}
