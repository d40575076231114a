//! Notification: order completed / cancelled events are routed to a work queue (as an
//! EventBridge rule targets an SQS queue); a worker sends the confirmation or cancellation email
//! through a pluggable sender, once per order and kind however often the message arrives, and
//! keeps a log of what it sent. A message that keeps failing ends in the dead-letter queue.

pub(crate) mod application;
pub(crate) mod domain;
pub(crate) mod http;
pub(crate) mod infrastructure;

/// How the app starts this context: the one signature every context has.
pub(crate) use infrastructure::start;
