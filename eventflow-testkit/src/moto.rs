//! `moto_server`, the AWS emulator: one launcher for every AWS-backed test and bench of the
//! workspace (the DynamoDB store, the EventBridge/SQS adapters, the saga's Step Functions export,
//! the commerce app).
//!
//! - [`shared`] gives the process's shared server of a [`Role`], started on first use and
//!   stopped by a watchdog when the process exits; every test names its own tables, queues and
//!   buses, so tests share it and run in parallel.
//! - [`Moto::start`] gives a server of one's own (configured with [`Moto::configure`], e.g. to
//!   execute Step Functions state machines), stopped when dropped.
//! - [`ENDPOINT_ENV`] set: every shared role uses that endpoint instead of starting a server.
//!
//! Without `moto_server` on the `PATH` (and without the variable), [`shared`] returns `None`
//! after a loud SKIPPED line, or panics under `CI=true` ([`skip_or_fail`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::ChildStdin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::emulator::{
    Emulator, EmulatorCommand, StopSignal, endpoint_from_env, on_path, skip_or_fail,
};

/// The environment variable naming a running moto (`http://host:port`) for every shared role.
pub const ENDPOINT_ENV: &str = "EVENTFLOW_MOTO_ENDPOINT";

const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Which shared server a test uses. Two, so that the messaging tests' long polls and
/// EventBridge's fan-out do not queue behind DynamoDB's serialised requests, and each can have a
/// core of this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// DynamoDB: use [`Endpoints::serial`].
    Data,
    /// SQS, EventBridge: use [`Endpoints::direct`].
    Messaging,
}

/// A `moto_server` this process started on a free loopback port, with a serialising proxy in
/// front of it; killed by PID when dropped.
#[derive(Debug)]
pub struct Moto {
    proxy: Proxy,
    direct: String,
    emulator: Emulator,
}

impl Moto {
    /// Starts a `moto_server` and waits until it answers.
    ///
    /// # Errors
    /// When it cannot be started or does not answer within 90 s.
    pub fn start() -> io::Result<Moto> {
        let emulator = EmulatorCommand::new("moto", "moto_server")
            .args(["-H", "127.0.0.1", "-p", "{port}"])
            // Step Functions executions call back into moto on its own port.
            .env("MOTO_PORT", "{port}")
            .ready_when("/moto-api/", "")
            .start_timeout(START_TIMEOUT)
            .poll_interval(Duration::from_millis(50))
            .start()?;
        Ok(Moto {
            proxy: Proxy::start(emulator.address())?,
            direct: format!("http://127.0.0.1:{}", emulator.port()),
            emulator,
        })
    }

    /// The server's own endpoint: concurrent requests are handled concurrently.
    pub fn endpoint(&self) -> &str {
        &self.direct
    }

    /// A loopback proxy that passes moto one connection at a time: the endpoint for DynamoDB.
    ///
    /// moto serves requests on concurrent threads, and its `TransactWriteItems` is not atomic
    /// across them: a cancelled transaction restores a copy of the table taken when it began,
    /// undoing writes other transactions committed meanwhile, and condition checks can race with
    /// puts. Under concurrent writers that loses acknowledged appends, which DynamoDB never does.
    /// moto closes the connection after every response, so one connection is one request, and
    /// the proxy makes moto's requests atomic, as DynamoDB's are.
    pub fn serial_endpoint(&self) -> &str {
        &self.proxy.endpoint
    }

    /// Posts `json` to moto's `/moto-api/config`, e.g.
    /// `{"stepfunctions":{"execute_state_machine":true}}`.
    ///
    /// # Errors
    /// When moto cannot be reached or does not answer 2xx.
    pub fn configure(&self, json: &str) -> io::Result<()> {
        let address = self.emulator.address();
        let mut stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "POST /moto-api/config HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        if response.get(9..10) == Some("2") {
            Ok(())
        } else {
            Err(io::Error::other(format!("moto config refused: {response}")))
        }
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.emulator.pid()
    }

    /// Where the server's output goes.
    pub fn log_path(&self) -> &Path {
        self.emulator.log_path()
    }
}

/// The endpoints of a shared server.
#[derive(Debug)]
pub struct Endpoints {
    direct: String,
    serial: String,
    /// The server with its watchdog's stdin, when this process started it.
    _server: Option<(Moto, ChildStdin)>,
}

impl Endpoints {
    /// See [`Moto::endpoint`]: for SQS and EventBridge.
    pub fn direct(&self) -> &str {
        &self.direct
    }

    /// See [`Moto::serial_endpoint`]: for DynamoDB.
    pub fn serial(&self) -> &str {
        &self.serial
    }
}

/// The process's shared server of `role`: [`ENDPOINT_ENV`] when set, else a `moto_server`
/// started on first use and killed when the process exits. `None` after a SKIPPED line when
/// there is neither (a panic under `CI=true`).
///
/// # Panics
/// When `moto_server` is on the `PATH` but does not start.
pub fn shared(role: Role) -> Option<&'static Endpoints> {
    static DATA: OnceLock<Option<Endpoints>> = OnceLock::new();
    static MESSAGING: OnceLock<Option<Endpoints>> = OnceLock::new();
    let cell = match role {
        Role::Data => &DATA,
        Role::Messaging => &MESSAGING,
    };
    cell.get_or_init(|| start_shared(role)).as_ref()
}

fn start_shared(role: Role) -> Option<Endpoints> {
    if let Some(endpoint) = endpoint_from_env(ENDPOINT_ENV) {
        return Some(Endpoints {
            direct: endpoint.clone(),
            serial: endpoint,
            _server: None,
        });
    }
    if !on_path("moto_server") {
        skip_or_fail(&format!(
            "AWS tests ({role:?}) did not run: moto_server is not on PATH and {ENDPOINT_ENV} is \
             not set (install with `pip install 'moto[server]'`)"
        ));
        return None;
    }
    let server = Moto::start().unwrap_or_else(|e| panic!("starting moto_server: {e}"));
    // moto keeps nothing worth flushing: a kill is the quickest stop.
    let watchdog = server
        .emulator
        .stop_at_exit(StopSignal::Kill)
        .unwrap_or_else(|e| panic!("starting the moto_server watchdog: {e}"));
    Some(Endpoints {
        direct: server.endpoint().to_owned(),
        serial: server.serial_endpoint().to_owned(),
        _server: Some((server, watchdog)),
    })
}

/// A loopback TCP proxy that relays one connection at a time to `upstream`.
#[derive(Debug)]
struct Proxy {
    endpoint: String,
    address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("moto-serialising-proxy".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(client) = client {
                        let _ = relay(client, upstream);
                    }
                }
            })?;
        Ok(Proxy {
            endpoint: format!("http://{address}"),
            address,
            stop,
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_millis(200));
    }
}

/// Relays one client connection to `upstream` until moto answers and closes.
fn relay(client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // A hung moto must not hang every later request forever.
    server.set_read_timeout(Some(Duration::from_secs(120)))?;
    let (mut from_client, mut to_server) = (client.try_clone()?, server.try_clone()?);
    let upload = std::thread::spawn(move || {
        let _ = io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    let _ = io::copy(&mut from_server, &mut to_client);
    // moto has answered and closed: close the client side too, which ends the upload.
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = from_server.shutdown(Shutdown::Both);
    let _ = upload.join();
    Ok(())
}
