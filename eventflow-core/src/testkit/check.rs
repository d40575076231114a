//! [`Check`]: names the suite, backend and check in every failure of the newer suites.

use std::fmt::Display;

use crate::error::Result;

/// The check being run.
pub(super) struct Check {
    suite: &'static str,
    backend: String,
    pub(super) name: &'static str,
}

impl Check {
    pub(super) fn new(suite: &'static str, backend: &str, name: &'static str) -> Self {
        Check {
            suite,
            backend: backend.to_owned(),
            name,
        }
    }

    #[track_caller]
    pub(super) fn fail(&self, what: impl Display) -> ! {
        panic!(
            "{} conformance [{}] check {} failed: {what}",
            self.suite, self.backend, self.name
        )
    }

    #[track_caller]
    pub(super) fn ensure(&self, condition: bool, what: impl FnOnce() -> String) {
        if !condition {
            self.fail(what());
        }
    }

    #[track_caller]
    #[allow(
        clippy::needless_pass_by_value,
        reason = "checks compare temporaries; by value reads better at every call"
    )]
    pub(super) fn equal<T: PartialEq + std::fmt::Debug>(&self, actual: T, expected: T, what: &str) {
        if actual != expected {
            self.fail(format_args!(
                "{what}: got {actual:?}, expected {expected:?}"
            ));
        }
    }

    /// The value of a call that must succeed.
    #[track_caller]
    pub(super) fn ok<T>(&self, what: &str, result: Result<T>) -> T {
        match result {
            Ok(value) => value,
            Err(e) => self.fail(format_args!("{what}: unexpected error: {e}")),
        }
    }

    /// A name unique to this run of the check: `ef-<check>-<role>-<uuid>`.
    pub(super) fn unique(&self, role: &str) -> String {
        let check = self.name.replace('_', "-");
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!("ef-{check}-{role}-{}", &id[..12])
    }
}
