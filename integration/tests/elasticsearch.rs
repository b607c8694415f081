//! End-to-end: the real binary shipping to mock-es with the Elasticsearch output.

mod common;

use agent_shipper::dlq::{DlqEntry, DlqReader};
use agent_shipper::proto::agent::{State, UnitType};
use agent_shipper::proto::shipper::messages::{value::Kind, Event, Value};
use agent_shipper::proto::shipper::PublishRequest;
use base64::Engine;
use common::{output_unit, revision, Harness, WAIT};
use integration::agent::AgentEvent;
use integration::loadgen::{self, LoadgenOptions, LoadgenReport};
use integration::mock_es::{Faults, MockEs, MockEsOptions};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const KEY_ID: &str = "shipper-key";
const KEY_SECRET: &str = "s3cr3t-Value-9f8e7d";

fn api_key() -> String {
    format!("{KEY_ID}:{KEY_SECRET}")
}

async fn mock_es() -> MockEs {
    let es = MockEs::start(MockEsOptions::default()).await.unwrap();
    es.add_api_key(KEY_ID, KEY_SECRET, &["logs-*-default"]);
    es
}

/// A standalone shipper with its stderr collected.
struct Shipper {
    child: tokio::process::Child,
    dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
    drain: tokio::task::JoinHandle<()>,
}

impl Shipper {
    /// Starts `agent-shipper run` with `output` (the Elasticsearch block) and waits for its
    /// Producer API.
    async fn start(output: serde_json::Value) -> Shipper {
        let dir = tempfile::Builder::new().prefix("shp").tempdir().unwrap();
        let mut config = output;
        config["server"] = json!(format!("unix://{}/s.sock", dir.path().display()));
        config["dlq"] = json!({"flush_interval": "200ms"});
        let path = dir.path().join("shipper.yml");
        std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
        let mut child = tokio::process::Command::new(integration::shipper_binary().unwrap())
            .arg("-E")
            .arg(format!("path.data={}", dir.path().join("data").display()))
            .args(["run", "-c"])
            .arg(&path)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let collected = logs.clone();
        let drain = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Producer API listening") {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
                collected.lock().unwrap().push(line);
            }
        });
        let up = tokio::time::timeout(WAIT, ready_rx).await;
        assert!(
            matches!(up, Ok(Ok(()))),
            "the Producer API did not come up: {:?}",
            logs.lock().unwrap()
        );
        Shipper {
            child,
            dir,
            logs,
            drain,
        }
    }

    fn server(&self) -> String {
        format!("unix://{}/s.sock", self.dir.path().display())
    }

    fn dlq_dir(&self) -> PathBuf {
        self.dir.path().join("data").join("dlq")
    }

    /// SIGTERM; returns whether it exited 0, and its whole log.
    async fn stop(mut self) -> (bool, Vec<String>, tempfile::TempDir) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(25), self.child.wait())
            .await
            .expect("exits within 25 s of SIGTERM")
            .unwrap();
        let _ = tokio::time::timeout(WAIT, self.drain).await;
        let logs = self.logs.lock().unwrap().clone();
        (status.success(), logs, self.dir)
    }
}

fn es_output(es: &MockEs, extra: serde_json::Value) -> serde_json::Value {
    let mut config = json!({"type": "elasticsearch", "hosts": [es.url()], "api_key": api_key()});
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    config
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
async fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish(server: &str, run: &str, dataset: &str, events: u64) -> LoadgenReport {
    let mut options = LoadgenOptions::new(server, "input-1", events);
    options.run = run.into();
    options.dataset = dataset.into();
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(report.promised.len() as u64, events, "{report:?}");
    report
}

/// Every promised event of `run` is indexed exactly once.
async fn assert_indexed_once(es: &MockEs, run: &str, report: &LoadgenReport) {
    eventually(
        Duration::from_secs(60),
        "every promised event indexed",
        || {
            let counts = es.loadgen_counts(run);
            report.promised.iter().all(|seq| counts.contains_key(seq))
        },
    )
    .await;
    let counts = es.loadgen_counts(run);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "indexed more than once: {twice:?}");
    assert_eq!(counts.len(), report.promised.len());
}

/// Every dead-letter entry under `dir`, once `count` are visible (the head is sealed by
/// `flush_interval`).
async fn dead_letters(dir: &Path, count: usize) -> Vec<DlqEntry> {
    let mut entries = Vec::new();
    let mut reader = DlqReader::new(dir);
    let deadline = tokio::time::Instant::now() + WAIT;
    while entries.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {count} dead letters appeared",
            entries.len()
        );
        match reader.next_segment() {
            Ok(Some((_, segment))) => entries.extend(segment.into_iter().map(|(_, e)| e)),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    entries
}

fn assert_no_secret(what: &str, text: &str) {
    let header = base64::engine::general_purpose::STANDARD.encode(api_key());
    assert!(!text.contains(KEY_SECRET), "the api key is in {what}");
    assert!(!text.contains(&header), "the encoded api key is in {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_in_their_data_streams_as_documents_with_the_api_key_and_gzip() {
    let es = mock_es().await;
    let shipper = Shipper::start(es_output(&es, json!({"compression_level": 1}))).await;
    let alpha = publish(&shipper.server(), "alpha", "alpha", 1_000).await;
    let beta = publish(&shipper.server(), "beta", "beta", 500).await;
    assert_indexed_once(&es, "alpha", &alpha).await;
    assert_indexed_once(&es, "beta", &beta).await;

    let counts = es.counts();
    assert_eq!(counts.get("logs-alpha-default"), Some(&1_000));
    assert_eq!(counts.get("logs-beta-default"), Some(&500));
    let docs = es.documents("logs-beta-default");
    let (id, doc) = &docs[0];
    assert!(
        id.ends_with(&format!("-{}", beta.ids[0])),
        "_id {id} names the event id"
    );
    assert_eq!(
        doc["data_stream"],
        json!({"type": "logs", "dataset": "beta", "namespace": "default"})
    );
    assert_eq!(doc["loadgen"]["run"], "beta");
    assert_eq!(doc["message"].as_str().unwrap().len(), 200);
    let timestamp = doc["@timestamp"].as_str().unwrap();
    assert!(
        timestamp.starts_with("20") && timestamp.ends_with('Z'),
        "{timestamp}"
    );

    let expected_auth = format!(
        "ApiKey {}",
        base64::engine::general_purpose::STANDARD.encode(api_key())
    );
    let requests = es.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(
            request.authorization.as_deref(),
            Some(expected_auth.as_str())
        );
        assert_eq!(request.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/x-ndjson")
        );
        assert!(
            request.path.starts_with("/_bulk?filter_path="),
            "{}",
            request.path
        );
        assert_eq!(request.status, 200);
    }
    let (clean, logs, _dir) = shipper.stop().await;
    assert!(clean);
    assert_no_secret("the shipper's log", &logs.join("\n"));
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storms_of_429_5xx_and_resets_end_with_every_event_indexed_once() {
    let es = mock_es().await;
    es.set_faults(Faults {
        request_429_rate: 0.2,
        item_429_rate: 0.2,
        request_5xx_rate: 0.2,
        item_5xx_rate: 0.1,
        reset_rate: 0.1,
        ..Faults::default()
    });
    let shipper = Shipper::start(es_output(
        &es,
        json!({"bulk_max_size": 250, "workers": 2, "backoff": {"init": "10ms", "max": "200ms"}}),
    ))
    .await;
    let report = publish(&shipper.server(), "storm", "loadgen", 5_000).await;
    assert_indexed_once(&es, "storm", &report).await;
    let stats = es.stats();
    assert!(
        stats.rejected_429 > 0 && stats.errors_5xx > 0 && stats.resets > 0,
        "{stats:?}"
    );
    assert_eq!(stats.duplicates_indexed, 0);
    let (clean, logs, dir) = shipper.stop().await;
    assert!(clean);
    assert!(
        logs.iter().any(|l| l.contains("will retry")),
        "retries are logged"
    );
    let mut reader = DlqReader::new(&dir.path().join("data").join("dlq"));
    assert!(
        matches!(reader.next_segment(), Ok(None)),
        "nothing was dead-lettered"
    );
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_answered_409_counts_as_delivered() {
    let es = mock_es().await;
    // Index, then answer after the shipper has given up: it sends the same _ids again.
    es.set_faults(Faults {
        latency_after_index_ms: 2_000,
        ..Faults::default()
    });
    let shipper = Shipper::start(es_output(
        &es,
        json!({"timeout": "300ms", "backoff": {"init": "200ms", "max": "400ms"}}),
    ))
    .await;
    let report = publish(&shipper.server(), "resend", "loadgen", 300).await;
    eventually(WAIT, "the first send indexed", || es.stats().indexed >= 300).await;
    es.set_faults(Faults::default());
    eventually(WAIT, "the resend answered 409", || {
        es.stats().conflicts_409 >= 300
    })
    .await;
    assert_indexed_once(&es, "resend", &report).await;
    let (clean, logs, _dir) = shipper.stop().await;
    assert!(clean);
    let saved = logs
        .iter()
        .find(|l| l.contains("queue state saved"))
        .expect("the queue state is saved at shutdown");
    assert!(
        saved.contains("\"unacked_events\":0"),
        "409s are acknowledged as delivered: {saved}"
    );
    es.stop().await;
}

fn with_field(mut event: Event, key: &str, value: &str) -> Event {
    event
        .fields
        .get_or_insert_with(Default::default)
        .data
        .insert(
            key.into(),
            Value {
                kind: Some(Kind::StringValue(value.into())),
            },
        );
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_and_a_403_item_go_to_the_dlq_with_their_reasons_and_nothing_else_is_affected() {
    let es = mock_es().await;
    es.set_faults(Faults {
        reject_field: Some("bad_field".into()),
        ..Faults::default()
    });
    let shipper = Shipper::start(es_output(&es, json!({}))).await;
    let mut options = LoadgenOptions::new(&shipper.server(), "input-1", 0);
    options.run = "mixed".into();
    let mut events: Vec<Event> = (0..100)
        .map(|seq| loadgen::make_event(&options, seq))
        .collect();
    events[10] = with_field(events[10].clone(), "bad_field", "not a number");
    if let Some(ds) = events[20].data_stream.as_mut() {
        ds.namespace = "forbidden".into();
    }
    let mut client = loadgen::connect(&shipper.server()).await.unwrap();
    let reply = client
        .publish_events(PublishRequest {
            uuid: String::new(),
            events,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.accepted_count, 100);
    loadgen::wait_persisted(&mut client, &reply.uuid, reply.accepted_index, WAIT)
        .await
        .unwrap();

    let entries = dead_letters(&shipper.dlq_dir(), 2).await;
    let mut reasons: Vec<_> = entries
        .iter()
        .map(|e| (e.reason.status, e.reason.error_type.clone()))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            (Some(400), "mapper_parsing_exception".to_string()),
            (Some(403), "security_exception".to_string())
        ]
    );
    for entry in &entries {
        assert!(!entry.reason.message.is_empty());
        let event = <Event as prost::Message>::decode(entry.event.as_ref()).unwrap();
        let seq = match &event.fields.as_ref().unwrap().data["loadgen"].kind {
            Some(Kind::StructValue(s)) => match s.data["seq"].kind {
                Some(Kind::Uint64Value(seq)) => seq,
                _ => panic!("no seq"),
            },
            _ => panic!("no loadgen"),
        };
        assert!(seq == 10 || seq == 20, "dead-lettered event {seq}");
    }
    eventually(WAIT, "the other 98 indexed", || {
        es.loadgen_counts("mixed").len() == 98
    })
    .await;
    let counts = es.loadgen_counts("mixed");
    assert!(counts.values().all(|n| *n == 1));
    assert!(!counts.contains_key(&10) && !counts.contains_key(&20));
    let (clean, _, _) = shipper.stop().await;
    assert!(clean);
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_splits_the_request_and_an_event_too_large_alone_is_dead_lettered() {
    let es = mock_es().await;
    es.set_faults(Faults {
        max_request_bytes: Some(64 << 10),
        ..Faults::default()
    });
    let shipper = Shipper::start(es_output(&es, json!({"bulk_max_size": 1600}))).await;
    let report = publish(&shipper.server(), "split", "loadgen", 2_000).await;
    assert_indexed_once(&es, "split", &report).await;
    assert!(
        es.stats().too_large_413 > 0,
        "requests were too large at first"
    );

    let mut options = LoadgenOptions::new(&shipper.server(), "input-1", 1);
    options.run = "huge".into();
    options.event_bytes = 100 << 10;
    let huge = loadgen::run(&options).await.unwrap();
    assert_eq!(huge.promised.len(), 1);
    let entries = dead_letters(&shipper.dlq_dir(), 1).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].reason.status, Some(413));
    let (clean, _, _) = shipper.stop().await;
    assert!(clean);
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_down_degrades_the_output_unit_then_it_recovers_and_delivers_everything() {
    let es = mock_es().await;
    let h = Harness::start(|_| {}).await;
    let output = output_unit(es_output(
        &es,
        json!({"degraded_timeout": "1s", "backoff": {"init": "100ms", "max": "500ms"}}),
    ));
    h.agent.apply(&revision(
        1,
        vec![output, h.input_unit("input-a", "filestream-a")],
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

    es.pause();
    let mut options = LoadgenOptions::new(&h.socket(), "filestream-a", 300);
    options.run = "outage".into();
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(
        report.promised.len(),
        300,
        "the disk queue persists while ES is down"
    );
    let degraded = h
        .agent
        .wait_for(WAIT, "output DEGRADED", |e| {
            matches!(e, AgentEvent::UnitObserved { id, state: State::Degraded, .. } if id == "output-default")
        })
        .await
        .unwrap();
    let AgentEvent::UnitObserved { message, .. } = degraded else {
        unreachable!()
    };
    assert!(
        message.contains("cannot reach Elasticsearch") && message.contains(&es.url()),
        "the message says why: {message}"
    );
    assert_no_secret("the unit message", &message);

    es.resume().await.unwrap();
    h.agent
        .wait_for_count(WAIT, "output HEALTHY again", 2, |e| {
            matches!(e, AgentEvent::UnitObserved { id, state: State::Healthy, .. } if id == "output-default")
        })
        .await
        .unwrap();
    assert_indexed_once(&es, "outage", &report).await;

    let diagnostics = h.agent.diagnostics().await.unwrap();
    for file in &diagnostics.diagnostic {
        assert_no_secret(&file.filename, &String::from_utf8_lossy(&file.content));
    }
    assert_no_secret("the shipper's log", &h.shipper_logs().join("\n"));
    h.stop().await;
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_configured_ca_basic_auth_and_failover_past_a_dead_host() {
    let certs = integration::certs::AgentCerts::mint().unwrap();
    let es = MockEs::start(MockEsOptions {
        tls: Some(integration::mock_es::TlsIdentity {
            cert_pem: certs.server_cert_pem.clone(),
            key_pem: certs.server_key_pem.clone(),
        }),
        ..MockEsOptions::default()
    })
    .await
    .unwrap();
    es.add_user("shipper", "pa55word-xyz", &["logs-*-default"]);
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = ca_dir.path().join("ca.pem");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    let shipper = Shipper::start(json!({
        "type": "elasticsearch",
        "hosts": [format!("https://{dead}"), es.url()],
        "username": "shipper",
        "password": "pa55word-xyz",
        "ssl": {"certificate_authorities": [ca]},
    }))
    .await;
    let report = publish(&shipper.server(), "tls", "loadgen", 500).await;
    assert_indexed_once(&es, "tls", &report).await;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("shipper:pa55word-xyz")
    );
    assert!(es
        .requests()
        .iter()
        .all(|r| r.authorization.as_deref() == Some(basic.as_str())));
    let (clean, logs, _) = shipper.stop().await;
    assert!(clean);
    assert!(
        !logs.join("\n").contains("pa55word-xyz"),
        "the password is in the log"
    );

    // Without the CA the server is not trusted: nothing is sent, and the log says why.
    let untrusting = Shipper::start(json!({
        "type": "elasticsearch",
        "hosts": [es.url()],
        "username": "shipper",
        "password": "pa55word-xyz",
        "backoff": {"init": "50ms", "max": "100ms"},
    }))
    .await;
    let before = es.stats().requests;
    let mut options = LoadgenOptions::new(&untrusting.server(), "input-1", 10);
    options.run = "untrusted".into();
    loadgen::run(&options).await.unwrap();
    let logs = untrusting.logs.clone();
    eventually(WAIT, "a certificate error in the log", || {
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("will retry") && l.to_lowercase().contains("certificate"))
    })
    .await;
    assert_eq!(
        es.stats().requests,
        before,
        "no request reached the untrusted server"
    );
    let (clean, _, _) = untrusting.stop().await;
    assert!(clean);
    es.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_max_bytes_and_bulk_max_size_bound_each_request() {
    let es = mock_es().await;
    let shipper = Shipper::start(es_output(
        &es,
        json!({"bulk_max_bytes": "16KiB", "bulk_max_size": 1600, "compression_level": 0}),
    ))
    .await;
    let report = publish(&shipper.server(), "bytes", "loadgen", 2_000).await;
    assert_indexed_once(&es, "bytes", &report).await;
    let requests = es.requests();
    assert!(
        requests.len() > 2_000 * 400 / (16 << 10),
        "{} requests",
        requests.len()
    );
    for request in &requests {
        assert!(
            request.body_bytes <= 16 << 10,
            "{} bytes in one request",
            request.body_bytes
        );
    }
    let (clean, _, _) = shipper.stop().await;
    assert!(clean);

    let es_small = mock_es().await;
    let shipper = Shipper::start(es_output(&es_small, json!({"bulk_max_size": 50}))).await;
    let report = publish(&shipper.server(), "count", "loadgen", 500).await;
    assert_indexed_once(&es_small, "count", &report).await;
    assert!(es_small.requests().iter().all(|r| r.items <= 50));
    let (clean, _, _) = shipper.stop().await;
    assert!(clean);
    es.stop().await;
    es_small.stop().await;
}
