//! The app on AWS Lambda: one binary (`eventflow-commerce-lambda`) for every function, the
//! handler named by `EVENTFLOW_HANDLER` and the context by `EVENTFLOW_CONTEXT`:
//!
//! - `http`: the context's HTTP service behind API Gateway (REST or HTTP API), the same router
//!   and application services as `serve <context>`;
//! - `authorizer`: API Gateway's Lambda authorizer, verifying the app's JWT at the edge;
//! - `consumer`: the context's bus subscriptions and its saga participant (answering the state
//!   machine's tasks), fed by SQS queues that EventBridge rules fill;
//! - `outbox-relay`: DynamoDB Streams of the contexts' meta tables, publishing what each
//!   context's outbox holds to EventBridge;
//! - `saga-starter`: starts the PlaceOrder state machine for each `OrderPlaced`.
//!
//! A process frozen between invocations cannot poll, so the context runs on
//! [`Backends::Invoked`]: its subscriptions are recorded, not consumed, and no relay loop runs.
//! Set-up happens once per process (a cold start); each invocation only handles its event.

#[cfg(test)]
mod artifacts;
pub(crate) mod bus;
mod consumer;
mod edge;
mod relay;
#[cfg(test)]
mod saga_on_moto;
mod starter;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequest;
use aws_lambda_events::sqs::SqsEvent;
use eventflow_core::OutboxRelay;
use lambda_runtime::LambdaEvent;
use tokio::sync::watch;

use crate::app;
use crate::platform::auth::Jwt;
use crate::platform::backends::Backends;
use crate::platform::config::{Config, Parsed, SERVICES};
use crate::platform::messaging::ContextInfra;
use crate::platform::server::Shutdown;
use crate::platform::started::Started;
use crate::platform::startup::StartError;

use consumer::{Consumer, consume};
use edge::authorize;

/// Which handler a function runs (`EVENTFLOW_HANDLER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Handler {
    /// A context's HTTP service.
    Http,
    /// The JWT authorizer of API Gateway.
    Authorizer,
    /// A context's bus subscriptions on SQS.
    Consumer,
    /// The outbox relay on DynamoDB Streams.
    OutboxRelay,
    /// Starts the PlaceOrder state machine (`STATE_MACHINE_ARN`) for each `OrderPlaced`.
    SagaStarter,
    /// Not a function: run once from a shell with the stack's credentials, writes the seed
    /// data (users, products, stock) into the contexts' tables and exits. The outbox relay
    /// publishes what the seed recorded, as for any command.
    Seed,
}

impl Handler {
    /// Whether the handler signs or verifies the app's tokens (and so needs its secret).
    fn uses_tokens(self) -> bool {
        matches!(self, Handler::Http | Handler::Authorizer)
    }

    /// Parses `EVENTFLOW_HANDLER`'s value.
    pub fn parse(name: &str) -> Result<Handler, String> {
        match name {
            "http" => Ok(Handler::Http),
            "authorizer" => Ok(Handler::Authorizer),
            "consumer" => Ok(Handler::Consumer),
            "outbox-relay" => Ok(Handler::OutboxRelay),
            "saga-starter" => Ok(Handler::SagaStarter),
            "seed" => Ok(Handler::Seed),
            other => Err(format!(
                "EVENTFLOW_HANDLER={other:?}: expected http, authorizer, consumer, outbox-relay, saga-starter or seed"
            )),
        }
    }
}

/// A context started for invocations: its router, its recorded subscriptions, its relay.
pub(crate) struct Invoked {
    /// The service it runs.
    pub(crate) service: &'static str,
    pub(crate) config: Config,
    pub(crate) jwt: Arc<Jwt>,
    /// The context's outbox relay: a consumer publishes what its batch recorded at once.
    pub(crate) relay: Arc<OutboxRelay>,
    pub(crate) started: Started,
    /// The subscriptions the context made, fed by [`consume`].
    pub(crate) subscribers: bus::Subscribers,
    /// Kept so the context's shutdown signal never fires: the process ends with the sandbox.
    pub(crate) stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Invoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invoked")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Invoked {
    /// Starts `service` on `backends` (made [`Backends::Invoked`] here), writing its seed
    /// when the configuration's role seeds.
    pub(crate) async fn start(
        service: &str,
        config: &Config,
        backends: Backends,
    ) -> Result<Invoked, StartError> {
        let service = *SERVICES
            .iter()
            .find(|s| **s == service)
            .ok_or_else(|| StartError::wiring("lambda", format!("no service {service:?}")))?;
        let subscribers = bus::Subscribers::default();
        let backends = Backends::Invoked {
            inner: Box::new(backends),
            subscribers: subscribers.clone(),
        };
        let (stop, shutdown) = Shutdown::new();
        let jwt = Arc::new(Jwt::new(config.jwt_secret.as_bytes(), config.token_ttl));
        let infra = ContextInfra::new(service, &backends, &shutdown, &jwt, &config.app_version);
        let mut started = app::start_context(service, &infra, config).await?;
        if let Some(seed) = started.seed.take() {
            seed.await?;
        }
        Ok(Invoked {
            service,
            config: config.clone(),
            jwt,
            relay: Arc::clone(&infra.relay),
            started,
            subscribers,
            stop,
        })
    }
}

/// The binary's `main`: reads the settings (the JWT secret from Secrets Manager when
/// `JWT_SECRET_ARN` is set; only the HTTP services and the authorizer use it), starts what `EVENTFLOW_HANDLER` names and serves invocations until
/// the sandbox ends.
pub async fn run() -> Result<(), StartError> {
    let env = |name: &str| std::env::var(name).ok();
    let handler = Handler::parse(&env("EVENTFLOW_HANDLER").unwrap_or_default())
        .map_err(|e| StartError::wiring("lambda", e))?;
    let secret = match (handler.uses_tokens(), env("JWT_SECRET_ARN")) {
        (true, Some(arn)) => Some(jwt_secret(&arn).await?),
        (true, None) => None,
        // It never signs nor verifies a token, but a context starts with a signer: give it a
        // key of its own that no token is ever made with, rather than the deployment's secret.
        (false, _) => Some(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )),
    };
    let context = env("EVENTFLOW_CONTEXT").unwrap_or_default();
    let settings = |name: &str| match (name, &secret) {
        ("JWT_SECRET", Some(secret)) => Some(secret.clone()),
        _ => env(name),
    };
    // Parsed as `serve <context>` (`provision` to seed) so every setting means what it means
    // for the services.
    let service = if context.is_empty() {
        "identity"
    } else {
        context.as_str()
    };
    let args = match handler {
        Handler::Seed => vec!["provision".to_owned()],
        _ => vec!["serve".to_owned(), service.to_owned()],
    };
    let config = match Config::parse(settings, args) {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Help) => return Err(StartError::wiring("lambda", "unexpected help")),
        Err(problem) => return Err(StartError::wiring("lambda settings", problem)),
    };
    if matches!(handler, Handler::Http | Handler::Consumer) && context.is_empty() {
        return Err(StartError::wiring(
            "lambda",
            "EVENTFLOW_CONTEXT must name the context (identity, catalog, ordering, ...)",
        ));
    }
    if config.dev_secret {
        return Err(StartError::wiring(
            "lambda",
            "no JWT secret: set JWT_SECRET_ARN (a Secrets Manager secret) or JWT_SECRET",
        ));
    }
    let backends = Backends::connect(&config.backend).await?;
    let failed = |e: lambda_runtime::Error| StartError::wiring("lambda runtime", e);
    match handler {
        Handler::Http => {
            let invoked = Invoked::start(&context, &config, backends).await?;
            lambda_http::run(edge::router(invoked))
                .await
                .map_err(failed)
        }
        Handler::Authorizer => {
            let jwt = Arc::new(Jwt::new(config.jwt_secret.as_bytes(), config.token_ttl));
            lambda_runtime::run(lambda_runtime::service_fn(move |event: LambdaEvent<ApiGatewayCustomAuthorizerRequest>| {
                let jwt = Arc::clone(&jwt);
                async move { authorize(&jwt, &event.payload).map_err(lambda_runtime::Error::from) }
            }))
            .await
            .map_err(failed)
        }
        Handler::Consumer => {
            let invoked = Invoked::start(&context, &config, backends).await?;
            let consumer = Consumer::of(&invoked, Some(sfn_client().await));
            lambda_runtime::run(lambda_runtime::service_fn(
                move |event: LambdaEvent<SqsEvent>| {
                    let consumer = consumer.clone();
                    async move {
                        Ok::<_, lambda_runtime::Error>(consume(&consumer, event.payload).await)
                    }
                },
            ))
            .await
            .map_err(failed)
        }
        Handler::OutboxRelay => {
            let relays = Arc::new(relay::Relays::new(&config, &backends));
            lambda_runtime::run(lambda_runtime::service_fn(
                move |event: LambdaEvent<relay::StreamEvent>| {
                    let relays = Arc::clone(&relays);
                    async move {
                        relays
                            .relay(event.payload)
                            .await
                            .map_err(lambda_runtime::Error::from)
                    }
                },
            ))
            .await
            .map_err(failed)
        }
        Handler::Seed => seed(&config, &backends).await,
        Handler::SagaStarter => {
            let state_machine_arn = env("STATE_MACHINE_ARN")
                .ok_or_else(|| StartError::wiring("lambda", "STATE_MACHINE_ARN is not set"))?;
            let starter = starter::Starter {
                client: sfn_client().await,
                state_machine_arn,
            };
            lambda_runtime::run(lambda_runtime::service_fn(
                move |event: LambdaEvent<SqsEvent>| {
                    let starter = starter.clone();
                    async move {
                        Ok::<_, lambda_runtime::Error>(
                            starter::start_sagas(&starter, event.payload).await,
                        )
                    }
                },
            ))
            .await
            .map_err(failed)
        }
    }
}

/// Writes every context's seed data through its repositories (so its outbox publishes it).
/// The orchestrator has no tables here: Step Functions keeps the sagas.
async fn seed(config: &Config, backends: &Backends) -> Result<(), StartError> {
    for service in SERVICES.iter().filter(|s| **s != "saga") {
        Invoked::start(service, config, backends.clone()).await?;
        tracing::info!(service, "seeded");
    }
    Ok(())
}

/// A Step Functions client from the function's environment.
async fn sfn_client() -> aws_sdk_sfn::Client {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_sfn::Client::new(&config)
}

/// The JWT secret kept in Secrets Manager under `arn`: read once, at a cold start.
async fn jwt_secret(arn: &str) -> Result<String, StartError> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let secret = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            StartError::wiring(
                "reading JWT_SECRET_ARN",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e),
            )
        })?;
    secret.secret_string().map(str::to_owned).ok_or_else(|| {
        StartError::wiring("reading JWT_SECRET_ARN", "the secret has no string value")
    })
}
