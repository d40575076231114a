//! Provisioning: the bus topic, each subscription with its filter, and its dead-letter and
//! redrive topics and subscriptions.

use eventflow_core::bus::Filter;
use eventflow_core::{Error, Result, Subscription};
use gcloud_gax::grpc::Code;
use gcloud_googleapis::pubsub::v1::DeadLetterPolicy;
use gcloud_pubsub::subscription::SubscriptionConfig;

use super::{
    DEAD_LETTER_SUFFIX, MAX_FILTER_BYTES, PubSubBus, REDRIVE_SUFFIX, SOURCE_ATTRIBUTE,
    TYPE_ATTRIBUTE, status_error,
};

impl PubSubBus {
    /// The server-side filter expression for `filter`: `None` when it matches everything or does
    /// not fit Pub/Sub's 256 bytes (the consumer filters either way).
    pub fn filter_expression(filter: &Filter) -> Option<String> {
        fn any_of(attribute: &str, values: &[String]) -> Option<String> {
            let clauses: Vec<String> = values
                .iter()
                .map(|v| {
                    let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
                    format!("attributes.{attribute} = \"{escaped}\"")
                })
                .collect();
            match clauses.len() {
                0 => None,
                1 => clauses.into_iter().next(),
                _ => Some(format!("({})", clauses.join(" OR "))),
            }
        }
        let parts: Vec<String> = [
            any_of(TYPE_ATTRIBUTE, &filter.message_types),
            any_of(SOURCE_ATTRIBUTE, &filter.sources),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            return None;
        }
        let expression = parts.join(" AND ");
        (expression.len() <= MAX_FILTER_BYTES).then_some(expression)
    }

    /// Creates the bus topic if it does not exist.
    pub async fn ensure_topic(&self) -> Result<()> {
        self.inner
            .topic_ready
            .get_or_try_init(|| self.ensure_topic_named(&self.inner.config.topic))
            .await
            .map(|_| ())
    }

    async fn ensure_topic_named(&self, id: &str) -> Result<()> {
        let topic = self.inner.client.topic(id);
        match topic.create(None, None).await {
            Ok(()) => {
                tracing::info!(topic = %id, "Pub/Sub topic created");
                Ok(())
            }
            Err(status) if status.code() == Code::AlreadyExists => Ok(()),
            Err(status) => Err(status_error("CreateTopic", status)),
        }
    }

    /// Creates a subscription on `topic` unless one of that id exists; an existing one must be on
    /// `topic` with the same filter.
    async fn ensure_subscription(
        &self,
        id: &str,
        topic: &str,
        config: SubscriptionConfig,
    ) -> Result<()> {
        let subscription = self.inner.client.subscription(id);
        let fq_topic = self.inner.client.fully_qualified_topic_name(topic);
        match subscription.create(&fq_topic, config.clone(), None).await {
            Ok(()) => {
                tracing::info!(subscription = %id, topic = %topic, filter = %config.filter, "Pub/Sub subscription created");
                Ok(())
            }
            Err(status) if status.code() == Code::AlreadyExists => {
                let (existing_topic, existing) = subscription
                    .config(None)
                    .await
                    .map_err(|s| status_error("GetSubscription", s))?;
                if existing_topic != fq_topic || existing.filter != config.filter {
                    return Err(Error::InvalidRequest(format!(
                        "Pub/Sub subscription {id} exists on {existing_topic} with filter {:?}; \
                         wanted {fq_topic} with filter {:?} (filters are immutable: delete it first)",
                        existing.filter, config.filter
                    )));
                }
                Ok(())
            }
            Err(status) => Err(status_error("CreateSubscription", status)),
        }
    }

    /// Creates what a subscription needs: the bus topic, the subscription (ordering on, the
    /// filter, the ack deadline), and its dead-letter and redrive topics and subscriptions.
    pub async fn provision_subscription(&self, subscription: &Subscription) -> Result<()> {
        let name = &subscription.name;
        self.ensure_topic().await?;
        let dead_letters = format!("{name}{DEAD_LETTER_SUFFIX}");
        let redrive = format!("{name}{REDRIVE_SUFFIX}");
        let ack_deadline = self.inner.config.ack_deadline_seconds();
        let plain = SubscriptionConfig {
            ack_deadline_seconds: ack_deadline,
            enable_message_ordering: true,
            ..SubscriptionConfig::default()
        };
        self.ensure_topic_named(&dead_letters).await?;
        self.ensure_subscription(&dead_letters, &dead_letters, plain.clone())
            .await?;
        self.ensure_topic_named(&redrive).await?;
        self.ensure_subscription(&redrive, &redrive, plain.clone())
            .await?;
        let mut main = SubscriptionConfig {
            filter: Self::filter_expression(&subscription.filter).unwrap_or_default(),
            ..plain
        };
        if self.inner.config.server_dead_letter_policy {
            main.dead_letter_policy = Some(DeadLetterPolicy {
                dead_letter_topic: self.inner.client.fully_qualified_topic_name(&dead_letters),
                max_delivery_attempts: subscription.retry.max_attempts.clamp(5, 100) as i32,
            });
        }
        self.ensure_subscription(name, &self.inner.config.topic, main)
            .await
    }

    /// Deletes a subscription and its dead-letter and redrive topics and subscriptions
    /// (development and tests). Missing pieces are not an error.
    pub async fn delete_subscription(&self, name: &str) -> Result<()> {
        let client = &self.inner.client;
        for id in [
            name.to_owned(),
            format!("{name}{DEAD_LETTER_SUFFIX}"),
            format!("{name}{REDRIVE_SUFFIX}"),
        ] {
            match client.subscription(&id).delete(None).await {
                Ok(()) => {}
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(status_error("DeleteSubscription", s)),
            }
        }
        for id in [
            format!("{name}{DEAD_LETTER_SUFFIX}"),
            format!("{name}{REDRIVE_SUFFIX}"),
        ] {
            match client.topic(&id).delete(None).await {
                Ok(()) => {}
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(status_error("DeleteTopic", s)),
            }
        }
        Ok(())
    }

    /// Deletes the bus topic (development and tests).
    pub async fn delete_topic(&self) -> Result<()> {
        match self
            .inner
            .client
            .topic(&self.inner.config.topic)
            .delete(None)
            .await
        {
            Ok(()) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(status_error("DeleteTopic", s)),
        }
    }

    pub(super) async fn subscription_exists(&self, id: &str) -> Result<bool> {
        self.inner
            .client
            .subscription(id)
            .exists(None)
            .await
            .map_err(|s| status_error("GetSubscription", s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_expressions() {
        assert_eq!(PubSubBus::filter_expression(&Filter::all()), None);
        assert_eq!(
            PubSubBus::filter_expression(&Filter::all().message_type("A")).as_deref(),
            Some(r#"attributes.eventflow_type = "A""#)
        );
        assert_eq!(
            PubSubBus::filter_expression(
                &Filter::all()
                    .message_type("A")
                    .message_type("B")
                    .source("s\"x")
            )
            .as_deref(),
            Some(
                r#"(attributes.eventflow_type = "A" OR attributes.eventflow_type = "B") AND attributes.eventflow_source = "s\"x""#
            )
        );
        let long = Filter::all().message_type("x".repeat(300));
        assert_eq!(
            PubSubBus::filter_expression(&long),
            None,
            "too long: the consumer filters"
        );
    }
}
