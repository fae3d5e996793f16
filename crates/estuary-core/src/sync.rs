//! Lock helpers shared by the crate's queues.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, going on if a holder panicked: every critical section in this
/// crate leaves its data consistent (a single push, pop or flag change), so
/// a poisoned lock holds nothing half-done.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
