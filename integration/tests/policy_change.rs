//! End-to-end: policy changes without data loss (the seed scenario and its variations),
//! on the real binary, mock-agent, loadgen and mock-es. Each test checks, event by event,
//! that every event loadgen was told was persisted is indexed exactly once or is in the
//! dead letter queue with a reason.

mod common;

use agent_shipper::dlq::DlqReader;
use agent_shipper::proto::agent::{State, UnitLogLevel, UnitType};
use common::{revision, Harness, WAIT};
use integration::agent::{AckMode, AgentEvent, MockAgent, MockAgentOptions, UnitSpec};
use integration::loadgen::{self, LoadgenOptions};
use integration::mock_es::{Faults, LoadgenMissing, MockEs, MockEsOptions};
use integration::scenario::{check_delivery, DeliveryCheck};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The heavy scenarios run one at a time: the machine has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What SIGTERM may take beyond `shutdown_timeout`: the batch in hand, saving the queue
/// state, ending the process (a slow shared machine included).
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);

const KEY1: (&str, &str) = ("key-rev1", "rev1-secret-0f3a");
const KEY2: (&str, &str) = ("key-rev2", "rev2-secret-9c1d");

async fn mock_es() -> MockEs {
    let es = MockEs::start(MockEsOptions {
        keep_documents: false,
        ..MockEsOptions::default()
    })
    .await
    .unwrap();
    es.add_api_key(
        KEY1.0,
        KEY1.1,
        &["logs-app_a-default", "logs-app_b-default"],
    );
    // The new key may not write B's data stream: B is not in revision 2. Only it may write
    // `app_n`, where events published after a rotation go: one sent with the old key
    // would be refused (403) and dead-lettered.
    es.add_api_key(
        KEY2.0,
        KEY2.1,
        &["logs-app_a-default", "logs-app_n-default"],
    );
    es
}

fn output(id: &str, es: &MockEs, key: (&str, &str), extra: serde_json::Value) -> UnitSpec {
    let mut config = json!({
        "type": "elasticsearch",
        "hosts": [es.url()],
        "api_key": format!("{}:{}", key.0, key.1),
        "bulk_max_size": 1000,
        "backoff": {"init": "100ms", "max": "500ms"},
        "dlq": {"flush_interval": "200ms"},
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    UnitSpec {
        id: id.into(),
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

async fn message_of(agent: &MockAgent, id: &str, state: State) -> String {
    match agent
        .wait_for(
            Duration::from_secs(120),
            &format!("{id} {state:?}"),
            observed(id, state),
        )
        .await
    {
        Ok(AgentEvent::UnitObserved { message, .. }) => message,
        other => panic!("{id} never reached {state:?}: {other:?}"),
    }
}

/// Makes mock-es answer every `_bulk` request after `ms` milliseconds.
fn slow_down(es: &MockEs, ms: u64) {
    es.set_faults(Faults {
        latency_ms: ms,
        ..Faults::default()
    });
}

/// Waits until nothing promised is missing; returns the final counts.
async fn delivered(es: &MockEs, data: &Path, promised: &[(String, Vec<u64>)]) -> DeliveryCheck {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let check = check_delivery(es, &data.join("dlq"), promised);
        if check.lost == 0 || Instant::now() > deadline {
            return check;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Probes, at the instant the agent first sees `unit` report STOPPED, which of the seqs
/// `0..events` of loadgen run `run` mock-es had not yet indexed (answered 201, or 409 for
/// a resend of an indexed event). Register it before the revision that removes `unit`.
fn undelivered_at_stopped(
    h: &Harness,
    es: &Arc<MockEs>,
    unit: &str,
    run: &'static str,
    events: u64,
) -> tokio::sync::oneshot::Receiver<LoadgenMissing> {
    let es = es.clone();
    h.agent.probe_when_stopped(unit, UnitType::Input, move || {
        es.loadgen_missing(run, events, 5)
    })
}

/// The probe's answer; fails when any event of the unit was not delivered at STOPPED.
async fn assert_delivered_at_stopped(
    probe: tokio::sync::oneshot::Receiver<LoadgenMissing>,
    unit: &str,
) {
    let missing = tokio::time::timeout(WAIT, probe)
        .await
        .expect("the STOPPED probe ran")
        .expect("the probe answered");
    assert_eq!(
        missing.missing, 0,
        "{unit} reported STOPPED while {} of its events were not yet indexed, e.g. {:?}",
        missing.missing, missing.seqs
    );
}

/// Stops mock-es once the probes holding it have run.
async fn stop_es(es: Arc<MockEs>) {
    if let Ok(es) = Arc::try_unwrap(es) {
        es.stop().await;
    }
}

/// `pending_events` of the shipper's log line for `unit` entering STOPPING.
fn stopping_backlog(h: &Harness, unit: &str) -> u64 {
    h.shipper_logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["unit.id"] == unit && l["to"] == "STOPPING")
        .and_then(|l| l["pending_events"].as_u64())
        .expect("a STOPPING line with pending_events")
}

/// Revision 1 (A and B, key 1), a B backlog of `backlog` events while Elasticsearch is
/// slow, then revision 2 (B removed, key rotated to a new OUTPUT unit).
async fn seed_until_revision_2(h: &Harness, es: &MockEs, backlog: u64) -> Vec<(String, Vec<u64>)> {
    h.agent.apply(&revision(
        1,
        vec![
            output("output-rev1", es, KEY1, json!({})),
            input(h, "input-a", "filestream-a", json!({})),
            input(h, "input-b", "filestream-b", json!({})),
        ],
    ));
    h.agent
        .wait_for_states(
            WAIT,
            &[
                ("output-rev1", UnitType::Output),
                ("input-b", UnitType::Input),
            ],
            State::Healthy,
        )
        .await
        .unwrap();
    slow_down(es, 1_000);
    let a = publish(&h.socket(), "filestream-a", "a", "app_a", 5_000).await;
    let b = publish(&h.socket(), "filestream-b", "b", "app_b", backlog).await;
    // Slow enough that the drain takes seconds.
    slow_down(es, 40);
    h.agent.apply(&revision(
        2,
        vec![
            output("output-rev2", es, KEY2, json!({})),
            input(h, "input-a", "filestream-a", json!({})),
        ],
    ));
    vec![("a".to_string(), a), ("b".to_string(), b)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_drains_b_with_the_old_key_before_stopped_and_the_ack() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = Arc::new(mock_es().await);
    let h = Harness::start(|_| {}).await;
    let at_stopped = undelivered_at_stopped(&h, &es, "input-b", "b", 100_000);
    let promised = seed_until_revision_2(&h, &es, 100_000).await;

    let stopping = message_of(&h.agent, "input-b", State::Stopping).await;
    assert!(stopping.contains("draining"), "{stopping}");
    // While the old key is still valid: new events must go with the new key.
    let n = publish(&h.socket(), "filestream-a", "n", "app_n", 1_000).await;
    let mut promised = promised;
    promised.push(("n".to_string(), n));
    let stopped = message_of(&h.agent, "input-b", State::Stopped).await;
    assert!(stopped.contains("drained"), "{stopped}");
    assert_delivered_at_stopped(at_stopped, "input-b").await;
    h.agent
        .wait_for(Duration::from_secs(120), "ack of revision 2", |e| {
            *e == AgentEvent::RevisionAcknowledged(2)
        })
        .await
        .unwrap();
    es.invalidate_api_key(KEY1.0); // Fleet, after the acknowledgement.
    assert!(
        stopping_backlog(&h, "input-b") >= 90_000,
        "the drain had a backlog"
    );

    let stopped_at = h.position(observed("input-b", State::Stopped)).unwrap();
    let old_output_stopped_at = h.position(observed("output-rev1", State::Stopped)).unwrap();
    let ack_at = h
        .position(|e| *e == AgentEvent::RevisionAcknowledged(2))
        .unwrap();
    assert!(stopped_at < ack_at && old_output_stopped_at < ack_at);

    let check = delivered(&es, h.data(), &promised).await;
    assert_eq!(check.lost, 0, "{check:?}");
    assert_eq!(check.duplicates, 0, "{check:?}");
    assert_eq!(
        check.dead_lettered, 0,
        "B was drained with its own key, the new events went with the new key: {check:?}"
    );
    assert_eq!(check.indexed, 106_000);
    assert_eq!(
        es.stats().unauthorized_401,
        0,
        "no event was sent with key 1 after its invalidation"
    );
    let exit = h.stop().await;
    assert!(
        matches!(exit, AgentEvent::ShipperExited { code: Some(0), .. }),
        "{exit:?}"
    );
    stop_es(es).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_survives_a_sigkill_in_the_middle_of_the_drain() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = Arc::new(mock_es().await);
    let h = Harness::start(|_| {}).await;
    let at_stopped = undelivered_at_stopped(&h, &es, "input-b", "b", 100_000);
    let promised = seed_until_revision_2(&h, &es, 100_000).await;
    message_of(&h.agent, "input-b", State::Stopping).await;
    let deadline = Instant::now() + WAIT;
    while es.counts().get("logs-app_b-default").copied().unwrap_or(0) < 10_000 {
        assert!(Instant::now() < deadline, "the drain does not progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(h.agent.kill_shipper(), "the shipper is killed mid-drain");
    h.agent
        .wait_for_count(WAIT, "a restarted shipper", 2, |e| {
            matches!(e, AgentEvent::ShipperStarted { .. })
        })
        .await
        .unwrap();
    h.agent
        .wait_for(Duration::from_secs(120), "ack of revision 2", |e| {
            *e == AgentEvent::RevisionAcknowledged(2)
        })
        .await
        .unwrap();
    es.invalidate_api_key(KEY1.0);
    assert_delivered_at_stopped(at_stopped, "input-b").await;
    let stopped_at = h.position(observed("input-b", State::Stopped)).unwrap();
    let ack_at = h
        .position(|e| *e == AgentEvent::RevisionAcknowledged(2))
        .unwrap();
    assert!(stopped_at < ack_at);

    let check = delivered(&es, h.data(), &promised).await;
    assert_eq!(check.lost, 0, "{check:?}");
    assert_eq!(
        check.duplicates, 0,
        "a resend is a 409, not a second document: {check:?}"
    );
    assert_eq!(
        check.dead_lettered, 0,
        "after the restart B's events still went with key 1: {check:?}"
    );
    assert_eq!(es.stats().unauthorized_401, 0);
    h.stop().await;
    stop_es(es).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_real_agents_immediate_ack_b_goes_to_the_dlq_and_a_is_indexed() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es().await;
    let h = Harness::start(|o| o.ack_mode = AckMode::Immediately).await;
    let promised = seed_until_revision_2(&h, &es, 20_000).await;
    h.agent
        .wait_for(WAIT, "ack of revision 2", |e| {
            *e == AgentEvent::RevisionAcknowledged(2)
        })
        .await
        .unwrap();
    es.invalidate_api_key(KEY1.0); // at once, as Fleet does after the real agent's ack
    message_of(&h.agent, "input-b", State::Stopped).await;

    let check = delivered(&es, h.data(), &promised).await;
    assert_eq!(check.lost, 0, "{check:?}");
    assert_eq!(check.duplicates, 0, "{check:?}");
    let counts_a = es.loadgen_counts("a");
    assert_eq!(counts_a.len(), 5_000, "every event of A is indexed");
    assert!(check.dead_lettered > 0, "{check:?}");
    assert_eq!(check.indexed + check.dead_lettered, 25_000);
    let mut reader = DlqReader::new(&h.data().join("dlq"));
    let mut statuses = std::collections::BTreeSet::new();
    while let Ok(Some((_, entries))) = reader.next_segment() {
        for (_, entry) in entries {
            statuses.insert(entry.reason.status);
            assert_eq!(entry.input_unit, "input-b");
        }
    }
    assert!(
        statuses.iter().all(|s| matches!(s, Some(401) | Some(403))),
        "B's events are refused with 401/403: {statuses:?}"
    );
    h.stop().await;
    es.stop().await;
}

async fn remove_b_with(on_remove: &str, dead_expected: u64) -> (String, DeliveryCheck, usize) {
    let es = mock_es().await;
    let h = Harness::start(|_| {}).await;
    let out = output("output-rev1", &es, KEY1, json!({}));
    let b = input(
        &h,
        "input-b",
        "filestream-b",
        json!({"on_remove": on_remove}),
    );
    h.agent.apply(&revision(
        1,
        vec![
            out.clone(),
            input(&h, "input-a", "filestream-a", json!({})),
            b,
        ],
    ));
    h.agent
        .wait_for_states(WAIT, &[("input-b", UnitType::Input)], State::Healthy)
        .await
        .unwrap();
    es.pause(); // nothing of B can be delivered before it is removed
    let b_seqs = publish(&h.socket(), "filestream-b", "b", "app_b", 1_000).await;
    h.agent.apply(&revision(
        2,
        vec![out, input(&h, "input-a", "filestream-a", json!({}))],
    ));
    let stopped = message_of(&h.agent, "input-b", State::Stopped).await;
    es.resume().await.unwrap();
    let a_seqs = publish(&h.socket(), "filestream-a", "a", "app_a", 100).await;
    let promised = vec![("a".to_string(), a_seqs), ("b".to_string(), b_seqs)];
    let deadline = Instant::now() + WAIT;
    while es.loadgen_counts("a").len() < 100 {
        assert!(Instant::now() < deadline, "A's events are not indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Dead-letter entries become visible when the DLQ head is sealed (flush_interval).
    let check = loop {
        let check = check_delivery(&es, &h.data().join("dlq"), &promised);
        if check.dead_lettered >= dead_expected || Instant::now() > deadline {
            break check;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let b_indexed = es.loadgen_counts("b").len();
    h.stop().await;
    es.stop().await;
    (stopped, check, b_indexed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_remove_drop_and_dead_letter_count_exactly() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (stopped, check, b_indexed) = remove_b_with("drop", 0).await;
    assert!(stopped.contains("0 delivered, 1000 dropped"), "{stopped}");
    assert_eq!(b_indexed, 0);
    assert_eq!(check.dead_lettered, 0);
    assert_eq!(
        check.lost, 1_000,
        "dropped on purpose, and said so: {check:?}"
    );

    let (stopped, check, b_indexed) = remove_b_with("dead_letter", 1_000).await;
    assert!(
        stopped.contains("0 delivered, 1000 dead-lettered"),
        "{stopped}"
    );
    assert_eq!(b_indexed, 0);
    assert_eq!(check.dead_lettered, 1_000, "{check:?}");
    assert_eq!(
        check.reasons,
        [("input_removed".to_string(), 1_000)].into(),
        "{check:?}"
    );
    assert_eq!(check.lost, 0, "{check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_moves_the_rest_to_the_dlq_and_stopped_says_how_many() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es().await;
    let h = Harness::start(|_| {}).await;
    let out = output("output-rev1", &es, KEY1, json!({"bulk_max_size": 200}));
    h.agent.apply(&revision(
        1,
        vec![
            out.clone(),
            input(
                &h,
                "input-b",
                "filestream-b",
                json!({"drain_timeout": "2s"}),
            ),
        ],
    ));
    h.agent
        .wait_for_states(WAIT, &[("input-b", UnitType::Input)], State::Healthy)
        .await
        .unwrap();
    slow_down(&es, 500);
    let b = publish(&h.socket(), "filestream-b", "b", "app_b", 5_000).await;
    let removed = Instant::now();
    h.agent.apply(&revision(2, vec![out]));
    let stopped = message_of(&h.agent, "input-b", State::Stopped).await;
    let took = removed.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "STOPPED only after the timeout: {took:?}"
    );
    // "drain_timeout reached: X queued events delivered, Y moved to the dead letter queue"
    let moved: u64 = stopped
        .split(", ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {stopped}"));
    assert!(
        moved > 0 && stopped.contains("drain_timeout reached"),
        "{stopped}"
    );
    let promised = vec![("b".to_string(), b)];
    let check = delivered(&es, h.data(), &promised).await;
    assert_eq!(check.lost, 0, "{check:?}");
    assert_eq!(check.dead_lettered, moved, "{check:?} vs {stopped}");
    assert_eq!(
        check.reasons,
        [("drain_timeout".to_string(), moved)].into(),
        "{check:?}"
    );
    assert_eq!(check.indexed + check.dead_lettered, 5_000);
    h.stop().await;
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_in_time_and_a_restart_ships_the_rest() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es().await;
    let h = Harness::start(|o| {
        o.shipper_args = vec!["-E".into(), "shutdown_timeout=2s".into()];
        o.restart_on_exit = false;
    })
    .await;
    let units = vec![
        output("output-rev1", &es, KEY1, json!({})),
        input(&h, "input-a", "filestream-a", json!({})),
    ];
    h.agent.apply(&revision(1, units.clone()));
    h.agent
        .wait_for_states(WAIT, &[("input-a", UnitType::Input)], State::Healthy)
        .await
        .unwrap();
    slow_down(&es, 1_000);
    let a = publish(&h.socket(), "filestream-a", "a", "app_a", 20_000).await;
    let Harness { agent, dir } = h;
    let asked = Instant::now();
    assert!(agent.terminate_shipper(), "SIGTERM sent");
    agent
        .wait_for(
            WAIT,
            "the shipper taking the SIGTERM",
            |e| matches!(e, AgentEvent::ShipperLog(l) if l.contains("stop requested")),
        )
        .await
        .unwrap();
    // SIGTERM stops accepting: a publish after it is refused (answered with an error, or
    // the Producer API is gone), never queued behind a shutdown that will not ship it.
    let mut late = LoadgenOptions::new(
        &format!("unix://{}/shipper.sock", dir.path().display()),
        "filestream-a",
        10,
    );
    late.run = "late".into();
    late.patience = Duration::from_secs(1);
    match loadgen::run(&late).await {
        Ok(report) => assert_eq!(
            report.accepted, 0,
            "a publish after SIGTERM was accepted: {report:?}"
        ),
        Err(err) => eprintln!("publish after SIGTERM refused: {err:#}"),
    }
    let exit = agent
        .wait_for(Duration::from_secs(25), "the shipper's exit", |e| {
            matches!(e, AgentEvent::ShipperExited { .. })
        })
        .await
        .unwrap();
    let took = asked.elapsed();
    eprintln!("SIGTERM to exit with shutdown_timeout=2s: {took:?}");
    assert_eq!(
        exit,
        AgentEvent::ShipperExited {
            code: Some(0),
            signal: None
        }
    );
    // shutdown_timeout=2s bounds the delivery; saving the queue state and ending the
    // process take well under the rest of the margin.
    assert!(
        took < Duration::from_secs(2) + SHUTDOWN_MARGIN,
        "SIGTERM to exit took {took:?} with shutdown_timeout=2s"
    );
    agent.stop(Duration::from_secs(25)).await.unwrap();
    assert!(
        es.loadgen_counts("a").len() < 20_000,
        "some events were left for the restart"
    );

    es.set_faults(Faults::default());
    let mut options = MockAgentOptions::new(
        integration::shipper_binary().unwrap(),
        dir.path().to_path_buf(),
    );
    options.restart_delay = Duration::from_millis(500);
    let agent = MockAgent::start(options).await.unwrap();
    agent.apply(&revision(1, units));
    let promised = vec![("a".to_string(), a)];
    let check = delivered(&es, dir.path(), &promised).await;
    assert_eq!(check.lost, 0, "{check:?}");
    assert_eq!(check.duplicates, 0, "{check:?}");
    assert_eq!(check.indexed, 20_000);
    agent.stop(Duration::from_secs(25)).await.unwrap();
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_key_change_falls_back_to_the_new_key_after_a_401() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es().await;
    // What the real agent does: the same OUTPUT unit gets a new config (idx + 1) and the
    // revision is acknowledged at once, so the old key dies while old events are queued.
    let h = Harness::start(|o| o.ack_mode = AckMode::Immediately).await;
    let a = input(&h, "input-a", "filestream-a", json!({}));
    h.agent.apply(&revision(
        1,
        vec![output("output-default", &es, KEY1, json!({})), a.clone()],
    ));
    h.agent
        .wait_for_states(WAIT, &[("input-a", UnitType::Input)], State::Healthy)
        .await
        .unwrap();
    slow_down(&es, 1_000);
    let old = publish(&h.socket(), "filestream-a", "old", "app_a", 10_000).await;
    h.agent.apply(&revision(
        2,
        vec![output("output-default", &es, KEY2, json!({})), a],
    ));
    es.invalidate_api_key(KEY1.0);
    es.set_faults(Faults::default());
    let new = publish(&h.socket(), "filestream-a", "new", "app_a", 1_000).await;
    let promised = vec![("old".to_string(), old), ("new".to_string(), new)];
    let check = delivered(&es, h.data(), &promised).await;
    assert_eq!(check.lost, 0, "{check:?}");
    assert_eq!(check.dead_lettered, 0, "{check:?}");
    assert_eq!(check.duplicates, 0, "{check:?}");
    assert_eq!(check.indexed, 11_000);
    let unauthorized = es.stats().unauthorized_401;
    assert!(
        unauthorized > 0,
        "old events were tried with the old key first"
    );
    // 10,000 old events are 10 batches of 1,000: after the first 401 the rest go with the
    // new key at once (a batch already on its way may get one more 401).
    assert!(
        unauthorized <= 2,
        "{unauthorized} requests answered 401: the dead key was tried again: {:#?}",
        h.shipper_logs()
            .iter()
            .filter(|l| l.contains("401"))
            .collect::<Vec<_>>()
    );
    assert!(h
        .shipper_logs()
        .iter()
        .any(|l| l.contains("retrying with the newest")));
    h.stop().await;
    es.stop().await;
}
