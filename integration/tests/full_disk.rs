//! End-to-end full disk: the disk queue on a small tmpfs, filled up either by a filler
//! file (space then returns when it is removed) or by the queue itself (`max_size` above
//! the tmpfs size; space returns only when the queue frees what was delivered).
//!
//! Mounting a tmpfs needs CAP_SYS_ADMIN (root on the project's machines and CI). Where
//! the mount is refused the tests FAIL, saying why, unless
//! `AGENT_SHIPPER_ALLOW_SKIP_FULL_DISK=1` is set: then they print `SKIPPED` and return.
//! The queue-level tests (`queue::disk::tests::a_full_disk_refuses_appends_...`, injected
//! ENOSPC, and `scenario_2_4_...`, a failing checkpoint) run anywhere.

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

/// Set to `1` to let these tests skip (visibly) where a tmpfs cannot be mounted.
const ALLOW_SKIP: &str = "AGENT_SHIPPER_ALLOW_SKIP_FULL_DISK";

/// A tmpfs mounted for the test, lazily unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `path`, or says why it could not.
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|err| format!("{}: {err}", path.display()))?;
        let output = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .map_err(|err| format!("cannot run mount: {err}"))?;
        if output.status.success() {
            Ok(Tmpfs(path.to_path_buf()))
        } else {
            Err(format!(
                "mount {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// Mounts, or (only when [`ALLOW_SKIP`] is `1`) prints `SKIPPED` and returns `None`;
    /// otherwise a refused mount fails the test: a skip must never pass silently.
    fn mount_or_skip(test: &str, path: &Path, size: &str) -> Option<Tmpfs> {
        match Tmpfs::mount(path, size) {
            Ok(tmpfs) => Some(tmpfs),
            Err(reason) if std::env::var(ALLOW_SKIP).as_deref() == Ok("1") => {
                eprintln!(
                    "SKIPPED {test}: cannot mount a tmpfs ({reason}); allowed by {ALLOW_SKIP}=1"
                );
                None
            }
            Err(reason) => panic!(
                "cannot mount a tmpfs at {} ({reason}): this test needs CAP_SYS_ADMIN (root). \
                 Where that is impossible, set {ALLOW_SKIP}=1 to skip it (it then prints SKIPPED)",
                path.display()
            ),
        }
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

/// What fills the tmpfs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FillBy {
    /// A filler file; removing it gives the space back.
    Filler,
    /// The queue's own backlog (Elasticsearch unreachable meanwhile, `max_size` above the
    /// tmpfs size): only the queue freeing delivered segments gives the space back.
    Queue,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_disk_backpressures_degrades_the_output_loses_nothing_and_recovers() {
    full_disk(
        "a_full_queue_disk_backpressures_degrades_the_output_loses_nothing_and_recovers",
        FillBy::Filler,
    )
    .await;
}

/// Scenario 2.4 (issue 14): the queue fills its own disk. Once the backlog is delivered
/// the queue must free its segments although its checkpoint write hits ENOSPC, and
/// accept events again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_4_a_queue_that_filled_its_own_disk_frees_it_without_a_restart() {
    full_disk(
        "scenario_2_4_a_queue_that_filled_its_own_disk_frees_it_without_a_restart",
        FillBy::Queue,
    )
    .await;
}

async fn full_disk(test: &str, fill_by: FillBy) {
    let h = Harness::start(|_| {}).await;
    let mount = h.data().join("queue-fs");
    let Some(_tmpfs) = Tmpfs::mount_or_skip(test, &mount, "4m") else {
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
                "backoff": {"init": "100ms", "max": "500ms"},
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
    let mut during = LoadgenOptions::new(&h.socket(), "filestream-a", 0);
    during.run = "during".into();
    match fill_by {
        FillBy::Filler => fill(&mount.join("filler"), 8 << 20),
        FillBy::Queue => {
            // Nothing is delivered, so nothing is freed: the backlog fills the tmpfs.
            es.pause();
            during.event_bytes = 4096;
        }
    }
    let mut client = loadgen::connect(&h.socket()).await.unwrap();
    let mut accepted_during = Vec::new();
    let mut seq = 0;
    let refusal = 'publish: {
        for _ in 0..4000 {
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
            seq += 1;
        }
        panic!("4000 events fit on a full disk");
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
            matches!(e, AgentEvent::UnitObserved { id, state: State::Degraded, message, .. } if id == "output-default" && message.contains("queue: cannot"))
        })
        .await
        .unwrap();
    let AgentEvent::UnitObserved { message, .. } = degraded else {
        unreachable!()
    };
    assert!(
        message.contains("queue: cannot") && message.contains("No space left on device"),
        "{message}"
    );

    // Space returns: by removing the filler, or by delivering the backlog (the queue must
    // then free its delivered segments by itself).
    match fill_by {
        FillBy::Filler => std::fs::remove_file(mount.join("filler")).unwrap(),
        FillBy::Queue => es.resume().await.unwrap(),
    }
    // The input's resend loop: the same event until the queue takes it (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let request = PublishRequest {
            uuid: String::new(),
            events: vec![loadgen::make_event(&during, seq)],
        };
        match tokio::time::timeout(WAIT, client.publish_events(request)).await {
            Ok(Ok(reply)) if reply.get_ref().accepted_count == 1 => {
                accepted_during.push(seq);
                break;
            }
            Ok(Ok(reply)) => panic!("a short accept without a reason: {:?}", reply.get_ref()),
            Ok(Err(status)) if status.code() == tonic::Code::ResourceExhausted => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the disk never had room again without a restart (queue: {:?}): {status:?}",
                    queue_files(&queue_dir)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(status)) => panic!("{status:?}"),
            Err(_) => panic!("publish timed out"),
        }
    }
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

/// The queue directory's file names and sizes, for a failure message.
fn queue_files(dir: &Path) -> Vec<(String, u64)> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| {
                    let e = e.ok()?;
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().ok()?.len(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}
