//! The one way eventflow takes a mutex (the framework's crates and adapters share it).

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning.
///
/// For a mutex whose critical sections leave the data consistent (they check before they mutate,
/// and user code that may panic runs outside them, or only reads), so that a panic elsewhere does
/// not make the data unusable. Every mutex of eventflow's crates is such a mutex.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
