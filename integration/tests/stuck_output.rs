//! End-to-end: drains stay bounded and nothing is lost when the output is stuck (issue 14,
//! scenarios 2.2, 2.3 and 2.6): another input's items answered 429 forever, an output
//! reconfigure that cannot start, and a `_bulk` refused as a whole with 400.

mod common;

use agent_shipper::proto::agent::{State, UnitLogLevel, UnitType};
use agent_shipper::proto::shipper::PublishRequest;
use common::{revision, Harness, WAIT};
use integration::agent::{AgentEvent, MockAgent, UnitSpec};
use integration::loadgen::{self, LoadgenOptions};
use integration::mock_es::{Faults, MockEs, MockEsOptions};
use integration::scenario::{check_delivery, dead_lettered_seqs, DeliveryCheck};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// These tests run one at a time: the machine has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const KEY: (&str, &str) = ("key-1", "secret-5e2b");
const BLOCKED: &str = "logs-app_b-default";

async fn mock_es() -> MockEs {
    let es = MockEs::start(MockEsOptions {
        keep_documents: false,
        ..MockEsOptions::default()
    })
    .await
    .unwrap();
    es.add_api_key(KEY.0, KEY.1, &["logs-*-default"]);
    es
}

fn output(es: &MockEs, extra: serde_json::Value) -> UnitSpec {
    let mut config = json!({
        "type": "elasticsearch",
        "hosts": [es.url()],
        "api_key": format!("{}:{}", KEY.0, KEY.1),
        "bulk_max_size": 1000,
        "backoff": {"init": "100ms", "max": "500ms"},
        "degraded_timeout": "1s",
        "dlq": {"flush_interval": "200ms"},
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    UnitSpec {
        id: "output-default".into(),
        kind: UnitType::Output,
        config,
        log_level: UnitLogLevel::Info,
    }
}

fn input(h: &Harness, unit: &str, input_id: &str, extra: serde_json::Value) -> UnitSpec {
    let mut spec = h.input_unit(unit, input_id);
    for (k, v) in extra.as_object().unwrap() {
        spec.config[k] = v.clone();
    }
    spec
}

async fn publish(server: &str, input_id: &str, run: &str, dataset: &str, events: u64) -> Vec<u64> {
    let mut options = LoadgenOptions::new(server, input_id, events);
    options.run = run.into();
    options.dataset = dataset.into();
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(
        report.promised.len() as u64,
        events,
        "all promised: {:?}",
        report.refused
    );
    report.promised
}

fn observed(id: &str, state: State) -> impl Fn(&AgentEvent) -> bool + '_ {
    move |e| matches!(e, AgentEvent::UnitObserved { id: i, state: s, .. } if i == id && *s == state)
}

/// The message of the first report of `id` in `state` within `timeout`.
async fn reached(agent: &MockAgent, timeout: Duration, id: &str, state: State) -> String {
    match agent
        .wait_for(timeout, &format!("{id} {state:?}"), observed(id, state))
        .await
    {
        Ok(AgentEvent::UnitObserved { message, .. }) => message,
        other => panic!(
            "{id} did not reach {state:?} within {timeout:?}: {other:?}; now {:?}",
            agent.observed(id, UnitType::Input)
        ),
    }
}

/// Waits, at most `timeout`, until `done` holds for the delivery check; returns the last.
async fn delivery_until(
    es: &MockEs,
    data: &Path,
    promised: &[(String, Vec<u64>)],
    timeout: Duration,
    done: impl Fn(&DeliveryCheck) -> bool,
) -> DeliveryCheck {
    let deadline = Instant::now() + timeout;
    loop {
        let check = check_delivery(es, &data.join("dlq"), promised);
        if done(&check) || Instant::now() > deadline {
            return check;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every event of loadgen `run` in `seqs` is indexed.
async fn indexed(es: &MockEs, run: &str, count: usize) {
    let deadline = Instant::now() + WAIT;
    while es.loadgen_counts(run).len() < count {
        assert!(Instant::now() < deadline, "{run}'s events are not indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scenario 2.2: B's data stream answers every item 429 (flood-stage block) and its batch
/// holds the queue's acknowledged prefix; A, whose events were all indexed by another
/// worker, is removed. Before the fix A stayed STOPPING forever (its drain waited for the
/// global prefix) and the output stayed HEALTHY (a 2xx `_bulk` with every item failed
/// counted as a success).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_2_a_removed_input_stops_while_another_inputs_items_fail_forever() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es().await;
    let h = Harness::start(|_| {}).await;
    let out = output(&es, json!({"workers": 2}));
    let a = input(
        &h,
        "input-a",
        "filestream-a",
        json!({"drain_timeout": "3s"}),
    );
    let b = input(&h, "input-b", "filestream-b", json!({}));
    h.agent
        .apply(&revision(1, vec![out.clone(), a.clone(), b.clone()]));
    h.agent
        .wait_for_states(
            WAIT,
            &[("input-a", UnitType::Input), ("input-b", UnitType::Input)],
            State::Healthy,
        )
        .await
        .unwrap();
    es.set_faults(Faults {
        blocked_index: Some(BLOCKED.into()),
        ..Faults::default()
    });
    let b_seqs = publish(&h.socket(), "filestream-b", "b", "app_b", 300).await;
    let a_seqs = publish(&h.socket(), "filestream-a", "a", "app_a", 300).await;
    indexed(&es, "a", 300).await;

    let removed = Instant::now();
    h.agent.apply(&revision(2, vec![out, b]));
    let stopped = reached(
        &h.agent,
        Duration::from_secs(3 + 10),
        "input-a",
        State::Stopped,
    )
    .await;
    let took = removed.elapsed();
    // A's own events were all delivered: its drain ends at once, not by its timeout.
    assert!(
        stopped.contains("drained") && !stopped.contains("drain_timeout"),
        "{stopped} after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "{stopped} after {took:?}");

    let degraded = reached(&h.agent, WAIT, "output-default", State::Degraded).await;
    assert!(
        degraded.contains("cluster_block_exception") && degraded.contains(BLOCKED),
        "the reason names the failing items: {degraded}"
    );
    assert!(
        degraded.contains("items"),
        "the reason says items failed: {degraded}"
    );

    es.set_faults(Faults::default());
    let promised = vec![("a".to_string(), a_seqs), ("b".to_string(), b_seqs)];
    let check = delivery_until(&es, h.data(), &promised, WAIT, |c| c.lost == 0).await;
    assert_eq!(check.lost, 0, "{check:?}");
    assert_eq!(check.indexed, 600, "{check:?}");
    assert_eq!(check.duplicates, 0, "{check:?}");
    h.agent
        .wait_for_states(
            WAIT,
            &[("output-default", UnitType::Output)],
            State::Healthy,
        )
        .await
        .unwrap();
    h.stop().await;
    es.stop().await;
}

/// Scenario 2.2, the bound: with one worker stuck on B's batch, A's events are never even
/// read; `drain_timeout` still ends A's drain, and its events go to the dead letter queue
/// when the output reaches them. Before the fix A stayed STOPPING forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_2_drain_timeout_ends_a_drain_whose_events_cannot_be_reached() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es().await;
    let h = Harness::start(|_| {}).await;
    let out = output(&es, json!({"workers": 1}));
    let a = input(
        &h,
        "input-a",
        "filestream-a",
        json!({"drain_timeout": "2s"}),
    );
    let b = input(&h, "input-b", "filestream-b", json!({}));
    h.agent
        .apply(&revision(1, vec![out.clone(), a.clone(), b.clone()]));
    h.agent
        .wait_for_states(
            WAIT,
            &[("input-a", UnitType::Input), ("input-b", UnitType::Input)],
            State::Healthy,
        )
        .await
        .unwrap();
    es.set_faults(Faults {
        blocked_index: Some(BLOCKED.into()),
        ..Faults::default()
    });
    let b_seqs = publish(&h.socket(), "filestream-b", "b", "app_b", 100).await;
    let a_seqs = publish(&h.socket(), "filestream-a", "a", "app_a", 100).await;

    let removed = Instant::now();
    h.agent.apply(&revision(2, vec![out, b]));
    let stopped = reached(
        &h.agent,
        Duration::from_secs(2 + 10),
        "input-a",
        State::Stopped,
    )
    .await;
    let took = removed.elapsed();
    assert!(took >= Duration::from_secs(2), "{stopped} after {took:?}");
    assert!(stopped.contains("drain_timeout reached"), "{stopped}");

    es.set_faults(Faults::default());
    let promised = vec![("a".to_string(), a_seqs), ("b".to_string(), b_seqs)];
    let check = delivery_until(&es, h.data(), &promised, WAIT, |c| {
        c.lost == 0 && c.dead_lettered == 100
    })
    .await;
    assert_eq!(check.lost, 0, "{check:?}");
    assert_eq!(check.dead_lettered, 100, "A's events: {check:?}");
    assert_eq!(es.loadgen_counts("b").len(), 100, "B's events: {check:?}");
    h.stop().await;
    es.stop().await;
}

/// Scenario 2.3: the OUTPUT unit is reconfigured with an unreadable CA file. Before the
/// fix the old output was stopped, the new one never started, routes still said ready:
/// publishes were accepted into a queue nobody read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_3_a_failed_output_reconfigure_fails_refuses_publishes_and_drains_end() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es().await;
    let h = Harness::start(|_| {}).await;
    let good = output(&es, json!({}));
    let a = input(
        &h,
        "input-a",
        "filestream-a",
        json!({"drain_timeout": "2s"}),
    );
    let b = input(&h, "input-b", "filestream-b", json!({}));
    h.agent
        .apply(&revision(1, vec![good.clone(), a.clone(), b.clone()]));
    h.agent
        .wait_for_states(WAIT, &[("input-a", UnitType::Input)], State::Healthy)
        .await
        .unwrap();
    es.pause(); // A's events stay queued
    let a_seqs = publish(&h.socket(), "filestream-a", "a", "app_a", 100).await;

    let missing_ca = h.data().join("no-such-ca.pem");
    let bad = output(
        &es,
        json!({"ssl": {"certificate_authorities": [missing_ca.display().to_string()]}}),
    );
    h.agent
        .apply(&revision(2, vec![bad.clone(), a.clone(), b.clone()]));
    let failed = reached(&h.agent, WAIT, "output-default", State::Failed).await;
    assert!(
        failed.contains("ssl.certificate_authorities"),
        "the reason names the key: {failed}"
    );

    let mut client = loadgen::connect(&h.socket()).await.unwrap();
    let options = LoadgenOptions::new(&h.socket(), "filestream-b", 1);
    let refused = client
        .publish_events(PublishRequest {
            uuid: String::new(),
            events: vec![loadgen::make_event(&options, 0)],
        })
        .await;
    match refused {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        Ok(reply) => panic!(
            "a publish without a running output was accepted: {:?}",
            reply.into_inner()
        ),
    }

    let removed = Instant::now();
    h.agent.apply(&revision(3, vec![bad, b.clone()]));
    let stopped = reached(
        &h.agent,
        Duration::from_secs(2 + 10),
        "input-a",
        State::Stopped,
    )
    .await;
    assert!(
        stopped.contains("drain_timeout reached"),
        "{stopped} after {:?}",
        removed.elapsed()
    );

    // A good config again: A's queued events go to the dead letter queue (drain_timeout).
    es.resume().await.unwrap();
    h.agent.apply(&revision(4, vec![good, b]));
    h.agent
        .wait_for_states(
            WAIT,
            &[("output-default", UnitType::Output)],
            State::Healthy,
        )
        .await
        .unwrap();
    let promised = vec![("a".to_string(), a_seqs)];
    let check = delivery_until(&es, h.data(), &promised, WAIT, |c| c.lost == 0).await;
    assert_eq!(check.lost, 0, "{check:?}");
    assert_eq!(check.dead_lettered, 100, "{check:?}");
    h.stop().await;
    es.stop().await;
}

/// Scenario 2.6: every `_bulk` is refused as a whole with 400 (a proxy, a header). Before
/// the fix the request was split down to single events and each was dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_6_a_whole_request_400_is_retried_and_degrades_not_dead_lettered() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es().await;
    let h = Harness::start(|_| {}).await;
    let out = output(&es, json!({}));
    let a = input(&h, "input-a", "filestream-a", json!({}));
    h.agent.apply(&revision(1, vec![out, a]));
    h.agent
        .wait_for_states(WAIT, &[("input-a", UnitType::Input)], State::Healthy)
        .await
        .unwrap();
    es.set_faults(Faults {
        request_400_rate: 1.0,
        ..Faults::default()
    });
    let a_seqs = publish(&h.socket(), "filestream-a", "a", "app_a", 50).await;

    let degraded = reached(&h.agent, WAIT, "output-default", State::Degraded).await;
    assert!(degraded.contains("400"), "{degraded}");
    // Retried, not split to single events: a few requests in a backoff, not 99.
    let deadline = Instant::now() + WAIT;
    while es.stats().requests < 4 {
        assert!(Instant::now() < deadline, "the request is not retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // DEGRADED came a second after the first failure, past several DLQ flushes (200 ms).
    assert!(
        dead_lettered_seqs(&h.data().join("dlq")).is_empty(),
        "events of a request refused as a whole were dead-lettered"
    );

    es.set_faults(Faults::default());
    let promised = vec![("a".to_string(), a_seqs)];
    let check = delivery_until(&es, h.data(), &promised, WAIT, |c| c.lost == 0).await;
    assert_eq!(check.lost, 0, "{check:?}");
    assert_eq!(check.indexed, 50, "{check:?}");
    assert_eq!(check.dead_lettered, 0, "{check:?}");
    h.agent
        .wait_for_states(
            WAIT,
            &[("output-default", UnitType::Output)],
            State::Healthy,
        )
        .await
        .unwrap();
    h.stop().await;
    es.stop().await;
}
