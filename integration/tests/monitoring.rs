//! End-to-end: `/stats`, `/metrics`, `/health`, the metrics log line and DIAGNOSTICS files
//! of the real binary under mock-agent, checked against what loadgen published and mock-es
//! indexed, during a drain and after it; and the real agent's own command line (`-E
//! logging.level`, `-E http.*`) with the `/shipper` and `/stats` figures its
//! self-monitoring scrapes.

mod common;

use agent_shipper::proto::agent::{action_response, State, UnitLogLevel, UnitType};
use bytes::Bytes;
use common::{revision, Harness, WAIT};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use integration::agent::{AgentEvent, UnitSpec};
use integration::loadgen::{self, LoadgenOptions};
use integration::mock_es::{MockEs, MockEsOptions};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

const KEY: (&str, &str) = ("monitor-key", "m0nitor-Secret-77e1");
const PASSWORD: &str = "never-Logged-pw-3c2b";

/// One GET over the monitoring unix socket: status and body.
async fn get(socket: &Path, path: &str) -> (u16, String) {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .unwrap_or_else(|err| panic!("connect {}: {err}", socket.display()));
    let (mut sender, connection) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    driver.abort();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn stats(socket: &Path) -> Value {
    let (status, body) = get(socket, "/stats").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `/metrics` parsed by an independent Prometheus parser: `name{labels}` → value.
async fn metrics(socket: &Path) -> HashMap<String, f64> {
    let (status, body) = get(socket, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|err| panic!("/metrics is not Prometheus text: {err}\n{body}"));
    let mut values = HashMap::new();
    for sample in scrape.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            other => panic!("{}: unexpected {other:?}", sample.metric),
        };
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        values.insert(format!("{}{{{}}}", sample.metric, labels.join(",")), value);
    }
    values
}

/// Polls `/stats` until `check` holds; returns the stats that satisfied it.
async fn stats_until(socket: &Path, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = stats(socket).await;
        if check(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last /stats: {stats:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn output(es: &MockEs) -> UnitSpec {
    UnitSpec {
        id: "output-es".into(),
        kind: UnitType::Output,
        config: json!({
            "type": "elasticsearch",
            "hosts": [es.url()],
            "api_key": format!("{}:{}", KEY.0, KEY.1),
            "bulk_max_size": 500,
            "backoff": {"init": "100ms", "max": "200ms"},
            "dlq": {"flush_interval": "200ms"},
        }),
        log_level: UnitLogLevel::Info,
    }
}

async fn publish(h: &Harness, input_id: &str, run: &str, events: u64) {
    let mut options = LoadgenOptions::new(&h.socket(), input_id, events);
    options.run = run.into();
    options.dataset = "app".into();
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(report.promised.len() as u64, events, "{:?}", report.refused);
}

fn unit<'a>(stats: &'a Value, id: &str) -> Option<&'a Value> {
    stats["units"].as_array()?.iter().find(|u| u["id"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_metrics_and_diagnostics_follow_a_drain_and_match_what_was_indexed() {
    let es = MockEs::start(MockEsOptions::default()).await.unwrap();
    es.add_api_key(KEY.0, KEY.1, &["logs-*-default"]);
    let socket_dir = tempfile::Builder::new().prefix("mon").tempdir().unwrap();
    let socket = socket_dir.path().join("monitor.sock");
    let address = format!("http.host=unix://{}", socket.display());
    let h = Harness::start(|options| {
        options.shipper_args = [
            "-E",
            "http.enabled=true",
            "-E",
            &address,
            "-E",
            "logging.metrics.period=1s",
        ]
        .map(String::from)
        .to_vec();
    })
    .await;
    h.agent.apply(&revision(
        1,
        vec![
            output(&es),
            h.input_unit("input-a", "filestream-a"),
            h.input_unit("input-b", "filestream-b"),
        ],
    ));
    h.agent
        .wait_for_states(
            WAIT,
            &[
                ("output-es", UnitType::Output),
                ("input-b", UnitType::Input),
            ],
            State::Healthy,
        )
        .await
        .unwrap();

    // Elasticsearch away: everything published waits in the queue.
    es.pause();
    publish(&h, "filestream-a", "a", 2_000).await;
    publish(&h, "filestream-b", "b", 1_000).await;
    let queued = stats_until(&socket, "3000 queued events", |s| {
        s["queue"]["events"] == 3_000
    })
    .await;
    assert_eq!(queued["queue"]["head"], 3_000, "{queued:#}");
    assert_eq!(queued["output"]["events_acked"], 0, "{queued:#}");
    let m = metrics(&socket).await;
    assert_eq!(m["agent_shipper_queue_events{queue=disk}"], 3_000.0);
    assert_eq!(
        m["agent_shipper_queue_written_events_total{queue=disk}"],
        3_000.0
    );
    assert_eq!(
        m["agent_shipper_unit_state{state=HEALTHY,unit_id=input-b,unit_type=input}"],
        1.0
    );

    // Revision 2 removes B: it drains its 1000 events while Elasticsearch is still away.
    h.agent.apply(&revision(
        2,
        vec![output(&es), h.input_unit("input-a", "filestream-a")],
    ));
    let draining = stats_until(&socket, "input-b draining", |s| {
        unit(s, "input-b").is_some_and(|u| u["state"] == "STOPPING")
            && s["drains"].as_array().is_some_and(|d| !d.is_empty())
    })
    .await;
    let drain = &draining["drains"][0];
    assert_eq!(drain["unit_id"], "input-b", "{draining:#}");
    assert_eq!(drain["pending_events"], 1_000, "{draining:#}");
    assert_eq!(drain["on_remove"], "drain", "{draining:#}");
    assert!(
        draining["queue"]["oldest_unacked_age_ms"].as_u64().unwrap() > 0,
        "{draining:#}"
    );
    let m = metrics(&socket).await;
    assert_eq!(
        m["agent_shipper_drain_pending_events{unit_id=input-b,unit_type=input}"],
        1_000.0
    );
    assert_eq!(
        m["agent_shipper_unit_state{state=STOPPING,unit_id=input-b,unit_type=input}"],
        1.0
    );
    let (health, body) = get(&socket, "/health").await;
    assert_eq!(
        health, 200,
        "units are not failed and the output is not yet degraded: {body}"
    );

    // Elasticsearch back: everything is delivered, B stops, the figures add up.
    es.resume().await.unwrap();
    let done = stats_until(&socket, "every event acknowledged", |s| {
        s["output"]["events_acked"] == 3_000 && s["queue"]["events"] == 0
    })
    .await;
    assert_eq!(
        es.stats().indexed,
        3_000,
        "mock-es indexed every event once"
    );
    assert_eq!(done["queue"]["acked"], 3_000, "{done:#}");
    assert_eq!(done["output"]["events_dead_lettered"], 0, "{done:#}");
    assert_eq!(done["dlq"]["entries"], 0, "{done:#}");
    let requests = done["output"]["requests"].as_u64().unwrap();
    let failures = done["output"]["request_failures"].as_u64().unwrap();
    let answered = es.stats().requests;
    // Failures (connection refused while mock-es was away) count as requests too: only
    // the successes carried the events, and each of them reached mock-es.
    assert!(
        failures > 0,
        "requests failed while Elasticsearch was away: {done:#}"
    );
    assert_eq!(
        requests - failures,
        answered,
        "successful requests are the ones mock-es answered: {done:#}"
    );
    assert!(
        answered >= 6,
        "3000 events at 500 per request: {answered} requests answered"
    );
    // The agent removes B once it saw STOPPED, so /stats may never show that state.
    h.agent
        .wait_for(WAIT, "input-b STOPPED", |e| {
            matches!(e, AgentEvent::UnitObserved { id, state, .. } if id == "input-b" && *state == State::Stopped)
        })
        .await
        .unwrap();
    let after = stats_until(&socket, "no drain left", |s| {
        s["drains"].as_array().is_some_and(|d| d.is_empty())
    })
    .await;
    let mut revisions: Vec<(String, u64)> = after["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_string(),
                u["revision"].as_u64().unwrap(),
            )
        })
        .collect();
    revisions.sort();
    // The revision whose config each unit runs: revision 2 changed neither config, so the
    // agent sent none again (a unit's config goes only with a new idx), and both still run
    // what revision 1 gave them.
    assert_eq!(
        revisions,
        vec![("input-a".to_string(), 1), ("output-es".to_string(), 1)],
        "{after:#}"
    );
    let m = metrics(&socket).await;
    assert_eq!(m["agent_shipper_output_events_acked_total{}"], 3_000.0);
    assert_eq!(
        m["agent_shipper_queue_acked_events_total{queue=disk}"],
        3_000.0
    );
    assert_eq!(m["agent_shipper_queue_events{queue=disk}"], 0.0);
    assert!(m["agent_shipper_output_requests_total{}"] >= requests as f64);
    assert_eq!(m["agent_shipper_dlq_events{}"], 0.0);

    // The metrics lines' deltas add up to what was written and acknowledged.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lines: Vec<Value> = h
            .shipper_logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["log.logger"] == "agent_shipper::metrics")
            .collect();
        let sum = |key: &str| lines.iter().filter_map(|l| l[key].as_u64()).sum::<u64>();
        if sum("events_written") == 3_000 && sum("events_acked") == 3_000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics lines do not add up to 3000 written and acked: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // DIAGNOSTICS: the four files, and no secret in any of them.
    let diagnostics = h.agent.diagnostics().await.unwrap();
    assert_eq!(diagnostics.status, action_response::Status::Success as i32);
    let file = |name: &str| -> Value {
        let found = diagnostics
            .diagnostic
            .iter()
            .find(|d| d.filename == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        let text = String::from_utf8(found.content.clone()).unwrap();
        assert!(!text.contains(KEY.1), "{name} holds the API key: {text}");
        serde_json::from_str(&text).unwrap()
    };
    let stats_file = file("stats.json");
    assert_eq!(stats_file["output"]["events_acked"], 3_000);
    let config = file("config.json");
    assert_eq!(
        config["output"]["config"]["api_key"], "[redacted]",
        "{config:#}"
    );
    assert_eq!(
        config["output"]["config"]["bulk_max_size"], 500,
        "{config:#}"
    );
    let transitions = file("transitions.json");
    let b: Vec<(String, String)> = transitions
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["unit_id"] == "input-b")
        .map(|t| {
            (
                t["from"].as_str().unwrap().to_string(),
                t["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let stopping = b.iter().position(|t| t.1 == "STOPPING").expect("STOPPING");
    let stopped = b.iter().position(|t| t.1 == "STOPPED").expect("STOPPED");
    assert!(stopping < stopped, "{b:?}");
    assert!(file("units.json")["units"].is_array());
    h.stop().await;
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_503_when_the_output_degrades_and_config_errors_name_the_setting() {
    let es = MockEs::start(MockEsOptions::default()).await.unwrap();
    es.add_user("shipper", PASSWORD, &["logs-*-default"]);
    let socket_dir = tempfile::Builder::new().prefix("mon").tempdir().unwrap();
    let socket = socket_dir.path().join("monitor.sock");
    let address = format!("monitoring.address={}", socket.display());
    let h = Harness::start(|options| {
        options.shipper_args = ["-E", "monitoring.enabled=true", "-E", &address]
            .map(String::from)
            .to_vec();
    })
    .await;
    let mut spec = output(&es);
    spec.config = json!({
        "type": "elasticsearch", "hosts": [es.url()],
        "username": "shipper", "password": PASSWORD,
        "degraded_timeout": "1s", "backoff": {"init": "100ms", "max": "200ms"},
    });
    h.agent.apply(&revision(
        1,
        vec![spec, h.input_unit("input-a", "filestream-a")],
    ));
    h.agent
        .wait_for_states(WAIT, &[("output-es", UnitType::Output)], State::Healthy)
        .await
        .unwrap();
    es.pause();
    publish(&h, "filestream-a", "a", 10).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let body = loop {
        let (status, body) = get(&socket, "/health").await;
        if status == 503 {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "never 503: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "unhealthy");
    assert!(
        health["problems"][0]
            .as_str()
            .unwrap()
            .contains("output-es degraded"),
        "{health}"
    );
    let (status, _) = get(&socket, "/nope").await;
    assert_eq!(status, 404);
    es.resume().await.unwrap();
    stats_until(&socket, "10 delivered", |s| {
        s["output"]["events_acked"] == 10
    })
    .await;
    let (status, _) = get(&socket, "/health").await;
    assert_eq!(status, 200);
    let diagnostics = h.agent.diagnostics().await.unwrap();
    for file in &diagnostics.diagnostic {
        let text = String::from_utf8_lossy(&file.content);
        assert!(
            !text.contains(PASSWORD),
            "{} holds the password",
            file.filename
        );
    }
    let logs = h.shipper_logs().join("\n");
    assert!(!logs.contains(PASSWORD), "a log line holds the password");
    // The old names still work, with one warning each naming the Beats name.
    let lines = h.shipper_logs();
    for (old, new) in [
        ("monitoring.enabled", "http.enabled"),
        ("monitoring.address", "http.host and http.port"),
    ] {
        let needle = format!("-E {old} is deprecated; write {new}");
        let warnings: Vec<&String> = lines.iter().filter(|l| l.contains(&needle)).collect();
        assert_eq!(warnings.len(), 1, "{old}: {warnings:#?}");
        assert!(
            warnings[0].contains(r#""log.level":"warn""#),
            "{}",
            warnings[0]
        );
    }
    h.stop().await;
    es.stop().await;

    // A bad value is refused at start, naming the setting.
    let output = tokio::process::Command::new(integration::shipper_binary().unwrap())
        .args(["-E", "monitoring.enabled=maybe", "dlq", "stats"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("monitoring.enabled"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_own_command_line_connects_and_serves_what_its_monitoring_scrapes() {
    // Exactly what Elastic Agent 8.15 runs for a shipper with self-monitoring on (the
    // mock agent adds `-E path.data=<dir>`): spec args, then the monitoring flags.
    let socket_dir = tempfile::Builder::new().prefix("mon").tempdir().unwrap();
    let socket = socket_dir.path().join("m.sock");
    let host = format!("http.host=unix://{}", socket.display());
    let h = Harness::start(|options| {
        options.shipper_args = [
            "-E",
            "logging.level=info",
            "-E",
            "http.enabled=true",
            "-E",
            &host,
            "-E",
            "http.pprof.enabled=true",
            "-E",
            "http.buffer.enabled=true",
            "-E",
            "logging.metrics.enabled=false",
        ]
        .map(String::from)
        .to_vec();
    })
    .await;
    h.agent.apply(&revision(
        1,
        vec![h.output_unit(), h.input_unit("input-a", "filestream-a")],
    ));
    h.agent
        .wait_for_states(
            WAIT,
            &[
                ("output-default", UnitType::Output),
                ("input-a", UnitType::Input),
            ],
            State::Healthy,
        )
        .await
        .unwrap();
    publish(&h, "filestream-a", "a", 100).await;
    let delivered = stats_until(&socket, "100 events written", |s| {
        s["output"]["events_acked"] == 100
    })
    .await;

    // /stats: our figures, plus what the agent copies into system.process.*.
    assert_eq!(delivered["queue"]["acked"], 100, "{delivered:#}");
    let beat = &delivered["beat"];
    assert!(beat["cpu"]["total"]["value"].is_u64(), "{delivered:#}");
    assert!(beat["cpu"]["total"]["time"]["ms"].is_u64(), "{delivered:#}");
    assert!(
        beat["memstats"]["memory_sys"].as_u64().unwrap() > 1 << 20,
        "{beat:#}"
    );
    assert!(beat["handles"]["open"].as_u64().unwrap() > 0, "{beat:#}");
    assert!(
        beat["handles"]["limit"]["soft"].as_u64().unwrap() > 0,
        "{beat:#}"
    );
    assert_eq!(beat["info"]["name"], "agent-shipper");

    // /shipper: the Go shipper's queue figures under `shipper`.
    let (status, body) = get(&socket, "/shipper").await;
    assert_eq!(status, 200, "{body}");
    let shipper: Value = serde_json::from_str(&body).unwrap();
    let queue = &shipper["shipper"]["queue"];
    assert!(queue["max_level"].as_u64().unwrap() > 0, "{shipper:#}");
    assert!(queue["current_level"].is_u64(), "{shipper:#}");
    assert_eq!(queue["is_full"], false, "{shipper:#}");
    assert_eq!(queue["limit_reached_count"], 0, "{shipper:#}");
    for path in ["/metrics", "/health"] {
        let (status, body) = get(&socket, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }

    // One warning names the flags this shipper does not use; no other warning about -E.
    let lines = h.shipper_logs();
    let about_flags: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("http.pprof.enabled") || l.contains("http.buffer.enabled"))
        .collect();
    assert_eq!(about_flags.len(), 1, "{about_flags:#?}");
    let warning: Value = serde_json::from_str(about_flags[0]).unwrap();
    assert_eq!(warning["log.level"], "warn");
    assert_eq!(
        warning["keys"], "http.pprof.enabled, http.buffer.enabled",
        "{warning}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("-E") && l.contains("deprecated")),
        "{lines:#?}"
    );
    h.stop().await;
    assert!(!socket.exists(), "the socket is removed at exit");
}
