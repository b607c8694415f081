//! Adoption: delivers the backlog another component left under the state root, with its credentials.
//!
//! Elastic Agent 9.x stops a component that left the policy with SIGTERM and then deletes
//! its `path.data`; its queue lives under the state root instead (`crate::storage`), with a
//! `handoff.json` naming the output config of every generation it still holds. This task
//! scans the root at start and every [`SCAN_INTERVAL`]: a directory other than ours with a
//! queue and a handoff is adopted once its lock can be taken (while the old process still
//! stops, the lock is held: the wait is logged, at most every 5 s per directory). The
//! adopted queue gets its own output task, built from the handoff's configs (each record
//! goes with its own generation's credentials, never mixed into this process's queue),
//! dead-letters into that directory's own DLQ, and when the queue is empty its files and
//! the handoff are removed (a DLQ with entries stays) and the lock is released. On
//! shutdown the adoption stops where it is: what is left stays queued, with its handoff.

use crate::config::{OutputConfig, QueueConfig, UnknownKeys};
use crate::dlq::{DeadLetterQueue, DeadLetters, DlqSettings, SystemClock};
use crate::output::{Drains, OutputGeneration, OutputMetrics, OutputTask};
use crate::queue::{DiskOptions, DiskQueue, Durability, Queue};
use crate::storage::handoff::{self, Handoff};
use crate::storage::{lock, DirLock};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the state root is scanned for backlogs to adopt.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(2);

/// How often an adoption's progress is logged.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// The running adoption task; [`Adopter::stop`] ends it and waits.
pub struct Adopter {
    cancel: CancellationToken,
    join: tokio::task::JoinHandle<()>,
}

impl Adopter {
    /// Starts scanning `root` for directories other than `own`.
    pub fn spawn(root: PathBuf, own: PathBuf) -> Self {
        let cancel = CancellationToken::new();
        let join = tokio::spawn(run(root, own, cancel.clone()));
        Adopter { cancel, join }
    }

    /// Stops adopting (an adoption in progress keeps what is left queued) and waits.
    pub async fn stop(self) {
        self.cancel.cancel();
        if let Err(err) = self.join.await {
            tracing::error!(error = %err, "adoption task ended abnormally");
        }
    }
}

async fn run(root: PathBuf, own: PathBuf, cancel: CancellationToken) {
    let mut waits_logged: HashMap<PathBuf, Instant> = HashMap::new();
    // Directories whose handoff cannot be used: said once, not every scan.
    let mut refused: HashSet<PathBuf> = HashSet::new();
    loop {
        for dir in candidates(&root, &own) {
            if cancel.is_cancelled() {
                return;
            }
            if refused.contains(&dir) {
                continue;
            }
            let attempt = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || DirLock::try_acquire(&dir)).await
            };
            match attempt {
                Ok(Ok(lock)) => {
                    waits_logged.remove(&dir);
                    if let Err(reason) = adopt(&dir, lock, &cancel).await {
                        tracing::warn!(dir = %dir.display(), %reason, "cannot adopt the queue left there");
                        refused.insert(dir);
                    }
                }
                Ok(Err(held)) if held.is_retryable() => {
                    let due = waits_logged
                        .get(&dir)
                        .is_none_or(|at| at.elapsed() >= lock::LOG_INTERVAL);
                    if due {
                        tracing::info!(dir = %dir.display(), "{held}");
                        waits_logged.insert(dir, Instant::now());
                    }
                }
                Ok(Err(err)) => {
                    tracing::warn!(dir = %dir.display(), error = %err, "cannot lock a directory to adopt");
                    refused.insert(dir);
                }
                Err(err) => tracing::error!(error = %err, "adoption lock task failed"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(SCAN_INTERVAL) => {}
        }
    }
}

/// Directories under `root` other than `own` holding a `handoff.json` and a `queue/`.
fn candidates(root: &Path, own: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path != own && path.is_dir())
        .filter(|path| path.join(handoff::FILE_NAME).is_file() && path.join("queue").is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Delivers the queue in `dir` (whose lock is `lock`) and cleans it up. Returns an error
/// only when the directory cannot be adopted at all; a cancel leaves it as it was.
async fn adopt(dir: &Path, lock: DirLock, cancel: &CancellationToken) -> Result<(), String> {
    let handoff = match Handoff::read(dir) {
        Ok(Some(handoff)) => handoff,
        // Delivered and cleaned up by its owner while we were waiting for the lock.
        Ok(None) => return Ok(()),
        Err(err) => return Err(err.to_string()),
    };
    let mut generations = Vec::new();
    let mut newest_config: Option<OutputConfig> = None;
    for output in &handoff.outputs {
        match OutputConfig::parse(output.config.clone(), UnknownKeys::Warn) {
            Ok(parsed) => {
                generations.push(OutputGeneration {
                    unit_id: output.unit_id.clone(),
                    config_idx: output.config_idx,
                    kind: parsed.config.kind.clone(),
                });
                newest_config = Some(parsed.config);
            }
            Err(err) => {
                tracing::warn!(dir = %dir.display(), unit_id = %output.unit_id, config_idx = output.config_idx, error = %err, "an output config in handoff.json is invalid; its events go with the newest one")
            }
        }
    }
    let (Some(current), Some(config)) = (generations.pop(), newest_config) else {
        return Err("handoff.json names no usable output config".into());
    };
    generations.reverse(); // newest first, as `OutputTask::spawn` takes them
    let queue_dir = dir.join("queue");
    let options = match &config.queue {
        QueueConfig::Disk(disk) => DiskOptions {
            dir: queue_dir.clone(),
            max_size: disk.max_size.bytes(),
            segment_size: disk.segment_size.bytes(),
            durability: Durability::Batch,
            read_ahead: disk.read_ahead.bytes(),
        },
        QueueConfig::Memory(_) => {
            let disk = crate::config::DiskQueueConfig::default();
            DiskOptions {
                dir: queue_dir.clone(),
                max_size: disk.max_size.bytes(),
                segment_size: disk.segment_size.bytes(),
                durability: Durability::Batch,
                read_ahead: disk.read_ahead.bytes(),
            }
        }
    };
    let queue: Arc<dyn Queue> = Arc::new(
        tokio::task::spawn_blocking(move || DiskQueue::open(options))
            .await
            .map_err(|err| err.to_string())?
            .map_err(|err| err.to_string())?,
    );
    let left = queue.barrier_all().pending;
    tracing::info!(dir = %dir.display(), component_id = %handoff.component_id, events_left = left, generations = handoff.outputs.len(), "adopting a queue another component left: delivering it with that component's output configs");
    let dead_letters = if config.dlq.enabled {
        let settings = DlqSettings {
            dir: dir.join("dlq"),
            max_bytes: config.dlq.max_bytes.bytes(),
            storage_policy: config.dlq.storage_policy,
            retain_age: config.dlq.retain.age.map(|a| a.get()),
            flush_interval: config.dlq.flush_interval.get(),
        };
        let opened = tokio::task::spawn_blocking(move || {
            DeadLetterQueue::open(settings, Arc::new(SystemClock))
        })
        .await
        .map_err(|err| err.to_string())?
        .map_err(|err| format!("its dead letter queue: {err}"))?;
        Some(DeadLetters::new(opened))
    } else {
        None
    };
    let task = OutputTask::spawn(
        &current,
        &generations,
        queue.clone(),
        dead_letters.clone(),
        Arc::new(Drains::default()),
        0,
        Arc::new(OutputMetrics::default()),
    )?;
    let mut acked = queue.acked();
    let mut logged = Instant::now();
    let finished = loop {
        let pending = queue.barrier_all().pending;
        if pending == 0 {
            break true;
        }
        if logged.elapsed() >= PROGRESS_INTERVAL {
            tracing::info!(dir = %dir.display(), events_left = pending, "adoption progress");
            logged = Instant::now();
        }
        tokio::select! {
            _ = cancel.cancelled() => break false,
            changed = acked.changed() => if changed.is_err() { break false },
            _ = tokio::time::sleep(PROGRESS_INTERVAL) => {}
        }
    };
    task.stop().await;
    queue.close();
    queue.persist().await;
    let dlq_entries = match &dead_letters {
        Some(dead_letters) => {
            dead_letters.flush().await;
            dead_letters.metrics().entries
        }
        None => 0,
    };
    drop(dead_letters);
    if !finished {
        let left = queue.barrier_all().pending;
        tracing::info!(dir = %dir.display(), events_left = left, "adoption paused by shutdown; the events left stay queued there with their handoff");
        drop(lock);
        return Ok(());
    }
    drop(queue);
    let dir_owned = dir.to_path_buf();
    let cleaned = tokio::task::spawn_blocking(move || clean_up(&dir_owned, dlq_entries))
        .await
        .map_err(|err| err.to_string())?;
    match cleaned {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), delivered = left, dead_letter_entries = dlq_entries, "adopted queue delivered; its queue and handoff.json removed")
        }
        Err(err) => {
            tracing::warn!(dir = %dir.display(), error = %err, "adopted queue delivered, but cleaning up failed")
        }
    }
    drop(lock);
    Ok(())
}

/// Removes the delivered queue and the handoff; the DLQ too when it holds nothing.
fn clean_up(dir: &Path, dlq_entries: u64) -> std::io::Result<()> {
    // The handoff first: without it no one takes the directory for a backlog again.
    Handoff::remove(dir).map_err(std::io::Error::other)?;
    std::fs::remove_dir_all(dir.join("queue"))?;
    if dlq_entries == 0 {
        match std::fs::remove_dir_all(dir.join("dlq")) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_other_directories_with_a_queue_and_a_handoff() {
        let root = tempfile::tempdir().unwrap();
        let make = |name: &str, queue: bool, handoff: bool| {
            let dir = root.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            if queue {
                std::fs::create_dir_all(dir.join("queue")).unwrap();
            }
            if handoff {
                std::fs::write(dir.join(handoff::FILE_NAME), b"{}").unwrap();
            }
            dir
        };
        let own = make("agent-shipper-b", true, true);
        let a = make("agent-shipper-a", true, true);
        make("agent-shipper-c", true, false);
        make("agent-shipper-d", false, true);
        std::fs::write(root.path().join("stray-file"), b"x").unwrap();
        assert_eq!(candidates(root.path(), &own), vec![a]);
        assert!(candidates(&root.path().join("missing"), &own).is_empty());
    }
}
