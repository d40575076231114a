#![allow(unreachable_pub)]
//! A `moto_server` per test, on a free loopback port, killed (by PID) on drop.
//!
//! Missing `moto_server`: a loud SKIPPED line, or a panic under `CI=true`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts moto with Step Functions execution enabled, or `None` (after a SKIPPED line) when
    /// `moto_server` is not installed outside CI.
    pub fn start(test: &str) -> Option<Moto> {
        let port = free_port();
        let spawned = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                    panic!("{test}: moto_server is not installed, and CI=true requires it");
                }
                eprintln!(
                    "\n*** SKIPPED {test}: moto_server not found (pip install 'moto[server]'); \
                     this test needs it and fails under CI=true ***\n"
                );
                return None;
            }
            Err(e) => panic!("{test}: could not start moto_server: {e}"),
        };
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(moto.http("GET", "/moto-api/", ""), Ok((200, _))) {
            assert!(
                Instant::now() < deadline,
                "{test}: moto_server did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (status, body) = moto
            .http(
                "POST",
                "/moto-api/config",
                r#"{"stepfunctions":{"execute_state_machine":true}}"#,
            )
            .expect("configure moto");
        assert!((200..300).contains(&status), "moto config: {body}");
        Some(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A raw HTTP/1.1 request to moto's own API.
    pub fn http(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, response))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
