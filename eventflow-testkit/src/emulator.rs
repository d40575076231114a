//! Local emulator processes for backend tests (`moto_server`, the Pub/Sub emulator, …): started on a
//! free loopback port, polled over plain HTTP until they answer, and killed by PID when dropped.
//!
//! A backend crate keeps only what is specific to its service (which program, which readiness URL,
//! which clients) and uses [`skip_or_fail`] when no emulator can be had: a loud `SKIPPED` line, or a
//! panic when `CI` is `true`, where a test that cannot run is a failure.
//!
//! ```no_run
//! use eventflow_testkit::emulator::{EmulatorCommand, on_path, skip_or_fail};
//!
//! if !on_path("moto_server") {
//!     skip_or_fail("moto tests did not run: moto_server is not on PATH");
//!     return;
//! }
//! let moto = EmulatorCommand::new("moto", "moto_server")
//!     .args(["-H", "127.0.0.1", "-p", "{port}"])
//!     .ready_when("/moto-api/", "")
//!     .start()
//!     .expect("starting moto_server");
//! let endpoint = format!("http://127.0.0.1:{}", moto.port());
//! # let _ = endpoint;
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The placeholder in [`EmulatorCommand`] arguments and environment values that is replaced by the
/// emulator's port.
pub const PORT_PLACEHOLDER: &str = "{port}";

/// How to start an emulator process and how to tell that it is ready.
#[derive(Debug, Clone)]
pub struct EmulatorCommand {
    name: String,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ready_path: String,
    ready_body: String,
    start_timeout: Duration,
    poll_interval: Duration,
    attempts: u32,
}

impl EmulatorCommand {
    /// Runs `program`; `name` appears in errors, in traces and in the log file's name
    /// (`eventflow-<name>-<pid>-<port>.log` in the temporary directory). Defaults: ready when
    /// `GET /` answers 200, 60 s to get there, polled every 100 ms, 3 attempts on fresh ports.
    pub fn new(name: impl Into<String>, program: impl Into<String>) -> Self {
        EmulatorCommand {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            ready_path: "/".to_owned(),
            ready_body: String::new(),
            start_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(100),
            attempts: 3,
        }
    }

    /// Adds arguments; [`PORT_PLACEHOLDER`] in them is replaced by the port.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the process; [`PORT_PLACEHOLDER`] in `value` is replaced by
    /// the port.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Ready when `GET path` answers 200 with `body` somewhere in the response (`""`: any body).
    pub fn ready_when(mut self, path: impl Into<String>, body: impl Into<String>) -> Self {
        self.ready_path = path.into();
        self.ready_body = body.into();
        self
    }

    /// How long one attempt waits for the emulator to become ready.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How often readiness is polled.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How many times to try, each on a fresh port (at least once).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Starts the process on a free loopback port and waits until it is ready, retrying on another
    /// port if an attempt fails; the error of the last attempt otherwise.
    pub fn start(&self) -> io::Result<Emulator> {
        let mut last_error = None;
        for _ in 0..self.attempts {
            match self.try_start() {
                Ok(emulator) => return Ok(emulator),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other(format!("{} did not start", self.name))))
    }

    fn try_start(&self) -> io::Result<Emulator> {
        let name = &self.name;
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!(
            "eventflow-{name}-{}-{port}.log",
            std::process::id()
        ));
        let file = std::fs::File::create(&log)?;
        let with_port = |s: &String| s.replace(PORT_PLACEHOLDER, &port.to_string());
        let child = Command::new(&self.program)
            .args(self.args.iter().map(with_port))
            .envs(self.env.iter().map(|(k, v)| (k, with_port(v))))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        let mut emulator = Emulator {
            name: name.clone(),
            child,
            port,
            log,
        };
        let address = emulator.address();
        let deadline = Instant::now() + self.start_timeout;
        loop {
            if http_get_answers(address, &self.ready_path, &self.ready_body) {
                return Ok(emulator);
            }
            if let Some(status) = emulator.child.try_wait()? {
                let log = std::fs::read_to_string(&emulator.log).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "{name} exited with {status} before answering:\n{log}"
                )));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "{name} did not answer on port {port} within {:?}; log: {}",
                    self.start_timeout,
                    emulator.log.display()
                )));
            }
            std::thread::sleep(self.poll_interval);
        }
    }
}

/// The signal a watchdog from [`Emulator::stop_at_exit`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// `SIGTERM`: lets the emulator shut down.
    Term,
    /// `SIGKILL`: stops it at once.
    Kill,
}

/// A running emulator process, killed (by PID, `SIGKILL`) when dropped.
#[derive(Debug)]
pub struct Emulator {
    name: String,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Emulator {
    /// The name it was started under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file its output goes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops the emulator when the current process exits, however it exits, even if this value is
    /// never dropped (as in a `static`): a watchdog shell waits for its stdin, which only this
    /// process holds, to close, then sends `signal` to the emulator by PID. Keep the returned stdin
    /// alive as long as the emulator should run.
    pub fn stop_at_exit(&self, signal: StopSignal) -> io::Result<ChildStdin> {
        let kill = match signal {
            StopSignal::Term => "kill",
            StopSignal::Kill => "kill -KILL",
        };
        let mut watchdog = Command::new("sh")
            .args([
                "-c",
                &format!("read _ignored; {kill} {} 2>/dev/null", self.pid()),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        watchdog
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("watchdog has no stdin"))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        tracing::debug!(emulator = %self.name, pid = self.pid(), "stopping emulator");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (free when asked; bind it soon).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether `GET path` on `address` answers 200 with `body` in the response (`""`: any body), over
/// a plain HTTP/1.0 connection with short timeouts.
pub fn http_get_answers(address: SocketAddr, path: &str, body: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = stream.take(64 * 1024).read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    response.starts_with("HTTP/1.") && response.get(9..12) == Some("200") && response.contains(body)
}

/// Whether `program` is a file in a directory on the `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The trimmed value of the environment variable `variable`, unless unset or blank: an endpoint to
/// use instead of starting an emulator.
pub fn endpoint_from_env(variable: &str) -> Option<String> {
    let value = std::env::var(variable).ok()?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// Whether `CI` is `true` (or `1`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The rule for a test whose emulator is missing: panics with `SKIPPED: <message>` when `CI` is
/// `true` (a test that cannot run there is a failure), else prints a loud `SKIPPED` line straight
/// to the process's stderr, which the test harness does not capture, and returns.
pub fn skip_or_fail(message: &str) {
    if in_ci() {
        panic!("SKIPPED: {message} (CI=true: this is a failure)");
    }
    let _ = writeln!(io::stderr(), "\n*** SKIPPED: {message} ***\n");
}
