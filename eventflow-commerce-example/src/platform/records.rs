//! The read side of contexts that keep one aggregate per key and show it as it is (an order's
//! payment, its shipment, a product's stock): one application service and one handler shape for
//! all of them, so the HTTP layer never holds a repository.

use std::sync::Arc;

use eventflow_core::{Aggregate, Repository};

use super::error::ApiError;

/// What an aggregate shows a caller of its context's `GET`.
pub(crate) trait Shown: Aggregate {
    /// What the caller sees.
    type View;

    /// The view of the record kept under `key`, as `caller` (the customer, when the route is
    /// closed) may see it: `None` when nothing is recorded, or it is another customer's.
    fn shown(&self, key: &str, caller: Option<&str>) -> Option<Self::View>;

    /// The 404's message for `key`.
    fn not_found(key: &str) -> String;
}

/// The reads of one aggregate type per key, as HTTP routes call them.
pub(crate) struct Records<A: Aggregate> {
    repository: Arc<Repository<A>>,
}

impl<A: Shown> Records<A> {
    /// Reads through `repository`.
    pub(crate) fn new(repository: Arc<Repository<A>>) -> Arc<Self> {
        Arc::new(Records { repository })
    }

    /// The record of `key` as `caller` may see it, or a 404 that does not say whether it exists
    /// for someone else.
    pub(crate) async fn view(&self, key: &str, caller: Option<&str>) -> Result<A::View, ApiError> {
        let loaded = self
            .repository
            .load(key)
            .await
            .map_err(ApiError::internal)?;
        loaded
            .state
            .shown(key, caller)
            .ok_or_else(|| ApiError::not_found(A::not_found(&super::text::echo(key))))
    }
}
