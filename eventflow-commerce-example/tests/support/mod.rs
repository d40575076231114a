//! Starts the app binary on free loopback ports (in one process, or as eight services on the
//! emulators), talks to it over real sockets, and keeps its log lines for assertions. Each test
//! gets its own processes (and, distributed, its own tables, bus and queues), so stock and orders
//! never leak between tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use eventflow_commerce_example::SERVICES;

/// The seed's first user.
pub const USER: &str = "user@example.com";

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
    processes: Vec<Process>,
    ports: Vec<u16>,
    /// Every process's environment (a restarted or added process gets the same).
    env: Vec<(String, String)>,
    /// Log lines, each with the index of the process that wrote it.
    logs: Arc<Mutex<Vec<(usize, String)>>>,
    pub http: reqwest::Client,
    /// The seeded operator's token, once logged in: the saga service answers operators.
    operator: tokio::sync::OnceCell<String>,
}

/// One binary: its arguments (`serve <service>`, or none), the variables it was given over the
/// app's, and its process; `replaced` once a restart took its place.
struct Process {
    args: Vec<String>,
    overrides: Vec<(String, String)>,
    child: Child,
    replaced: bool,
}

/// A loopback port nothing listens on, for a process about to start. Picked below the kernel's
/// ephemeral range (32768 and up on Linux), where port 0 would pick: there, an outgoing
/// connection's source port (the tests make thousands, to moto) can take it between this check
/// and the process binding it. Each test process starts at its own offset, and never hands out
/// a port twice.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id() * 97;
    loop {
        let port = FIRST + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % COUNT;
        let port = u16::try_from(port).expect("below 32768");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
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
        // Eight services on one serialised moto answer some requests only after tens of
        // seconds under load: that is the emulator, not a request to cut off.
        ("HTTP_REQUEST_TIMEOUT_SECONDS", "300".to_owned()),
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
        let roles: Vec<Vec<String>> = match crate::DEPLOYMENT {
            Deployment::OneProcess => vec![vec![]],
            Deployment::Services(adapter) => {
                base.extend(distributed_env(adapter)?);
                SERVICES
                    .iter()
                    .map(|s| vec!["serve".to_owned(), (*s).to_owned()])
                    .collect()
            }
        };
        base.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let mut app = App {
            processes: Vec::new(),
            ports,
            env: base,
            logs: Arc::new(Mutex::new(Vec::new())),
            http: reqwest::Client::builder()
                .timeout(patience())
                .build()
                .unwrap(),
            operator: tokio::sync::OnceCell::new(),
        };
        if matches!(crate::DEPLOYMENT, Deployment::Services(_)) {
            let provisioned = app
                .command(&["provision".to_owned()])
                .output()
                .expect("provision runs");
            assert!(
                provisioned.status.success(),
                "provision failed: {}\n{}",
                String::from_utf8_lossy(&provisioned.stdout),
                String::from_utf8_lossy(&provisioned.stderr)
            );
        }
        for args in roles {
            app.spawn(args, Vec::new());
        }
        for service in SERVICES {
            app.wait_ready(&app.url(service, "/ready")).await;
        }
        Some(app)
    }

    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Starts the binary with `args` and `overrides` over the app's variables, its log lines
    /// going to [`logs`](Self::logs) tagged with its index, which it returns.
    fn spawn(&mut self, args: Vec<String>, overrides: Vec<(String, String)>) -> usize {
        let mut command = self.command(&args);
        command.envs(overrides.iter().map(|(k, v)| (k, v)));
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the app binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let sink = Arc::clone(&self.logs);
        let index = self.processes.len();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((index, line));
            }
        });
        self.processes.push(Process {
            args,
            overrides,
            child,
            replaced: false,
        });
        index
    }

    async fn wait_ready(&self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self.http.get(url).send().await;
            if matches!(&ready, Ok(r) if r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not become ready; logs:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        let logs = self.logs.lock().unwrap();
        logs.iter()
            .map(|(_, line)| line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The processes serving `service` (distributed deployments).
    fn instances_of(&self, service: &str) -> Vec<usize> {
        (0..self.processes.len())
            .filter(|i| self.processes[*i].args.last().map(String::as_str) == Some(service))
            .collect()
    }

    /// The value the app's processes were given for `variable`.
    pub fn setting(&self, variable: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(name, _)| name == variable)
            .map(|(_, value)| value.as_str())
    }

    /// Kills every process serving `service` with SIGKILL: no shutdown, nothing flushed.
    pub fn kill(&mut self, service: &str) {
        for i in self.instances_of(service) {
            let child = &mut self.processes[i].child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `service` again (every instance that was killed), as it was started, and waits
    /// until it is ready.
    pub async fn restart(&mut self, service: &str) {
        self.restart_with(service, &[]).await;
    }

    /// Like [`restart`](Self::restart), with `env` over the variables the instance had.
    pub async fn restart_with(&mut self, service: &str, env: &[(&str, &str)]) {
        let port_variable = format!("{}_PORT", service.to_ascii_uppercase());
        for i in self.instances_of(service) {
            let process = &mut self.processes[i];
            if process.replaced || process.child.try_wait().unwrap().is_none() {
                continue;
            }
            process.replaced = true;
            let args = process.args.clone();
            let mut overrides = process.overrides.clone();
            for (name, value) in env {
                overrides.retain(|(n, _)| n != name);
                overrides.push(((*name).to_owned(), (*value).to_owned()));
            }
            let port = overrides
                .iter()
                .find(|(name, _)| *name == port_variable)
                .map_or_else(|| self.port_of(service), |(_, port)| port.parse().unwrap());
            self.spawn(args, overrides);
            self.wait_ready(&format!("http://127.0.0.1:{port}/ready"))
                .await;
        }
    }

    /// Starts another instance of `service` on its own port, on the same tables and queues;
    /// returns its base URL.
    pub async fn add_instance(&mut self, service: &str) -> String {
        let port = free_port();
        let variable = format!("{}_PORT", service.to_ascii_uppercase());
        self.spawn(
            vec!["serve".to_owned(), service.to_owned()],
            vec![(variable, port.to_string())],
        );
        let base = format!("http://127.0.0.1:{port}");
        self.wait_ready(&format!("{base}/ready")).await;
        base
    }

    /// How many log lines with `message` each running instance of `service` wrote, in start order.
    pub fn work_per_instance(&self, service: &str, message: &str) -> Vec<usize> {
        let logs = self.logs.lock().unwrap();
        self.instances_of(service)
            .into_iter()
            .map(|i| {
                logs.iter()
                    .filter(|(index, line)| *index == i && line.contains(message))
                    .count()
            })
            .collect()
    }

    /// The process id of the `index`-th process started (the only one in the one-process mode).
    pub fn pid(&self, index: usize) -> u32 {
        self.processes[index].child.id()
    }

    pub fn port_of(&self, service: &str) -> u16 {
        self.ports[SERVICES.iter().position(|s| *s == service).unwrap()]
    }

    pub async fn start() -> Option<App> {
        Self::start_with(&[]).await
    }

    pub fn url(&self, service: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port_of(service))
    }

    /// The JSON log lines written so far.
    pub fn logs(&self) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, line)| serde_json::from_str(line).ok())
            .collect()
    }

    /// The seeded operator's token (logged in once).
    pub async fn operator_token(&self) -> &str {
        self.operator
            .get_or_init(|| self.login("operator@example.com"))
            .await
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
    /// The saga service's API is for operators (and a customer's own sagas): a `GET` to it with no
    /// token sends the seeded operator's.
    pub async fn get(&self, service: &str, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(self.url(service, path));
        let token = match token {
            None if service == "saga" => Some(self.operator_token().await),
            token => token,
        };
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
            if Instant::now() >= deadline {
                let (_, saga) = self.get("saga", &format!("/sagas/{order_id}"), None).await;
                panic!(
                    "order {order_id} still pending; its saga: {saga}\nthe log lines naming it:\n{}",
                    self.trail(order_id)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The log lines that mention `needle`, and every warning and error, each after the
    /// arguments of the process that wrote it (the last 200): what happened to one order across
    /// the services.
    pub fn trail(&self, needle: &str) -> String {
        let logs = self.logs.lock().unwrap();
        let lines: Vec<String> = logs
            .iter()
            .filter(|(_, line)| {
                line.contains(needle)
                    || line.contains(r#""level":"WARN""#)
                    || line.contains(r#""level":"ERROR""#)
            })
            .map(|(index, line)| format!("[{}] {line}", self.processes[*index].args.join(" ")))
            .collect();
        lines[lines.len().saturating_sub(200)..].join("\n")
    }

    /// A product's stock: (available, reserved).
    pub async fn stock(&self, product: &str) -> (u64, u64) {
        let (status, body) = self
            .get("inventory", &format!("/inventory/{product}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        (
            body["available"].as_u64().unwrap(),
            body["reserved"].as_u64().unwrap(),
        )
    }

    /// The order's saga once it has ended (completed or compensated).
    pub async fn saga(&self, order_id: &str) -> Value {
        self.eventually(
            "saga",
            &format!("/sagas/{order_id}"),
            None,
            |status, body| {
                status == 200
                    && ["COMPLETED", "COMPENSATED"].contains(&body["status"].as_str().unwrap_or(""))
            },
        )
        .await
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
        self.processes
            .retain_mut(|process| process.child.try_wait().unwrap().is_none());
        for process in &self.processes {
            let sent = Command::new("kill")
                .args(["-TERM", &process.child.id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut statuses = Vec::new();
        for process in &mut self.processes {
            let child = &mut process.child;
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
        for process in &mut self.processes {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

/// How many entries of a saga view's history have `event_type`.
pub fn history_count(saga: &Value, event_type: &str) -> usize {
    saga["history"].as_array().map_or(0, |h| {
        h.iter().filter(|e| e["eventType"] == event_type).count()
    })
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
