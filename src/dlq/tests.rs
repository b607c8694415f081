//! DLQ behaviour on a controlled clock: retention, storage policies, readers, crashes.

use super::*;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl ManualClock {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

const DAY: u64 = 86_400_000;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock(AtomicU64::new(100 * DAY)))
}

fn settings(dir: &Path) -> DlqSettings {
    DlqSettings {
        dir: dir.to_path_buf(),
        max_bytes: 64 << 10,
        storage_policy: StoragePolicy::DropNewer,
        retain_age: None,
        flush_interval: Duration::from_secs(5),
    }
}

fn entry(clock: &ManualClock, n: u32) -> DlqEntry {
    DlqEntry {
        event: Bytes::from(format!("event-{n:06}-{}", "x".repeat(200))),
        reason: Reason {
            status: Some(400),
            error_type: "mapper_parsing_exception".into(),
            message: format!("bad field in {n}"),
        },
        input_unit: "input-a".into(),
        output_unit: "output-default".into(),
        revision: 3,
        dead_lettered_at_ms: clock.now_ms(),
    }
}

fn all_entries(dir: &Path) -> Vec<DlqEntry> {
    let mut reader = DlqReader::new(dir);
    let mut out = Vec::new();
    while let Some((_, entries)) = reader.next_segment().unwrap() {
        out.extend(entries.into_iter().map(|(_, e)| e));
    }
    out
}

#[test]
fn entries_older_than_retain_age_expire_without_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut s = settings(dir.path());
    s.retain_age = Some(Duration::from_millis(7 * DAY));
    let store = DeadLetterQueue::open(s, clock.clone()).unwrap();
    assert_eq!(
        store.write(&[entry(&clock, 1), entry(&clock, 2)]).written,
        2
    );
    clock.advance(Duration::from_secs(10));
    store.tick(); // seals the head (flush_interval passed)
    assert_eq!(
        all_entries(dir.path()).len(),
        2,
        "sealed entries are visible"
    );
    clock.advance(Duration::from_millis(6 * DAY));
    store.tick();
    assert_eq!(store.metrics().expired_events, 0, "six days old: kept");
    clock.advance(Duration::from_millis(DAY + 1));
    store.tick(); // the idle case: no write, only the timer
    assert_eq!(store.metrics().expired_events, 2);
    assert!(all_entries(dir.path()).is_empty());
    assert_eq!(store.metrics().entries, 0);
}

#[test]
fn drop_newer_refuses_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = DeadLetterQueue::open(settings(dir.path()), clock.clone()).unwrap();
    let entries: Vec<DlqEntry> = (0..400).map(|n| entry(&clock, n)).collect();
    let outcome = store.write(&entries);
    assert!(outcome.refused > 0 && outcome.written > 0, "{outcome:?}");
    let metrics = store.metrics();
    assert_eq!(metrics.dropped_events, outcome.refused as u64);
    assert_eq!(metrics.storage_policy, "drop_newer");
    assert!(metrics.last_error.unwrap().contains("full"));
    store.flush();
    let kept = all_entries(dir.path());
    assert_eq!(kept.len(), outcome.written);
    assert_eq!(kept[0], entries[0], "the oldest entries are the ones kept");
}

#[test]
fn drop_older_deletes_the_oldest_segments_and_counts_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut s = settings(dir.path());
    s.storage_policy = StoragePolicy::DropOlder;
    let store = DeadLetterQueue::open(s, clock.clone()).unwrap();
    let entries: Vec<DlqEntry> = (0..1000).map(|n| entry(&clock, n)).collect();
    let outcome = store.write(&entries);
    assert_eq!(outcome.written, 1000, "FIFO: every new entry is taken");
    store.flush();
    let kept = all_entries(dir.path());
    let metrics = store.metrics();
    assert_eq!(
        metrics.dropped_events + kept.len() as u64,
        1000,
        "every deleted entry is counted"
    );
    assert!(metrics.dropped_events > 0);
    assert_eq!(
        kept.last().unwrap(),
        &entries[999],
        "the newest entries are the ones kept"
    );
}

#[test]
fn size_never_exceeds_max_bytes_by_more_than_one_segment() {
    for policy in [StoragePolicy::DropNewer, StoragePolicy::DropOlder] {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let mut s = settings(dir.path());
        s.storage_policy = policy;
        let max = s.max_bytes;
        let store = DeadLetterQueue::open(s, clock.clone()).unwrap();
        for n in 0..2000 {
            store.write(&[entry(&clock, n)]);
            let on_disk: u64 = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            assert!(
                on_disk <= max + max / 8,
                "{policy:?}: {on_disk} bytes after {n} writes"
            );
            assert!(store.metrics().queue_size_in_bytes <= max);
        }
    }
}

#[test]
fn a_reader_whose_segment_is_deleted_continues_with_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = DeadLetterQueue::open(settings(dir.path()), clock.clone()).unwrap();
    for batch in 0..3 {
        store.write(
            &(0..10)
                .map(|n| entry(&clock, batch * 10 + n))
                .collect::<Vec<_>>(),
        );
        store.flush();
    }
    let segments = list_sealed(dir.path()).unwrap();
    assert_eq!(segments.len(), 3);
    let mut reader = DlqReader::new(dir.path());
    let (first, entries) = reader.next_segment().unwrap().unwrap();
    assert_eq!((first.first_seq, entries.len()), (1, 10));
    // Retention (or a replay) removes the segment the reader would read next.
    std::fs::remove_file(&segments[1].path).unwrap();
    let (next, entries) = reader.next_segment().unwrap().unwrap();
    assert_eq!(next.first_seq, 21);
    assert_eq!(entries[0].0, 21);
    assert!(reader.next_segment().unwrap().is_none());
}

#[test]
fn a_crash_while_writing_leaves_a_readable_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    {
        let store = DeadLetterQueue::open(settings(dir.path()), clock.clone()).unwrap();
        store.write(&(0..5).map(|n| entry(&clock, n)).collect::<Vec<_>>());
        // No flush: the process dies with the head unsealed, and a write torn in half.
    }
    let head = dir.path().join(store::HEAD_NAME);
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(&head)
        .unwrap();
    std::io::Write::write_all(&mut torn, &[0x40, 0x01, 0x00, 0x00, 0xde, 0xad]).unwrap();
    drop(torn);
    let store = DeadLetterQueue::open(settings(dir.path()), clock.clone()).unwrap();
    assert!(!head.exists(), "the crashed head is sealed at open");
    let kept = all_entries(dir.path());
    assert_eq!(kept.len(), 5);
    assert_eq!(store.metrics().damaged_heads, 1, "the torn tail is counted");
    assert_eq!(store.metrics().entries, 5, "and not counted as an entry");
    assert_eq!(kept[4].reason.message, "bad field in 4");
    // And writing goes on after them.
    store.write(&[entry(&clock, 5)]);
    store.flush();
    assert_eq!(all_entries(dir.path()).len(), 6);
}

#[test]
fn a_damaged_entry_mid_segment_costs_only_that_entry() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = DeadLetterQueue::open(settings(dir.path()), clock.clone()).unwrap();
    store.write(&(0..5).map(|n| entry(&clock, n)).collect::<Vec<_>>());
    store.flush();
    let segment = list_sealed(dir.path()).unwrap().remove(0);
    let mut bytes = std::fs::read(&segment.path).unwrap();
    let frame_len = (bytes.len() - crate::queue::disk::segment::HEADER_LEN) / 5;
    bytes[crate::queue::disk::segment::HEADER_LEN + 2 * frame_len + 30] ^= 0x10; // entry 3's payload
    std::fs::write(&segment.path, &bytes).unwrap();
    let entries = read_entries(&segment.path).unwrap();
    let seqs: Vec<u64> = entries.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, vec![1, 2, 4, 5]);
}

/// DLQ file I/O whose `fdatasync` can be made slow (until released) or failing.
#[derive(Default)]
struct SyncControl {
    fail: std::sync::atomic::AtomicBool,
    /// While set, a sync reports itself on `started` and waits for `release`.
    hold: std::sync::atomic::AtomicBool,
    started: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    release: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl crate::queue::SegmentIo for SyncControl {
    fn write_all_at(&self, file: &std::fs::File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        crate::queue::disk::OsIo.write_all_at(file, buf, offset)
    }

    fn sync_data(&self, file: &std::fs::File) -> std::io::Result<()> {
        if self.hold.load(Ordering::SeqCst) {
            if let Some(started) = self.started.lock().unwrap().as_ref() {
                let _ = started.send(());
            }
            if let Some(release) = self.release.lock().unwrap().as_ref() {
                // Bounded: a test that forgets to release does not hang the suite.
                let _ = release.recv_timeout(Duration::from_secs(20));
            }
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5)); // EIO
        }
        crate::queue::disk::OsIo.sync_data(file)
    }
}

/// Issue 14, 2.8: a snapshot of the DLQ's figures (what the supervisor takes for every
/// check-in and diagnostics) is answered while a write waits on a slow `fdatasync`.
#[test]
fn scenario_2_8_a_snapshot_is_answered_while_a_sync_is_slow() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let io = Arc::new(SyncControl::default());
    let (started_tx, started) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    *io.started.lock().unwrap() = Some(started_tx);
    *io.release.lock().unwrap() = Some(release_rx);
    let store = Arc::new(
        DeadLetterQueue::open_with_io(settings(dir.path()), clock.clone(), io.clone()).unwrap(),
    );
    assert_eq!(store.write(&[entry(&clock, 0)]).written, 1);
    io.hold.store(true, Ordering::SeqCst);
    let writer = {
        let store = store.clone();
        let entry = entry(&clock, 1);
        std::thread::spawn(move || store.write(&[entry]))
    };
    started
        .recv_timeout(Duration::from_secs(10))
        .expect("the write reached its sync");
    let (answer_tx, answer) = std::sync::mpsc::channel();
    let snapshot = {
        let store = store.clone();
        std::thread::spawn(move || {
            let _ = answer_tx.send(store.metrics());
        })
    };
    let metrics = answer.recv_timeout(Duration::from_secs(2));
    io.hold.store(false, Ordering::SeqCst);
    release.send(()).unwrap();
    let metrics = metrics.expect("the snapshot waited for the fdatasync");
    assert_eq!(
        metrics.entries, 1,
        "the entry being synced is not counted yet"
    );
    assert_eq!(writer.join().unwrap().written, 1);
    snapshot.join().unwrap();
    assert_eq!(store.metrics().entries, 2);
}

/// Issue 14, 2.8: a failed `fdatasync` stores nothing it was asked to: the entries are
/// not counted as written (so their records are not acknowledged) and not kept in the
/// file either, so the retry that follows stores each exactly once.
#[test]
fn scenario_2_8_a_failed_sync_counts_nothing_as_written_and_the_retry_stores_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let io = Arc::new(SyncControl::default());
    let store =
        DeadLetterQueue::open_with_io(settings(dir.path()), clock.clone(), io.clone()).unwrap();
    assert_eq!(store.write(&[entry(&clock, 0)]).written, 1);
    io.fail.store(true, Ordering::SeqCst);
    let batch = [entry(&clock, 1), entry(&clock, 2)];
    let outcome = store.write(&batch);
    assert_eq!((outcome.written, outcome.failed), (0, 2), "{outcome:?}");
    let metrics = store.metrics();
    assert_eq!(metrics.entries, 1);
    assert_eq!(metrics.dropped_events, 0, "not dropped: to be retried");
    assert!(
        metrics
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("fdatasync")),
        "{metrics:?}"
    );
    io.fail.store(false, Ordering::SeqCst);
    assert_eq!(store.write(&batch).written, 2);
    store.flush();
    let stored: Vec<String> = all_entries(dir.path())
        .iter()
        .map(|e| String::from_utf8_lossy(&e.event)[..12].to_string())
        .collect();
    assert_eq!(stored, vec!["event-000000", "event-000001", "event-000002"]);
}
