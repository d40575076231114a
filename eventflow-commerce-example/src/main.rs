//! The commerce app: every service in one process (`cargo run -p eventflow-commerce-example`), one
//! service of a distributed deployment (`serve <service>`), or its provisioning (`provision`);
//! `--help` for the settings.

use std::process::ExitCode;

use eventflow_commerce_example::{Backend, Config, Parsed, Role, RunningApp, USAGE, init_logging};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::parse(|name| std::env::var(name).ok(), std::env::args().skip(1)) {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Help) => {
            eprint!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(problem) => {
            eprintln!("eventflow-commerce-example: {problem}");
            return ExitCode::from(2);
        }
    };
    let service = match config.role {
        Role::Serve(service) => service,
        _ => "eventflow-commerce",
    };
    let telemetry = init_logging(config.log_format, service);
    let code = run(&config).await;
    // Flushing waits for the exporter's own thread: not on a runtime worker.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    code
}

async fn run(config: &Config) -> ExitCode {
    if config.role == Role::Provision {
        return provision(config).await;
    }
    let app = match RunningApp::start(config).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(%error, "the app could not start");
            eprintln!("eventflow-commerce-example: {error}");
            return ExitCode::FAILURE;
        }
    };
    for (service, addr) in app.addresses() {
        tracing::info!(service = *service, %addr, "listening");
    }
    eprint!("{}", banner(config, &app));
    wait_for_signal().await;
    tracing::info!("shutting down: finishing requests and deliveries in flight");
    app.stop().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

#[cfg(feature = "cloud")]
async fn provision(config: &Config) -> ExitCode {
    match RunningApp::provision(config).await {
        Ok(()) => {
            tracing::info!("provisioned: tables, bus, queues and subscriptions exist; data seeded");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "provisioning failed");
            eprintln!("eventflow-commerce-example: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "cloud"))]
async fn provision(_config: &Config) -> ExitCode {
    eprintln!(
        "eventflow-commerce-example: provision needs the cloud backends: build with --features cloud"
    );
    ExitCode::from(2)
}

/// What a newcomer needs to try the app.
fn banner(config: &Config, app: &RunningApp) -> String {
    let mut text = match (&config.backend, config.role) {
        (Backend::Local, _) => String::from(
            "\neventflow commerce example: every service in this process, in memory (dev mode)\n\n",
        ),
        (_, Role::Serve(service)) => {
            format!("\neventflow commerce example: the {service} service (distributed mode)\n\n")
        }
        _ => String::from(
            "\neventflow commerce example: every service in this process, on DynamoDB and the cloud bus\n\n",
        ),
    };
    for (service, addr) in app.addresses() {
        text.push_str(&format!("  {service:<13} http://{addr}\n"));
    }
    text.push_str("\n  users: user@example.com / password (customer-1), other@example.com / password (customer-2)\n");
    if config.dev_secret {
        text.push_str("  JWT: signed with a DEVELOPMENT secret; set JWT_SECRET (32+ characters) for anything real\n");
    }
    if let Some(identity) = app.address("identity") {
        text.push_str(&format!(
            "\n  try: curl -s -X POST http://{identity}/auth/login -H 'content-type: application/json' \\\n         -d '{{\"username\":\"user@example.com\",\"password\":\"password\"}}'\n"
        ));
    }
    text.push_str("\n  Ctrl-C stops it.\n\n");
    text
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
