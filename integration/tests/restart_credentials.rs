//! End-to-end (issue 14, 2.8): after a SIGKILL and a restart, a queued record goes out
//! only with the credentials of the OUTPUT unit it was accepted under, whether the agent
//! sends that (stopping) unit in the same check-in as the new one or later.
//!
//! Each key may write only its own data stream, so an old event sent with the new key is
//! answered 403 and dead-lettered, and a new event sent with the old key likewise.

mod common;

use agent_shipper::proto::agent::{State, UnitLogLevel, UnitType};
use common::{observed_state, revision, Harness, WAIT};
use integration::agent::{AgentEvent, UnitSpec};
use integration::loadgen::{self, LoadgenOptions};
use integration::mock_es::{MockEs, MockEsOptions};
use integration::scenario::check_delivery;
use serde_json::json;
use std::time::{Duration, Instant};

const KEY1: (&str, &str) = ("key-old", "old-secret-51c2");
const KEY2: (&str, &str) = ("key-new", "new-secret-a93e");

fn output(id: &str, es: &MockEs, key: (&str, &str)) -> UnitSpec {
    UnitSpec {
        id: id.into(),
        kind: UnitType::Output,
        config: json!({
            "type": "elasticsearch",
            "hosts": [es.url()],
            "api_key": format!("{}:{}", key.0, key.1),
            "bulk_max_size": 500,
            "backoff": {"init": "100ms", "max": "300ms"},
            "dlq": {"flush_interval": "200ms"},
        }),
        log_level: UnitLogLevel::Info,
    }
}

async fn publish(h: &Harness, run: &str, events: u64) -> Vec<u64> {
    let mut options = LoadgenOptions::new(&h.socket(), "filestream-a", events);
    options.run = run.into();
    options.dataset = run.into();
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(report.promised.len() as u64, events, "{:?}", report.refused);
    report.promised
}

/// Queues 2,000 events under `output-old` (key 1) while Elasticsearch is down, SIGKILLs
/// the shipper, and restarts it under a policy whose OUTPUT unit is `output-new` (key 2)
/// with `output-old` expected STOPPED: in the first check-in, or (`later`) only once the
/// new output runs.
async fn restart_with_a_new_output(later: bool) {
    let es = MockEs::start(MockEsOptions {
        keep_documents: false,
        ..MockEsOptions::default()
    })
    .await
    .unwrap();
    es.add_api_key(KEY1.0, KEY1.1, &["logs-old-default"]);
    es.add_api_key(KEY2.0, KEY2.1, &["logs-new-default"]);
    let h = Harness::start(|o| o.restart_delay = Duration::from_secs(1)).await;
    let a = h.input_unit("input-a", "filestream-a");
    h.agent.apply(&revision(
        1,
        vec![output("output-old", &es, KEY1), a.clone()],
    ));
    h.agent
        .wait_for_states(WAIT, &[("input-a", UnitType::Input)], State::Healthy)
        .await
        .unwrap();
    es.pause();
    let old = publish(&h, "old", 2_000).await;
    assert!(h.agent.kill_shipper());
    h.agent
        .wait_for(WAIT, "the shipper's death", |e| {
            matches!(e, AgentEvent::ShipperExited { .. })
        })
        .await
        .unwrap();
    if later {
        h.agent.withhold("output-old", UnitType::Output, true);
    }
    // Before the restart: the new process's first check-in gets this policy.
    h.agent
        .apply(&revision(2, vec![output("output-new", &es, KEY2), a]));
    es.resume().await.unwrap();
    h.agent
        .wait_for_count(WAIT, "a restarted shipper", 2, |e| {
            matches!(e, AgentEvent::ShipperStarted { .. })
        })
        .await
        .unwrap();
    h.agent
        .wait_for(WAIT, "output-new HEALTHY", |e| {
            matches!(e, AgentEvent::UnitObserved { id, state: State::Healthy, .. } if id == "output-new")
        })
        .await
        .unwrap();
    if later {
        // The old events are read at once: either held, or sent with key 2 and refused.
        let deadline = Instant::now() + WAIT;
        loop {
            let held = h.shipper_logs().iter().any(|l| l.contains("events held"));
            if held || es.stats().forbidden_403 > 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            es.stats().forbidden_403,
            0,
            "old events went out with the new key before the old unit's config came"
        );
        assert_eq!(es.loadgen_counts("old").len(), 0);
        h.agent.withhold("output-old", UnitType::Output, false);
    }
    h.agent
        .wait_for(
            Duration::from_secs(60),
            "output-old STOPPED",
            observed_state("output-old", State::Stopped),
        )
        .await
        .unwrap();
    let new = publish(&h, "new", 500).await;
    let promised = vec![("old".to_string(), old), ("new".to_string(), new)];
    let deadline = Instant::now() + Duration::from_secs(60);
    let check = loop {
        let check = check_delivery(&es, &h.data().join("dlq"), &promised);
        if check.indexed == 2_500 || check.dead_lettered > 0 || Instant::now() > deadline {
            break check;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (check.indexed, check.dead_lettered, check.lost),
        (2_500, 0, 0),
        "every old event indexed with key 1, every new one with key 2: {check:?}"
    );
    assert_eq!(
        es.stats().forbidden_403,
        0,
        "no event sent with the other key"
    );
    h.stop().await;
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_old_events_wait_for_their_own_key_when_it_comes_later() {
    restart_with_a_new_output(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_old_events_go_with_their_own_key_when_it_comes_at_once() {
    restart_with_a_new_output(false).await;
}
