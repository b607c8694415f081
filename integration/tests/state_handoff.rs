//! End-to-end (issue 15): under Elastic Agent 9.x a component that leaves the policy gets
//! SIGTERM and then its `path.data` is deleted. Its backlog lives under the state root
//! (`-E path.state`, the default beside `path.data` under 9.x) with a `handoff.json`; the
//! next component (another output) adopts it and delivers every event with the OLD
//! output's key, while its own events go with its own key. Lost 0, each event once.
//!
//! Each key may write only its own data stream, so an event sent with the other key is
//! answered 403 (and dead-lettered): the counts prove which key sent what.

mod common;

use agent_shipper::proto::agent::{State, UnitLogLevel, UnitType};
use common::{revision, Harness, WAIT};
use integration::agent::{AgentEvent, MockAgent, MockAgentOptions, UnitSpec};
use integration::loadgen::{self, LoadgenOptions};
use integration::mock_es::{MockEs, MockEsOptions};
use integration::scenario::check_delivery;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const KEY_A: (&str, &str) = ("key-a", "a-secret-7f21");
const KEY_B: (&str, &str) = ("key-b", "b-secret-c04d");

/// One component of the agent: a mock agent running one shipper as
/// `agent-shipper-<name>`, with `path.data = <home>/run/agent-shipper-<name>` and the
/// state root `<home>/run/agent-shipper.state` (the 9.x default, given explicitly here).
async fn component(home: &Path, name: &str, shutdown_timeout: &str) -> Harness {
    let id = format!("agent-shipper-{name}");
    let data = home.join("run").join(&id);
    let state = home.join("run").join("agent-shipper.state");
    let socket = home.join(format!("{name}.sock"));
    let dir = tempfile::Builder::new().prefix("shp").tempdir().unwrap();
    let mut options = MockAgentOptions::new(integration::shipper_binary().unwrap(), data);
    options.component_id = id;
    options.agent_server = format!("unix://{}", socket.display());
    options.restart_on_exit = false;
    options.shipper_args = vec![
        "-E".into(),
        format!("path.state={}", state.display()),
        "-E".into(),
        format!("shutdown_timeout={shutdown_timeout}"),
    ];
    let agent = MockAgent::start(options).await.expect("mock agent starts");
    Harness { agent, dir }
}

fn output(id: &str, es: &MockEs, key: (&str, &str)) -> UnitSpec {
    UnitSpec {
        id: id.into(),
        kind: UnitType::Output,
        config: json!({
            "type": "elasticsearch",
            "hosts": [es.url()],
            "api_key": format!("{}:{}", key.0, key.1),
            "bulk_max_size": 200,
            "backoff": {"init": "100ms", "max": "300ms"},
            "dlq": {"flush_interval": "200ms"},
        }),
        log_level: UnitLogLevel::Info,
    }
}

fn input(h: &Harness, unit_id: &str) -> UnitSpec {
    UnitSpec {
        id: unit_id.into(),
        kind: UnitType::Input,
        config: json!({"id": unit_id, "type": "shipper", "server": h.agent.agent_server(), "units": [{"id": "app"}]}),
        log_level: UnitLogLevel::Info,
    }
}

async fn publish(h: &Harness, run: &str, events: u64) -> Vec<u64> {
    let mut options = LoadgenOptions::new(&h.agent.agent_server(), "app", events);
    options.run = run.into();
    options.dataset = run.into();
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(report.promised.len() as u64, events, "{:?}", report.refused);
    report.promised
}

async fn mock_es() -> MockEs {
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

/// Starts component A with its output unreachable and queues `events` under it.
async fn a_with_a_backlog(
    home: &Path,
    es: &MockEs,
    events: u64,
    stop: &str,
) -> (Harness, Vec<u64>) {
    let a = component(home, "a", stop).await;
    a.agent.apply(&revision(
        1,
        vec![
            output("agent-shipper-a", es, KEY_A),
            input(&a, "agent-shipper-a-in"),
        ],
    ));
    a.agent
        .wait_for_states(
            WAIT,
            &[("agent-shipper-a-in", UnitType::Input)],
            State::Healthy,
        )
        .await
        .unwrap();
    es.pause();
    let promised = publish(&a, "a", events).await;
    (a, promised)
}

/// What the agent does once the old process has stopped: delete its work directory.
fn delete_work_dir(home: &Path, name: &str) -> PathBuf {
    let data = home.join("run").join(format!("agent-shipper-{name}"));
    std::fs::remove_dir_all(&data).unwrap();
    data
}

/// Starts B on the other output and checks the end state: every A event once with key A,
/// every B event once with key B, nothing lost, A's queue and handoff gone.
async fn b_adopts_and_delivers(home: &Path, es: &MockEs, b: Harness, a_events: Vec<u64>) {
    b.agent.apply(&revision(
        2,
        vec![
            output("agent-shipper-b", es, KEY_B),
            input(&b, "agent-shipper-b-in"),
        ],
    ));
    b.agent
        .wait_for_states(
            WAIT,
            &[("agent-shipper-b-in", UnitType::Input)],
            State::Healthy,
        )
        .await
        .unwrap();
    let b_events = publish(&b, "b", 300).await;
    let state = home.join("run").join("agent-shipper.state");
    let promised = vec![("a".to_string(), a_events), ("b".to_string(), b_events)];
    let total: u64 = promised.iter().map(|(_, s)| s.len() as u64).sum();
    let a_dir = state.join("agent-shipper-a");
    let deadline = Instant::now() + Duration::from_secs(60);
    let check = loop {
        let check = check_delivery(es, &a_dir.join("dlq"), &promised);
        let cleaned = !a_dir.join("handoff.json").exists() && !a_dir.join("queue").exists();
        if (check.indexed == total && cleaned)
            || check.dead_lettered > 0
            || Instant::now() > deadline
        {
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
        "every A event indexed once with key A, every B event with key B: {check:?}"
    );
    assert_eq!(
        es.stats().forbidden_403,
        0,
        "no event sent with the other key"
    );
    assert!(
        !a_dir.join("handoff.json").exists(),
        "the adopted directory's handoff (a secret) is removed once delivered"
    );
    assert!(
        !a_dir.join("queue").exists(),
        "the adopted queue is removed"
    );
    let logs = b.shipper_logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("adopting a queue another component left")),
        "the adoption is logged"
    );
    assert!(logs.iter().any(|l| l.contains("adopted queue delivered")));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_left_by_a_stopped_component_is_adopted_and_sent_with_its_own_key() {
    let es = mock_es().await;
    let home = tempfile::Builder::new().prefix("home").tempdir().unwrap();
    let (a, a_events) = a_with_a_backlog(home.path(), &es, 1_000, "1s").await;
    let exited = a.stop().await;
    assert!(
        matches!(exited, AgentEvent::ShipperExited { .. }),
        "A exits after SIGTERM: {exited:?}"
    );
    let a_dir = home.path().join("run/agent-shipper.state/agent-shipper-a");
    assert!(
        a_dir.join("handoff.json").exists(),
        "A left its backlog with a handoff"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(a_dir.join("handoff.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the handoff is owner-only");
    delete_work_dir(home.path(), "a");
    es.resume().await.unwrap();
    let b = component(home.path(), "b", "5s").await;
    b_adopts_and_delivers(home.path(), &es, b, a_events).await;
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_started_while_the_old_one_stops_waits_for_it_then_adopts() {
    let es = mock_es().await;
    let home = tempfile::Builder::new().prefix("home").tempdir().unwrap();
    let (a, a_events) = a_with_a_backlog(home.path(), &es, 1_000, "4s").await;
    assert!(a.agent.terminate_shipper());
    let a_dir = home.path().join("run/agent-shipper.state/agent-shipper-a");
    let deadline = Instant::now() + WAIT;
    while !a_dir.join("handoff.json").exists() {
        assert!(Instant::now() < deadline, "A writes its handoff at SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // B starts while A still delivers for its shutdown_timeout (Elasticsearch is down).
    let b = component(home.path(), "b", "5s").await;
    let a_pid = a.agent.shipper_pid();
    let waiting = b
        .agent
        .wait_for(WAIT, "B waits for A's directory", |e| {
            matches!(e, AgentEvent::ShipperLog(line) if line.contains("waiting for") && line.contains("agent-shipper-a") && line.contains("held by agent-shipper pid"))
        })
        .await
        .unwrap();
    if let (Some(pid), AgentEvent::ShipperLog(line)) = (a_pid, &waiting) {
        assert!(line.contains(&format!("pid {pid}")), "{line}");
    }
    a.agent
        .wait_for(WAIT, "A's exit", |e| {
            matches!(e, AgentEvent::ShipperExited { .. })
        })
        .await
        .unwrap();
    drop(a);
    delete_work_dir(home.path(), "a");
    es.resume().await.unwrap();
    b_adopts_and_delivers(home.path(), &es, b, a_events).await;
    es.stop().await;
}

/// The agent restarts the same component (same id, same directory) while the old process
/// still stops: the new one reports its units STARTING with "waiting for <dir>: held by
/// agent-shipper pid N" (not FAILED), takes the directory once the old one exits, and
/// delivers the old backlog with the old run's handoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_component_waits_for_its_own_directory_then_delivers_the_backlog() {
    let es = mock_es().await;
    let home = tempfile::Builder::new().prefix("home").tempdir().unwrap();
    let (old, events) = a_with_a_backlog(home.path(), &es, 1_000, "4s").await;
    let old_pid = old.agent.shipper_pid().expect("the old process runs");
    assert!(old.agent.terminate_shipper());
    let new = component(home.path(), "a", "5s").await;
    new.agent.apply(&revision(
        2,
        vec![
            output("agent-shipper-a", &es, KEY_A),
            input(&new, "agent-shipper-a-in"),
        ],
    ));
    let reported = new
        .agent
        .wait_for(WAIT, "the input unit reports the wait", |e| {
            matches!(e, AgentEvent::UnitObserved { id, state: State::Starting, message, .. }
                if id == "agent-shipper-a-in" && message.contains("waiting for") && message.contains("held by agent-shipper pid"))
        })
        .await
        .unwrap();
    if let AgentEvent::UnitObserved { message, .. } = &reported {
        assert!(message.contains(&format!("pid {old_pid}")), "{message}");
    }
    assert!(
        !new.agent.history().iter().any(|e| matches!(
            e,
            AgentEvent::UnitObserved {
                state: State::Failed,
                ..
            }
        )),
        "a held directory is a wait, not a failure"
    );
    old.agent
        .wait_for(WAIT, "the old process's exit", |e| {
            matches!(e, AgentEvent::ShipperExited { .. })
        })
        .await
        .unwrap();
    drop(old);
    es.resume().await.unwrap();
    new.agent
        .wait_for_states(
            WAIT,
            &[("agent-shipper-a-in", UnitType::Input)],
            State::Healthy,
        )
        .await
        .unwrap();
    let promised = vec![("a".to_string(), events)];
    let dir = home.path().join("run/agent-shipper.state/agent-shipper-a");
    let deadline = Instant::now() + Duration::from_secs(60);
    let check = loop {
        let check = check_delivery(&es, &dir.join("dlq"), &promised);
        if check.indexed == 1_000 || check.dead_lettered > 0 || Instant::now() > deadline {
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
        (1_000, 0, 0, 0),
        "{check:?}"
    );
    let deadline = Instant::now() + WAIT;
    while dir.join("handoff.json").exists() {
        assert!(
            Instant::now() < deadline,
            "the handoff (a secret) is removed once its events are delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    new.stop().await;
    es.stop().await;
}
