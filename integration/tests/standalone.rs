//! End-to-end: `agent-shipper run -c FILE` without an agent.

use integration::loadgen::{self, LoadgenOptions};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

fn spawn(config: &std::path::Path) -> tokio::process::Child {
    let data = config.parent().unwrap().join("data");
    tokio::process::Command::new(integration::shipper_binary().unwrap())
        .arg("-E")
        .arg(format!("path.data={}", data.display()))
        .args(["run", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_mode_writes_every_event_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
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
    let mut child = spawn(&config);

    // Wait for the listener's log line, then keep draining stderr so the pipe never fills.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("Producer API listening") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the Producer API did not come up");
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let server = format!("unix://{}", socket.display());
    let mut options = LoadgenOptions::new(&server, "anything", 1_000);
    options.run = "standalone".into();
    let report = loadgen::run(&options).await.unwrap();
    assert_eq!(report.promised.len(), 1_000);
    let counts = loadgen::wait_for_seqs_in_files(
        &[out],
        "standalone",
        &report.promised,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(counts.len(), 1_000);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(25), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    drain.await.unwrap();
    assert!(!socket.exists(), "socket removed on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shipper.yml");
    std::fs::write(
        &config,
        "server: unix:///tmp/x.sock\ntype: file\npath: /tmp/o\nrotate_every_bytez: 5\n",
    )
    .unwrap();
    let child = spawn(&config);
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rotate_every_bytez"), "{stderr}");
}

/// Issue 15: two standalone shippers on one `path.data` would corrupt each other's queue;
/// the second stops at once with an error naming the directory and the first one's pid,
/// as Beats says "data path already locked by another beat".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_standalone_shipper_on_the_same_data_path_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let write_config = |name: &str| {
        let config = dir.path().join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "server: unix://{}\ntype: file\npath: {}\n",
                dir.path().join(format!("{name}.sock")).display(),
                dir.path().join(format!("{name}.ndjson")).display()
            ),
        )
        .unwrap();
        config
    };
    let mut first = spawn(&write_config("first"));
    let mut lines = BufReader::new(first.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("Producer API listening") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the first shipper did not come up");
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let second = spawn(&write_config("second"));
    let output = tokio::time::timeout(Duration::from_secs(20), second.wait_with_output())
        .await
        .expect("the second shipper stops at once")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let pid = first.id().unwrap();
    assert!(
        stderr.contains("already locked by another agent-shipper")
            && stderr.contains(&format!("pid {pid}")),
        "{stderr}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(25), first.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    drain.await.unwrap();
}
