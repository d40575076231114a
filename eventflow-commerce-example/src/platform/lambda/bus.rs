//! The bus of an invoked process. On Lambda nothing polls: EventBridge rules feed SQS queues and
//! the queues invoke the function. So a context's subscriptions are only recorded here, and the
//! SQS handler hands each record to the subscribers whose filters select it. Publishing goes to
//! the real bus.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use eventflow_core::Aggregate;
use eventflow_core::bus::BusCapabilities;
use eventflow_core::extension::lock;
use eventflow_core::{
    EventBus, Filter, Message, MessageHandler, Result, Subscription, SubscriptionHandle,
};
use eventflow_saga::{Participant, ParticipantReply, SagaCommand};

/// One recorded subscription.
#[derive(Clone)]
pub(crate) struct Subscriber {
    pub(crate) name: String,
    pub(crate) filter: Filter,
    pub(crate) handler: Arc<dyn MessageHandler>,
}

/// A saga participant answering commands directly: a Step Functions task is answered with
/// the reply (`SendTaskSuccess`/`SendTaskFailure`) rather than a reply on the bus.
#[async_trait]
pub(crate) trait Answers: Send + Sync {
    /// See [`Participant::execute`]: `None` when the participant does not handle the command.
    async fn answer(
        &self,
        command: &SagaCommand,
    ) -> eventflow_saga::Result<Option<ParticipantReply>>;
}

#[async_trait]
impl<A: Aggregate> Answers for Participant<A> {
    async fn answer(
        &self,
        command: &SagaCommand,
    ) -> eventflow_saga::Result<Option<ParticipantReply>> {
        self.execute(command).await
    }
}

/// The subscriptions the contexts of an invoked process made, and their saga participants.
#[derive(Clone, Default)]
pub(crate) struct Subscribers(
    Arc<Mutex<Vec<Subscriber>>>,
    Arc<Mutex<Vec<Arc<dyn Answers>>>>,
);

impl std::fmt::Debug for Subscribers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = lock(&self.0).iter().map(|s| s.name.clone()).collect();
        f.debug_tuple("Subscribers").field(&names).finish()
    }
}

impl Subscribers {
    /// Records a saga participant of the context.
    pub(crate) fn add_participant(&self, participant: Arc<dyn Answers>) {
        lock(&self.1).push(participant);
    }

    /// Every recorded subscription: its name and filter, in the order they subscribed (for the
    /// exported artifacts).
    #[cfg(test)]
    pub(crate) fn filters(&self) -> Vec<(String, Filter)> {
        lock(&self.0)
            .iter()
            .map(|s| (s.name.clone(), s.filter.clone()))
            .collect()
    }

    /// The context's saga participants.
    pub(crate) fn participants(&self) -> Vec<Arc<dyn Answers>> {
        lock(&self.1).clone()
    }

    /// The subscribers that receive `message`, in the order they subscribed.
    pub(crate) fn selecting(&self, message: &Message) -> Vec<Subscriber> {
        lock(&self.0)
            .iter()
            .filter(|s| s.filter.matches(message))
            .cloned()
            .collect()
    }
}

/// A bus that publishes to `inner` and records subscriptions in `subscribers`.
pub(crate) struct InvokedBus {
    pub(crate) inner: Arc<dyn EventBus>,
    pub(crate) subscribers: Subscribers,
}

#[async_trait]
impl EventBus for InvokedBus {
    async fn publish(&self, messages: Vec<Message>) -> Result<()> {
        self.inner.publish(messages).await
    }

    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<SubscriptionHandle> {
        let name = subscription.name.clone();
        lock(&self.subscribers.0).push(Subscriber {
            name: name.clone(),
            filter: subscription.filter,
            handler,
        });
        let subscribers = self.subscribers.clone();
        let removed = name.clone();
        Ok(SubscriptionHandle::new(name, move || async move {
            lock(&subscribers.0).retain(|s| s.name != removed);
        }))
    }

    fn capabilities(&self) -> BusCapabilities {
        self.inner.capabilities()
    }

    async fn health_check(&self) -> Result<()> {
        self.inner.health_check().await
    }
}
