//! The documents a user of the project has (README.md, CHANGELOG.md,
//! docs/*.md) link only to files inside the repository, and every such link
//! names a file that exists.

use std::path::{Path, PathBuf};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("examples/ lies in the repository")
        .to_owned()
}

fn documents() -> Vec<PathBuf> {
    let root = repository();
    let mut docs = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    let mut others: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    others.sort();
    docs.extend(others);
    docs
}

/// The targets of the Markdown links `[text](target)` in `text`.
fn link_targets(text: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(&rest[..end]);
        }
    }
    targets
}

#[test]
fn links_stay_inside_the_repository_and_resolve() {
    let root = repository().canonicalize().expect("repository");
    let mut problems = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
        let name = doc.strip_prefix(&root).unwrap_or(&doc).display().to_string();
        if text.contains("shared/") {
            problems.push(format!(
                "{name}: mentions shared/, a folder outside the repository"
            ));
        }
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap_or(target);
            let resolved = doc.parent().expect("a folder").join(path);
            match resolved.canonicalize() {
                Ok(found) if found.starts_with(&root) => {}
                Ok(found) => problems.push(format!(
                    "{name}: {target} is outside the repository ({})",
                    found.display()
                )),
                Err(_) => problems.push(format!("{name}: {target} does not exist")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn link_targets_are_found() {
    assert_eq!(
        link_targets("see [a](docs/A.md) and [b](https://x.test/) [c](#top)"),
        ["docs/A.md", "https://x.test/", "#top"]
    );
}
