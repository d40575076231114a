//! The edge: a context's HTTP service as a Lambda behind API Gateway, and the authorizer that
//! checks the app's JWT before a request reaches it.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequest;
use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use serde_json::{Value, json};
use tower::util::MapRequest;

use super::Invoked;
use crate::platform::auth::Jwt;

/// The context's router, exactly as `serve <context>` serves it (the same routes, limits,
/// timeouts and error bodies), behind [`without_stage`]. It holds the context's shutdown
/// signal, which never fires.
pub(crate) fn router(invoked: Invoked) -> MapRequest<Router, fn(Request) -> Request> {
    let (router, _) = invoked
        .started
        .service
        .into_router(Arc::clone(&invoked.jwt), invoked.config.request_timeout);
    let router = router.layer(Extension(Arc::new(invoked.stop)));
    MapRequest::new(router, from_api_gateway as fn(Request) -> Request)
}

/// The request as a service behind a socket would see it: [`without_stage`], and the client's
/// address (API Gateway's `sourceIp`) where a socket's peer address would be, so the limits per
/// client address (identity's login throttle) apply on Lambda too.
pub(super) fn from_api_gateway(request: Request) -> Request {
    let mut request = without_stage(request);
    let source = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => context.identity.source_ip.clone(),
        Some(RequestContext::ApiGatewayV2(context)) => context.http.source_ip.clone(),
        _ => None,
    };
    if let Some(ip) = source.and_then(|ip| ip.parse::<IpAddr>().ok()) {
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, 0)));
    }
    request
}

/// The request's path without the API Gateway stage in front of it. A REST API's events carry
/// the stage in the path (`/prod/orders`), which no route has. `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH`
/// tells `lambda_http` to leave it out; this does the same when the variable is missing, so a
/// deployment that forgot it does not answer 404 to everything.
fn without_stage(mut request: Request) -> Request {
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => context.stage.clone(),
        Some(RequestContext::ApiGatewayV2(context)) => context.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| s != "$default") else {
        return request;
    };
    let uri = request.uri();
    let prefix = format!("/{stage}");
    let Some(rest) = uri.path().strip_prefix(&prefix) else {
        return request;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return request;
    }
    let rest = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match uri.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(path_and_query) = path_and_query.parse() {
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// API Gateway's answer to a request the authorizer refuses: a 401 (a deny policy would be a
/// 403, which says "authenticated but not allowed").
pub(crate) const UNAUTHORIZED: &str = "Unauthorized";

/// A TOKEN authorizer: a valid bearer token is allowed to every method of the stage (so the
/// decision could be cached per token; the CDK app caches none) with its subject as the principal and its role in
/// the context; anything else is [`UNAUTHORIZED`]. The service verifies the token again: the
/// authorizer only keeps anonymous floods away from the functions.
pub(crate) fn authorize(
    jwt: &Jwt,
    event: &ApiGatewayCustomAuthorizerRequest,
) -> Result<Value, String> {
    let token = event
        .authorization_token
        .as_deref()
        .and_then(|header| header.strip_prefix("Bearer "))
        .ok_or_else(|| UNAUTHORIZED.to_owned())?;
    let principal = jwt.verify(token).map_err(|error| {
        tracing::debug!(%error, "authorizer refused a token");
        UNAUTHORIZED.to_owned()
    })?;
    let resource = event
        .method_arn
        .as_deref()
        .map(stage_wildcard)
        .unwrap_or_else(|| "*".to_owned());
    Ok(json!({
        "principalId": principal.subject,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{
                "Action": "execute-api:Invoke",
                "Effect": "Allow",
                "Resource": resource,
            }],
        },
        "context": { "role": principal.role },
    }))
}

/// `arn:aws:execute-api:REGION:ACCOUNT:API/STAGE/METHOD/PATH` → `.../API/STAGE/*/*`: every
/// method of the stage.
fn stage_wildcard(method_arn: &str) -> String {
    let mut parts = method_arn.splitn(3, '/');
    match (parts.next(), parts.next()) {
        (Some(api), Some(stage)) => format!("{api}/{stage}/*/*"),
        _ => method_arn.to_owned(),
    }
}
