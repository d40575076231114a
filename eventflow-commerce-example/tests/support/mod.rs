//! Starts the app binary on free loopback ports (in one process, or as eight services on the
//! emulators), talks to it over real sockets, and keeps its log lines for assertions. Each test
//! gets its own processes (and, distributed, its own tables, bus and queues), so stock and orders
//! never leak between tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use eventflow_commerce_example::SERVICES;

/// The secret the app under test signs with; tests forge tokens with it and with others.
pub const JWT_SECRET: &str = "end-to-end-test-secret-of-at-least-32-characters";

/// Where the scenarios run: the binary with every service in one process, in memory; or
/// provisioned on the emulators and started as eight `serve <service>` processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    OneProcess,
    /// `EVENT_BUS_ADAPTER`: `eventbridge` or `pubsub`.
    Services(&'static str),
}

pub struct App {
    children: Vec<Child>,
    ports: Vec<u16>,
    logs: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

const BINARY: &str = env!("CARGO_BIN_EXE_eventflow-commerce-example");

/// The environment of a distributed deployment of its own (its own tables, bus, queues, topic
/// and subscriptions) on the shared emulators; `None` when an emulator is missing (the testkits
/// say SKIPPED, or fail under CI).
fn distributed_env(adapter: &str) -> Option<Vec<(String, String)>> {
    let dynamodb = eventflow_store_dynamodb::testkit::shared_endpoint()?;
    let aws = eventflow_bus::testkit::moto_endpoint()?;
    let unique = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let mut env = vec![
        ("EVENT_BUS_ADAPTER", adapter.to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_ENDPOINT_URL", aws.to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb.to_owned()),
        ("WORK_QUEUE_ADAPTER", "sqs".to_owned()),
        ("EVENTFLOW_TABLE_PREFIX", format!("e2e{unique}-")),
        ("EVENTFLOW_RESOURCE_PREFIX", format!("e2e{unique}-")),
        ("EVENTFLOW_SQS_WAIT_SECONDS", "1".to_owned()),
    ];
    match adapter {
        "eventbridge" => env.push(("EVENT_BUS_NAME", format!("e2e{unique}"))),
        _ => {
            let host = eventflow_bus::testkit::pubsub_emulator_host()?;
            env.push(("PUBSUB_EMULATOR_HOST", host.to_owned()));
            env.push(("PUBSUB_PROJECT_ID", format!("e2e{unique}")));
        }
    }
    Some(env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

impl App {
    /// Starts the app as [`crate::DEPLOYMENT`] says with `env` added to its environment, and
    /// waits until every service answers `/ready`. `None` when the deployment's emulators are
    /// missing (skipped loudly; a failure under CI).
    pub async fn start_with(env: &[(&str, &str)]) -> Option<App> {
        let ports: Vec<u16> = SERVICES.iter().map(|_| free_port()).collect();
        let mut base: Vec<(String, String)> = vec![
            ("JWT_SECRET".into(), JWT_SECRET.into()),
            ("LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "info".into()),
        ];
        for (service, port) in SERVICES.iter().zip(&ports) {
            base.push((
                format!("{}_PORT", service.to_ascii_uppercase()),
                port.to_string(),
            ));
        }
        let roles: Vec<Vec<&str>> = match crate::DEPLOYMENT {
            Deployment::OneProcess => vec![vec![]],
            Deployment::Services(adapter) => {
                base.extend(distributed_env(adapter)?);
                SERVICES.iter().map(|s| vec!["serve", s]).collect()
            }
        };
        base.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let command = |args: &[&str]| {
            let mut command = Command::new(BINARY);
            command.args(args).envs(base.iter().map(|(k, v)| (k, v)));
            command
        };
        if matches!(crate::DEPLOYMENT, Deployment::Services(_)) {
            let provisioned = command(&["provision"]).output().expect("provision runs");
            assert!(
                provisioned.status.success(),
                "provision failed: {}\n{}",
                String::from_utf8_lossy(&provisioned.stdout),
                String::from_utf8_lossy(&provisioned.stderr)
            );
        }
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut children = Vec::new();
        for args in roles {
            let mut child = command(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("the app binary starts");
            let stdout = child.stdout.take().expect("piped stdout");
            let sink = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            children.push(child);
        }
        let app = App {
            children,
            ports,
            logs,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        for service in SERVICES {
            loop {
                let ready = app.http.get(app.url(service, "/ready")).send().await;
                if matches!(&ready, Ok(r) if r.status() == 200) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{service} did not become ready; logs:\n{}",
                    app.logs.lock().unwrap().join("\n")
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Some(app)
    }

    pub async fn start() -> Option<App> {
        Self::start_with(&[]).await
    }

    pub fn url(&self, service: &str, path: &str) -> String {
        let i = SERVICES.iter().position(|s| *s == service).unwrap();
        format!("http://127.0.0.1:{}{path}", self.ports[i])
    }

    /// The JSON log lines written so far.
    pub fn logs(&self) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub async fn login(&self, username: &str) -> String {
        let response = self
            .http
            .post(self.url("identity", "/auth/login"))
            .json(&json!({ "username": username, "password": "password" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["tokenType"], "Bearer");
        body["token"].as_str().unwrap().to_owned()
    }

    /// GET with a bearer token: status and JSON body.
    pub async fn get(&self, service: &str, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(self.url(service, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POST /orders: status and JSON body.
    pub async fn place(&self, token: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("ordering", "/orders"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Places an order that must be accepted; returns its id.
    pub async fn place_ok(&self, token: &str, body: &Value) -> String {
        let (status, accepted) = self.place(token, body).await;
        assert_eq!(status, 202, "{accepted}");
        accepted["orderId"].as_str().unwrap().to_owned()
    }

    /// Polls the order until it leaves PENDING; returns the order.
    pub async fn settled(&self, token: &str, order_id: &str) -> Value {
        let deadline = Instant::now() + patience();
        loop {
            let (status, order) = self
                .get("ordering", &format!("/orders/{order_id}"), Some(token))
                .await;
            assert_eq!(status, 200, "{order}");
            if order["status"] != "PENDING" {
                return order;
            }
            assert!(Instant::now() < deadline, "order {order_id} still pending");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `GET path` until `done` holds for the body; returns it.
    pub async fn eventually(
        &self,
        service: &str,
        path: &str,
        token: Option<&str>,
        done: impl Fn(u16, &Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + patience();
        loop {
            let (status, body) = self.get(service, path, token).await;
            if done(status, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "GET {service}{path} never got there: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM to every process and waits for them to exit; the first unsuccessful exit
    /// status, else success.
    pub fn terminate(mut self) -> ExitStatus {
        for child in &self.children {
            let sent = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut statuses = Vec::new();
        for child in &mut self.children {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    statuses.push(status);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the app did not stop within 30 s of SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        statuses
            .iter()
            .copied()
            .find(|status| !status.success())
            .unwrap_or(statuses[0])
    }
}

impl Drop for App {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The seed's order body: `quantity` of `product`, shipped to `zip`.
pub fn order(product: &str, quantity: i64, zip: &str) -> Value {
    json!({
        "items": [{ "productId": product, "quantity": quantity }],
        "shippingAddress": {
            "street": "123 Main St", "city": "Seattle", "state": "WA", "zip": zip, "country": "US"
        }
    })
}

/// How long a scenario waits for something asynchronous: the emulators behind the distributed
/// deployment (moto answers one request at a time) are far slower than memory.
fn patience() -> Duration {
    match crate::DEPLOYMENT {
        Deployment::OneProcess => Duration::from_secs(20),
        Deployment::Services(_) => Duration::from_secs(120),
    }
}
