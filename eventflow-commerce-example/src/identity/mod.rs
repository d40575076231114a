//! Identity: customers log in with a password and receive a bearer token (HS256 JWT, subject =
//! customer id) that every other service verifies.

pub(crate) mod application;
pub(crate) mod domain;
pub(crate) mod http;
pub(crate) mod infrastructure;
pub(crate) mod limits;

/// How the app starts this context: the one signature every context has.
pub(crate) use infrastructure::start;
