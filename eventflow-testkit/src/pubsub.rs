//! Google's Pub/Sub emulator, shared by a test process: started on a free loopback port
//! (`cloud-pubsub-emulator-*-all.jar`, found through `gcloud`) and stopped when the process exits;
//! or `PUBSUB_EMULATOR_HOST` when set.
//!
//! The emulator 0.8.20 never removes a stream whose subscriber was killed (a `NoSuchMethodError`
//! from mismatched gRPC classes in its jar), and the ordering keys that stream served are never
//! delivered again. When its jar has that mismatch, a one-class fix
//! (`pubsub-emulator-fix/io/grpc/InternalStatus.java`) is compiled with `javac` and put on the
//! classpath ahead of the jar; without `javac` the emulator runs as shipped, with a warning.

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

/// The emulator's entry point (the jar's `Main-Class`).
const MAIN_CLASS: &str = "com.google.cloud.pubsub.testing.v1.Main";

/// The fix for the emulator's gRPC mismatch (see the module docs).
const GRPC_FIX: &str = include_str!("../pubsub-emulator-fix/io/grpc/InternalStatus.java");

/// The method the bundled grpc-core calls, as `javap` prints it when the jar has it.
const CALLED_METHOD: &str = "asRuntimeException(io.grpc.Status, io.grpc.Metadata, boolean)";

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

/// The directory of the compiled fix for `jar`, `Ok(None)` when the jar does not need it, or why
/// it could not be had. Compiled once per jar into the temporary directory.
fn grpc_fix(jar: &Path) -> Result<Option<PathBuf>, String> {
    let stem = jar
        .file_stem()
        .map_or_else(|| "emulator".into(), |s| s.to_string_lossy().into_owned());
    let root = std::env::temp_dir()
        .join("eventflow-pubsub-emulator-fix")
        .join(stem);
    let classes = root.join("classes");
    // Built only for a jar that needed it: no second look inside the jar (a JVM start).
    if classes.join("io/grpc/InternalStatus.class").is_file() {
        return Ok(Some(classes));
    }
    let javap = Command::new("javap")
        .args(["-cp"])
        .arg(jar)
        .arg("io.grpc.InternalStatus")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running javap: {e}"))?;
    if String::from_utf8_lossy(&javap.stdout).contains(CALLED_METHOD) {
        return Ok(None);
    }
    // Built aside and renamed into place, so concurrent test processes never see half a build.
    let build = root.join(format!("build-{}", std::process::id()));
    let source = build.join("io/grpc/InternalStatus.java");
    std::fs::create_dir_all(source.parent().unwrap_or(&build))
        .and_then(|()| std::fs::write(&source, GRPC_FIX))
        .map_err(|e| format!("writing {}: {e}", source.display()))?;
    let javac = Command::new("javac")
        .arg("-cp")
        .arg(jar)
        .arg("-d")
        .arg(build.join("classes"))
        .arg(&source)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running javac: {e}"))?;
    if !javac.status.success() {
        return Err(format!(
            "javac failed: {}",
            String::from_utf8_lossy(&javac.stderr).trim()
        ));
    }
    match std::fs::rename(build.join("classes"), &classes) {
        Ok(()) => {}
        // Another process put its build in place first: use that one.
        Err(_) if classes.is_dir() => {}
        Err(e) => return Err(format!("moving the fix into {}: {e}", classes.display())),
    }
    let _ = std::fs::remove_dir_all(&build);
    Ok(Some(classes))
}

/// The JVM arguments that run `jar`: with the gRPC fix ahead of it when it needs one.
fn java_args(jar: &Path) -> Vec<String> {
    let jar_path = jar.to_string_lossy().into_owned();
    match grpc_fix(jar) {
        Ok(None) => vec!["-jar".into(), jar_path],
        Ok(Some(classes)) => vec![
            "-cp".into(),
            format!("{}:{jar_path}", classes.display()),
            MAIN_CLASS.into(),
        ],
        Err(why) => {
            eprintln!(
                "WARNING: the Pub/Sub emulator runs unfixed ({why}): a subscriber killed with \
                 SIGKILL can leave ordering keys undelivered for good"
            );
            vec!["-jar".into(), jar_path]
        }
    }
}

/// The Pub/Sub emulator host (`127.0.0.1:PORT`) shared by this process: `PUBSUB_EMULATOR_HOST`
/// when set, else an emulator started on first use (its jar, with the gRPC fix when it needs it)
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
            let mut args = java_args(&jar);
            args.extend(["--host=127.0.0.1".to_owned(), "--port={port}".to_owned()]);
            let emulator = EmulatorCommand::new("bus-pubsub-emulator", "java")
                .args(args)
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
