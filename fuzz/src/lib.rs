//! Estuary's fuzz harness, on stable Rust.
//!
//! cargo-fuzz needs a nightly compiler for its sanitizer coverage; this
//! harness does not. Each [`Target`] is a function that must not panic for
//! any input and asserts cheap invariants (a valid name re-validates, a route
//! match re-renders to a matching path, a decoded message re-encodes to the
//! same bytes). The [`driver`] mutates a corpus kept in the repository
//! (`fuzz/corpus/<target>/`) for a bounded time, runs every input inside
//! `catch_unwind`, and saves an input that panics to
//! `fuzz/artifacts/<target>/` with the command that reproduces it.
//!
//! Without coverage instrumentation, guidance is by *outcome*: a target
//! returns a fingerprint of the path an input took (which error, which
//! variant, matched or not), and the driver keeps, for the rest of the run,
//! the inputs that reached an outcome it had not seen.
//!
//! ```text
//! cargo run -p estuary-fuzz -- all --seconds 15
//! cargo run -p estuary-fuzz -- stored --seconds 600 --seed 42
//! cargo run -p estuary-fuzz -- repro stored fuzz/artifacts/stored/crash-0123abcd
//! ```

pub mod driver;
pub mod mutate;
pub mod rng;
pub mod targets;

use std::hash::{DefaultHasher, Hash, Hasher};

/// One fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The name on the command line, and the corpus folder's.
    pub name: &'static str,
    /// What the target feeds its input to.
    pub about: &'static str,
    /// Runs one input; panics on a bug; returns the input's outcome
    /// fingerprint (see [`Trail`]).
    pub run: fn(&[u8]) -> u64,
    /// Tokens of the input's language, for the mutator.
    pub dictionary: &'static [&'static [u8]],
    /// Longest input the mutator makes.
    pub max_len: usize,
}

/// Every target, in the order `all` runs them.
pub fn targets() -> &'static [Target] {
    targets::ALL
}

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    targets().iter().find(|t| t.name == name)
}

/// The fingerprint of the outcomes one input reached: targets note each
/// decision (`"path: malformed"`, `"matched"`, an error's variant) and
/// return [`Trail::finish`].
#[derive(Debug, Default)]
pub struct Trail(DefaultHasher);

impl Trail {
    /// An empty trail.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one outcome.
    pub fn note(&mut self, outcome: impl Hash) {
        outcome.hash(&mut self.0);
    }

    /// The fingerprint.
    pub fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// Text from fuzz bytes: the bytes themselves when they are UTF-8, else a
/// lossy decoding (so that mutations of text inputs stay text inputs).
pub fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}
