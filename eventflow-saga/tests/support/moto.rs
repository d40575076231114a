#![allow(unreachable_pub)]
//! A `moto_server` per test (eventflow-testkit's), executing Step Functions state machines.
//!
//! Missing `moto_server`: a loud SKIPPED line, or a panic under `CI=true`.

use eventflow_testkit::emulator::{on_path, skip_or_fail};
pub use eventflow_testkit::moto::Moto;

/// A moto of this test's own (Step Functions executions are per server), or `None` after a
/// SKIPPED line.
pub fn start(test: &str) -> Option<Moto> {
    if !on_path("moto_server") {
        skip_or_fail(&format!(
            "{test}: moto_server not found (pip install 'moto[server]'); \
             this test needs it and fails under CI=true"
        ));
        return None;
    }
    let moto = Moto::start().unwrap_or_else(|e| panic!("{test}: could not start moto_server: {e}"));
    moto.configure(r#"{"stepfunctions":{"execute_state_machine":true}}"#)
        .unwrap_or_else(|e| panic!("{test}: configuring moto: {e}"));
    Some(moto)
}
