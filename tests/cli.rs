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
fn unknown_override_is_refused_by_name() {
    let output = Command::new(BIN)
        .args(["-E", "path.dta=/tmp/x"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("path.dta"));
}
