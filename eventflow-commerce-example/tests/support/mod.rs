//! Starts the app binary on free loopback ports, talks to it over real sockets, and keeps its
//! log lines for assertions. Each test gets its own process, so stock and orders never leak
//! between tests.
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

pub struct App {
    child: Child,
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

impl App {
    /// Starts the app with `env` added to its environment, and waits until every service answers
    /// `/ready`.
    pub async fn start_with(env: &[(&str, &str)]) -> App {
        let ports: Vec<u16> = SERVICES.iter().map(|_| free_port()).collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_eventflow-commerce-example"));
        command
            .env("JWT_SECRET", JWT_SECRET)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (service, port) in SERVICES.iter().zip(&ports) {
            command.env(
                format!("{}_PORT", service.to_ascii_uppercase()),
                port.to_string(),
            );
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the app binary starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let app = App {
            child,
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
        app
    }

    pub async fn start() -> App {
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
        let deadline = Instant::now() + Duration::from_secs(20);
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
        let deadline = Instant::now() + Duration::from_secs(20);
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

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the app did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
