//! The first run, as a newcomer meets it: a port in use, a host name in
//! `--bind`, an invalid variable, and test steps that cannot run failing
//! loudly instead of passing quietly.

use std::process::{Command, Output};

use estuary_cli::config::SETTINGS;

/// `estuary ARGS` without `ESTUARY_*` from the environment, plus `env`.
fn estuary(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_estuary"));
    command
        .args(args)
        .env_remove("ESTUARY_CONFIG")
        .env("RUST_BACKTRACE", "0");
    for setting in SETTINGS {
        command.env_remove(setting.env);
    }
    command.envs(env.iter().copied());
    command.output().expect("runs estuary")
}

/// A port another process holds: the error names the address and says
/// how to listen elsewhere (it used to say only "Address already in use").
#[test]
fn a_port_in_use_names_the_address_and_suggests_bind() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let output = estuary(&["serve", "--bind", &addr], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(stderr.contains("--bind"), "{stderr}");
}

/// `--bind localhost:8000`: a host name is resolved, not refused.
#[test]
fn a_host_name_in_bind_is_resolved() {
    let output = estuary(&["check-config", "--bind", "localhost:8000"], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = estuary(&["check-config", "--bind", "no-such-host.invalid:8000"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--bind") && stderr.contains("no-such-host.invalid"),
        "{stderr}"
    );
}

/// An invalid value from the environment names the variable the user set.
#[test]
fn an_invalid_variable_is_named() {
    for (name, value) in [
        ("ESTUARY_BIND", "nonsense"),
        ("ESTUARY_MAX_LIFETIME", "soon"),
        ("ESTUARY_ROOT_PATH", "/a b"),
    ] {
        let output = estuary(&["check-config"], &[(name, value)]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}={value}");
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
        assert!(!stderr.contains("the flag --"), "{name}={value}: {stderr}");
    }
}

/// scripts/autobahn.sh without its runner fails (exit 1, saying why)
/// instead of printing "skipped" and passing.
#[test]
fn the_autobahn_step_fails_without_its_runner() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let empty = std::env::temp_dir().join(format!("estuary-no-autobahn-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let output = Command::new("bash")
        .arg(format!("{root}/scripts/autobahn.sh"))
        .env("AUTOBAHN_DIR", &empty)
        .env("AUTOBAHN_SKIP_INSTALL", "1")
        .output()
        .expect("runs bash");
    let _ = std::fs::remove_dir_all(&empty);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FAILED") && stderr.contains("runner"), "{stderr}");
}
