//! Every corpus replays clean: each stored input runs once through its
//! target without a panic (what `cargo nextest run --workspace` checks; the
//! bounded fuzzing runs in `scripts/test.sh`).

use estuary_fuzz::{driver, targets};

#[test]
fn every_corpus_replays_clean() {
    driver::install_panic_hook();
    for target in targets() {
        let corpus = driver::load_corpus(target).expect("the corpus is readable");
        assert!(
            corpus.len() >= 8,
            "the corpus of {} has {} entries",
            target.name,
            corpus.len()
        );
        match driver::replay(target) {
            Ok(report) => assert_eq!(report.executions as usize, corpus.len()),
            Err(crash) => panic!("{crash}"),
        }
    }
}

#[test]
fn a_short_run_of_every_target_finds_nothing() {
    driver::install_panic_hook();
    for target in targets() {
        let seconds = if target.name == "http-server" { 0.5 } else { 0.3 };
        if let Err(crash) = driver::fuzz(target, std::time::Duration::from_secs_f64(seconds), 1) {
            panic!("{crash}");
        }
    }
}
