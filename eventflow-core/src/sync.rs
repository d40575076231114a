//! The one way this crate takes a mutex.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning. Every mutex of this crate guards data its critical
/// sections leave consistent (they check before they mutate, and user code that may panic runs
/// outside them, or only reads), so a panic elsewhere does not make the data unusable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
