//! End-to-end under today's agent (8.16+, 9.x): mock-agent in its 9 mode runs agent-shipper
//! as an `agent-shipper` input component from `agent-shipper-input.spec.yml`, with
//! mock-es as Elasticsearch and loadgen publishing through the input's `server`.

use agent_shipper::proto::agent::{State, UnitType};
use integration::agent::{AgentEvent, MockAgent};
use integration::agent9::{Agent9, Agent9Options, Policy};
use integration::loadgen::{self, LoadgenOptions};
use integration::mock_es::{MockEs, MockEsOptions};
use integration::scenario::{check_delivery, DeliveryCheck};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
const COMPONENT: &str = "agent-shipper-default";
const INPUT_UNIT: &str = "agent-shipper-default-app";
const KEY: (&str, &str) = ("key-1", "secret-1-4d2f");

/// The heavy tests run one at a time: the machine has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

fn socket(home: &Path) -> String {
    format!("unix://{}/app.sock", home.join("tmp").display())
}

/// One `agent-shipper` input `app` sending to the Elasticsearch output `default`.
fn policy(revision: u64, home: &Path, es: &MockEs) -> Policy {
    Policy {
        revision,
        outputs: BTreeMap::from([(
            "default".to_string(),
            json!({
                "type": "elasticsearch",
                "hosts": [es.url()],
                "api_key": format!("{}:{}", KEY.0, KEY.1),
                "preset": "balanced",
                "bulk_max_size": 1000,
                "backoff": {"init": "100ms", "max": "500ms"},
            }),
        )]),
        inputs: vec![json!({
            "id": "app",
            "type": "agent-shipper",
            "use_output": "default",
            "enabled": true,
            "server": socket(home),
            "data_stream": {"type": "logs", "dataset": "app", "namespace": "default"},
            "meta": {"package": {"name": "agent_shipper", "version": "0.1.0"}},
        })],
    }
}

async fn start(home: &Path) -> Agent9 {
    std::fs::create_dir_all(home.join("tmp")).unwrap();
    let mut options = Agent9Options::new(integration::shipper_binary().unwrap(), home);
    options.restart_delay = Duration::from_millis(500);
    Agent9::new(options).unwrap()
}

async fn healthy(agent: &Agent9) -> Arc<MockAgent> {
    let component = agent.component(COMPONENT).expect("component runs");
    component
        .wait_for_states(
            WAIT,
            &[(COMPONENT, UnitType::Output), (INPUT_UNIT, UnitType::Input)],
            State::Healthy,
        )
        .await
        .unwrap();
    component
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

fn shipper_logs(component: &MockAgent) -> Vec<String> {
    component
        .history()
        .into_iter()
        .filter_map(|e| match e {
            AgentEvent::ShipperLog(line) => Some(line),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_input_spec_runs_a_component_that_indexes_10000_events_exactly_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es().await;
    let home = tempfile::Builder::new().prefix("a9").tempdir().unwrap();
    let agent = start(home.path()).await;
    agent.apply(&policy(1, home.path(), &es)).await.unwrap();
    let component = healthy(&agent).await;

    // Started as today's agent starts it: the spec's args, then path.data, in that dir.
    let launch = component.launch();
    let work_dir = home.path().join("run").join(COMPONENT);
    assert_eq!(
        launch.args,
        [
            "-E".to_string(),
            "logging.level=info".into(),
            "-E".into(),
            format!("path.data={}", work_dir.display()),
        ]
    );
    assert_eq!(launch.cwd, work_dir);
    for (name, value) in [
        ("AGENT_COMPONENT_ID", COMPONENT),
        ("AGENT_COMPONENT_TYPE", "agent-shipper"),
    ] {
        assert!(
            launch.env.contains(&(name.to_string(), value.to_string())),
            "{name}: {:?}",
            launch.env
        );
    }
    // The INPUT unit's config is the block minus enabled/use_output, plus policy.revision.
    let config = component
        .expected_config(INPUT_UNIT, UnitType::Input)
        .unwrap();
    assert_eq!(config["policy"]["revision"], 1);
    assert!(config.get("use_output").is_none() && config.get("enabled").is_none());
    assert!(config.get("ssl").is_none(), "nothing injected");

    // Half name the policy input id, half name nothing: the listener says whose they are.
    let mut promised = Vec::new();
    for (run, input_id) in [("named", "app"), ("unnamed", "")] {
        let mut options = LoadgenOptions::new(&socket(home.path()), input_id, 5_000);
        options.run = run.into();
        let report = loadgen::run(&options).await.unwrap();
        assert_eq!(report.refused, None, "{run}");
        assert_eq!(report.accepted, 5_000, "{run}");
        assert_eq!(report.promised.len(), 5_000, "{run}");
        promised.push((run.to_string(), report.promised));
    }
    let check = delivered(&es, &work_dir, &promised).await;
    assert_eq!(check.lost, 0, "{check:?}");
    assert_eq!(check.duplicates, 0, "{check:?}");
    assert_eq!(check.indexed, 10_000, "{check:?}");

    let exits = agent.stop().await;
    for (id, exit) in exits {
        assert_eq!(
            exit.unwrap(),
            AgentEvent::ShipperExited {
                code: Some(0),
                signal: None
            },
            "{id}"
        );
    }
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_revision_bump_rides_through_without_loss_or_rebinding() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es().await;
    let home = tempfile::Builder::new().prefix("a9").tempdir().unwrap();
    let agent = start(home.path()).await;
    agent.apply(&policy(1, home.path(), &es)).await.unwrap();
    let component = healthy(&agent).await;
    let first_idx = component.observed(INPUT_UNIT, UnitType::Input).unwrap().idx;
    let output_idx = component.observed(COMPONENT, UnitType::Output).unwrap().idx;

    // Publish continuously while Fleet bumps the revision twice.
    let accepted = Arc::new(AtomicU64::new(0));
    let mut options = LoadgenOptions::new(&socket(home.path()), "app", 40_000);
    options.run = "through".into();
    options.batch = 100;
    options.accepted_counter = Some(accepted.clone());
    let publisher = tokio::spawn(async move { loadgen::run(&options).await });

    let mut idx = first_idx;
    for revision in [2, 3] {
        let before = accepted.load(Ordering::SeqCst);
        agent
            .apply(&policy(revision, home.path(), &es))
            .await
            .unwrap();
        // The INPUT unit echoes the new idx (HEALTHY); the OUTPUT unit's did not change.
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = component.observed(INPUT_UNIT, UnitType::Input).unwrap();
            if seen.idx > idx && seen.state == State::Healthy {
                idx = seen.idx;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "revision {revision} not applied: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            component.observed(COMPONENT, UnitType::Output).unwrap().idx,
            output_idx
        );
        assert_eq!(
            component
                .expected_config(INPUT_UNIT, UnitType::Input)
                .unwrap()["policy"]["revision"],
            revision
        );
        // Publishing went on across the change.
        let deadline = Instant::now() + WAIT;
        while accepted.load(Ordering::SeqCst) < before + 1_000 {
            assert!(
                !publisher.is_finished(),
                "loadgen ended before revision {revision} was applied; publish more events"
            );
            assert!(
                Instant::now() < deadline,
                "publishing stalled after revision {revision}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let report = publisher.await.unwrap().unwrap();
    assert_eq!(report.refused, None, "nothing refused across the bumps");
    assert_eq!(report.accepted, 40_000);
    assert_eq!(report.promised.len(), 40_000);
    let work_dir = home.path().join("run").join(COMPONENT);
    let check = delivered(&es, &work_dir, &[("through".to_string(), report.promised)]).await;
    assert_eq!(check.lost, 0, "{check:?}");
    assert_eq!(check.duplicates, 0, "{check:?}");
    assert_eq!(check.indexed, 40_000, "{check:?}");

    // One process, one bind of the Producer API, no rebinding.
    let logs = shipper_logs(&component);
    let binds = logs
        .iter()
        .filter(|l| l.contains("Producer API listening"))
        .count();
    assert_eq!(binds, 1, "the listener was bound {binds} times");
    assert!(!logs.iter().any(|l| l.contains("rebinding")));
    let starts = component
        .history()
        .iter()
        .filter(|e| matches!(e, AgentEvent::ShipperStarted { .. }))
        .count();
    assert_eq!(starts, 1, "the process was not restarted");
    agent.stop().await;
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_output_moved_replaces_the_component_as_todays_agent_does() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es().await;
    let home = tempfile::Builder::new().prefix("a9").tempdir().unwrap();
    let agent = start(home.path()).await;
    let mut first = policy(1, home.path(), &es);
    first
        .outputs
        .insert("archive".into(), first.outputs["default"].clone());
    agent.apply(&first).await.unwrap();
    let old = healthy(&agent).await;
    let old_dir = home.path().join("run").join(COMPONENT);
    assert!(old_dir.is_dir());

    let mut moved = first.clone();
    moved.revision = 2;
    moved.inputs[0]["use_output"] = json!("archive");
    agent.apply(&moved).await.unwrap();
    agent
        .wait_for(
            WAIT,
            "the old component's work directory deleted",
            |e| matches!(e, AgentEvent::WorkDirDeleted { id, .. } if id == COMPONENT),
        )
        .await
        .unwrap();
    agent
        .wait_for(WAIT, "the new component started", |e| {
            matches!(e, AgentEvent::ComponentStarted { id, .. } if id == "agent-shipper-archive")
        })
        .await
        .unwrap();
    assert!(!old_dir.exists(), "the old path.data is gone");
    // The old process got SIGTERM and no STOPPED: no expected message after the removal
    // asked it to stop, and it exited on its own.
    assert!(old.is_retired());
    assert!(
        old.is_expected(COMPONENT, UnitType::Output)
            && old.is_expected(INPUT_UNIT, UnitType::Input),
        "no unit was ever expected STOPPED: the component just left the model"
    );
    let history = agent.history();
    let at = |p: &dyn Fn(&AgentEvent) -> bool| history.iter().position(p).unwrap();
    let removed = at(&|e| matches!(e, AgentEvent::ComponentRemoved { id } if id == COMPONENT));
    let exited = at(&|e| matches!(e, AgentEvent::ComponentExited { id, .. } if id == COMPONENT));
    let started = at(
        &|e| matches!(e, AgentEvent::ComponentStarted { id, .. } if id == "agent-shipper-archive"),
    );
    assert!(removed < exited && exited < started, "{history:#?}");
    assert!(
        matches!(
            &history[exited],
            AgentEvent::ComponentExited { code: Some(0), .. }
        ),
        "SIGTERM ends the old process cleanly: {:?}",
        history[exited]
    );
    assert_eq!(agent.component_ids(), ["agent-shipper-archive".to_string()]);
    let new = agent.component("agent-shipper-archive").unwrap();
    new.wait_for_states(
        WAIT,
        &[
            ("agent-shipper-archive", UnitType::Output),
            ("agent-shipper-archive-app", UnitType::Input),
        ],
        State::Healthy,
    )
    .await
    .unwrap();
    agent.stop().await;
    es.stop().await;
}

// Issue 15 point 4: backlogs that outlive a component's stop window, under the 9 mock
// (SIGTERM, no STOPPED, the work directory deleted once the process is gone). The
// shipper's `shutdown_timeout` is shortened so that the backlog-handoff path runs well
// inside the agent's 25 s SIGKILL; the agent's order is unchanged.

const KEY_A: (&str, &str) = ("key-a", "a-secret-5e90");
const KEY_B: (&str, &str) = ("key-b", "b-secret-31c7");
const STATE_ROOT: &str = "run/agent-shipper.state";

/// Mock Elasticsearch where key A may write only `logs-a-default` and key B only
/// `logs-b-default`: an event sent with the other key is answered 403.
async fn mock_es_two_keys() -> MockEs {
    let es = MockEs::start(MockEsOptions {
        keep_documents: false,
        ..MockEsOptions::default()
    })
    .await
    .unwrap();
    es.add_api_key(KEY_A.0, KEY_A.1, &["logs-a-default"]);
    es.add_api_key(KEY_B.0, KEY_B.1, &["logs-b-default"]);
    es
}

fn es_output(es: &MockEs, key: (&str, &str)) -> serde_json::Value {
    json!({
        "type": "elasticsearch",
        "hosts": [es.url()],
        "api_key": format!("{}:{}", key.0, key.1),
        "bulk_max_size": 200,
        "backoff": {"init": "100ms", "max": "300ms"},
        "dlq": {"flush_interval": "200ms"},
    })
}

fn app_input(id: &str, home: &Path, use_output: &str) -> serde_json::Value {
    json!({
        "id": id,
        "type": "agent-shipper",
        "use_output": use_output,
        "enabled": true,
        "server": format!("unix://{}/{id}.sock", home.join("tmp").display()),
        "data_stream": {"type": "logs", "dataset": "app", "namespace": "default"},
        "meta": {"package": {"name": "agent_shipper", "version": "0.1.0"}},
    })
}

/// Today's agent whose components give SIGTERM's delivery `shutdown` before handing off.
async fn start_with_shutdown(home: &Path, shutdown: &str) -> Agent9 {
    std::fs::create_dir_all(home.join("tmp")).unwrap();
    let mut options = Agent9Options::new(integration::shipper_binary().unwrap(), home);
    options.restart_delay = Duration::from_millis(500);
    options.shipper_args = vec!["-E".into(), format!("shutdown_timeout={shutdown}")];
    Agent9::new(options).unwrap()
}

async fn healthy_units(agent: &Agent9, component: &str, inputs: &[&str]) -> Arc<MockAgent> {
    let deadline = Instant::now() + WAIT;
    let running = loop {
        if let Some(running) = agent.component(component) {
            break running;
        }
        assert!(Instant::now() < deadline, "{component} never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut units = vec![(component.to_string(), UnitType::Output)];
    units.extend(
        inputs
            .iter()
            .map(|i| (format!("{component}-{i}"), UnitType::Input)),
    );
    let units: Vec<(&str, UnitType)> = units.iter().map(|(u, t)| (u.as_str(), *t)).collect();
    running
        .wait_for_states(WAIT, &units, State::Healthy)
        .await
        .unwrap();
    running
}

/// Publishes `events` on input `input`'s listener as run `run`, in data stream
/// `logs-<dataset>-default`; returns what the shipper promised.
async fn publish_to(home: &Path, input: &str, run: &str, dataset: &str, events: u64) -> Vec<u64> {
    let server = format!("unix://{}/{input}.sock", home.join("tmp").display());
    let mut options = LoadgenOptions::new(&server, input, events);
    options.run = run.into();
    options.dataset = dataset.into();
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(report.refused, None, "{run}");
    assert_eq!(report.promised.len() as u64, events, "{run}");
    report.promised
}

/// Waits until every promised event is indexed and nothing was dead-lettered (in any of
/// `dlqs`), then asserts lost 0, no duplicate and no event sent with the wrong key.
async fn all_indexed_with_their_keys(
    es: &MockEs,
    dlqs: &[PathBuf],
    promised: &[(String, Vec<u64>)],
) {
    let total: u64 = promised.iter().map(|(_, p)| p.len() as u64).sum();
    let deadline = Instant::now() + Duration::from_secs(120);
    let check = loop {
        let checks: Vec<DeliveryCheck> = dlqs
            .iter()
            .map(|d| check_delivery(es, d, promised))
            .collect();
        let dead: u64 = checks.iter().map(|c| c.dead_lettered).sum();
        let check = checks.into_iter().next().unwrap();
        if (check.indexed == total && check.lost == 0) || dead > 0 || Instant::now() > deadline {
            assert_eq!(dead, 0, "nothing dead-lettered: {check:?}");
            break check;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (
            check.indexed,
            check.dead_lettered,
            check.lost,
            check.duplicates
        ),
        (total, 0, 0, 0),
        "every event indexed once: {check:?}"
    );
    assert_eq!(
        es.stats().forbidden_403,
        0,
        "no event sent with another output's key"
    );
}

/// Waits for the agent event `what`.
async fn agent_event(agent: &Agent9, what: &str, p: impl Fn(&AgentEvent) -> bool) -> AgentEvent {
    agent.wait_for(WAIT, what, p).await.unwrap()
}

/// Waits until `component` left the model as today's agent removes it with a backlog
/// queued: it exited 0 after SIGTERM (the handoff, then exit before SIGKILL), its work
/// directory was deleted, and its state directory keeps `handoff.json`; returns that
/// state directory.
async fn left_the_model_with_a_handoff(agent: &Agent9, home: &Path, component: &str) -> PathBuf {
    let exited = agent_event(
        agent,
        "the component's exit",
        |e| matches!(e, AgentEvent::ComponentExited { id, .. } if id == component),
    )
    .await;
    assert!(
        matches!(exited, AgentEvent::ComponentExited { code: Some(0), .. }),
        "SIGTERM with a backlog: handoff, then exit 0 before SIGKILL: {exited:?}"
    );
    agent_event(
        agent,
        "its work directory deleted",
        |e| matches!(e, AgentEvent::WorkDirDeleted { id, .. } if id == component),
    )
    .await;
    let state = home.join(STATE_ROOT).join(component);
    assert!(
        state.join("handoff.json").exists(),
        "{component} handed its backlog off"
    );
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_output_moved_with_a_backlog_sends_the_old_backlog_with_the_old_key() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es_two_keys().await;
    let home = tempfile::Builder::new().prefix("a9").tempdir().unwrap();
    let agent = start_with_shutdown(home.path(), "1s").await;
    let mut policy = Policy {
        revision: 1,
        outputs: BTreeMap::from([
            ("a".to_string(), es_output(&es, KEY_A)),
            ("b".to_string(), es_output(&es, KEY_B)),
        ]),
        inputs: vec![app_input("app", home.path(), "a")],
    };
    agent.apply(&policy).await.unwrap();
    healthy_units(&agent, "agent-shipper-a", &["app"]).await;
    let delivered_a = publish_to(home.path(), "app", "a-early", "a", 300).await;
    // Elasticsearch goes away: the next events stay queued under A.
    es.pause();
    let backlog_a = publish_to(home.path(), "app", "a-backlog", "a", 1_000).await;

    policy.revision = 2;
    policy.inputs[0]["use_output"] = json!("b");
    agent.apply(&policy).await.unwrap();
    let a_state = left_the_model_with_a_handoff(&agent, home.path(), "agent-shipper-a").await;
    assert!(!home.path().join("run/agent-shipper-a").exists());
    es.resume().await.unwrap();

    let b = healthy_units(&agent, "agent-shipper-b", &["app"]).await;
    let new_b = publish_to(home.path(), "app", "b-new", "b", 500).await;
    let b_state = home.path().join(STATE_ROOT).join("agent-shipper-b");
    all_indexed_with_their_keys(
        &es,
        &[a_state.join("dlq"), b_state.join("dlq")],
        &[
            ("a-early".into(), delivered_a),
            ("a-backlog".into(), backlog_a),
            ("b-new".into(), new_b),
        ],
    )
    .await;
    assert!(shipper_logs(&b)
        .iter()
        .any(|l| l.contains("adopting a queue another component left")));
    let history = agent.history();
    assert!(
        !history
            .iter()
            .any(|e| matches!(e, AgentEvent::ComponentKilled { .. })),
        "nothing needed SIGKILL"
    );
    agent.stop().await;
    es.stop().await;
}

/// Output `a` of today's agent with `key`, input `app` (and `more`) sending to it.
fn policy_a(revision: u64, home: &Path, es: &MockEs, key: (&str, &str), inputs: &[&str]) -> Policy {
    Policy {
        revision,
        outputs: BTreeMap::from([("a".to_string(), es_output(es, key))]),
        inputs: inputs.iter().map(|i| app_input(i, home, "a")).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_input_removed_with_a_backlog_then_readded_delivers_it() {
    last_input_removed_then_readded(KEY_A, "a").await;
}

/// Known bug (see the ignore reason): the re-added component's first OUTPUT unit config
/// gets the same (unit id, config idx) as the last run's, so the handoff's config is
/// skipped and the last run's records go with the new config's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bug: the same component re-added sends its handed-off backlog with the current key, not the handoff's (403, dead-lettered)"]
async fn the_last_input_removed_then_readded_with_a_rotated_key_delivers_the_backlog_with_the_old_key(
) {
    last_input_removed_then_readded(KEY_B, "b").await;
}

/// Input `app` of output `a` (key A) removed with a backlog, then re-added with `key`;
/// new events go to `logs-<dataset>-default`.
async fn last_input_removed_then_readded(key: (&str, &str), dataset: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es_two_keys().await;
    let home = tempfile::Builder::new().prefix("a9").tempdir().unwrap();
    let agent = start_with_shutdown(home.path(), "1s").await;
    agent
        .apply(&policy_a(1, home.path(), &es, KEY_A, &["app"]))
        .await
        .unwrap();
    healthy_units(&agent, "agent-shipper-a", &["app"]).await;
    es.pause();
    let backlog = publish_to(home.path(), "app", "a-backlog", "a", 1_000).await;

    // The last input goes: the component leaves the model (SIGTERM, work dir deleted).
    agent
        .apply(&policy_a(2, home.path(), &es, KEY_A, &[]))
        .await
        .unwrap();
    let state = left_the_model_with_a_handoff(&agent, home.path(), "agent-shipper-a").await;
    assert!(agent.component_ids().is_empty());
    es.resume().await.unwrap();

    // Re-added later (its output's key maybe rotated meanwhile): the old backlog goes
    // with the key it was accepted for (A), new events with the current key.
    agent
        .apply(&policy_a(3, home.path(), &es, key, &["app"]))
        .await
        .unwrap();
    healthy_units(&agent, "agent-shipper-a", &["app"]).await;
    let new = publish_to(home.path(), "app", "new", dataset, 500).await;
    all_indexed_with_their_keys(
        &es,
        &[state.join("dlq")],
        &[("a-backlog".into(), backlog), ("new".into(), new)],
    )
    .await;
    agent.stop().await;
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_input_of_several_removed_is_drained_before_stopped() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es_two_keys().await;
    let home = tempfile::Builder::new().prefix("a9").tempdir().unwrap();
    let agent = start_with_shutdown(home.path(), "1s").await;
    agent
        .apply(&policy_a(1, home.path(), &es, KEY_A, &["app", "more"]))
        .await
        .unwrap();
    let component = healthy_units(&agent, "agent-shipper-a", &["app", "more"]).await;
    es.pause();
    let backlog = publish_to(home.path(), "more", "more", "a", 1_000).await;

    agent
        .apply(&policy_a(2, home.path(), &es, KEY_A, &["app"]))
        .await
        .unwrap();
    // Elasticsearch comes back while the removed unit drains.
    es.resume().await.unwrap();
    component
        .wait_for(WAIT, "the removed unit STOPPED", |e| {
            matches!(e, AgentEvent::UnitObserved { id, state: State::Stopped, .. } if id == "agent-shipper-a-more")
        })
        .await
        .unwrap();
    assert_eq!(
        es.loadgen_counts("more").len(),
        1_000,
        "the removed input's backlog is delivered before it reports STOPPED"
    );
    let state = home.path().join(STATE_ROOT).join("agent-shipper-a");
    all_indexed_with_their_keys(&es, &[state.join("dlq")], &[("more".into(), backlog)]).await;
    assert_eq!(agent.component_ids(), ["agent-shipper-a".to_string()]);
    agent.stop().await;
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_in_place_sends_old_events_with_the_old_key_and_new_with_the_new() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let es = mock_es_two_keys().await;
    let home = tempfile::Builder::new().prefix("a9").tempdir().unwrap();
    let agent = start_with_shutdown(home.path(), "1s").await;
    agent
        .apply(&policy_a(1, home.path(), &es, KEY_A, &["app"]))
        .await
        .unwrap();
    let component = healthy_units(&agent, "agent-shipper-a", &["app"]).await;
    let output_idx = component
        .observed("agent-shipper-a", UnitType::Output)
        .unwrap()
        .idx;
    es.pause();
    let old = publish_to(home.path(), "app", "old", "a", 1_000).await;

    // Fleet rotates the output's key: the OUTPUT unit changes in place (same process).
    agent
        .apply(&policy_a(2, home.path(), &es, KEY_B, &["app"]))
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = component
            .observed("agent-shipper-a", UnitType::Output)
            .unwrap();
        if seen.idx > output_idx && seen.state == State::Healthy {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotation not applied: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    es.resume().await.unwrap();
    let new = publish_to(home.path(), "app", "new", "b", 500).await;
    let state = home.path().join(STATE_ROOT).join("agent-shipper-a");
    all_indexed_with_their_keys(
        &es,
        &[state.join("dlq")],
        &[("old".into(), old), ("new".into(), new)],
    )
    .await;
    assert_eq!(agent.component_ids(), ["agent-shipper-a".to_string()]);
    agent.stop().await;
    es.stop().await;
}
