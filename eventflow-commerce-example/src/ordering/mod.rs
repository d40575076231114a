//! Ordering: event-sourced orders with separate command and query paths. Commands run on the
//! `Order` aggregate; queries read a projected view that waits, bounded, for the command's own
//! version (read-your-writes without reading the write model). The saga completes or cancels
//! orders through ordering's saga participant.

pub(crate) mod application;
pub(crate) mod domain;
pub(crate) mod http;
pub(crate) mod infrastructure;

/// How the app starts this context: the one signature every context has.
pub(crate) use infrastructure::start;
