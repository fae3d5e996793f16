//! The JWKS files of [`JwtConfig::jwks_file`](crate::JwtConfig::jwks_file),
//! re-read on the token path when they change. No task runs in the
//! background: a token checked when a check is due (or that names an
//! unknown `kid`) begins a pass under the lock, reads the files without
//! it, and applies what it found under it again.

use std::fs::Metadata;
use std::hash::{DefaultHasher, Hasher as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::jwks::parse_jwks;
use crate::verifier::{Rules, Verifier};

/// The least time between two checks made because a token named a `kid`
/// no key has: tokens with made-up `kid`s cannot make every handshake touch
/// the file system.
pub(crate) const UNKNOWN_KID_EVERY: Duration = Duration::from_secs(1);

/// A file changed this recently may change again without its metadata
/// showing it (two writes in the same tick of the file system's clock, of
/// the same length): it is read again, and its hash compared, whatever its
/// metadata. Two seconds covers file systems with a coarse clock (FAT's is
/// two seconds).
const RACY: Duration = Duration::from_secs(2);

/// What a file's metadata says about its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    /// Device and inode: a file renamed over the path is another one.
    #[cfg(unix)]
    inode: (u64, u64),
    /// The change time, which no tool sets back (an `mtime` can be).
    #[cfg(unix)]
    changed: (i64, i64),
}

impl Stamp {
    fn of(meta: &Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            inode: (meta.dev(), meta.ino()),
            #[cfg(unix)]
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The latest of the modification and change times, if known.
    fn newest(&self) -> Option<SystemTime> {
        #[cfg(unix)]
        {
            let changed = u64::try_from(self.changed.0).ok().and_then(|secs| {
                let nanos = u32::try_from(self.changed.1).unwrap_or(0);
                SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos.min(999_999_999)))
            });
            match (self.modified, changed) {
                (Some(m), Some(c)) => Some(m.max(c)),
                (m, c) => m.or(c),
            }
        }
        #[cfg(not(unix))]
        {
            self.modified
        }
    }
}

/// A version of a file as read: its metadata, whether that metadata can be
/// trusted to show the next change, and its content's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    stamp: Stamp,
    racy: bool,
    hash: u64,
}

impl Seen {
    /// The version whose metadata was `stamp` and content `bytes`, read at
    /// `now` (wall clock, to compare with the file's times).
    pub(crate) fn of(stamp: Stamp, bytes: &[u8], now: SystemTime) -> Self {
        let racy = stamp
            .newest()
            .is_none_or(|at| now.duration_since(at).map_or(true, |age| age < RACY));
        let mut hasher = DefaultHasher::new();
        hasher.write(bytes);
        Self {
            stamp,
            racy,
            hash: hasher.finish(),
        }
    }
}

/// A file's metadata, then its content. Should the file change in between,
/// the content is newer than the metadata, which the next check then finds
/// changed: it reads again, and finds the same hash.
pub(crate) fn read(path: &Path) -> std::io::Result<(Stamp, Vec<u8>)> {
    let stamp = Stamp::of(&std::fs::metadata(path)?);
    Ok((stamp, std::fs::read(path)?))
}

/// Why a check is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The time between checks has passed: files whose metadata did not
    /// change (and is not racy) are not read.
    Due,
    /// A token named a `kid` no key has: every file is read.
    UnknownKid,
}

/// A watched file and the verifiers of its last usable version.
struct WatchedFile {
    path: PathBuf,
    /// The version last read (usable or not); `None` while it cannot be
    /// read.
    seen: Option<Seen>,
    verifiers: Vec<Verifier>,
}

/// The files watched and when they were checked.
pub(crate) struct Watch {
    every: Duration,
    /// The verifiers of the keys given in configuration, which stay.
    fixed: Vec<Verifier>,
    files: Vec<WatchedFile>,
    last_check: Instant,
    last_unknown_kid: Option<Instant>,
    /// The number of passes begun, and of the last one applied: a pass that
    /// ends after a later one does not undo what that one found.
    begun: u64,
    applied: u64,
}

/// A check under way, made without the lock.
pub(crate) struct Pass {
    number: u64,
    why: Why,
    files: Vec<(PathBuf, Option<Seen>)>,
}

/// What a pass found.
pub(crate) struct Found {
    number: u64,
    outcomes: Vec<Outcome>,
}

enum Outcome {
    /// Not read: the metadata is the same (or it still cannot be read).
    Unchanged,
    /// Read, with the same content as the last version read.
    SameContent(Seen),
    /// Cannot be read, or not usable; the previous keys stay.
    Unusable { seen: Option<Seen>, error: String },
    /// A new version and its verifiers.
    Loaded { seen: Seen, verifiers: Vec<Verifier> },
}

impl Watch {
    /// Watches `files` (path, the version read, its verifiers) from `now`
    /// on, checking at most `every`; `fixed` are the other verifiers.
    pub(crate) fn new(
        every: Duration,
        fixed: Vec<Verifier>,
        files: Vec<(PathBuf, Seen, Vec<Verifier>)>,
        now: Instant,
    ) -> Self {
        Self {
            every,
            fixed,
            files: files
                .into_iter()
                .map(|(path, seen, verifiers)| WatchedFile {
                    path,
                    seen: Some(seen),
                    verifiers,
                })
                .collect(),
            last_check: now,
            last_unknown_kid: None,
            begun: 0,
            applied: 0,
        }
    }

    /// The paths watched.
    pub(crate) fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }

    /// The time between checks.
    pub(crate) fn every(&self) -> Duration {
        self.every
    }

    /// The number of passes begun.
    #[cfg(test)]
    pub(crate) fn passes(&self) -> u64 {
        self.begun
    }

    /// A pass, if one is to be made at `now` for this reason.
    pub(crate) fn begin(&mut self, now: Instant, why: Why) -> Option<Pass> {
        match why {
            Why::Due => {
                if now.saturating_duration_since(self.last_check) < self.every {
                    return None;
                }
            }
            Why::UnknownKid => {
                if self
                    .last_unknown_kid
                    .is_some_and(|at| now.saturating_duration_since(at) < UNKNOWN_KID_EVERY)
                {
                    return None;
                }
                self.last_unknown_kid = Some(now);
            }
        }
        self.last_check = now;
        self.begun += 1;
        Some(Pass {
            number: self.begun,
            why,
            files: self
                .files
                .iter()
                .map(|f| (f.path.clone(), f.seen.clone()))
                .collect(),
        })
    }

    /// Applies what a pass found: the new set of verifiers if it changed,
    /// and what to log (each version of a file that is not usable once,
    /// each new set of keys), to be logged once the lock is released.
    pub(crate) fn finish(&mut self, found: Found) -> (Option<Vec<Verifier>>, Vec<News>) {
        let mut news = Vec::new();
        if found.number <= self.applied {
            return (None, news);
        }
        self.applied = found.number;
        let mut changed = false;
        for (file, outcome) in self.files.iter_mut().zip(found.outcomes) {
            match outcome {
                Outcome::Unchanged => {}
                Outcome::SameContent(seen) => file.seen = Some(seen),
                Outcome::Unusable { seen, error } => {
                    let same_version = match (&file.seen, &seen) {
                        (Some(a), Some(b)) => a.hash == b.hash,
                        (None, None) => true,
                        _ => false,
                    };
                    if !same_version {
                        news.push(News::Unusable {
                            path: file.path.clone(),
                            error,
                            kept: file.verifiers.len(),
                        });
                    }
                    file.seen = seen;
                }
                Outcome::Loaded { seen, verifiers } => {
                    news.push(News::Loaded {
                        path: file.path.clone(),
                        kids: verifiers.iter().map(|v| v.kid.clone()).collect(),
                    });
                    file.seen = Some(seen);
                    file.verifiers = verifiers;
                    changed = true;
                }
            }
        }
        let verifiers = changed.then(|| {
            self.fixed
                .iter()
                .chain(self.files.iter().flat_map(|f| &f.verifiers))
                .cloned()
                .collect()
        });
        (verifiers, news)
    }
}

/// What a pass found that the log should say.
pub(crate) enum News {
    /// A version of a file that is not usable.
    Unusable {
        path: PathBuf,
        error: String,
        kept: usize,
    },
    /// A new set of keys from a file.
    Loaded {
        path: PathBuf,
        kids: Vec<Option<String>>,
    },
}

impl News {
    pub(crate) fn log(&self) {
        match self {
            Self::Unusable { path, error, kept } => tracing::warn!(
                path = %path.display(),
                %error,
                keys_kept = kept,
                "the JWKS file is not usable; its previous keys are kept: fix the file (the error names what is wrong), it is read again within jwks_reload_every"
            ),
            Self::Loaded { path, kids } => tracing::info!(
                path = %path.display(),
                keys = kids.len(),
                ?kids,
                "JWKS file re-read; its keys replace the previous ones"
            ),
        }
    }
}

impl Pass {
    /// Reads what needs reading, without any lock; `rules` make the keys
    /// read verifiers.
    pub(crate) fn run(self, rules: &Rules) -> Found {
        let outcomes = self
            .files
            .iter()
            .map(|(path, seen)| examine(path, seen.as_ref(), self.why, rules))
            .collect();
        Found {
            number: self.number,
            outcomes,
        }
    }
}

fn examine(path: &Path, known: Option<&Seen>, why: Why, rules: &Rules) -> Outcome {
    // A file that still cannot be read is not news.
    let unreadable = |error: std::io::Error| match known {
        None => Outcome::Unchanged,
        Some(_) => Outcome::Unusable {
            seen: None,
            error: error.to_string(),
        },
    };
    if why == Why::Due {
        match std::fs::metadata(path) {
            Ok(meta) => {
                let stamp = Stamp::of(&meta);
                if known.is_some_and(|k| k.stamp == stamp && !k.racy) {
                    return Outcome::Unchanged;
                }
            }
            Err(error) => return unreadable(error),
        }
    }
    let (stamp, bytes) = match read(path) {
        Ok(read) => read,
        Err(error) => return unreadable(error),
    };
    let seen = Seen::of(stamp, &bytes, SystemTime::now());
    if known.is_some_and(|k| k.hash == seen.hash) {
        return Outcome::SameContent(seen);
    }
    let unusable = |error: String| Outcome::Unusable {
        seen: Some(seen.clone()),
        error,
    };
    let Ok(json) = std::str::from_utf8(&bytes) else {
        return unusable("not UTF-8".into());
    };
    let keys = match parse_jwks(json) {
        Ok(jwks) => jwks.keys,
        Err(error) => return unusable(error.to_string()),
    };
    let read = keys.len();
    let verifiers: Vec<Verifier> = keys.into_iter().filter_map(|k| rules.verifier(k)).collect();
    if verifiers.is_empty() {
        return unusable(format!("no key of an allowed algorithm ({read} read)"));
    }
    Outcome::Loaded { seen, verifiers }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_changed_in_the_last_two_seconds_is_racy() {
        let path = std::env::temp_dir().join(format!("estuary-jwt-racy-{}", std::process::id()));
        std::fs::write(&path, "{}").unwrap();
        let (stamp, bytes) = read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let now = SystemTime::now();
        assert!(Seen::of(stamp, &bytes, now).racy);
        let later = Seen::of(stamp, &bytes, now + Duration::from_secs(3));
        assert!(!later.racy);
        assert_eq!(later.hash, Seen::of(stamp, &bytes, now).hash);
        assert_ne!(later.hash, Seen::of(stamp, b"{ }", now).hash);
    }
}
