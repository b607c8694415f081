//! End-to-end: the shipper refuses bad start-up material with a clear, non-zero exit.

mod common;

use common::{Harness, WAIT};
use integration::agent::{AgentEvent, StartupFault};
use std::time::Duration;

/// Starts the shipper with `fault` and waits at most `within` for it to exit.
async fn exit_with(fault: StartupFault, within: Duration) -> (AgentEvent, Vec<String>) {
    let h = Harness::start(|options| {
        options.startup_fault = Some(fault);
        options.restart_on_exit = false;
    })
    .await;
    let exit = h
        .agent
        .wait_for(within, "shipper exit", |e| {
            matches!(e, AgentEvent::ShipperExited { .. })
        })
        .await
        .unwrap();
    (exit, h.shipper_logs())
}

fn assert_failed_with(exit: &AgentEvent, logs: &[String], needle: &str) {
    assert_eq!(
        *exit,
        AgentEvent::ShipperExited {
            code: Some(1),
            signal: None
        },
        "logs: {logs:#?}"
    );
    assert!(
        logs.iter().any(|l| l.contains(needle)),
        "no log line contains {needle:?}: {logs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_exits_with_a_clear_message() {
    let (exit, logs) = exit_with(StartupFault::WrongToken, WAIT).await;
    assert_failed_with(&exit, &logs, "refused the connection token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_agent_certificate_exits_with_a_tls_message() {
    let (exit, logs) = exit_with(StartupFault::WrongCa, WAIT).await;
    assert_failed_with(&exit, &logs, "TLS handshake with the agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_stdin_exits_within_five_seconds() {
    let garbage = StartupFault::Garbage(b"\xff\xfe this is not protobuf".to_vec());
    let (exit, logs) = exit_with(garbage, Duration::from_secs(5)).await;
    assert_failed_with(&exit, &logs, "StartUpInfo could not be decoded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_checkin_v2_service_exits_with_a_clear_message() {
    let (exit, logs) = exit_with(StartupFault::NoCheckinV2, WAIT).await;
    assert_failed_with(&exit, &logs, "does not offer the CheckinV2 service");
}
