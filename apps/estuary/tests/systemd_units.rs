//! The systemd units of docs/DEPLOY.md, read from the page exactly as it
//! shows them, pass `systemd-analyze verify`: every key known, every value
//! parsed, every dependency named. They are verified against a private
//! root (the host's unit directory copied in, a stub at each `Exec*=`
//! path), so nothing is installed or started and the check does not depend
//! on where the binary lives.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `ini` blocks of docs/DEPLOY.md introduced by
/// `` `/etc/systemd/system/NAME`: ``: (name, text).
fn documented_units() -> Vec<(String, String)> {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/DEPLOY.md"))
        .expect("docs/DEPLOY.md");
    let marker = "`/etc/systemd/system/";
    let mut units = Vec::new();
    let mut rest = page.as_str();
    while let Some(at) = rest.find(marker) {
        rest = &rest[at + marker.len()..];
        let (name, after) = rest.split_once("`:").expect("a unit name");
        let body = after
            .trim_start()
            .strip_prefix("```ini\n")
            .unwrap_or_else(|| panic!("{name}: an ini block follows its name"));
        let (text, _) = body.split_once("```").expect("the block ends");
        units.push((name.to_owned(), text.to_owned()));
        rest = after;
    }
    units
}

/// A root with the host's unit directory, `units` in /etc/systemd/system,
/// and an executable stub for each absolute path their `Exec*=` lines run.
fn private_root(units: &[(String, String)]) -> PathBuf {
    let root = std::env::temp_dir().join(format!("estuary-systemd-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("sysinit.target").exists())
        .expect("the host's systemd unit directory (with sysinit.target)");
    copy_tree(host_units, &root.join("usr/lib/systemd/system"));
    let etc = root.join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    for (name, text) in units {
        std::fs::write(etc.join(name), text).unwrap();
        for line in text.lines().map(str::trim) {
            let Some((key, command)) = line.split_once('=') else {
                continue;
            };
            if !key.starts_with("Exec") {
                continue;
            }
            // `-`, `@`, `+`, `!` prefixes as systemd.service(5) allows.
            let program = command
                .trim_start_matches(['-', '@', '+', '!', ':'])
                .split_whitespace()
                .next()
                .expect("a command");
            assert!(program.starts_with('/'), "{name}: {key} runs an absolute path");
            let stub = root.join(program.trim_start_matches('/'));
            std::fs::create_dir_all(stub.parent().unwrap()).unwrap();
            std::fs::write(&stub, "#!/bin/sh\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    root
}

/// Copies `from` into `to`, symbolic links as links.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&source, &target);
        } else {
            std::fs::copy(&source, &target).unwrap();
        }
    }
}

/// `systemd-analyze verify` of `names` under `root`: whether it passed
/// without a word (it exits 0 on an unknown key, warning only), and what
/// it said.
fn verify(root: &Path, names: &[&str]) -> (bool, String) {
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(names)
        .output()
        .expect("systemd-analyze runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success() && said.trim().is_empty(), said)
}

#[test]
#[ignore = "needs systemd-analyze (scripts/install-systemd-analyze.sh)"]
fn the_documented_units_pass_systemd_analyze_verify() {
    let units = documented_units();
    let names: Vec<&str> = units.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["estuary.socket", "estuary.service"],
        "the units docs/DEPLOY.md shows"
    );
    let root = private_root(&units);
    let (clean, said) = verify(&root, &names);
    assert!(clean, "systemd-analyze verify on docs/DEPLOY.md's units:\n{said}");

    // The check has teeth: a misspelt key is reported.
    let service = root.join("etc/systemd/system/estuary.service");
    let text = std::fs::read_to_string(&service).unwrap();
    std::fs::write(&service, text.replace("NoNewPrivileges=", "NoNewPrivilegez=")).unwrap();
    let (clean, said) = verify(&root, &names);
    assert!(!clean && said.contains("NoNewPrivilegez"), "{said}");
    let _ = std::fs::remove_dir_all(&root);
}
