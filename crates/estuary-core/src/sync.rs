//! Poison-tolerant locking: the one way the workspace takes its standard
//! locks.
//!
//! A [`Mutex`] or [`RwLock`] is poisoned when a thread panics while holding
//! it; `lock().unwrap()` would then panic in every later holder, turning one
//! bug into a dead server. These helpers go on with the data instead.
//!
//! Contract: use them only for data that every critical section leaves
//! consistent (a single insert, push, pop, counter or flag change), so that
//! a poisoned lock holds nothing half-done. A critical section that makes
//! several dependent changes must handle the poison itself.
//!
//! ```
//! use std::sync::{Mutex, RwLock};
//! use estuary_core::sync::{lock, read, write};
//!
//! let counts = Mutex::new(vec![1, 2]);
//! lock(&counts).push(3);
//! assert_eq!(lock(&counts).len(), 3);
//!
//! let names = RwLock::new(String::from("lobby"));
//! write(&names).push_str("-2");
//! assert_eq!(*read(&names), "lobby-2");
//! ```

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, going on if a holder panicked (see the [module](self) for
/// when that is sound).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes `l` for reading, going on if a writer panicked (see the
/// [module](self) for when that is sound).
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes `l` for writing, going on if a holder panicked (see the
/// [module](self) for when that is sound).
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}
