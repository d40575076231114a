//! A local DynamoDB for tests: starts `moto_server` on a free loopback port, waits until it
//! answers, builds clients for it, and stops it by PID.
//!
//! ```no_run
//! # async fn example() {
//! use eventflow_store_dynamodb::testkit;
//!
//! // `None` (after printing SKIPPED) when neither moto_server nor EVENTFLOW_DYNAMODB_ENDPOINT is
//! // available; panics instead when CI=true.
//! let Some(store) = testkit::fresh_store().await else { return };
//! // ... a store with its own, freshly created tables ...
//! # let _ = store;
//! # }
//! ```
//!
//! Every test gets its own uniquely named tables ([`fresh_store`]), so tests run in parallel on one
//! server without seeing each other's data.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::ChildStdin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};

use eventflow_core::testkit::emulator::{
    Emulator, EmulatorCommand, StopSignal, endpoint_from_env, on_path, skip_or_fail,
};

use crate::{DynamoDbConfig, DynamoDbEventStore};

/// Environment variable naming an already running DynamoDB-compatible endpoint to test against
/// instead of starting `moto_server`.
pub const ENDPOINT_ENV: &str = "EVENTFLOW_DYNAMODB_ENDPOINT";

/// How long [`MotoServer::start`] waits for the server to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `moto_server`, stopped (by PID) when dropped.
///
/// Clients should use [`MotoServer::endpoint`]: a loopback proxy that passes moto one connection at
/// a time. moto serves requests on concurrent threads, and its `TransactWriteItems` is not atomic
/// across them: a cancelled transaction restores a copy of the table taken when it began, undoing
/// writes other transactions committed meanwhile, and condition checks can race with puts. Under
/// concurrent writers that loses acknowledged appends, which DynamoDB never does. moto closes the
/// connection after every response, so one connection is one request, and the proxy makes moto's
/// requests atomic, as DynamoDB's are. [`MotoServer::direct_endpoint`] skips the proxy (for a single
/// writer, e.g. a benchmark).
#[derive(Debug)]
pub struct MotoServer {
    proxy: Proxy,
    direct: String,
    emulator: Emulator,
}

/// The serialising proxy in front of moto: its endpoint, and how to stop its thread.
#[derive(Debug)]
struct Proxy {
    endpoint: String,
    address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free loopback port and relays each accepted connection to `upstream`, one
    /// connection at a time, until stopped.
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

/// Copies one connection both ways until moto closes it.
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

impl MotoServer {
    /// Starts `moto_server -H 127.0.0.1 -p PORT` on a free port, its output going to a log file in
    /// the temporary directory, and waits until `GET /moto-api/` answers.
    pub fn start() -> io::Result<MotoServer> {
        let emulator = EmulatorCommand::new("moto", "moto_server")
            .args(["-H", "127.0.0.1", "-p", "{port}"])
            .ready_when("/moto-api/", "")
            .start_timeout(START_TIMEOUT)
            .poll_interval(Duration::from_millis(50))
            .start()?;
        Ok(MotoServer {
            proxy: Proxy::start(emulator.address())?,
            direct: format!("http://127.0.0.1:{}", emulator.port()),
            emulator,
        })
    }

    /// The endpoint to use: the serialising proxy in front of moto (see [`MotoServer`]).
    pub fn endpoint(&self) -> &str {
        &self.proxy.endpoint
    }

    /// moto's own endpoint, `http://127.0.0.1:PORT`, without the proxy: requests run concurrently
    /// and concurrent transactions can lose writes. For single-writer use such as benchmarks.
    pub fn direct_endpoint(&self) -> &str {
        &self.direct
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.emulator.pid()
    }

    /// The file the server's output goes to.
    pub fn log_path(&self) -> &Path {
        self.emulator.log_path()
    }
}

/// Whether `moto_server` is on the `PATH`.
pub fn moto_installed() -> bool {
    on_path("moto_server")
}

/// The endpoint tests should use, shared by the whole test process: `EVENTFLOW_DYNAMODB_ENDPOINT`
/// when set, otherwise a `moto_server` started on first use and killed when the process exits.
///
/// When neither is available this prints a loud `SKIPPED` line and returns `None`, unless `CI` is
/// `true`, where a test that cannot run is a failure: then it panics.
pub fn shared_endpoint() -> Option<&'static str> {
    SHARED
        .get_or_init(|| {
            if let Some(endpoint) = endpoint_from_env(ENDPOINT_ENV) {
                return Some(Shared {
                    endpoint,
                    server: None,
                });
            }
            if !moto_installed() {
                skip_or_fail(&format!(
                    "DynamoDB tests did not run: moto_server is not on PATH and \
                     {ENDPOINT_ENV} is not set (install with `pip install 'moto[server]'`)"
                ));
                return None;
            }
            let server =
                MotoServer::start().unwrap_or_else(|e| panic!("starting moto_server: {e}"));
            let watchdog = server
                .emulator
                .stop_at_exit(StopSignal::Kill)
                .unwrap_or_else(|e| panic!("starting the moto_server watchdog: {e}"));
            Some(Shared {
                endpoint: server.endpoint().to_owned(),
                server: Some((server, watchdog)),
            })
        })
        .as_ref()
        .map(|shared| shared.endpoint.as_str())
}

/// The `moto_server` that [`shared_endpoint`] started, if it started one (not when
/// `EVENTFLOW_DYNAMODB_ENDPOINT` is set, nor when the tests are skipped).
pub fn shared_server() -> Option<&'static MotoServer> {
    shared_endpoint()?;
    SHARED
        .get()
        .and_then(Option::as_ref)
        .and_then(|shared| shared.server.as_ref())
        .map(|(server, _)| server)
}

static SHARED: OnceLock<Option<Shared>> = OnceLock::new();

/// The process-wide endpoint, and the server (with its watchdog's stdin) when this process started it.
struct Shared {
    endpoint: String,
    server: Option<(MotoServer, ChildStdin)>,
}

/// A client for a local endpoint: static test credentials, region `us-east-1`, at most 2 attempts
/// and short timeouts, so a dead emulator fails a test quickly instead of being retried for seconds.
pub fn local_client(endpoint: &str) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "eventflow-testkit",
        ))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
        .build();
    Client::from_conf(config)
}

/// A configuration naming two fresh tables, `eventflow-test-<uuid>-events` and `-meta`.
pub fn unique_config() -> DynamoDbConfig {
    let name = format!("eventflow-test-{}", uuid::Uuid::new_v4().simple());
    DynamoDbConfig::new(format!("{name}-events"), format!("{name}-meta"))
}

/// A store on [`shared_endpoint`] with freshly created tables of its own, or `None` when the tests
/// are skipped (see [`shared_endpoint`]).
pub async fn fresh_store() -> Option<DynamoDbEventStore> {
    fresh_store_with(unique_config()).await
}

/// Like [`fresh_store`] with a configuration of your own (its tables are created if missing).
pub async fn fresh_store_with(config: DynamoDbConfig) -> Option<DynamoDbEventStore> {
    let endpoint = shared_endpoint()?;
    let store = DynamoDbEventStore::new(local_client(endpoint), config);
    store
        .create_tables()
        .await
        .unwrap_or_else(|e| panic!("creating test tables on {endpoint}: {e:?}"));
    Some(store)
}
