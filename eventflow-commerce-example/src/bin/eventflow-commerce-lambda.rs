//! Every AWS Lambda function of the commerce app: `EVENTFLOW_HANDLER` names the handler
//! (`http`, `authorizer`, `consumer`, `outbox-relay`, `saga-starter`; `seed` writes the seed data
//! once and exits) and `EVENTFLOW_CONTEXT` the context. See
//! `deploy/aws/README.md`.

use std::process::ExitCode;

use eventflow_commerce_example::{LogFormat, init_logging, lambda};

#[tokio::main]
async fn main() -> ExitCode {
    let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "lambda".to_owned());
    let _telemetry = init_logging(LogFormat::Json, &name);
    match lambda::run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the function could not start");
            ExitCode::FAILURE
        }
    }
}
