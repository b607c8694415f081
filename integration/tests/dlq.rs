//! End-to-end: the `agent-shipper dlq` commands against a running standalone shipper.

use agent_shipper::dlq::{
    DeadLetterQueue, DlqEntry, DlqReader, DlqSettings, Reason, StoragePolicy, SystemClock,
};
use integration::loadgen::{self, LoadgenOptions};
use integration::mock_es::{Faults, MockEs, MockEsOptions};
use prost::Message;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const WAIT: Duration = Duration::from_secs(30);

async fn cli(data: &Path, args: &[&str]) -> std::process::Output {
    let output = tokio::process::Command::new(integration::shipper_binary().unwrap())
        .arg("-E")
        .arg(format!("path.data={}", data.display()))
        .args(args)
        .stdin(Stdio::null())
        .output();
    tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("CLI finished in time")
        .unwrap()
}

fn lines(output: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The loadgen seqs of listed entries, in order.
fn seqs(listed: &[serde_json::Value]) -> Vec<u64> {
    listed
        .iter()
        .map(|l| l["event"]["loadgen"]["seq"].as_u64().unwrap())
        .collect()
}

/// Writes `entries` to the DLQ in `dir` (no shipper running), sealed so the CLI sees them.
fn store(dir: &Path, entries: &[DlqEntry]) {
    let store = DeadLetterQueue::open(
        DlqSettings {
            dir: dir.to_path_buf(),
            max_bytes: 1 << 30,
            storage_policy: StoragePolicy::DropNewer,
            retain_age: None,
            flush_interval: Duration::from_secs(5),
        },
        Arc::new(SystemClock),
    )
    .unwrap();
    for chunk in entries.chunks(150) {
        assert_eq!(store.write(chunk).written, chunk.len());
        store.flush();
    }
}

/// Dead-letter entries for loadgen seqs `seqs` of `options`, with `reason`.
fn entries_for(
    options: &LoadgenOptions,
    seqs: std::ops::Range<u64>,
    reason: Reason,
) -> Vec<DlqEntry> {
    seqs.map(|seq| DlqEntry {
        event: loadgen::make_event(options, seq).encode_to_vec().into(),
        reason: reason.clone(),
        input_unit: "input-b".into(),
        output_unit: "output-default".into(),
        revision: 2,
        dead_lettered_at_ms: 1_700_000_000_000,
    })
    .collect()
}

fn forbidden() -> Reason {
    Reason {
        status: Some(403),
        error_type: "security_exception".into(),
        message: "action [create] is unauthorized".into(),
    }
}

fn unmappable() -> Reason {
    Reason {
        status: Some(400),
        error_type: "mapper_parsing_exception".into(),
        message: "failed to parse field [loadgen]".into(),
    }
}

/// `agent-shipper run -c <config>` with its stderr collected; ready once it listens.
struct Standalone {
    child: tokio::process::Child,
    logs: Arc<Mutex<Vec<String>>>,
    drain: tokio::task::JoinHandle<()>,
}

impl Standalone {
    async fn start(data: &Path, config: &Path) -> Standalone {
        let mut child = tokio::process::Command::new(integration::shipper_binary().unwrap())
            .arg("-E")
            .arg(format!("path.data={}", data.display()))
            .args(["run", "-c"])
            .arg(config)
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
        Standalone { child, logs, drain }
    }

    /// SIGTERM; returns whether it exited 0, and its whole log.
    async fn stop(mut self) -> (bool, Vec<String>) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(25), self.child.wait())
            .await
            .expect("exits within 25 s of SIGTERM")
            .unwrap();
        let _ = tokio::time::timeout(WAIT, self.drain).await;
        let logs = self.logs.lock().unwrap().clone();
        (status.success(), logs)
    }
}

/// A standalone shipper whose Elasticsearch output (mock-es refusing every loadgen event
/// with a 400 `mapper_parsing_exception`) has the `dlq` block `dlq`.
async fn shipper_with_refused_events(
    dir: &Path,
    es: &MockEs,
    dlq: serde_json::Value,
) -> (Standalone, String, PathBuf) {
    es.add_api_key("dlq-key", "dlq-Secret-4e1a", &["logs-*-default"]);
    es.set_faults(Faults {
        reject_field: Some("loadgen".into()),
        ..Faults::default()
    });
    let socket = dir.join("s.sock");
    let config = dir.join("shipper.yml");
    let body = json!({
        "server": format!("unix://{}", socket.display()),
        "type": "elasticsearch",
        "hosts": [es.url()],
        "api_key": "dlq-key:dlq-Secret-4e1a",
        "dlq": dlq,
    });
    std::fs::write(&config, serde_json::to_string(&body).unwrap()).unwrap();
    let data = dir.join("data");
    let shipper = Standalone::start(&data, &config).await;
    (
        shipper,
        format!("unix://{}", socket.display()),
        data.join("dlq"),
    )
}

/// Every entry in the DLQ directory's sealed segments (the shipper may delete segments
/// meanwhile: one that vanishes mid-read is skipped).
fn dlq_entries(dir: &Path) -> Vec<DlqEntry> {
    let mut reader = DlqReader::new(dir);
    let mut found = Vec::new();
    for _ in 0..100_000 {
        match reader.next_segment() {
            Ok(Some((_, segment))) => found.extend(segment.into_iter().map(|(_, e)| e)),
            Ok(None) => break,
            Err(_) => continue,
        }
    }
    found
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_entries_reach_the_output_exactly_once_and_leave_the_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 300 events a previous run could not deliver: 150 of data stream
    // logs-loadgen-default refused 403, 150 of logs-other-default refused 400.
    let options = {
        let mut o = LoadgenOptions::new("", "filestream-a", 300);
        o.run = "replay".into();
        o
    };
    let other = {
        let mut o = options.clone();
        o.dataset = "other".into();
        o
    };
    let mut written = entries_for(&options, 0..150, forbidden());
    written.extend(entries_for(&other, 150..300, unmappable()));
    store(&data.join("dlq"), &written);

    let listed = cli(&data, &["dlq", "list"]).await;
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let entries = lines(&listed);
    assert_eq!(entries.len(), 300);
    assert_eq!(entries[0]["reason"]["status"], 403);
    assert_eq!(entries[0]["data_stream"], "logs-loadgen-default");
    assert_eq!(entries[0]["event"]["loadgen"]["seq"], 0);
    assert_eq!(entries[299]["data_stream"], "logs-other-default");
    // Filters keep what matches and only that.
    let by_reason = lines(&cli(&data, &["dlq", "list", "--reason", "mapper_parsing"]).await);
    assert_eq!(seqs(&by_reason), (150..300).collect::<Vec<u64>>());
    assert!(by_reason
        .iter()
        .all(|l| l["reason"]["error_type"] == "mapper_parsing_exception"));
    let by_message = lines(&cli(&data, &["dlq", "list", "--reason", "unauthorized"]).await);
    assert_eq!(seqs(&by_message), (0..150).collect::<Vec<u64>>());
    let by_stream = lines(
        &cli(
            &data,
            &["dlq", "list", "--data-stream", "logs-other-default"],
        )
        .await,
    );
    assert_eq!(seqs(&by_stream), (150..300).collect::<Vec<u64>>());
    assert!(by_stream
        .iter()
        .all(|l| l["data_stream"] == "logs-other-default"));
    let both = lines(
        &cli(
            &data,
            &[
                "dlq",
                "list",
                "--data-stream",
                "logs-loadgen-default",
                "--reason",
                "mapper_parsing",
            ],
        )
        .await,
    );
    assert!(both.is_empty(), "filters combine: {both:?}");
    assert_eq!(
        lines(&cli(&data, &["dlq", "list", "--older-than", "1d"]).await).len(),
        300
    );
    assert!(
        lines(&cli(&data, &["dlq", "list", "--newer-than", "1d"]).await).is_empty(),
        "every entry is from 2023"
    );
    assert_eq!(
        lines(&cli(&data, &["dlq", "stats"]).await)[0]["entries"],
        300
    );

    // A running shipper to replay into.
    let socket = dir.path().join("s.sock");
    let out = dir.path().join("events.ndjson");
    let config = dir.path().join("shipper.yml");
    std::fs::write(
        &config,
        format!(
            "server: unix://{}\ntype: file\npath: {}\n",
            socket.display(),
            out.display()
        ),
    )
    .unwrap();
    let mut shipper = tokio::process::Command::new(integration::shipper_binary().unwrap())
        .arg("-E")
        .arg(format!("path.data={}", data.display()))
        .args(["run", "-c"])
        .arg(&config)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(shipper.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = stderr.next_line().await {
            if line.contains("Producer API listening") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true));
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });

    let server = format!("unix://{}", socket.display());
    let replayed = cli(
        &data,
        &[
            "dlq",
            "replay",
            "--server",
            &server,
            "--input-id",
            "replayed-by-hand",
        ],
    )
    .await;
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_eq!(
        lines(&replayed)
            .iter()
            .map(|l| l["replayed"].as_u64().unwrap())
            .sum::<u64>(),
        300
    );
    assert_eq!(
        lines(&cli(&data, &["dlq", "stats"]).await)[0]["entries"],
        0,
        "replayed entries leave the DLQ"
    );

    let expected: Vec<u64> = (0..300).collect();
    loadgen::wait_for_seqs_in_files(
        std::slice::from_ref(&out),
        "replay",
        &expected,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shipper.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(25), shipper.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
    drain.await.unwrap();
    let counts = loadgen::count_seqs_in_files(std::slice::from_ref(&out), "replay").unwrap();
    assert_eq!(counts.len(), 300);
    assert!(counts.values().all(|n| *n == 1), "exactly once");
    // `--input-id` republished them under the id given, not the original filestream-a.
    let input_ids: std::collections::BTreeSet<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|l| {
            l["@metadata"]["shipper"]["input_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        input_ids,
        std::collections::BTreeSet::from(["replayed-by-hand".to_string()])
    );

    // Purge of a DLQ that holds entries: all go, and the count deleted is reported.
    store(
        &data.join("dlq"),
        &entries_for(&options, 1_000..1_120, forbidden()),
    );
    assert_eq!(
        lines(&cli(&data, &["dlq", "stats"]).await)[0]["entries"],
        120
    );
    let purged = cli(&data, &["dlq", "purge"]).await;
    assert!(
        purged.status.success(),
        "{}",
        String::from_utf8_lossy(&purged.stderr)
    );
    let said = String::from_utf8_lossy(&purged.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "dlq purge done")
        .unwrap_or_else(|| panic!("no purge line: {}", String::from_utf8_lossy(&purged.stderr)));
    assert_eq!(said["deleted"], 120, "{said}");
    assert_eq!(lines(&cli(&data, &["dlq", "stats"]).await)[0]["entries"], 0);
    assert!(lines(&cli(&data, &["dlq", "list"]).await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_shipper_deletes_entries_older_than_retain_age() {
    let es = MockEs::start(MockEsOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (shipper, server, dlq) = shipper_with_refused_events(
        dir.path(),
        &es,
        json!({"flush_interval": "200ms", "retain": {"age": "2s"}}),
    )
    .await;
    let mut options = LoadgenOptions::new(&server, "filestream-a", 50);
    options.run = "expire".into();
    assert_eq!(loadgen::run(&options).await.unwrap().promised.len(), 50);

    // Dead-lettered first (so there is something to expire)...
    let deadline = tokio::time::Instant::now() + WAIT;
    let newest_ms = loop {
        let found = dlq_entries(&dlq);
        if found.len() == 50 {
            break found.iter().map(|e| e.dead_lettered_at_ms).max().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 50 dead letters appeared",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // ...then gone without another write, by the shipper's own timer, once older than 2 s.
    loop {
        let left = dlq_entries(&dlq).len();
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} entries older than retain.age are still in the DLQ"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let age = now_ms().saturating_sub(newest_ms);
    assert!(age >= 2_000, "entries expired {age} ms after being written");
    let (clean, _) = shipper.stop().await;
    assert!(clean);
    assert_eq!(es.loadgen_counts("expire").len(), 0);
    es.stop().await;
}

/// README: "`dlq.enabled: false` — undeliverable events are dropped and counted in the log".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_dlq_disabled_undeliverable_events_are_dropped_and_counted_in_the_log() {
    let es = MockEs::start(MockEsOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (shipper, server, dlq) =
        shipper_with_refused_events(dir.path(), &es, json!({"enabled": false})).await;
    let mut options = LoadgenOptions::new(&server, "filestream-a", 50);
    options.run = "disabled".into();
    assert_eq!(loadgen::run(&options).await.unwrap().promised.len(), 50);

    let dropped = |logs: &[String]| -> u64 {
        logs.iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("undeliverable events dropped"))
            })
            .filter_map(|l| l["events"].as_u64())
            .sum()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while dropped(&shipper.logs.lock().unwrap()) < 50 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the drop of 50 events was not logged: {:#?}",
            shipper.logs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (clean, logs) = shipper.stop().await;
    assert!(clean);
    assert_eq!(dropped(&logs), 50, "each dropped event counted once");
    assert!(dlq_entries(&dlq).is_empty(), "nothing was dead-lettered");
    let saved = logs
        .iter()
        .find(|l| l.contains("queue state saved"))
        .expect("the queue state is saved at shutdown");
    assert!(
        saved.contains("\"unacked_events\":0"),
        "dropped events are acknowledged, not retried forever: {saved}"
    );
    assert_eq!(es.loadgen_counts("disabled").len(), 0);
    assert_eq!(es.stats().rejected_400, 50, "each was tried once");
    es.stop().await;
}
