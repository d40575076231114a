#![allow(unreachable_pub)]
//! A `moto_server` per test, on a free loopback port, killed (by PID) on drop.
//!
//! Missing `moto_server`: a loud SKIPPED line, or a panic under `CI=true`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use eventflow_core::testkit::emulator::{Emulator, EmulatorCommand, on_path, skip_or_fail};

pub struct Moto {
    _emulator: Emulator,
    pub port: u16,
}

impl Moto {
    /// Starts moto with Step Functions execution enabled, or `None` (after a SKIPPED line) when
    /// `moto_server` is not installed outside CI.
    pub fn start(test: &str) -> Option<Moto> {
        if !on_path("moto_server") {
            skip_or_fail(&format!(
                "{test}: moto_server not found (pip install 'moto[server]'); \
                 this test needs it and fails under CI=true"
            ));
            return None;
        }
        let emulator = EmulatorCommand::new("saga-moto", "moto_server")
            .args(["-H", "127.0.0.1", "-p", "{port}"])
            .env("MOTO_PORT", "{port}")
            .ready_when("/moto-api/", "")
            .start_timeout(Duration::from_secs(30))
            .start()
            .unwrap_or_else(|e| panic!("{test}: could not start moto_server: {e}"));
        let moto = Moto {
            port: emulator.port(),
            _emulator: emulator,
        };
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
