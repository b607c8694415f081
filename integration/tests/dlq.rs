//! End-to-end: the `agent-shipper dlq` commands against a running standalone shipper.

use agent_shipper::dlq::{
    DeadLetterQueue, DlqEntry, DlqSettings, Reason, StoragePolicy, SystemClock,
};
use integration::loadgen::{self, LoadgenOptions};
use prost::Message;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_entries_reach_the_output_exactly_once_and_leave_the_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 300 events a previous run could not deliver.
    let options = {
        let mut o = LoadgenOptions::new("", "filestream-a", 300);
        o.run = "replay".into();
        o
    };
    {
        let store = DeadLetterQueue::open(
            DlqSettings {
                dir: data.join("dlq"),
                max_bytes: 1 << 30,
                storage_policy: StoragePolicy::DropNewer,
                retain_age: None,
                flush_interval: Duration::from_secs(5),
            },
            Arc::new(SystemClock),
        )
        .unwrap();
        let entries: Vec<DlqEntry> = (0..300)
            .map(|seq| DlqEntry {
                event: loadgen::make_event(&options, seq).encode_to_vec().into(),
                reason: Reason {
                    status: Some(403),
                    error_type: "security_exception".into(),
                    message: "action [create] is unauthorized".into(),
                },
                input_unit: "input-b".into(),
                output_unit: "output-default".into(),
                revision: 2,
                dead_lettered_at_ms: 1_700_000_000_000,
            })
            .collect();
        assert_eq!(store.write(&entries[..150]).written, 150);
        store.flush();
        assert_eq!(store.write(&entries[150..]).written, 150);
        store.flush();
    }

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
    assert_eq!(
        lines(&cli(&data, &["dlq", "list", "--reason", "mapper_parsing"]).await).len(),
        0
    );
    assert_eq!(
        lines(&cli(&data, &["dlq", "list", "--older-than", "1d"]).await).len(),
        300
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
    let replayed = cli(&data, &["dlq", "replay", "--server", &server]).await;
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
    let counts = loadgen::count_seqs_in_files(&[out], "replay").unwrap();
    assert_eq!(counts.len(), 300);
    assert!(counts.values().all(|n| *n == 1), "exactly once");

    // Purge empties what is left (here nothing), and says so.
    assert!(cli(&data, &["dlq", "purge"]).await.status.success());
}
