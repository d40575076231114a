//! The distributed mode's configuration, against the binary: a missing or wrong setting stops the
//! process at start with one line naming it, and so does a saga step budget shorter than the
//! bus's redelivery time; a database that cannot be reached makes `/ready`
//! answer 503 (and `/health` 200) until it can, then the service is ready without a restart.
//! Needs the `cloud` feature.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

/// Only the harness's port picking is used here; the deployments are built by hand.
const DEPLOYMENT: support::Deployment = support::Deployment::Services("eventbridge");

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_eventflow-commerce-example");
const SECRET: &str = "configuration-test-secret-of-32-characters";

/// A complete EventBridge configuration pointing at nothing (parsing never connects).
fn eventbridge() -> Vec<(&'static str, String)> {
    vec![
        ("EVENT_BUS_ADAPTER", "eventbridge".into()),
        ("EVENT_BUS_NAME", "commerce".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("JWT_SECRET", SECRET.into()),
    ]
}

fn pubsub() -> Vec<(&'static str, String)> {
    vec![
        ("EVENT_BUS_ADAPTER", "pubsub".into()),
        ("PUBSUB_PROJECT_ID", "commerce".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("JWT_SECRET", SECRET.into()),
    ]
}

/// The binary with exactly `env` (nothing inherited but PATH) and `args`.
fn binary(env: &[(&str, String)], args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null());
    command
}

/// A deployment of its own on the emulators, provisioned.
struct Provisioned {
    env: Vec<(&'static str, String)>,
    /// moto's endpoint (EventBridge, SQS).
    aws: &'static str,
    /// DynamoDB's endpoint.
    dynamodb: &'static str,
}

/// [`Provisioned`]; `None` (skipped, said loudly by the testkit) without the emulators.
fn provisioned() -> Option<Provisioned> {
    let dynamodb = eventflow_store_dynamodb::testkit::shared_endpoint()?;
    let aws = eventflow_bus::testkit::moto_endpoint()?;
    let mut env = deployment(aws);
    env.push(("AWS_ENDPOINT_URL_DYNAMODB", dynamodb.to_owned()));
    let (code, stderr) = run(&env, &["provision"]);
    assert_eq!(code, Some(0), "provision: {stderr}");
    Some(Provisioned { env, aws, dynamodb })
}

/// `serve <service>` on a free port of its own, its output discarded: the process and the port.
fn serve(env: &[(&str, String)], service: &str) -> (std::process::Child, u16) {
    let port = support::free_port();
    let variable = format!("{}_PORT", service.to_ascii_uppercase());
    let child = binary(env, &["serve", service])
        .env(variable, port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, port)
}

/// Runs [`binary`]: its exit code and what it printed to stderr.
fn run(env: &[(&str, String)], args: &[&str]) -> (Option<i32>, String) {
    let output = binary(env, args).output().expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn each_required_setting_missing_in_turn_is_named() {
    for (complete, adapter) in [(eventbridge(), "eventbridge"), (pubsub(), "pubsub")] {
        for (missing, _) in complete
            .iter()
            .filter(|(name, _)| *name != "EVENT_BUS_ADAPTER")
        {
            let env: Vec<_> = complete
                .iter()
                .filter(|(name, _)| name != missing)
                .cloned()
                .collect();
            let (code, stderr) = run(&env, &["serve", "catalog"]);
            assert_eq!(code, Some(2), "{adapter} without {missing}: {stderr}");
            assert_eq!(
                stderr.lines().count(),
                1,
                "{adapter} without {missing}: one line, got {stderr:?}"
            );
            assert!(
                stderr.contains(missing),
                "{adapter} without {missing}: the line names it: {stderr:?}"
            );
        }
    }
}

#[test]
fn wrong_settings_are_named() {
    // (variables set over the complete EventBridge settings, arguments, what the line names)
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
        &'static str,
    );
    let cases: [Case; 5] = [
        (&[("EVENT_BUS_ADAPTER", "kafka")], &[], "EVENT_BUS_ADAPTER"),
        (
            &[("JWT_SECRET", "short")],
            &["serve", "catalog"],
            "JWT_SECRET",
        ),
        (&[], &["serve", "warehouse"], "warehouse"),
        (&[], &["serve"], "serve needs a service"),
        (
            &[("EVENT_BUS_ADAPTER", "local")],
            &["provision"],
            "EVENT_BUS_ADAPTER",
        ),
    ];
    for (overrides, args, named) in cases {
        let mut env = eventbridge();
        for (name, value) in overrides {
            env.retain(|(n, _)| n != name);
            env.push((name, (*value).to_owned()));
        }
        let (code, stderr) = run(&env, args);
        assert_eq!(code, Some(2), "{overrides:?} {args:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{overrides:?} {args:?} names {named}: {stderr:?}"
        );
    }
}

/// A deployment of its own (tables, bus, queues) on moto's EventBridge and SQS at `aws`, without
/// its DynamoDB endpoint.
fn deployment(aws: &str) -> Vec<(&'static str, String)> {
    let unique = format!("cfg{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut env = eventbridge();
    env.retain(|(name, _)| *name != "EVENT_BUS_NAME");
    env.extend([
        ("EVENT_BUS_NAME", format!("{unique}bus")),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_ENDPOINT_URL", aws.to_owned()),
        ("EVENTFLOW_TABLE_PREFIX", unique.clone()),
        ("EVENTFLOW_RESOURCE_PREFIX", unique),
        ("EVENTFLOW_SQS_WAIT_SECONDS", "1".into()),
        ("WORK_QUEUE_ADAPTER", "sqs".into()),
    ]);
    env
}

/// A saga step that would fail before the bus gives back a message a crashed process held is
/// refused at start, with both settings named; the defaults fit.
#[test]
fn a_step_budget_the_bus_can_outlast_is_refused_naming_both_settings() {
    let Some(aws) = eventflow_bus::testkit::moto_endpoint() else {
        return;
    };
    let mut env = deployment(aws);
    // 2 sends of 1 s (1 s apart): 3 s, against a message held for 10 minutes.
    env.extend([
        ("SAGA_STEP_TIMEOUT_MS", "1000".to_owned()),
        ("SAGA_STEP_SENDS", "2".to_owned()),
        ("EVENTFLOW_SQS_VISIBILITY_SECONDS", "600".to_owned()),
        ("SAGA_PORT", support::free_port().to_string()),
    ]);
    let (code, stderr) = run(&env, &["serve", "saga"]);
    assert_eq!(code, Some(1), "{stderr}");
    for named in [
        "SAGA_STEP_TIMEOUT_MS=1000",
        "SAGA_STEP_SENDS=2",
        "EVENTFLOW_SQS_VISIBILITY_SECONDS=600",
    ] {
        assert!(stderr.contains(named), "names {named}: {stderr}");
    }
}

/// `provision` run twice: the second run succeeds and changes nothing (no second seed of the
/// stock, no duplicate product).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_twice_changes_nothing() {
    let Some(Provisioned { env, .. }) = provisioned() else {
        return;
    };
    let (code, stderr) = run(&env, &["provision"]);
    assert_eq!(code, Some(0), "the second provision: {stderr}");
    let (mut inventory, port) = serve(&env, "inventory");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let stock = loop {
        let response = http
            .get(format!("http://127.0.0.1:{port}/inventory/prod-1"))
            .send()
            .await;
        if let Ok(response) = response
            && response.status() == 200
        {
            break response.json::<serde_json::Value>().await.unwrap();
        }
        assert!(Instant::now() < deadline, "inventory never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = inventory.kill();
    let _ = inventory.wait();
    assert_eq!(stock["available"], 100, "seeded once: {stock}");
    assert_eq!(stock["reserved"], 0, "{stock}");
}

/// Forwards every connection on `listener` to `upstream` (a database coming back).
async fn forward(listener: tokio::net::TcpListener, upstream: String) {
    // Connections live in the forwarder's own set: aborting the forwarder cuts them all.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        let upstream = upstream.clone();
        connections.spawn(async move {
            if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_not_ready_until_it_comes_back() {
    let Some(Provisioned {
        mut env, dynamodb, ..
    }) = provisioned()
    else {
        return;
    };
    env.retain(|(name, _)| *name != "AWS_ENDPOINT_URL_DYNAMODB");

    // The catalog's database address, with nothing listening there yet.
    let database = std::net::SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    env.push(("AWS_ENDPOINT_URL_DYNAMODB", format!("http://{database}")));
    let (mut catalog, port) = serve(&env, "catalog");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let status = |path: &'static str| {
        let http = http.clone();
        async move {
            http.get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while status("/health").await != Some(200) {
        assert!(Instant::now() < deadline, "the catalog never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = http
        .get(format!("http://127.0.0.1:{port}/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("event store"),
        "{body}"
    );

    // The database comes back at the same address: ready, without a restart.
    let listener = tokio::net::TcpListener::bind(database).await.unwrap();
    let upstream = dynamodb.trim_start_matches("http://").to_owned();
    tokio::spawn(forward(listener, upstream));
    let deadline = Instant::now() + Duration::from_secs(60);
    while status("/ready").await != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the catalog did not become ready once its database was back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = catalog.kill();
    let _ = catalog.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bus_is_not_ready() {
    let Some(Provisioned { mut env, aws, .. }) = provisioned() else {
        return;
    };

    // The catalog reaches the bus (EventBridge, SQS) through a forwarder the test can cut.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bus_address = listener.local_addr().unwrap();
    let forwarder = tokio::spawn(forward(
        listener,
        aws.trim_start_matches("http://").to_owned(),
    ));
    env.retain(|(name, _)| *name != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", format!("http://{bus_address}")));
    let (mut catalog, port) = serve(&env, "catalog");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let ready = || async {
        let response = http
            .get(format!("http://127.0.0.1:{port}/ready"))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready().await.map(|(status, _)| status) != Some(200) {
        assert!(Instant::now() < deadline, "the catalog never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    forwarder.abort();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match ready().await {
            Some((503, body)) => {
                assert!(body.contains("event bus"), "{body}");
                break;
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "still ready without its bus: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _ = catalog.kill();
    let _ = catalog.wait();
}
