//! Route matching: `PathPattern::path` / `regex` on fuzzed patterns, and
//! `matches` on fuzzed paths.
//!
//! Input: text lines. The first is the pattern (`re:` in front for a
//! `re_path` regex); every further line is a path to match.

use std::collections::HashSet;

use estuary_server::{PathPattern, PatternErrorKind};

use crate::{Trail, text};

/// Runs one input.
pub fn run(data: &[u8]) -> u64 {
    let mut trail = Trail::new();
    let input = text(data);
    let mut lines = input.split('\n');
    let pattern = lines.next().unwrap_or_default();
    let (compiled, is_regex) = match pattern.strip_prefix("re:") {
        Some(re) => (PathPattern::regex(re), true),
        None => (PathPattern::path(pattern), false),
    };
    let compiled = match compiled {
        Ok(p) => p,
        Err(e) => {
            trail.note(e.kind());
            if e.kind() == PatternErrorKind::Duplicate {
                assert!(e.input().is_some_and(|name| !name.is_empty()));
            }
            return trail.finish();
        }
    };
    trail.note(("compiled", is_regex));
    assert_eq!(compiled.as_str(), if is_regex { &pattern[3..] } else { pattern });
    for path in lines {
        let Some(params) = compiled.matches(path) else {
            trail.note("no match");
            continue;
        };
        trail.note(("match", params.len()));
        let mut names = HashSet::new();
        for (name, _) in &params {
            assert!(
                names.insert(name.clone()),
                "parameter {name:?} twice in one match"
            );
        }
        if !is_regex {
            // Every converter matches at least one character, and only `path`
            // crosses a slash.
            for (_, value) in &params {
                assert!(!value.is_empty(), "empty parameter from {pattern:?} on {path:?}");
            }
            let rendered = render(pattern, &params);
            assert!(
                compiled.matches(&rendered).is_some(),
                "{pattern:?} matched {path:?} with {params:?}, but not its own rendering {rendered:?}"
            );
        }
    }
    trail.finish()
}

/// Puts parameter values back into a `path()` pattern that compiled.
fn render(pattern: &str, params: &[(std::sync::Arc<str>, String)]) -> String {
    let body = pattern.trim_start_matches('/');
    let body = body.strip_suffix('/').unwrap_or(body);
    let mut out = String::from("/");
    let mut rest = body;
    while let Some(i) = rest.find(['<', '{']) {
        out.push_str(&rest[..i]);
        let close = if rest.as_bytes()[i] == b'<' { '>' } else { '}' };
        let end = i + rest[i..].find(close).expect("the pattern compiled");
        let inner = &rest[i + 1..end];
        let name = match inner.split_once(':') {
            Some((_, name)) if close == '>' => name,
            _ if close == '>' => inner,
            _ => inner.strip_prefix('*').unwrap_or(inner),
        };
        let value = params
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v.as_str())
            .expect("a match binds every parameter of a path() pattern");
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Tokens of route patterns and paths.
pub const DICTIONARY: &[&[u8]] = &[
    b"<str:",
    b"<int:",
    b"<slug:",
    b"<uuid:",
    b"<path:",
    b"<float:",
    b">",
    b"{",
    b"}",
    b"{*",
    b"re:",
    b"(?P<",
    b")",
    b"\\w+",
    b"[^/]+",
    b"$",
    b"^",
    b"/",
    b"//",
    b"\n",
    b"%20",
    b"%2F",
    b"..",
    b".",
    b":",
    b"room",
    b"id",
    b"0c6d7f5e-1b2a-4c3d-8e9f-0a1b2c3d4e5f",
    b"\xc3\xa9",
    b"\xf0\x9f\x98\x80",
    b"*",
    b"+",
    b"?",
    b"{1,94}",
    b"\\",
    b"|",
    b"(?i)",
];
