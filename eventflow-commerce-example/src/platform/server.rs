//! Serving one context over HTTP: the shared layers (correlation and tracing headers, metrics,
//! `x-app-version`, body limit, token verifier, JSON 404/405), `/health`, `/ready`, `/metrics`,
//! `/openapi.json`, and graceful shutdown.
//!
//! Nothing a client does holds a connection for long: headers must arrive within
//! [`HEADER_READ_TIMEOUT`] (an idle keep-alive connection waiting for its next request included),
//! a body within [`BODY_READ_TIMEOUT`], a whole request within `HTTP_REQUEST_TIMEOUT_SECONDS`
//! (30 s; a 503 naming it, after which a retry with the same `Idempotency-Key` is safe); a body
//! announced larger than [`BODY_LIMIT_BYTES`] is refused before it is read; and a service holds at
//! most [`MAX_CONNECTIONS`] connections, leaving the rest in the listener's backlog.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt;
use tower_http::timeout::RequestBodyTimeoutLayer;
use utoipa::ToSchema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, License, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Jwt;
use super::context::correlate;
use super::error::{self, ApiError};
use super::metrics::{Metrics, measure};

/// The largest request body any service reads.
pub(crate) const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// How long a connection may take to send a request's headers, or sit idle between requests.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request's body may take to arrive.
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections one service holds open at once.
pub(crate) const MAX_CONNECTIONS: usize = 1024;

/// The response header naming the version that answered (`APP_VERSION`): how a canary split is
/// seen from outside.
pub(crate) const APP_VERSION: HeaderName = HeaderName::from_static("x-app-version");

/// The media type of `/metrics`: Prometheus's text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

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
    /// The context's registry: every request is counted in it, `/metrics` renders it.
    pub(crate) metrics: Metrics,
    /// Sent as `x-app-version` on every response.
    pub(crate) app_version: HeaderValue,
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

/// Prometheus metrics of this service, in the text exposition format.
///
/// Open like `/health`, on purpose: in production only the mesh's scraper reaches it (the deploy
/// README says how the policies see to that).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "The service's metrics in Prometheus's text format",
        body = String, content_type = "text/plain")))]
async fn metrics(Extension(metrics): Extension<Metrics>) -> Response {
    ([(CONTENT_TYPE, PROMETHEUS_TEXT)], metrics.render().await).into_response()
}

impl Service {
    /// The service's router and its OpenAPI document.
    pub(crate) fn into_router(self, jwt: Arc<Jwt>, request_timeout: Duration) -> (Router, OpenApi) {
        let (router, mut api) = self
            .routes
            .routes(routes!(health))
            .routes(routes!(ready))
            .routes(routes!(metrics))
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
        let app_version = self.app_version;
        let router = router
            .route("/openapi.json", get(move || async move { Json(document) }))
            .fallback(error::not_found)
            .method_not_allowed_fallback(error::method_not_allowed)
            .layer(Extension(jwt))
            .layer(Extension(self.ready))
            .layer(Extension(self.metrics.clone()))
            .layer(Extension(self.name))
            .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
            .layer(axum::middleware::from_fn(refuse_announced_oversize))
            .layer(RequestBodyTimeoutLayer::new(BODY_READ_TIMEOUT))
            .layer(axum::middleware::from_fn_with_state(
                request_timeout,
                answer_within,
            ))
            .layer(axum::middleware::from_fn_with_state(self.name, correlate))
            // Layers of the router run after routing, so the route template is known here.
            .layer(axum::middleware::from_fn_with_state(self.metrics, measure))
            .layer(axum::middleware::map_response(
                move |mut response: Response| {
                    let app_version = app_version.clone();
                    async move {
                        response.headers_mut().insert(APP_VERSION, app_version);
                        response
                    }
                },
            ));
        (router, api)
    }

    /// Binds `addr` and serves until `shutdown`, then finishes the requests in flight.
    pub(crate) async fn serve(
        self,
        addr: SocketAddr,
        jwt: Arc<Jwt>,
        shutdown: Shutdown,
        request_timeout: Duration,
    ) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
        let name = self.name;
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("{name}: cannot listen on {addr}: {e}"))
        })?;
        let local = listener.local_addr()?;
        let (router, _) = self.into_router(jwt, request_timeout);
        let task = tokio::spawn(accept(listener, router, name, shutdown));
        Ok((local, task))
    }
}

/// Accepts connections until `shutdown`, at most [`MAX_CONNECTIONS`] at once, each with the
/// header timeout; then waits for the connections' requests in flight.
async fn accept(listener: TcpListener, router: Router, name: &'static str, shutdown: Shutdown) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, a reset before accept: the listener itself is fine.
                    tracing::warn!(service = name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = router.clone().map_request(move |mut request: Request<_>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that vanished or timed out is not the service's error.
            if let Err(error) = connection.await {
                tracing::debug!(service = name, %error, "connection closed");
            }
            drop(permit);
        });
    }
    graceful.shutdown().await;
}

/// 503 for a request not answered within `timeout` (the handler is dropped where it stands).
async fn answer_within(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable(format!(
            "the request took longer than {} s; retry (with the same Idempotency-Key for an order)",
            timeout.as_secs()
        ))
        .retry_after(Duration::from_secs(1))
        .into_response(),
    }
}

/// 413 for a body announced (`Content-Length`) larger than any service reads, before a byte of it
/// is read: a client announcing 100 MB and sending 7 bytes is answered at once.
async fn refuse_announced_oversize(request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > BODY_LIMIT_BYTES as u64) {
        return ApiError::payload_too_large().into_response();
    }
    next.run(request).await
}
