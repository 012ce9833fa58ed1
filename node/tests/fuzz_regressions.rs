//! Replays every input kept under `tests/fuzz-regressions/<target>/` through
//! the body of that fuzz target (`fuzz/src/node_targets.rs`, included
//! here as it is): the inputs that once crashed a decoder, and a small
//! minimized corpus of interesting ones. A plain `cargo test` runs them, so
//! no nightly toolchain is needed to keep a fixed crash fixed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[allow(dead_code)]
#[path = "../../fuzz/src/node_targets.rs"]
mod targets;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs under {}", dir.display());
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(outcome.is_ok(), "{} fails the {target} fuzz target (see the panic above)", path.display());
    }
}

#[test]
fn log() {
    replay("log", targets::log);
}

#[test]
fn backup() {
    replay("backup", targets::backup);
}

#[test]
fn config() {
    replay("config", targets::config);
}

#[test]
fn offer_file() {
    replay("offer_file", targets::offer_file);
}

#[test]
fn charter() {
    replay("charter", targets::charter);
}

#[test]
fn membership() {
    replay("membership", targets::membership);
}
