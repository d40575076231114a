//! Catalog: the products for sale. Listing a product publishes `ProductListed`, from which the
//! catalog's own read model and ordering's price list are projected.

pub(crate) mod application;
pub(crate) mod domain;
pub(crate) mod http;
pub(crate) mod infrastructure;

/// How the app starts this context: the one signature every context has.
pub(crate) use infrastructure::start;
