//! The power-loss model test: random appends from several generations, reads,
//! out-of-order acks, seals, checkpoints, failing writes, power losses (`power_loss.rs`),
//! damaged files and reopens, checked against what a user was promised.
//!
//! After every step and every reopen:
//! - every record whose append was answered (`durability: batch`) or whose sequence number
//!   `persisted` published (`interval`) is readable or was acknowledged;
//! - no sequence number of one `queue.id` ever names two payloads (a reuse is a new event
//!   answered 409 by Elasticsearch: lost);
//! - no payload is delivered under two `_id`s (`queue.id` + sequence): an acknowledged one
//!   reappears only as an idempotent resend;
//! - a drain barrier never exceeds the committed head.
//!
//! The dead letter queue shares the power losses (`dlq/store.rs`, through the same
//! recording I/O). Records are dead-lettered as the output does it (acknowledged only when
//! the DLQ answered them stored; failed writes leave them unacknowledged), sometimes with
//! a failing write, sometimes with a write cut by the power loss before its `fdatasync`.
//! After every reopen:
//! - every entry whose record was acknowledged because the DLQ stored it is readable,
//!   unless retention may have deleted it: older than `retain.age`, or (`drop_older`)
//!   followed by enough newer entries to fill `max_bytes`;
//! - every readable entry is one that was written, byte for byte, once: a torn tail is
//!   cut (and counted), never returned; an entry answered failed or refused is absent.
//!
//! `cargo test` runs a fixed set of seeds; `scripts/crash-model.sh` runs random seeds for
//! a while (`CRASH_MODEL_SECONDS`, `CRASH_MODEL_SEED` to replay one).

use super::power_loss::{CrashMode, PowerLossIo};
use super::*;
use crate::dlq::{Clock, DeadLetterQueue, DlqEntry, DlqReader, DlqSettings, Reason, StoragePolicy};
use crate::queue::Queue;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const INPUTS: [&str; 3] = ["in-0", "in-1", "in-2"];

/// The DLQ's clock: moved on by the model, so age retention happens within a run.
struct ModelClock(AtomicU64);

impl Clock for ModelClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the DLQ answered for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Stored: its record was acknowledged, so the DLQ must keep it (retention aside).
    Stored,
    /// Refused (`drop_newer`, full): acknowledged and counted, never in a file.
    Refused,
    /// The files failed: not acknowledged, and not in a file (the retry would store it
    /// twice).
    Failed,
    /// Refused or stored, the answer does not say which (a batch with refusals).
    StoredOrRefused,
    /// No answer: the power went while it was being written. Absent, or whole.
    Cut,
}

struct Sent {
    entry: DlqEntry,
    /// Its frame's bytes on disk.
    frame_len: u64,
    answer: Answer,
}

/// The DLQ side of the model.
struct DlqModel {
    settings: DlqSettings,
    clock: Arc<ModelClock>,
    store: Option<Arc<DeadLetterQueue>>,
    /// Every entry handed to the DLQ, oldest first; its tag (`reason.message`) is unique.
    sent: Vec<Sent>,
    by_tag: HashMap<String, usize>,
}

impl DlqModel {
    fn store(&self) -> Result<&Arc<DeadLetterQueue>, String> {
        self.store
            .as_ref()
            .ok_or_else(|| "the DLQ is not open".to_string())
    }

    /// A new entry for `payload`, with a unique tag.
    fn entry(&mut self, payload: &str) -> DlqEntry {
        let tag = format!("dl-{}", self.sent.len());
        let entry = DlqEntry {
            event: Bytes::from(payload.to_string()),
            reason: Reason {
                status: Some(400),
                error_type: "mapper_parsing_exception".into(),
                message: tag.clone(),
            },
            input_unit: "in-0".into(),
            output_unit: "out".into(),
            revision: 1,
            dead_lettered_at_ms: self.clock.now_ms(),
        };
        let frame_len = frame::encoded_len(entry.encode().len()) as u64;
        self.by_tag.insert(tag, self.sent.len());
        self.sent.push(Sent {
            entry: entry.clone(),
            frame_len,
            answer: Answer::Cut,
        });
        entry
    }

    /// Whether age retention may have deleted `sent[index]`: a segment goes only when its
    /// newest entry is older than `retain.age`, so each of its entries is too.
    fn may_have_expired(&self, index: usize) -> bool {
        self.settings.retain_age.is_some_and(|age| {
            let cutoff = self.clock.now_ms().saturating_sub(age.as_millis() as u64);
            self.sent[index].entry.dead_lettered_at_ms < cutoff
        })
    }

    /// Whether `drop_older` may have deleted `sent[index]` to make room: only when the
    /// segments from its own on, and the entry being made room for, exceed `max_bytes`.
    /// An upper bound of those bytes: its segment (at most a segment's size and a frame),
    /// every entry handed over after it, and a header for each.
    fn may_have_made_room(&self, index: usize) -> bool {
        if self.settings.storage_policy != StoragePolicy::DropOlder {
            return false;
        }
        let header = segment::HEADER_LEN as u64;
        let largest = self.sent.iter().map(|s| s.frame_len).max().unwrap_or(0);
        let after: u64 = self.sent[index + 1..]
            .iter()
            .map(|s| s.frame_len + header)
            .sum();
        after + self.settings.segment_size() + largest + 2 * header > self.settings.max_bytes
    }
}

struct Model {
    rng: fastrand::Rng,
    seed: u64,
    dir: PathBuf,
    options: DiskOptions,
    io: Arc<PowerLossIo>,
    identity: String,
    /// `(queue.id, seq)` → payload, from answers and deliveries.
    names: HashMap<(String, Seq), String>,
    /// payload → the `_id` it was answered or delivered under.
    ids: HashMap<String, (String, Seq)>,
    /// Payloads a user was promised are kept, with their `_id`.
    promised: BTreeMap<String, (String, Seq)>,
    /// Answered but only promised once `persisted` passes them (interval mode).
    answered: BTreeMap<(String, Seq), String>,
    acked: BTreeSet<String>,
    /// Delivered, not acknowledged yet.
    in_flight: Vec<(Seq, String)>,
    /// Last sequence number delivered since the last reopen.
    last_read: Seq,
    generations: Vec<Generation>,
    next_payload: u64,
    log: Vec<String>,
    dlq: DlqModel,
}

type Check = Result<(), String>;

impl Model {
    fn fail(&self, what: String) -> Check {
        let tail: Vec<&String> = self.log.iter().rev().take(25).collect();
        Err(format!(
            "seed {}: {what}\nlast steps (newest first):\n  {}",
            self.seed,
            tail.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        ))
    }

    /// A payload was named `(identity, seq)`: by an answer or a delivery.
    fn named(&mut self, seq: Seq, payload: &str, how: &str) -> Check {
        let key = (self.identity.clone(), seq);
        if let Some(old) = self.names.get(&key) {
            if old != payload {
                return self.fail(format!(
                    "sequence {seq} of queue.id {} reused: {how} {payload:?}, earlier {old:?}",
                    self.identity
                ));
            }
        }
        if let Some(old) = self.ids.get(payload) {
            if *old != key {
                return self.fail(format!(
                    "{payload:?} {how} under _id {}:{seq}, earlier {}:{} (acknowledged: {})",
                    self.identity,
                    old.0,
                    old.1,
                    self.acked.contains(payload)
                ));
            }
        }
        self.names.insert(key.clone(), payload.to_string());
        self.ids.insert(payload.to_string(), key);
        Ok(())
    }

    /// Interval mode: answers become promises (and names) once `persisted` passes them.
    /// Until then a power loss may take them, and their numbers with them: they were never
    /// delivered, so a reuse names nothing twice.
    fn promise_persisted(&mut self, queue: &DiskQueue) -> Check {
        let persisted = *queue.persisted().borrow();
        let id = self.identity.clone();
        let done: Vec<(String, Seq)> = self
            .answered
            .range(..=(id.clone(), persisted))
            .filter(|((i, _), _)| *i == id)
            .map(|(k, _)| k.clone())
            .collect();
        for key in done {
            if let Some(payload) = self.answered.remove(&key) {
                self.named(key.1, &payload, "persisted")?;
                self.promised.insert(payload, key);
            }
        }
        Ok(())
    }

    fn payload(&mut self) -> String {
        self.next_payload += 1;
        let pad = self.rng.usize(0..80);
        format!("s{}-p{}-{}", self.seed, self.next_payload, "x".repeat(pad))
    }

    fn open(&mut self) -> Result<DiskQueue, String> {
        let queue = DiskQueue::open_with_io(self.options.clone(), self.io.clone())
            .map_err(|err| format!("seed {}: reopen failed: {err}", self.seed))?;
        let identity = queue.identity().to_string();
        if identity != self.identity {
            self.log.push(format!("new queue.id {identity}"));
            // What was promised under the old id but never delivered keeps its old name
            // only if it is still there; anything else is checked by name below.
            self.answered.clear();
        }
        self.identity = identity;
        self.last_read = *queue.acked().borrow();
        self.in_flight.clear();
        let store = DeadLetterQueue::open_with_io(
            self.dlq.settings.clone(),
            self.dlq.clock.clone(),
            self.io.clone(),
        )
        .map_err(|err| format!("seed {}: DLQ reopen failed: {err}", self.seed))?;
        self.dlq.store = Some(Arc::new(store));
        Ok(queue)
    }

    /// Dead-letters some delivered records as the output does: each is acknowledged once
    /// the DLQ answered it stored (or refused it, counted); a failed one stays pending.
    /// `drop_newer` writes one entry a call, so a refusal names its entry.
    fn dead_letter(&mut self, queue: &DiskQueue) -> Check {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        let n = self.rng.usize(1..=self.in_flight.len().min(6));
        let mut records = Vec::new();
        for _ in 0..n {
            let i = self.rng.usize(0..self.in_flight.len());
            records.push(self.in_flight.swap_remove(i));
        }
        let by = self.rng.u64(0..4000);
        self.dlq.clock.0.fetch_add(by, Ordering::SeqCst);
        let failing = self.rng.u8(0..6) == 0;
        let batches: Vec<Vec<(Seq, String)>> =
            if self.dlq.settings.storage_policy == StoragePolicy::DropNewer {
                records.into_iter().map(|r| vec![r]).collect()
            } else {
                vec![records]
            };
        let store = self.dlq.store()?.clone();
        for batch in batches {
            let first = self.dlq.sent.len();
            let entries: Vec<DlqEntry> = batch.iter().map(|(_, p)| self.dlq.entry(p)).collect();
            if failing {
                self.io.fail_next_writes(1, None);
            }
            let (outcome, failed) = store.write_entries(&entries);
            self.io.fail_next_writes(0, None);
            self.log.push(format!(
                "dead-letter {}..{} (failing {failing}): {outcome:?}",
                first,
                first + entries.len()
            ));
            for (i, (seq, payload)) in batch.into_iter().enumerate() {
                let answer = if failed.contains(&i) {
                    Answer::Failed
                } else if outcome.refused == 0 {
                    Answer::Stored
                } else if entries.len() == 1 {
                    Answer::Refused
                } else {
                    Answer::StoredOrRefused
                };
                self.dlq.sent[first + i].answer = answer;
                if answer == Answer::Failed {
                    // Not stored: the output keeps the record and tries again later.
                    self.in_flight.push((seq, payload));
                } else {
                    queue.ack(seq, seq);
                    self.log.push(format!("ack {seq} (dead-lettered)"));
                    self.acked.insert(payload);
                }
            }
        }
        Ok(())
    }

    /// Power loss while the DLQ writes a batch: the entries reach the file but the power
    /// goes before their `fdatasync` returns, so nobody was answered.
    fn dead_letter_cut_by_power_loss(&mut self, mode: CrashMode, seed: u64) -> Check {
        let store = self.dlq.store()?.clone();
        let n = self.rng.usize(1..6);
        let entries: Vec<DlqEntry> = (0..n)
            .map(|_| {
                let payload = self.payload();
                self.dlq.entry(&payload)
            })
            .collect();
        self.io.close_gate();
        let (done_tx, done) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            let _ = done_tx.send(store.write_entries(&entries));
        });
        // Until the write waits in its sync (or finished without one: a sealed head).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut finished = None;
        while self.io.syncs_waiting() == 0 && finished.is_none() {
            if Instant::now() > deadline {
                self.io.open_gate();
                return self.fail("a DLQ write never reached its sync".into());
            }
            finished = done.recv_timeout(Duration::from_millis(1)).ok();
        }
        let crashed = self.io.crash(mode, seed);
        self.io.open_gate();
        let _ = writer.join();
        crashed.map_err(|err| format!("seed {}: crash failed: {err}", self.seed))?;
        self.log.push(format!(
            "power loss {mode:?} during a DLQ write of {n} (finished first: {})",
            finished.is_some()
        ));
        Ok(())
    }

    /// Reads the whole DLQ after a reopen and checks its promises.
    fn check_dlq(&mut self) -> Check {
        let dir = self.dlq.settings.dir.clone();
        let mut reader = DlqReader::new(&dir);
        let mut seen: BTreeSet<usize> = BTreeSet::new();
        let mut read = 0u64;
        for _ in 0..100_000 {
            let next = match reader.next_segment() {
                Ok(next) => next,
                Err(err) => return self.fail(format!("the DLQ is unreadable: {err}")),
            };
            let Some((segment, entries)) = next else {
                break;
            };
            for (seq, entry) in entries {
                read += 1;
                let Some(&index) = self.dlq.by_tag.get(&entry.reason.message) else {
                    return self.fail(format!(
                        "DLQ entry {seq} in {} was never written: {entry:?}",
                        segment.path.display()
                    ));
                };
                let sent = &self.dlq.sent[index];
                if sent.entry != entry {
                    return self.fail(format!(
                        "DLQ entry {seq} differs from what was written: {entry:?}, written {:?}",
                        sent.entry
                    ));
                }
                if matches!(sent.answer, Answer::Failed | Answer::Refused) {
                    return self.fail(format!(
                        "DLQ entry {seq} ({}) is stored though answered {:?}",
                        entry.reason.message, sent.answer
                    ));
                }
                if !seen.insert(index) {
                    return self.fail(format!("DLQ entry {} stored twice", entry.reason.message));
                }
            }
        }
        let lost: Vec<String> = (0..self.dlq.sent.len())
            .filter(|&i| {
                self.dlq.sent[i].answer == Answer::Stored
                    && !seen.contains(&i)
                    && !self.dlq.may_have_expired(i)
                    && !self.dlq.may_have_made_room(i)
            })
            .take(5)
            .map(|i| self.dlq.sent[i].entry.reason.message.clone())
            .collect();
        if !lost.is_empty() {
            return self.fail(format!(
                "dead-lettered and acknowledged, but not in the DLQ after a reopen (and not \
                 past retention): {lost:?}"
            ));
        }
        let counted = self.dlq.store()?.metrics().entries;
        if counted != read {
            return self.fail(format!(
                "the DLQ counts {counted} entries but {read} are readable"
            ));
        }
        self.log.push(format!(
            "DLQ reopened: {read} entries, {} damaged heads",
            self.dlq.store()?.metrics().damaged_heads
        ));
        Ok(())
    }

    /// Reads everything readable after a reopen and checks the promises.
    async fn check_after_reopen(&mut self, queue: &DiskQueue) -> Check {
        let head = queue.stats().head;
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.last_read < head {
            if Instant::now() > deadline {
                return self.fail(format!(
                    "reading the backlog stalled at {} of {head}",
                    self.last_read
                ));
            }
            let read = tokio::time::timeout(Duration::from_millis(200), queue.read(64, 1 << 20));
            let Ok(Some(batch)) = read.await else {
                // A slow read (a loaded machine) is not the end of the backlog while a
                // promised record is still to come: wait for it up to the deadline.
                if self.owed(head, &seen) {
                    continue;
                }
                // Numbers with no record (burned by a failed write, or lost) end the
                // backlog early: what matters is that every promise is kept (below).
                if queue.stats().corrupted_events > 0
                    || self.log.iter().any(|l| l.contains("Storage"))
                {
                    break;
                }
                let mut files: Vec<String> = std::fs::read_dir(&self.dir)
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .map(|e| {
                                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                                format!("{} ({len} B)", e.file_name().to_string_lossy())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                files.sort();
                return self.fail(format!(
                    "backlog unreadable after {} of {head}: {:?}, files {files:?}",
                    self.last_read,
                    queue.stats()
                ));
            };
            for record in batch {
                self.delivered(&record)?;
                seen.insert(String::from_utf8_lossy(&record.payload).into_owned());
            }
        }
        let missing: Vec<&String> = self
            .promised
            .keys()
            .filter(|p| !self.acked.contains(*p) && !seen.contains(*p))
            .take(5)
            .collect();
        if !missing.is_empty() {
            let missing = format!("{missing:?}");
            return self.fail(format!(
                "promised records neither readable nor acknowledged after a reopen: {missing}"
            ));
        }
        Ok(())
    }

    /// Whether a promised record under the current `queue.id`, after the last one read and
    /// up to `up_to`, is neither acknowledged nor `seen`: the queue still owes it.
    fn owed(&self, up_to: Seq, seen: &BTreeSet<String>) -> bool {
        self.promised.iter().any(|(payload, (id, seq))| {
            *id == self.identity
                && *seq > self.last_read
                && *seq <= up_to
                && !self.acked.contains(payload)
                && !seen.contains(payload)
        })
    }

    fn delivered(&mut self, record: &Record) -> Check {
        let payload = String::from_utf8_lossy(&record.payload).into_owned();
        if record.seq <= self.last_read {
            return self.fail(format!("{} delivered out of order", record.seq));
        }
        self.last_read = record.seq;
        self.named(record.seq, &payload, "delivered")?;
        self.in_flight.push((record.seq, payload));
        Ok(())
    }

    async fn append(&mut self, queue: &DiskQueue) -> Check {
        let count = self.rng.usize(1..6);
        let mut events = Vec::new();
        let mut payloads = Vec::new();
        for _ in 0..count {
            let g = self.rng.usize(0..self.generations.len());
            let id = queue.register(self.generations[g].clone());
            let payload = self.payload();
            events.push((id, Bytes::from(payload.clone())));
            payloads.push(payload);
        }
        let Ok(Ok(appended)) =
            tokio::time::timeout(Duration::from_secs(10), queue.append(events)).await
        else {
            return self.fail("an append was not answered".into());
        };
        self.log.push(format!(
            "append {count}: accepted {} last {:?} {:?}",
            appended.accepted, appended.last_seq, appended.stopped_by
        ));
        if let Some(last) = appended.last_seq {
            let first = last + 1 - appended.accepted as u64;
            for (i, payload) in payloads.into_iter().take(appended.accepted).enumerate() {
                let seq = first + i as u64;
                let key = (self.identity.clone(), seq);
                match self.options.durability {
                    Durability::Batch => {
                        self.named(seq, &payload, "answered")?;
                        self.promised.insert(payload, key);
                    }
                    Durability::Interval(_) => {
                        self.answered.insert(key, payload);
                    }
                }
            }
        }
        Ok(())
    }

    async fn read(&mut self, queue: &DiskQueue) -> Check {
        let persisted = *queue.persisted().borrow();
        if persisted <= self.last_read {
            return Ok(());
        }
        let max = self.rng.usize(1..20);
        let deadline = Instant::now() + Duration::from_secs(10);
        let batch = loop {
            let read = tokio::time::timeout(Duration::from_millis(200), queue.read(max, 1 << 20));
            if let Ok(Some(batch)) = read.await {
                break batch;
            }
            // Burned numbers (a failed write under a barrier) have no record; a promised
            // record must still come, however slow the machine.
            if !self.owed(persisted, &BTreeSet::new()) {
                self.log
                    .push(format!("nothing readable up to {persisted}: burned"));
                self.last_read = persisted;
                return Ok(());
            }
            if Instant::now() > deadline {
                return self.fail(format!(
                    "nothing readable though persisted is {persisted} and {} was read",
                    self.last_read
                ));
            }
        };
        self.log.push(format!(
            "read {}..={}",
            batch[0].seq,
            batch[batch.len() - 1].seq
        ));
        for record in &batch {
            self.delivered(record)?;
        }
        Ok(())
    }

    fn ack(&mut self, queue: &DiskQueue) {
        if self.in_flight.is_empty() {
            return;
        }
        let n = self.rng.usize(1..=self.in_flight.len());
        for _ in 0..n {
            let i = self.rng.usize(0..self.in_flight.len());
            let (seq, payload) = self.in_flight.swap_remove(i);
            queue.ack(seq, seq);
            self.log.push(format!("ack {seq}"));
            self.acked.insert(payload);
        }
    }

    fn check_barrier(&self, queue: &DiskQueue, barrier: Barrier, what: &str) -> Check {
        let head = queue.stats().head;
        if barrier.seq > head {
            return self.fail(format!(
                "{what}: barrier {} beyond the committed head {head}",
                barrier.seq
            ));
        }
        Ok(())
    }

    /// A seal that lands while a write is failing (between planning and roll-back).
    async fn seal_during_failing_write(&mut self, queue: &Arc<DiskQueue>) -> Check {
        let input = INPUTS[self.rng.usize(0..INPUTS.len())];
        let gen = queue.register(Generation {
            input_unit: input.into(),
            output_unit: "out".into(),
            output_config_idx: 1,
        });
        let barrier = Arc::new(Mutex::new(None));
        let (q, b) = (Arc::downgrade(queue), barrier.clone());
        self.io.fail_next_writes(
            1,
            Some(Box::new(move || {
                if let Some(q) = q.upgrade() {
                    *b.lock().unwrap() = Some(q.seal_input(input));
                }
            })),
        );
        let payload = self.payload();
        let appended = tokio::time::timeout(
            Duration::from_secs(10),
            queue.append(vec![(gen, payload.into())]),
        )
        .await;
        self.io.fail_next_writes(0, None);
        let Ok(Ok(appended)) = appended else {
            return self.fail("an append was not answered".into());
        };
        let barrier = *barrier.lock().unwrap();
        self.log.push(format!(
            "failing write with a seal of {input}: {appended:?}, barrier {barrier:?}"
        ));
        if appended.accepted != 0 {
            return self.fail(format!("a failed write was accepted: {appended:?}"));
        }
        if let Some(barrier) = barrier {
            self.check_barrier(queue, barrier, "seal during a failing write")?;
        }
        queue.unseal_input(input);
        Ok(())
    }

    /// Stops the queue (power loss or clean close), maybe damages a file, reopens.
    async fn restart(&mut self, queue: Arc<DiskQueue>) -> Result<Arc<DiskQueue>, String> {
        let Ok(queue) = Arc::try_unwrap(queue) else {
            return Err(format!("seed {}: queue still shared", self.seed));
        };
        let power_loss = self.rng.u8(0..3) > 0;
        if power_loss {
            let mode = if self.rng.bool() {
                CrashMode::SyncedOnly
            } else {
                CrashMode::TornTail
            };
            queue.crash();
            let seed = self.rng.u64(..);
            if self.rng.bool() {
                self.dead_letter_cut_by_power_loss(mode, seed)?;
            } else {
                self.io
                    .crash(mode, seed)
                    .map_err(|err| format!("seed {}: crash failed: {err}", self.seed))?;
                self.log.push(format!("power loss {mode:?}"));
            }
        } else {
            queue.close();
            queue.persist().await;
            drop(queue);
            self.dlq.store()?.flush();
            self.log.push("clean close".into());
        }
        if let Some(store) = self.dlq.store.take() {
            let m = store.metrics();
            self.log.push(format!(
                "DLQ before: {} entries, dropped {}, expired {}",
                m.entries, m.dropped_events, m.expired_events
            ));
        }
        self.promise_persisted_never();
        // At most one damaged file per restart: with two, the queue cannot keep every name.
        let damage = match self.rng.u8(0..10) {
            0 => Some(("checkpoint.json", Some(&b"{\"version\":1,\"ack"[..]))),
            1 => Some(("checkpoint.json", None)),
            2 => Some(("queue.id", Some(&b"not an id"[..]))),
            _ => None,
        };
        if let Some((name, bytes)) = damage {
            self.io
                .damage(&self.dir.join(name), bytes)
                .map_err(|err| format!("seed {}: damage failed: {err}", self.seed))?;
            self.log.push(format!("damaged {name}: {bytes:?}"));
        }
        let queue = self.open()?;
        self.check_after_reopen(&queue).await?;
        self.check_dlq()?;
        Ok(Arc::new(queue))
    }

    /// Answers not yet persisted at a power loss were never promised (interval mode).
    fn promise_persisted_never(&mut self) {
        self.answered.clear();
    }
}

/// Runs one seed; `Err` names the broken invariant and the steps before it.
async fn run_seed(seed: u64, steps: usize) -> Check {
    let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let durability = match rng.u8(0..3) {
        0 => Durability::Batch,
        1 => Durability::Interval(Duration::from_millis(5)),
        _ => Durability::Interval(Duration::from_secs(3600)),
    };
    let dlq_settings = DlqSettings {
        dir: dir.path().join("dlq"),
        max_bytes: [3000, 6000, 1 << 20][rng.usize(0..3)],
        storage_policy: if rng.bool() {
            StoragePolicy::DropOlder
        } else {
            StoragePolicy::DropNewer
        },
        retain_age: rng
            .bool()
            .then(|| Duration::from_millis(rng.u64(5_000..30_000))),
        flush_interval: Duration::from_secs(2),
    };
    let queue_dir = dir.path().join("queue");
    let options = DiskOptions {
        dir: queue_dir.clone(),
        max_size: 1 << 20,
        segment_size: rng.u64(300..2000),
        durability,
        read_ahead: if rng.bool() { 256 } else { 1 << 20 },
    };
    let mut model = Model {
        rng,
        seed,
        dir: queue_dir,
        options,
        io: Arc::new(PowerLossIo::default()),
        identity: String::new(),
        names: HashMap::new(),
        ids: HashMap::new(),
        promised: BTreeMap::new(),
        answered: BTreeMap::new(),
        acked: BTreeSet::new(),
        in_flight: Vec::new(),
        last_read: 0,
        generations: INPUTS
            .iter()
            .map(|input| Generation {
                input_unit: (*input).into(),
                output_unit: "out".into(),
                output_config_idx: 1,
            })
            .collect(),
        next_payload: 0,
        log: vec![format!("durability {durability:?}, DLQ {dlq_settings:?}")],
        dlq: DlqModel {
            settings: dlq_settings,
            clock: Arc::new(ModelClock(AtomicU64::new(1_700_000_000_000))),
            store: None,
            sent: Vec::new(),
            by_tag: HashMap::new(),
        },
    };
    let mut queue = Arc::new(model.open()?);
    for _ in 0..steps {
        match model.rng.u8(0..100) {
            0..=29 => model.append(&queue).await?,
            30..=49 => model.read(&queue).await?,
            50..=61 => model.ack(&queue),
            62..=67 => model.dead_letter(&queue)?,
            68..=71 => {
                let input = INPUTS[model.rng.usize(0..INPUTS.len())];
                model.generations.push(Generation {
                    input_unit: input.into(),
                    output_unit: "out".into(),
                    output_config_idx: model.generations.len() as u64,
                });
                model.log.push("new generation".into());
            }
            72..=77 => {
                queue.request_checkpoint();
                model.log.push("checkpoint".into());
            }
            78..=79 => {
                // The DLQ's timer: seals an old head, applies age retention.
                let by = model.rng.u64(0..4000);
                model.dlq.clock.0.fetch_add(by, Ordering::SeqCst);
                model.dlq.store()?.tick();
                model.log.push(format!("DLQ tick after {by} ms"));
            }
            80..=83 => {
                let input = INPUTS[model.rng.usize(0..INPUTS.len())];
                let barrier = queue.seal_input(input);
                model.log.push(format!("seal {input}: {barrier:?}"));
                model.check_barrier(&queue, barrier, "seal")?;
                let all = queue.barrier_all();
                model.check_barrier(&queue, all, "barrier_all")?;
                queue.unseal_input(input);
            }
            84..=87 => model.seal_during_failing_write(&queue).await?,
            _ => queue = model.restart(queue).await?,
        }
        model.promise_persisted(&queue)?;
    }
    let untracked = model.io.untracked();
    if !untracked.is_empty() {
        return model.fail(format!(
            "file operations the harness did not see: {untracked:?}"
        ));
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A fixed seed budget: part of every `cargo test` (about 10 s in a debug build). Seeds
/// 0, 1, 4 and 34 found scenarios 2.5, 2.1c, 2.1a and 2.1b of issue 14 before their fixes
/// (with the steps of that time: the DLQ steps, added since, draw from the same seeds).
#[test]
fn power_loss_model_fixed_seeds() {
    let runtime = runtime();
    for seed in (0..20).chain([34]) {
        if let Err(failure) = runtime.block_on(run_seed(seed, 120)) {
            panic!("{failure}");
        }
    }
}

/// Random seeds for `CRASH_MODEL_SECONDS` (scripts/crash-model.sh), or one seed again with
/// `CRASH_MODEL_SEED`.
#[test]
#[ignore = "long: run by scripts/crash-model.sh"]
fn power_loss_model_for_a_while() {
    let runtime = runtime();
    let steps = 200;
    if let Some(seed) = std::env::var("CRASH_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        println!("crash model: replaying seed {seed}");
        if let Err(failure) = runtime.block_on(run_seed(seed, steps)) {
            panic!("{failure}");
        }
        return;
    }
    let seconds: u64 = std::env::var("CRASH_MODEL_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let start_seed = fastrand::u64(..1 << 40);
    println!("crash model: seeds from {start_seed}, {seconds} s");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut seed = start_seed;
    while Instant::now() < deadline {
        if let Err(failure) = runtime.block_on(run_seed(seed, steps)) {
            panic!("{failure}\nreplay: scripts/crash-model.sh --seed {seed}");
        }
        seed += 1;
    }
    println!(
        "crash model: {} seeds passed ({start_seed}..{seed})",
        seed - start_seed
    );
}
