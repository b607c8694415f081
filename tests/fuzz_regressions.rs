//! The fuzz targets' inputs on stable Rust: every file kept in `fuzz/regressions/<target>/`
//! (findings, minimised) and `fuzz/seeds/<target>/` (the seed corpus), plus the seeds made
//! in code, go through the same harness functions as the cargo-fuzz targets. Each must
//! end in a success or a typed error: a panic names the target and the file.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn target(name: &str) -> harness::Target {
    harness::TARGETS
        .iter()
        .find(|(target, _)| *target == name)
        .map(|(_, run)| *run)
        .unwrap_or_else(|| panic!("no fuzz target named {name}"))
}

/// Runs one input; a panic becomes a message naming it.
fn run(name: &str, label: &str, data: &[u8]) -> Result<harness::Outcome, String> {
    let run = target(name);
    catch_unwind(AssertUnwindSafe(|| run(data))).map_err(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{name} panicked on {label}: {what}")
    })
}

/// Every file under `fuzz/<kind>/<target>/`, sorted, with its target name.
fn files(kind: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (name, _) in harness::TARGETS {
        let dir = fuzz_dir().join(kind).join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.path().is_file() {
                out.push((name.to_string(), entry.path()));
            }
        }
    }
    out.sort();
    out
}

fn run_files(kind: &str) -> usize {
    let files = files(kind);
    let mut panics = Vec::new();
    for (name, path) in &files {
        let data = std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        if let Err(panic) = run(name, &path.display().to_string(), &data) {
            panics.push(panic);
        }
    }
    assert!(panics.is_empty(), "{}", panics.join("\n"));
    files.len()
}

#[test]
fn every_regression_input_gives_a_typed_outcome() {
    let count = run_files("regressions");
    eprintln!("{count} regression inputs");
}

#[test]
fn the_seed_corpus_gives_a_typed_outcome_for_every_target() {
    let count = run_files("seeds");
    let covered: std::collections::BTreeSet<String> =
        files("seeds").into_iter().map(|(name, _)| name).collect();
    for (name, _) in harness::TARGETS {
        assert!(covered.contains(*name), "no seed file for {name}");
    }
    eprintln!("{count} seed files");
}

#[test]
fn seeds_made_in_code_are_accepted_where_they_are_valid() {
    for (name, data) in harness::seeds() {
        let outcome =
            run(name, "a seed made in code", &data).unwrap_or_else(|panic| panic!("{panic}"));
        // The seeds are well-formed except the output block (its fields are examples).
        if name != "unit_config" {
            assert!(outcome.is_ok(), "{name}: {outcome:?}");
        }
    }
}

#[test]
fn hostile_lengths_are_refused_without_allocating_them() {
    // A frame claiming 4 GiB, a DLQ entry claiming 4 GiB of metadata, a StartUpInfo field
    // claiming 2^63 bytes: each is a typed error at once.
    let mut frame = vec![0xff; 4];
    frame.extend_from_slice(&[0; 28]);
    assert!(run("queue_frame", "huge frame length", &frame)
        .unwrap()
        .is_err());
    let entry = [0xff, 0xff, 0xff, 0xff, b'{', b'}'];
    assert!(run("dlq_entry", "huge metadata length", &entry)
        .unwrap()
        .is_err());
    let startup = [0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
    assert!(run("startup_info", "huge field length", &startup)
        .unwrap()
        .is_err());
    let publish = [0x12, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(run("publish_request", "huge event length", &publish)
        .unwrap()
        .is_err());
    let event = [0x2a, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(run("event_check", "huge fields length", &event)
        .unwrap()
        .is_err());
}

/// Writes the seeds made in code to `fuzz/seeds/` (run by hand after changing them).
#[test]
#[ignore = "writes files; run with --ignored to refresh fuzz/seeds"]
fn write_seed_corpus() {
    for (index, (name, data)) in harness::seeds().into_iter().enumerate() {
        let dir = fuzz_dir().join("seeds").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{index}")), data).unwrap();
    }
}
