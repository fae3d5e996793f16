//! The driver: replay the corpus, then mutate it until the time is up.

use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Target;
use crate::mutate::Mutator;
use crate::rng::Rng;

/// Inputs kept in memory for mutation, the corpus included.
const MAX_POOL: usize = 1024;

/// Panics seen by the hook, on any thread: the HTTP server target's
/// handlers run on the runtime's threads, where `catch_unwind` around the
/// target cannot see them.
static PANICS: AtomicUsize = AtomicUsize::new(0);
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

thread_local! {
    /// True while this thread runs a target: its panics are recorded, not printed.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once) a panic hook that records every panic, on any thread,
/// and keeps quiet about those of targets run by this driver (a run would
/// otherwise print each one); other panics print as before.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-text panic payload)".to_owned());
            let location = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
            let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
            if let Ok(mut last) = LAST_PANIC.lock() {
                *last = Some(format!("{message}{location} (thread {thread})"));
            }
            PANICS.fetch_add(1, Ordering::SeqCst);
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
}

/// An input that made a target panic.
#[derive(Debug)]
pub struct Crash {
    /// The target's name.
    pub target: &'static str,
    /// The panic's message and place.
    pub message: String,
    /// The input.
    pub input: Vec<u8>,
    /// Where the input was saved, if it could be.
    pub saved: Option<PathBuf>,
}

impl std::fmt::Display for Crash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "target {:?} panicked: {}", self.target, self.message)?;
        writeln!(
            f,
            "input ({} bytes): {:?}",
            self.input.len(),
            String::from_utf8_lossy(&self.input)
        )?;
        match &self.saved {
            Some(path) => write!(
                f,
                "saved to {}\nreproduce with: cargo run -p estuary-fuzz -- repro {} {}",
                path.display(),
                self.target,
                path.display()
            ),
            None => write!(f, "(the input could not be saved)"),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// Inputs run, corpus replay included.
    pub executions: u64,
    /// How long the run took.
    pub elapsed: Duration,
    /// Corpus entries replayed.
    pub corpus: usize,
    /// Distinct outcomes reached.
    pub outcomes: usize,
    /// Inputs kept because they reached a new outcome (at most the pool's size).
    pub kept: usize,
    /// The slowest input's time.
    pub slowest: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "{:<12} {:>9} execs in {:>5.1} s ({:>8.0}/s); corpus {}, outcomes {}, kept {}, slowest {:.1} ms",
            self.target,
            self.executions,
            secs,
            self.executions as f64 / secs,
            self.corpus,
            self.outcomes,
            self.kept,
            self.slowest.as_secs_f64() * 1e3
        )
    }
}

/// The folder of the fuzz crate, where `corpus/` and `artifacts/` live.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The corpus of `target`, sorted by file name (empty when it has none).
pub fn load_corpus(target: &Target) -> std::io::Result<Vec<Vec<u8>>> {
    let dir = crate_dir().join("corpus").join(target.name);
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    paths.sort();
    paths.iter().map(std::fs::read).collect()
}

/// Runs one input; `Err` with the panic's message when it panicked, here or
/// on another thread meanwhile.
pub fn run_one(target: &Target, input: &[u8]) -> Result<u64, String> {
    let before = PANICS.load(Ordering::SeqCst);
    QUIET.with(|q| q.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    QUIET.with(|q| q.set(false));
    let panicked = PANICS.load(Ordering::SeqCst) != before;
    match result {
        Ok(fingerprint) if !panicked => Ok(fingerprint),
        _ => Err(LAST_PANIC
            .lock()
            .ok()
            .and_then(|m| m.clone())
            .unwrap_or_else(|| "panic (no message recorded; was the hook installed?)".to_owned())),
    }
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn save_crash(target: &Target, input: &[u8]) -> Option<PathBuf> {
    let dir = crate_dir().join("artifacts").join(target.name);
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("crash-{:016x}", fnv1a(input)));
    std::fs::write(&path, input).ok()?;
    Some(path)
}

fn crash(target: &'static Target, input: Vec<u8>, message: String) -> Crash {
    let saved = save_crash(target, &input);
    Crash {
        target: target.name,
        message,
        input,
        saved,
    }
}

/// Runs every corpus entry of `target` once.
pub fn replay(target: &'static Target) -> Result<Report, Box<Crash>> {
    fuzz(target, Duration::ZERO, 0)
}

/// Replays the corpus of `target`, then mutates it for `duration` with the
/// random stream `seed`. Stops at the first panic.
pub fn fuzz(target: &'static Target, duration: Duration, seed: u64) -> Result<Report, Box<Crash>> {
    let start = Instant::now();
    let corpus = load_corpus(target).unwrap_or_else(|e| {
        eprintln!("warning: cannot read the corpus of {}: {e}", target.name);
        Vec::new()
    });
    let mut pool: Vec<Vec<u8>> = if corpus.is_empty() {
        vec![Vec::new()]
    } else {
        corpus
    };
    let corpus_len = pool.len();
    let mut outcomes = HashSet::new();
    let mut executions = 0u64;
    let mut slowest = Duration::ZERO;
    let mut timed = |input: &[u8]| {
        let t = Instant::now();
        let result = run_one(target, input);
        slowest = slowest.max(t.elapsed());
        result
    };
    for input in &pool {
        executions += 1;
        match timed(input) {
            Ok(fingerprint) => {
                outcomes.insert(fingerprint);
            }
            Err(message) => return Err(Box::new(crash(target, input.clone(), message))),
        }
    }

    let mutator = Mutator {
        dictionary: target.dictionary,
        max_len: target.max_len,
    };
    let mut rng = Rng::new(seed);
    let deadline = start + duration;
    while Instant::now() < deadline {
        // Favour the newest finds a little: they are the frontier.
        let base = if pool.len() > corpus_len && rng.one_in(3) {
            pool.len() - 1 - rng.below((pool.len() - corpus_len).min(16))
        } else {
            rng.below(pool.len())
        };
        let input = mutator.mutate(&mut rng, &pool[base], &pool);
        executions += 1;
        match timed(&input) {
            Ok(fingerprint) => {
                if outcomes.insert(fingerprint) {
                    if pool.len() < MAX_POOL {
                        pool.push(input);
                    } else if pool.len() > corpus_len {
                        // Full: a new find replaces an older one, never a corpus entry.
                        let at = corpus_len + rng.below(pool.len() - corpus_len);
                        pool[at] = input;
                    }
                }
            }
            Err(message) => return Err(Box::new(crash(target, input, message))),
        }
    }
    Ok(Report {
        target: target.name,
        executions,
        elapsed: start.elapsed(),
        corpus: corpus_len,
        outcomes: outcomes.len(),
        kept: pool.len() - corpus_len,
        slowest,
    })
}

/// Runs the input in `file` against `target`: `Err` with the panic.
pub fn repro(target: &'static Target, file: &Path) -> anyhow::Result<Result<u64, String>> {
    let input = std::fs::read(file)?;
    Ok(run_one(target, &input))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panics_on_two_bangs(data: &[u8]) -> u64 {
        assert!(data.iter().filter(|b| **b == b'!').count() < 2, "two bangs");
        data.len() as u64
    }

    static SELF_TEST: Target = Target {
        name: "driver-self-test",
        about: "a target with a planted bug",
        run: panics_on_two_bangs,
        dictionary: &[b"!"],
        max_len: 16,
    };

    /// The driver finds a planted bug, saves the input and says how to replay it.
    #[test]
    fn a_planted_panic_is_found_saved_and_reproduced() {
        install_panic_hook();
        let crash = fuzz(&SELF_TEST, Duration::from_secs(10), 5).expect_err("the bug is found");
        assert!(crash.message.contains("two bangs"), "{}", crash.message);
        let saved = crash.saved.clone().expect("the input is saved");
        assert_eq!(std::fs::read(&saved).unwrap(), crash.input);
        assert!(
            crash
                .to_string()
                .contains("cargo run -p estuary-fuzz -- repro driver-self-test")
        );
        let replayed = repro(&SELF_TEST, &saved).unwrap();
        assert!(replayed.is_err());
        let _ = std::fs::remove_dir_all(saved.parent().unwrap());
    }
}
