//! The binary's command line: help text and the managed-mode stdin contract.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_agent-shipper");

#[test]
fn help_documents_both_modes() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("managed (default"), "{help}");
    assert!(help.contains("StartUpInfo"), "{help}");
    assert!(help.contains("agent-shipper run -c shipper.yml"), "{help}");
}

fn run_with_stdin(bytes: &[u8]) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let output = child.wait_with_output().unwrap();
    (output, started.elapsed())
}

#[test]
fn garbage_stdin_exits_non_zero_within_five_seconds_naming_the_startupinfo() {
    let (output, elapsed) = run_with_stdin(b"\x08\xff\xff\xff\xff\xff garbage");
    assert!(!output.status.success());
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("StartUpInfo could not be decoded"),
        "{stderr}"
    );
}

#[test]
fn empty_stdin_says_what_was_expected() {
    let (output, _) = run_with_stdin(b"");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stdin was empty"), "{stderr}");
    assert!(stderr.contains("run -c"), "{stderr}");
}

#[test]
fn unknown_override_is_one_warning_not_an_exit() {
    // The agent owns the command line: a key the shipper does not use must not stop it.
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args([
            "-E",
            "no.such.key=1",
            "-E",
            "http.pprof.enabled=true",
            "dlq",
            "stats",
        ])
        .arg("--path")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("no.such.key"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains(r#""log.level":"warn""#), "{stderr}");
    assert!(warnings[0].contains("http.pprof.enabled"), "{stderr}");
}

#[test]
fn bad_value_of_a_used_key_is_refused_by_name() {
    let output = Command::new(BIN)
        .args(["-E", "logging.level=loud", "dlq", "stats"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("logging.level"), "{stderr}");
}

#[test]
fn logging_level_applies_from_the_first_line() {
    // At error level the info line `dlq stats` ends with is not written.
    let dir = tempfile::tempdir().unwrap();
    let run = |level: &str| {
        let output = Command::new(BIN)
            .args(["-E", &format!("logging.level={level}"), "dlq", "list"])
            .arg("--path")
            .arg(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(run("info").contains("dlq list done"));
    assert!(!run("error").contains("dlq list done"));
}
