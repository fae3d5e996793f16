//! `estuary-fuzz`: runs the fuzz targets for a bounded time.
//!
//! ```text
//! estuary-fuzz list
//! estuary-fuzz <target|all> [--seconds N] [--seed S]
//! estuary-fuzz repro <target> <file>
//! ```

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use estuary_fuzz::{driver, target, targets};

const USAGE: &str = "usage: estuary-fuzz list
       estuary-fuzz <target|all> [--seconds N] [--seed S]   (N seconds per target, default 10)
       estuary-fuzz repro <target> <file>";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        bail!("no command")
    };
    match command.as_str() {
        "list" => {
            for t in targets() {
                println!("{:<12} {}", t.name, t.about);
            }
            Ok(ExitCode::SUCCESS)
        }
        "repro" => {
            let [_, name, file] = &args[..] else {
                bail!("repro takes a target and a file")
            };
            let t = target(name).with_context(|| format!("no target {name:?}"))?;
            driver::install_panic_hook();
            match driver::repro(t, Path::new(file))? {
                Ok(_) => {
                    println!("{name}: {file} runs clean");
                    Ok(ExitCode::SUCCESS)
                }
                Err(message) => {
                    eprintln!("{name}: {file} panics: {message}");
                    eprintln!(
                        "(RUST_BACKTRACE does not apply here: rerun the failing call in a test for a trace)"
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        name => {
            let chosen: Vec<_> = if name == "all" {
                targets().iter().collect()
            } else {
                vec![target(name).with_context(|| format!("no target {name:?} (see `list`)"))?]
            };
            let mut seconds = 10.0f64;
            let mut seed = None;
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                let value = rest.next().with_context(|| format!("{flag} needs a value"))?;
                match flag.as_str() {
                    "--seconds" => seconds = value.parse().context("--seconds")?,
                    "--seed" => seed = Some(value.parse::<u64>().context("--seed")?),
                    other => bail!("unknown flag {other}"),
                }
            }
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            });
            println!(
                "fuzzing {} target(s), {seconds} s each, --seed {seed}",
                chosen.len()
            );
            driver::install_panic_hook();
            for t in chosen {
                match driver::fuzz(t, Duration::from_secs_f64(seconds), seed) {
                    Ok(report) => println!("{report}"),
                    Err(crash) => {
                        eprintln!("\nFOUND A PANIC\n{crash}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
