//! End-to-end full disk: the disk queue on a small tmpfs that a filler file fills up.
//!
//! Mounting a tmpfs needs CAP_SYS_ADMIN (root on the project's machines and CI). Where
//! the mount is refused the test says so on stderr and returns; the queue-level test
//! (`queue::disk::tests::a_full_disk_refuses_appends_...`, injected ENOSPC) runs anywhere.

mod common;

use agent_shipper::proto::agent::{State, UnitType};
use agent_shipper::proto::shipper::PublishRequest;
use common::{output_unit, revision, Harness, WAIT};
use integration::agent::AgentEvent;
use integration::loadgen::{self, LoadgenOptions};
use integration::mock_es::{MockEs, MockEsOptions};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A tmpfs mounted for the test, lazily unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).ok()?;
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes `path` until the filesystem is full (bounded by `limit` bytes).
fn fill(path: &Path, limit: usize) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a_u8; 16 << 10];
    let mut written = 0;
    while written < limit {
        match file.write(&chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => written += n,
        }
    }
    panic!("the filesystem did not fill up within {limit} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_disk_backpressures_degrades_the_output_loses_nothing_and_recovers() {
    let h = Harness::start(|_| {}).await;
    let mount = h.data().join("queue-fs");
    let Some(_tmpfs) = Tmpfs::mount(&mount, "4m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs CAP_SYS_ADMIN); the injected-ENOSPC queue test covers the queue");
        return;
    };
    let es = MockEs::start(MockEsOptions::default()).await.unwrap();
    es.add_api_key("disk", "disk-secret", &["logs-*-default"]);
    let queue_dir = mount.join("queue");
    h.agent.apply(&revision(
        1,
        vec![
            output_unit(json!({
                "type": "elasticsearch", "hosts": [es.url()], "api_key": "disk:disk-secret",
                "queue": {"disk": {"path": queue_dir, "max_size": "64MiB", "segment_size": "256KiB"}},
            })),
            h.input_unit("input-a", "filestream-a"),
        ],
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

    let mut before = LoadgenOptions::new(&h.socket(), "filestream-a", 500);
    before.run = "before".into();
    let before = loadgen::run(&before).await.unwrap();
    assert_eq!(before.promised.len(), 500);

    // Fill the disk, then publish one event at a time until the queue refuses.
    fill(&mount.join("filler"), 8 << 20);
    let mut during = LoadgenOptions::new(&h.socket(), "filestream-a", 0);
    during.run = "during".into();
    let mut client = loadgen::connect(&h.socket()).await.unwrap();
    let mut accepted_during = Vec::new();
    let refusal = 'publish: {
        for seq in 0..2000 {
            let request = PublishRequest {
                uuid: String::new(),
                events: vec![loadgen::make_event(&during, seq)],
            };
            match tokio::time::timeout(WAIT, client.publish_events(request)).await {
                Ok(Ok(reply)) if reply.get_ref().accepted_count == 1 => accepted_during.push(seq),
                Ok(Ok(reply)) => panic!("a short accept without a reason: {:?}", reply.get_ref()),
                Ok(Err(status)) => break 'publish status,
                Err(_) => panic!("publish timed out"),
            }
        }
        panic!("2000 events fit on a full disk");
    };
    assert_eq!(
        refusal.code(),
        tonic::Code::ResourceExhausted,
        "{refusal:?}"
    );
    assert!(
        refusal.message().contains("No space left on device"),
        "{}",
        refusal.message()
    );
    let degraded = h
        .agent
        .wait_for(WAIT, "output DEGRADED by the full disk", |e| {
            matches!(e, AgentEvent::UnitObserved { id, state: State::Degraded, .. } if id == "output-default")
        })
        .await
        .unwrap();
    let AgentEvent::UnitObserved { message, .. } = degraded else {
        unreachable!()
    };
    assert!(
        message.contains("queue: cannot write") && message.contains("No space left on device"),
        "{message}"
    );

    // Space returns: publishes are accepted again and the unit is HEALTHY.
    std::fs::remove_file(mount.join("filler")).unwrap();
    let mut after = LoadgenOptions::new(&h.socket(), "filestream-a", 500);
    after.run = "after".into();
    let after = loadgen::run(&after).await.unwrap();
    assert_eq!(after.promised.len(), 500);
    h.agent
        .wait_for_count(WAIT, "output HEALTHY again", 2, |e| {
            matches!(e, AgentEvent::UnitObserved { id, state: State::Healthy, .. } if id == "output-default")
        })
        .await
        .unwrap();

    // Everything confirmed, before, during and after, is indexed exactly once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let expected = [
        ("before", before.promised.clone()),
        ("during", accepted_during.clone()),
        ("after", after.promised.clone()),
    ];
    loop {
        let missing: Vec<_> = expected
            .iter()
            .map(|(run, seqs)| {
                let counts = es.loadgen_counts(run);
                (run, seqs.iter().filter(|s| !counts.contains_key(s)).count())
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not indexed: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (run, seqs) in &expected {
        let counts = es.loadgen_counts(run);
        assert!(counts.values().all(|n| *n == 1), "{run}: indexed twice");
        assert_eq!(counts.len(), seqs.len(), "{run}");
    }
    drop(client);
    h.stop().await;
    es.stop().await;
}
