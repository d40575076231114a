//! A context's own copy of identity's customers, projected from `CustomerRegistered`: the type is
//! shared, each context keeps its data in its own collection.

use eventflow_core::{Envelope, Projection, Result};

use super::read_model::Documents;
use crate::contract::{IdentityFact, streams};

/// Customers' email addresses by customer id.
#[derive(Debug)]
pub(crate) struct CustomerDirectory {
    name: &'static str,
    emails: Documents<String>,
}

impl CustomerDirectory {
    /// A directory kept as projection `name` in `emails`.
    pub(crate) fn new(name: &'static str, emails: Documents<String>) -> Self {
        CustomerDirectory { name, emails }
    }

    /// The address of `customer_id`, once identity's event arrived.
    pub(crate) async fn email_of(&self, customer_id: &str) -> Result<Option<String>> {
        self.emails.get(customer_id).await
    }

    /// How many customers arrived.
    pub(crate) async fn len(&self) -> Result<usize> {
        self.emails.len().await
    }
}

impl Projection for CustomerDirectory {
    type Event = IdentityFact;
    const STREAMS: &'static [&'static str] = &[streams::CUSTOMER];

    fn name(&self) -> &str {
        self.name
    }

    async fn apply(&self, _: &str, event: &Envelope<IdentityFact>) -> Result<()> {
        let IdentityFact::CustomerRegistered(customer) = &event.event;
        self.emails
            .put(&customer.customer_id, customer.email.clone())
            .await
    }

    async fn reset(&self) -> Result<()> {
        self.emails.clear().await
    }
}
