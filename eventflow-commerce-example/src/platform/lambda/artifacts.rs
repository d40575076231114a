//! What the AWS deployment (`deploy/aws`, a CDK app) is built from, exported by the code it
//! describes and checked in: the PlaceOrder state machine as eventflow-saga exports it, the
//! OpenAPI document of the operations API Gateway exposes, and each context's subscriptions as
//! EventBridge rule patterns. The tests fail when a checked-in file
//! differs from the export (`EVENTFLOW_UPDATE_ARTIFACTS=1` rewrites them), so the deployment
//! cannot drift from the app.

use eventflow_saga::StepFunctionsOptions;
use serde_json::{Map, Value, json};

use super::Invoked;
use crate::contract;
use crate::platform::backends::Backends;
use crate::platform::config::{Backend, Config, SERVICES};

/// Where the state machine's definition is checked in, from the crate's root.
pub(crate) const STATE_MACHINE_FILE: &str = "deploy/aws/state-machine/place-order.asl.json";
/// Where the API Gateway's OpenAPI document is checked in, from the crate's root.
pub(crate) const API_FILE: &str = "deploy/aws/api-gateway/openapi.json";
/// Where the contexts' subscriptions are checked in, from the crate's root.
pub(crate) const SUBSCRIPTIONS_FILE: &str = "deploy/aws/subscriptions.json";
/// The placeholder the CDK app substitutes with the bus name (`definitionSubstitutions`).
pub(crate) const BUS_PLACEHOLDER: &str = "${EventBusName}";
/// The `source` of the commands the state machine puts on the bus: the orchestrator's, as
/// in the services' deployment.
pub(crate) const COMMAND_SOURCE: &str = "saga";

/// The operations API Gateway exposes, by service: (service, path, method).
pub(crate) const EDGE_OPERATIONS: [(&str, &str, &str); 5] = [
    ("identity", "/auth/login", "post"),
    ("catalog", "/catalog", "get"),
    ("catalog", "/catalog/{productId}", "get"),
    ("ordering", "/orders", "post"),
    ("ordering", "/orders/{orderId}", "get"),
];

/// PlaceOrder as a Step Functions state machine, with the default step timing.
pub(crate) fn state_machine(config: &Config) -> Value {
    contract::place_order(config.step_timeout, config.step_sends)
        .to_step_functions(&StepFunctionsOptions::new(BUS_PLACEHOLDER, COMMAND_SOURCE))
}

/// The OpenAPI document of [`EDGE_OPERATIONS`], from the services' own documents (their paths,
/// schemas and security scheme), as the app generates it (OpenAPI 3.1; the CDK app turns it
/// into what API Gateway imports).
pub(crate) async fn api_document(config: &Config) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let mut document = Value::Null;
    for service in ["identity", "catalog", "ordering"] {
        let backends = Backends::connect(&Backend::Local).await.expect("memory");
        let invoked = Invoked::start(service, config, backends)
            .await
            .expect("the context starts");
        let (_, api) = invoked
            .started
            .service
            .into_router(invoked.jwt, config.request_timeout);
        let api = serde_json::to_value(api).expect("a document");
        for (_, path, method) in EDGE_OPERATIONS.iter().filter(|(s, ..)| *s == service) {
            let operation = api["paths"][*path][*method].clone();
            assert!(!operation.is_null(), "{service} has no {method} {path}");
            let entry = paths.entry(*path).or_insert_with(|| json!({}));
            entry[*method] = operation;
            if let Some(parameters) = api["paths"][*path].get("parameters") {
                entry["parameters"] = parameters.clone();
            }
        }
        if let Some(found) = api["components"]["schemas"].as_object() {
            schemas.extend(found.clone());
        }
        document = api;
    }
    json!({
        "openapi": document["openapi"],
        "info": {
            "title": "eventflow commerce: API Gateway",
            "version": document["info"]["version"],
            "description": "The operations the commerce app exposes through API Gateway.",
            "license": document["info"]["license"],
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": document["components"]["securitySchemes"],
        },
    })
}

/// Each context's subscriptions as EventBridge rules: `{context: [{"subscription",
/// "pattern"}]}`, for the contexts that subscribe to anything (the orchestrator is Step Functions
/// there). The CDK app creates one rule per subscription, all targeting the context's queue, so
/// the queue receives exactly what the services' subscriptions receive.
pub(crate) async fn subscriptions(config: &Config) -> Value {
    let mut contexts = Map::new();
    for service in SERVICES.iter().filter(|s| **s != "saga") {
        let backends = Backends::connect(&Backend::Local).await.expect("memory");
        let invoked = Invoked::start(service, config, backends)
            .await
            .expect("the context starts");
        let rules: Vec<Value> = invoked
            .subscribers
            .filters()
            .into_iter()
            .map(|(name, filter)| {
                json!({
                    "subscription": name,
                    "pattern": eventflow_bus::EventBridgeBus::event_pattern(&filter),
                })
            })
            .collect();
        if !rules.is_empty() {
            contexts.insert((*service).to_owned(), Value::Array(rules));
        }
    }
    Value::Object(contexts)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Compares `value` with the checked-in `file`, or rewrites it when asked to.
    fn check(file: &str, value: &Value) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(file);
        let rendered = serde_json::to_string_pretty(value).expect("json") + "\n";
        if std::env::var_os("EVENTFLOW_UPDATE_ARTIFACTS").is_some() {
            std::fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
            std::fs::write(&path, rendered).expect("written");
            return;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == rendered,
            "{file} differs from what the code exports: run `EVENTFLOW_UPDATE_ARTIFACTS=1 cargo test -p eventflow-commerce-example --features lambda --lib artifacts` and commit it"
        );
    }

    #[test]
    fn the_checked_in_state_machine_is_what_eventflow_saga_exports() {
        let asl = state_machine(&Config::dev());
        assert!(asl.to_string().contains(BUS_PLACEHOLDER));
        check(STATE_MACHINE_FILE, &asl);
    }

    #[tokio::test]
    async fn the_checked_in_subscriptions_are_what_the_contexts_subscribe() {
        let subscriptions = subscriptions(&Config::dev()).await;
        let inventory = subscriptions["inventory"].to_string();
        assert!(inventory.contains("ReserveInventory"), "{inventory}");
        check(SUBSCRIPTIONS_FILE, &subscriptions);
    }

    #[tokio::test]
    async fn the_checked_in_api_document_is_what_the_services_generate() {
        let document = api_document(&Config::dev()).await;
        assert_eq!(
            document["paths"].as_object().map(Map::len),
            Some(EDGE_OPERATIONS.len())
        );
        check(API_FILE, &document);
    }
}
