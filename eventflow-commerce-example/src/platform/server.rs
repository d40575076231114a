//! Serving one context over HTTP: the shared layers (correlation, body limit, token verifier, JSON
//! 404/405), `/health`, `/ready`, `/openapi.json`, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use utoipa::ToSchema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, License, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Jwt;
use super::context::correlate;
use super::error::{self, ApiError};

/// The largest request body any service reads.
pub(crate) const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Resolves when the process is asked to stop. Cheap to clone; every server, relay and worker
/// holds one.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A shutdown signal and the sender that fires it.
    pub(crate) fn new() -> (watch::Sender<bool>, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (sender, Shutdown(receiver))
    }

    /// Waits until the signal fires (or its sender is gone).
    pub(crate) async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Checks a context's dependencies for `/ready`.
pub(crate) type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// One context's HTTP face.
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) routes: OpenApiRouter,
    pub(crate) ready: ReadyCheck,
}

#[derive(Serialize, ToSchema)]
struct Health {
    status: &'static str,
    service: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The service is alive", body = Health)))]
async fn health(Extension(name): Extension<&'static str>) -> Json<Health> {
    Json(Health {
        status: "ok",
        service: name,
    })
}

/// Readiness: the service's store and bus answer.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Store and bus reachable", body = Health),
        (status = 503, description = "A dependency is unreachable", body = error::ErrorBody),
    ))]
async fn ready(
    Extension(name): Extension<&'static str>,
    Extension(check): Extension<ReadyCheck>,
) -> Result<Json<Health>, ApiError> {
    check().await.map_err(ApiError::unavailable)?;
    Ok(Json(Health {
        status: "ready",
        service: name,
    }))
}

impl Service {
    /// The service's router and its OpenAPI document.
    pub(crate) fn into_router(self, jwt: Arc<Jwt>) -> (Router, OpenApi) {
        let (router, mut api) = self
            .routes
            .routes(routes!(health))
            .routes(routes!(ready))
            .split_for_parts();
        api.info = InfoBuilder::new()
            .title(format!("eventflow commerce: {}", self.name))
            .version(env!("CARGO_PKG_VERSION"))
            .description(Some(format!(
                "The {} context of the eventflow commerce example.",
                self.name
            )))
            .license(Some(License::new(env!("CARGO_PKG_LICENSE"))))
            .build();
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        let document = api.clone();
        let router = router
            .route("/openapi.json", get(move || async move { Json(document) }))
            .fallback(error::not_found)
            .method_not_allowed_fallback(error::method_not_allowed)
            .layer(Extension(jwt))
            .layer(Extension(self.ready))
            .layer(Extension(self.name))
            .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
            .layer(axum::middleware::from_fn_with_state(self.name, correlate));
        (router, api)
    }

    /// Binds `addr` and serves until `shutdown`, then finishes the requests in flight.
    pub(crate) async fn serve(
        self,
        addr: SocketAddr,
        jwt: Arc<Jwt>,
        shutdown: Shutdown,
    ) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
        let name = self.name;
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("{name}: cannot listen on {addr}: {e}"))
        })?;
        let local = listener.local_addr()?;
        let (router, _) = self.into_router(jwt);
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.wait())
                .await;
            if let Err(error) = served {
                tracing::error!(service = name, %error, "server stopped");
            }
        });
        Ok((local, task))
    }
}
