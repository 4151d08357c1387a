//! Replays the committed corpus (`fuzz/corpus/<target>/`) through every target, without
//! instrumentation: seeds and past findings must keep passing. Runs in `cargo test --workspace`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_replays() {
    let mut failures = Vec::new();
    for (name, target) in fuzz_targets::TARGETS {
        let files = inputs(name);
        assert!(!files.is_empty(), "no corpus for {name}");
        let started = Instant::now();
        let mut slowest = (Duration::ZERO, PathBuf::new());
        for file in &files {
            let data = fs::read(file).unwrap();
            let t = Instant::now();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(file.display().to_string());
            }
            slowest = slowest.max((t.elapsed(), file.clone()));
        }
        println!(
            "{name}: {} inputs in {:?} (slowest {:?}: {})",
            files.len(),
            started.elapsed(),
            slowest.0,
            slowest.1.display()
        );
    }
    assert!(failures.is_empty(), "inputs that fail: {failures:#?}");
}

/// Writes the generated seeds (minted tokens, the `Attenuation` builder's Datalog) into the
/// corpus: `cargo test -p fuzz-targets --test corpus write_seeds -- --ignored`.
#[test]
#[ignore = "writes into fuzz/corpus; run by hand after a token format change"]
fn write_seeds() {
    for (target, file, content) in fuzz_targets::seeds() {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("seed_{file}")), content).unwrap();
    }
}
