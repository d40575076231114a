//! Google's Pub/Sub emulator, shared by a test process: started on a free loopback port
//! (`java -jar cloud-pubsub-emulator-*-all.jar`, found through `gcloud`) and stopped when the
//! process exits; or `PUBSUB_EMULATOR_HOST` when set.

use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::emulator::{
    Emulator, EmulatorCommand, StopSignal, endpoint_from_env, on_path, skip_or_fail,
};

/// Environment variable naming the Pub/Sub emulator jar, when `gcloud` is not on the `PATH`.
pub const JAR_ENV: &str = "EVENTFLOW_PUBSUB_EMULATOR_JAR";

/// How long the emulator (a JVM) gets to answer.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The shared host, and the emulator and its watchdog's stdin when this process started it.
struct Shared {
    host: String,
    _emulator: Option<(Emulator, ChildStdin)>,
}

/// The Pub/Sub emulator jar: [`JAR_ENV`], else the one in the Google Cloud SDK that
/// `gcloud info` names.
fn emulator_jar() -> Result<PathBuf, String> {
    if let Ok(jar) = std::env::var(JAR_ENV)
        && !jar.trim().is_empty()
    {
        return Ok(PathBuf::from(jar.trim()));
    }
    if !on_path("gcloud") {
        return Err(format!("gcloud is not on PATH and {JAR_ENV} is not set"));
    }
    let output = Command::new("gcloud")
        .args(["info", "--format=value(installation.sdk_root)"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running gcloud info: {e}"))?;
    let root = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let lib = Path::new(&root).join("platform/pubsub-emulator/lib");
    let jar = std::fs::read_dir(&lib)
        .map_err(|e| {
            format!(
                "{}: {e} (install with `gcloud components install pubsub-emulator`)",
                lib.display()
            )
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("cloud-pubsub-emulator-") && n.ends_with("-all.jar"))
        })
        .ok_or_else(|| format!("no cloud-pubsub-emulator-*-all.jar in {}", lib.display()))?;
    Ok(jar)
}

/// The Pub/Sub emulator host (`127.0.0.1:PORT`) shared by this process: `PUBSUB_EMULATOR_HOST`
/// when set, else an emulator started on first use (`java -jar cloud-pubsub-emulator-*-all.jar`)
/// and stopped when the process exits. `None` after a loud SKIPPED line when neither can be had (a
/// panic when `CI=true`).
pub fn emulator_host() -> Option<&'static str> {
    static SHARED: OnceLock<Option<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if let Some(host) = endpoint_from_env("PUBSUB_EMULATOR_HOST") {
                return Some(Shared { host, _emulator: None });
            }
            let jar = match (on_path("java"), emulator_jar()) {
                (true, Ok(jar)) => jar,
                (false, _) => {
                    skip_or_fail("Pub/Sub tests did not run: java is not on PATH and PUBSUB_EMULATOR_HOST is not set");
                    return None;
                }
                (_, Err(why)) => {
                    skip_or_fail(&format!(
                        "Pub/Sub tests did not run: no emulator ({why}) and PUBSUB_EMULATOR_HOST is not set"
                    ));
                    return None;
                }
            };
            let jar = jar.to_string_lossy().into_owned();
            let emulator = EmulatorCommand::new("bus-pubsub-emulator", "java")
                .args(["-jar", &jar, "--host=127.0.0.1", "--port={port}"])
                .ready_when("/", "Ok")
                .start_timeout(START_TIMEOUT)
                .start()
                .unwrap_or_else(|e| panic!("starting the Pub/Sub emulator: {e}"));
            let host = format!("127.0.0.1:{}", emulator.port());
            let watchdog = emulator
                .stop_at_exit(StopSignal::Term)
                .unwrap_or_else(|e| panic!("starting the Pub/Sub emulator watchdog: {e}"));
            Some(Shared { host, _emulator: Some((emulator, watchdog)) })
        })
        .as_ref()
        .map(|shared| shared.host.as_str())
}
