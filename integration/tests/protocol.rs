//! End-to-end: control-protocol details (chunked expected messages, actions).

mod common;

use agent_shipper::proto::agent::{
    action_request, action_response, ActionRequest, State, UnitType,
};
use common::{revision, Harness, WAIT};
use integration::agent::AgentEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_expected_messages_are_reassembled() {
    // Small enough that the 5-unit policy is split into several pieces.
    let h = Harness::start(|options| options.chunk_limit = Some(400)).await;
    let mut units = vec![h.output_unit()];
    for i in 0..4 {
        units.push(h.input_unit(&format!("input-{i}"), &format!("filestream-{i}")));
    }
    h.agent.apply(&revision(1, units));
    let keys: Vec<(String, UnitType)> = (0..4)
        .map(|i| (format!("input-{i}"), UnitType::Input))
        .collect();
    let mut keys: Vec<(&str, UnitType)> =
        keys.iter().map(|(id, kind)| (id.as_str(), *kind)).collect();
    keys.push(("output-default", UnitType::Output));
    h.agent
        .wait_for_states(WAIT, &keys, State::Healthy)
        .await
        .unwrap();
    let chunked = h.position(|e| matches!(e, AgentEvent::ExpectedSent { pieces } if *pieces > 2));
    assert!(chunked.is_some(), "the policy was sent in several pieces");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_return_unit_states_and_unknown_actions_fail_clearly() {
    let h = Harness::start(|_| {}).await;
    h.agent.apply(&revision(
        1,
        vec![h.output_unit(), h.input_unit("input-a", "filestream-a")],
    ));
    h.agent
        .wait_for_states(WAIT, &[("input-a", UnitType::Input)], State::Healthy)
        .await
        .unwrap();

    let diagnostics = h.agent.diagnostics().await.unwrap();
    assert_eq!(diagnostics.status, action_response::Status::Success as i32);
    let units = diagnostics
        .diagnostic
        .iter()
        .find(|d| d.filename == "units.json")
        .expect("units.json");
    let snapshot: serde_json::Value = serde_json::from_slice(&units.content).unwrap();
    let states: Vec<(&str, &str)> = snapshot["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["key"]["id"].as_str().unwrap(),
                u["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(states.contains(&("input-a", "HEALTHY")), "{states:?}");
    // Queue and DLQ figures ride along.
    let dlq = &snapshot["pipeline"]["dlq"];
    for key in [
        "queue_size_in_bytes",
        "max_queue_size_in_bytes",
        "storage_policy",
        "dropped_events",
        "expired_events",
        "last_error",
    ] {
        assert!(dlq.get(key).is_some(), "dlq metric {key} missing: {dlq}");
    }
    assert_eq!(dlq["storage_policy"], "drop_newer");
    assert_eq!(snapshot["pipeline"]["queue"]["kind"], "disk");
    assert!(
        states.contains(&("output-default", "HEALTHY")),
        "{states:?}"
    );

    let custom = h
        .agent
        .action(ActionRequest {
            name: "reboot".into(),
            r#type: action_request::Type::Custom as i32,
            ..ActionRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(custom.status, action_response::Status::Failed as i32);
    let error: serde_json::Value = serde_json::from_slice(&custom.result).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("reboot"),
        "{error}"
    );
    h.stop().await;
}

/// Issue 14, 2.8: a drain's progress is one message change per acknowledged batch; each
/// check-in of an unsettled unit draws the agent's whole expected state, so message-only
/// check-ins are held to about one a second (state changes still go at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_checks_in_its_progress_about_once_a_second() {
    use integration::loadgen::{self, LoadgenOptions};
    use integration::mock_es::{Faults, MockEs, MockEsOptions};
    use std::time::{Duration, Instant};

    let es = MockEs::start(MockEsOptions {
        keep_documents: false,
        ..MockEsOptions::default()
    })
    .await
    .unwrap();
    es.add_api_key("k", "secret-k", &["logs-*-default"]);
    let h = Harness::start(|_| {}).await;
    let output = common::output_unit(serde_json::json!({
        "type": "elasticsearch",
        "hosts": [es.url()],
        "api_key": "k:secret-k",
        "workers": 1,
        "bulk_max_size": 50,
        "backoff": {"init": "50ms", "max": "100ms"},
    }));
    let a = h.input_unit("input-a", "filestream-a");
    h.agent.apply(&revision(
        1,
        vec![
            output.clone(),
            a.clone(),
            h.input_unit("input-b", "filestream-b"),
        ],
    ));
    h.agent
        .wait_for_states(WAIT, &[("input-b", UnitType::Input)], State::Healthy)
        .await
        .unwrap();
    // The whole backlog waits for the drain: nothing is delivered before it starts.
    es.pause();
    let mut options = LoadgenOptions::new(&h.socket(), "filestream-b", 6_000);
    options.run = "b".into();
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(report.promised.len(), 6_000, "{:?}", report.refused);
    h.agent.apply(&revision(2, vec![output, a]));
    h.agent
        .wait_for(
            WAIT,
            "input-b STOPPING",
            common::observed_state("input-b", State::Stopping),
        )
        .await
        .unwrap();
    let before = h.agent.message_only_checkins();
    let started = Instant::now();
    // 120 batches of 50, each answered after 20 ms: a drain of a few seconds.
    es.set_faults(Faults {
        latency_ms: 20,
        ..Faults::default()
    });
    es.resume().await.unwrap();
    h.agent
        .wait_for(
            Duration::from_secs(120),
            "input-b STOPPED",
            common::observed_state("input-b", State::Stopped),
        )
        .await
        .unwrap();
    let drain = started.elapsed();
    let progress = h.agent.message_only_checkins() - before;
    assert!(
        drain >= Duration::from_secs(2),
        "the drain was long enough to tell: {drain:?}"
    );
    assert_eq!(es.loadgen_counts("b").len(), 6_000, "B was drained");
    let bound = drain.as_secs() + 3;
    assert!(
        progress <= bound,
        "{progress} check-ins carried only drain progress in a {drain:?} drain (at most {bound})"
    );
    assert!(
        progress >= 1,
        "the drain's progress was reported: {progress}"
    );
    h.stop().await;
    es.stop().await;
}
