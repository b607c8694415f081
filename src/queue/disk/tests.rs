//! Disk queue tests, by concern: basics, recovery, corruption, limits, ordering.

use super::*;
use crate::queue::{AppendStop, Queue, QueueHealth};
use segment::HEADER_LEN;
use std::io::Write;
use std::time::Duration;

fn options(dir: &Path) -> DiskOptions {
    DiskOptions {
        dir: dir.to_path_buf(),
        max_size: 64 << 20,
        segment_size: 1 << 20,
        durability: Durability::Batch,
        read_ahead: 1 << 20,
    }
}

fn generation(input: &str) -> Generation {
    Generation {
        input_unit: input.into(),
        output_unit: "out".into(),
        output_config_idx: 1,
    }
}

fn events(generation: GenerationId, range: std::ops::Range<u64>) -> Vec<(GenerationId, Bytes)> {
    range
        .map(|i| (generation, Bytes::from(format!("event-{i:06}"))))
        .collect()
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("timed out")
}

/// Reads until `count` records arrived; returns them.
async fn read_n(queue: &DiskQueue, count: usize) -> Vec<Record> {
    let mut out = Vec::new();
    while out.len() < count {
        let batch = within(queue.read(count - out.len(), usize::MAX))
            .await
            .expect("queue closed early");
        out.extend(batch);
    }
    out
}

fn payloads(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect()
}

#[tokio::test]
async fn appended_records_are_durable_then_read_in_order_and_acked() {
    let dir = tempfile::tempdir().unwrap();
    let queue = DiskQueue::open(options(dir.path())).unwrap();
    let gen = queue.register(generation("a"));
    let persisted = queue.persisted();
    let appended = queue.append(events(gen, 0..100)).await.unwrap();
    assert_eq!(
        (appended.accepted, appended.last_seq, appended.stopped_by),
        (100, Some(100), None)
    );
    assert_eq!(*persisted.borrow(), 100, "answered only once durable");
    let records = read_n(&queue, 100).await;
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
    assert_eq!(payloads(&records)[42], "event-000042");
    queue.ack(1, 100);
    assert_eq!(queue.stats().events, 0);
    assert!(queue.stats().fsyncs >= 1);
}

#[tokio::test]
async fn reopen_delivers_exactly_the_unacknowledged_records() {
    let dir = tempfile::tempdir().unwrap();
    {
        let queue = DiskQueue::open(options(dir.path())).unwrap();
        let gen = queue.register(generation("a"));
        queue.append(events(gen, 0..50)).await.unwrap();
        read_n(&queue, 50).await;
        queue.ack(1, 20);
        queue.close();
        queue.persist().await;
    }
    let queue = DiskQueue::open(options(dir.path())).unwrap();
    assert_eq!(queue.stats().acked, 20);
    assert_eq!(
        queue.pending_for_input("a"),
        30,
        "per-input counts are rebuilt"
    );
    let records = read_n(&queue, 30).await;
    assert_eq!(records.first().unwrap().seq, 21);
    assert_eq!(payloads(&records).last().unwrap(), "event-000049");
    // Sequence numbers continue after a restart.
    let gen = queue.register(generation("a"));
    assert_eq!(
        queue.append(events(gen, 0..1)).await.unwrap().last_seq,
        Some(51)
    );
}

#[tokio::test]
async fn torn_tail_is_truncated_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let queue = DiskQueue::open(options(dir.path())).unwrap();
    let gen = queue.register(generation("a"));
    queue.append(events(gen, 0..10)).await.unwrap();
    queue.crash();
    // A write torn by the crash: half a frame at the end of the tail segment.
    let tail = segment::segment_path(dir.path(), 1);
    let mut torn = Vec::new();
    frame::encode(&mut torn, 11, 0, b"never finished");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&tail)
        .unwrap();
    file.write_all(&torn[..torn.len() / 2]).unwrap();
    drop(file);
    let len_before = std::fs::metadata(&tail).unwrap().len();

    let queue = DiskQueue::open(options(dir.path())).unwrap();
    assert!(
        std::fs::metadata(&tail).unwrap().len() < len_before,
        "torn bytes cut off"
    );
    let records = read_n(&queue, 10).await;
    assert_eq!(records.last().unwrap().seq, 10);
    let gen = queue.register(generation("a"));
    assert_eq!(
        queue.append(events(gen, 0..1)).await.unwrap().last_seq,
        Some(11)
    );
    assert_eq!(read_n(&queue, 1).await[0].seq, 11);
}

#[tokio::test]
async fn flipped_byte_in_a_sealed_segment_is_quarantined_counted_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.segment_size = 4096;
    {
        let queue = DiskQueue::open(opts.clone()).unwrap();
        let gen = queue.register(generation("a"));
        queue.append(events(gen, 0..400)).await.unwrap();
        queue.close();
        queue.persist().await;
    }
    // Damage the payload of one frame in the first segment.
    let first = segment::segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&first).unwrap();
    let frame_len = frame::encoded_len("event-000000".len());
    let target = HEADER_LEN + 3 * frame_len + frame::FRAME_HEADER + frame::BODY_HEADER + 2;
    bytes[target] ^= 0x40;
    std::fs::write(&first, &bytes).unwrap();

    let queue = DiskQueue::open(opts).unwrap();
    let mut seqs = Vec::new();
    while seqs.len() < 399 {
        let batch = within(queue.read(1000, usize::MAX)).await.unwrap();
        seqs.extend(batch.iter().map(|r| r.seq));
    }
    assert!(!seqs.contains(&4), "the damaged record is not delivered");
    assert_eq!(seqs.len(), 399, "every other record is");
    assert_eq!(queue.stats().corrupted_events, 1);
    queue.ack(1, 400);
    queue.close();
    queue.persist().await;
    let quarantined: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.contains(".corrupt-"))
        .collect();
    assert_eq!(
        quarantined,
        vec!["00000000000000000001.seg.corrupt-0".to_string()]
    );
    assert_eq!(queue.stats().quarantined_segments, 1);
    assert!(!first.exists());
}

#[tokio::test]
async fn full_queue_accepts_a_prefix_and_the_rest_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.segment_size = 2048;
    opts.max_size = 8192;
    let queue = DiskQueue::open(opts).unwrap();
    let gen = queue.register(generation("a"));
    let first = queue.append(events(gen, 0..1000)).await.unwrap();
    assert!(first.accepted > 0 && first.accepted < 1000, "{first:?}");
    assert_eq!(first.stopped_by, Some(AppendStop::Full));
    assert!(queue.stats().bytes <= 8192, "{}", queue.stats().bytes);
    let mut total = first.accepted;
    let mut acked_up_to = 0;
    // Consume and acknowledge; the queue frees segments and takes the rest.
    for _ in 0..1000 {
        if total == 1000 {
            break;
        }
        let batch = within(queue.read(10_000, usize::MAX)).await.unwrap();
        let last = batch.last().unwrap().seq;
        queue.ack(acked_up_to + 1, last);
        acked_up_to = last;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let more = queue.append(events(gen, total as u64..1000)).await.unwrap();
            total += more.accepted;
            if more.accepted > 0 || total == 1000 || tokio::time::Instant::now() > deadline {
                break;
            }
            // The input's resend loop: a full queue frees space at the checkpoint after the ack.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(queue.stats().bytes <= 8192, "{:?}", queue.stats());
    }
    assert_eq!(
        total, 1000,
        "nothing dropped: every event was accepted in the end"
    );
}

#[tokio::test]
async fn out_of_order_acks_checkpoint_only_the_contiguous_prefix() {
    let dir = tempfile::tempdir().unwrap();
    {
        let queue = DiskQueue::open(options(dir.path())).unwrap();
        let gen = queue.register(generation("a"));
        queue.append(events(gen, 0..6)).await.unwrap();
        read_n(&queue, 6).await;
        queue.ack(4, 6);
        queue.ack(1, 2);
        assert_eq!(*queue.acked().borrow(), 2);
        queue.close();
        queue.persist().await;
    }
    let queue = DiskQueue::open(options(dir.path())).unwrap();
    let records = read_n(&queue, 4).await;
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
}

#[tokio::test]
async fn a_reader_that_falls_behind_reads_from_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.read_ahead = 1024;
    opts.segment_size = 8192;
    let queue = DiskQueue::open(opts).unwrap();
    let gen = queue.register(generation("a"));
    for chunk in 0..20 {
        queue
            .append(events(gen, chunk * 100..chunk * 100 + 100))
            .await
            .unwrap();
    }
    let records = read_n(&queue, 2000).await;
    let expected: Vec<String> = (0..2000).map(|i| format!("event-{i:06}")).collect();
    assert_eq!(payloads(&records), expected);
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _queue = DiskQueue::open(options(dir.path())).unwrap();
    let err = DiskQueue::open(options(dir.path())).err().expect("locked");
    assert!(matches!(err, DiskError::Locked(_)), "{err}");
}

#[tokio::test]
async fn sealing_is_exact_and_survives_a_restart_as_counts() {
    let dir = tempfile::tempdir().unwrap();
    let queue = DiskQueue::open(options(dir.path())).unwrap();
    let a = queue.register(generation("a"));
    let b = queue.register(generation("b"));
    queue.append(events(a, 0..3)).await.unwrap();
    queue.append(events(b, 0..2)).await.unwrap();
    let barrier = queue.seal_input("b");
    assert_eq!(barrier, Barrier { seq: 5, pending: 2 });
    let refused = queue.append(events(b, 0..1)).await.unwrap();
    assert_eq!(
        refused.stopped_by,
        Some(AppendStop::Sealed {
            input_unit: "b".into()
        })
    );
    queue.crash();
    let queue = DiskQueue::open(options(dir.path())).unwrap();
    assert_eq!(queue.pending_for_input("b"), 2);
    assert_eq!(queue.pending_for_input("a"), 3);
}

#[tokio::test]
async fn interval_durability_answers_after_the_write_and_persists_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.durability = Durability::Interval(Duration::from_millis(50));
    let io = Arc::new(power_loss::PowerLossIo::default());
    let queue = DiskQueue::open_with_io(opts, io.clone()).unwrap();
    let gen = queue.register(generation("a"));
    let mut persisted = queue.persisted();
    // Hold the timed sync: the answer must not wait for it, and persisted must wait.
    io.close_gate();
    let appended = queue.append(events(gen, 0..10)).await.unwrap();
    assert_eq!(appended.last_seq, Some(10));
    assert_eq!(
        *persisted.borrow(),
        0,
        "persisted lags the answer in interval mode"
    );
    io.open_gate();
    within(persisted.wait_for(|p| *p >= 10)).await.unwrap();
    assert_eq!(read_n(&queue, 10).await.len(), 10);
}

fn segment_bytes_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[tokio::test]
async fn damage_in_the_middle_of_the_tail_keeps_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let queue = DiskQueue::open(options(dir.path())).unwrap();
    let gen = queue.register(generation("a"));
    queue.append(events(gen, 0..10)).await.unwrap();
    queue.crash();
    let tail = segment::segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&tail).unwrap();
    let frame_len = frame::encoded_len("event-000000".len());
    bytes[HEADER_LEN + 4 * frame_len + frame::FRAME_HEADER + 1] ^= 0x01; // record 5's sequence field
    std::fs::write(&tail, &bytes).unwrap();

    let queue = DiskQueue::open(options(dir.path())).unwrap();
    assert_eq!(
        std::fs::metadata(&tail).unwrap().len(),
        bytes.len() as u64,
        "not truncated"
    );
    assert_eq!(queue.stats().corrupted_events, 1);
    let records = read_n(&queue, 9).await;
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 6, 7, 8, 9, 10]);
    queue.ack(1, 10);
    queue.close();
    queue.persist().await;
    assert!(
        !tail.exists(),
        "the damaged segment is quarantined once acknowledged"
    );
    assert_eq!(queue.stats().quarantined_segments, 1);
}

#[tokio::test]
async fn a_damaged_length_field_loses_one_record_not_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.segment_size = 4096;
    {
        let queue = DiskQueue::open(opts.clone()).unwrap();
        let gen = queue.register(generation("a"));
        queue.append(events(gen, 0..300)).await.unwrap();
        queue.close();
        queue.persist().await;
    }
    let first = segment::segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&first).unwrap();
    let frame_len = frame::encoded_len("event-000000".len());
    bytes[HEADER_LEN + 2 * frame_len + 3] = 0x02; // record 3 now claims ~32 MiB
    std::fs::write(&first, &bytes).unwrap();
    let queue = DiskQueue::open(opts).unwrap();
    let mut seqs = Vec::new();
    while seqs.len() < 299 {
        let batch = within(queue.read(1000, usize::MAX)).await.unwrap();
        seqs.extend(batch.iter().map(|r| r.seq));
    }
    assert!(!seqs.contains(&3));
    assert_eq!(seqs.len(), 299);
    assert_eq!(queue.stats().corrupted_events, 1);
}

#[tokio::test]
async fn reopening_repeatedly_keeps_the_byte_count_true() {
    let dir = tempfile::tempdir().unwrap();
    {
        let queue = DiskQueue::open(options(dir.path())).unwrap();
        let gen = queue.register(generation("a"));
        queue.append(events(gen, 0..100)).await.unwrap();
        queue.close();
        queue.persist().await;
    }
    for _ in 0..3 {
        let queue = DiskQueue::open(options(dir.path())).unwrap();
        assert_eq!(queue.stats().bytes, segment_bytes_on_disk(dir.path()));
        assert_eq!(queue.stats().events, 100);
        queue.close();
        queue.persist().await;
    }
}

mod model {
    //! Random action sequences against the real queue and a model of it (a FIFO of
    //! unacknowledged payloads), in the manner of Vector's disk buffer model tests.
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, VecDeque};

    #[derive(Debug, Clone)]
    enum Action {
        Append(u8),
        Read(u8),
        AckOldestRead,
        AckNewestRead,
        Reopen,
        Crash,
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            4 => (1u8..40).prop_map(Action::Append),
            3 => (1u8..60).prop_map(Action::Read),
            2 => Just(Action::AckOldestRead),
            2 => Just(Action::AckNewestRead),
            1 => Just(Action::Reopen),
            1 => Just(Action::Crash),
        ]
    }

    /// The model: payload by sequence, the acknowledged prefix, what was handed out.
    #[derive(Default)]
    struct Model {
        payloads: BTreeMap<u64, Vec<u8>>,
        acked: u64,
        acked_ahead: Vec<(u64, u64)>,
        /// Handed out and not acknowledged, oldest first.
        read: VecDeque<u64>,
        /// Next sequence the reader must see.
        next_read: u64,
        head: u64,
    }

    fn small(dir: &Path) -> DiskOptions {
        DiskOptions {
            dir: dir.to_path_buf(),
            max_size: 1 << 20,
            segment_size: 2048,
            durability: Durability::Batch,
            read_ahead: 512,
        }
    }

    async fn play(dir: &Path, actions: Vec<Action>) -> Result<(), TestCaseError> {
        let mut queue = Some(DiskQueue::open(small(dir)).unwrap());
        let mut model = Model {
            next_read: 1,
            ..Model::default()
        };
        let mut counter = 0u32;
        for action in actions {
            let q = queue.as_ref().unwrap();
            match action {
                Action::Append(n) => {
                    let gen = q.register(generation("m"));
                    let batch: Vec<(GenerationId, Bytes)> = (0..n)
                        .map(|_| {
                            counter += 1;
                            (
                                gen,
                                Bytes::from(format!(
                                    "p{counter}-{}",
                                    "x".repeat((counter % 50) as usize)
                                )),
                            )
                        })
                        .collect();
                    let appended = q.append(batch.clone()).await.unwrap();
                    prop_assert_eq!(appended.accepted, n as usize, "1 MiB never fills here");
                    for (_, payload) in batch {
                        model.head += 1;
                        model.payloads.insert(model.head, payload.to_vec());
                    }
                    prop_assert_eq!(appended.last_seq, Some(model.head));
                }
                Action::Read(n) => {
                    if model.next_read > model.head {
                        continue;
                    }
                    let batch = within(q.read(n as usize, usize::MAX)).await.unwrap();
                    for record in batch {
                        prop_assert_eq!(
                            record.seq,
                            model.next_read,
                            "in order, no gaps, no repeats"
                        );
                        prop_assert_eq!(&record.payload[..], &model.payloads[&record.seq][..]);
                        model.read.push_back(record.seq);
                        model.next_read += 1;
                    }
                }
                Action::AckOldestRead | Action::AckNewestRead => {
                    let seq = match action {
                        Action::AckOldestRead => model.read.pop_front(),
                        _ => model.read.pop_back(),
                    };
                    let Some(seq) = seq else { continue };
                    q.ack(seq, seq);
                    model.acked_ahead.push((seq, seq));
                    model.acked_ahead.sort_unstable();
                    while let Some(pos) = model
                        .acked_ahead
                        .iter()
                        .position(|(s, _)| *s == model.acked + 1)
                    {
                        model.acked = model.acked_ahead.remove(pos).1;
                    }
                    prop_assert_eq!(q.stats().acked, model.acked);
                }
                Action::Reopen | Action::Crash => {
                    let q = queue.take().unwrap();
                    let clean = matches!(action, Action::Reopen);
                    if clean {
                        q.close();
                        q.persist().await;
                        drop(q);
                    } else {
                        q.crash();
                    }
                    let reopened = DiskQueue::open(small(dir)).unwrap();
                    let restart_at = reopened.stats().acked;
                    // A clean close checkpoints exactly the prefix; a crash may be behind it.
                    if clean {
                        prop_assert_eq!(restart_at, model.acked);
                    } else {
                        prop_assert!(restart_at <= model.acked);
                    }
                    prop_assert_eq!(
                        reopened.stats().head,
                        model.head,
                        "nothing appended is lost"
                    );
                    // Everything after the recovered prefix is delivered again, from the start.
                    model.acked = restart_at;
                    model.acked_ahead.clear();
                    model.read.clear();
                    model.next_read = restart_at + 1;
                    queue = Some(reopened);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn queue_matches_its_model(actions in proptest::collection::vec(action(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(play(dir.path(), actions))?;
        }
    }
}

/// File I/O that fails like a full disk while `full` is set: half of the write lands, then
/// `ENOSPC` (what a filesystem that runs out mid-write does).
#[derive(Default)]
struct FullDisk {
    full: std::sync::atomic::AtomicBool,
}

impl SegmentIo for FullDisk {
    fn write_all_at(&self, file: &std::fs::File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            OsIo.write_all_at(file, &buf[..buf.len() / 2], offset)?;
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        OsIo.write_all_at(file, buf, offset)
    }

    fn sync_data(&self, file: &std::fs::File) -> std::io::Result<()> {
        OsIo.sync_data(file)
    }
}

#[tokio::test]
async fn a_full_disk_refuses_appends_reports_it_loses_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FullDisk::default());
    let queue = DiskQueue::open_with_io(options(dir.path()), io.clone()).unwrap();
    let gen = queue.register(generation("a"));
    let mut health = queue.health();
    assert_eq!(queue.append(events(gen, 0..50)).await.unwrap().accepted, 50);

    io.full.store(true, std::sync::atomic::Ordering::SeqCst);
    let refused = queue.append(events(gen, 50..60)).await.unwrap();
    assert_eq!((refused.accepted, refused.last_seq), (0, None));
    match &refused.stopped_by {
        Some(AppendStop::Storage { reason }) => {
            assert!(reason.contains("No space left on device"), "{reason}")
        }
        other => panic!("expected a storage stop, got {other:?}"),
    }
    within(health.wait_for(
        |h| matches!(h, QueueHealth::Failing(r) if r.contains("No space left on device")),
    ))
    .await
    .unwrap();
    assert_eq!(
        *queue.persisted().borrow(),
        50,
        "persisted never covers a failed write"
    );
    // Everything confirmed before the disk filled is still there, in order.
    assert_eq!(
        payloads(&read_n(&queue, 50).await),
        (0..50).map(|i| format!("event-{i:06}")).collect::<Vec<_>>()
    );

    io.full.store(false, std::sync::atomic::Ordering::SeqCst);
    let appended = queue.append(events(gen, 50..60)).await.unwrap();
    assert_eq!(
        (appended.accepted, appended.last_seq, appended.stopped_by),
        (10, Some(60), None)
    );
    within(health.wait_for(|h| *h == QueueHealth::Healthy))
        .await
        .unwrap();
    assert_eq!(
        read_n(&queue, 10)
            .await
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        (51..=60).collect::<Vec<_>>()
    );

    // The half-written frames were cut back: a reopen finds exactly the 60 records.
    queue.close();
    queue.persist().await;
    drop(queue);
    let reopened = DiskQueue::open(options(dir.path())).unwrap();
    assert_eq!(reopened.stats().corrupted_events, 0);
    assert_eq!(
        payloads(&read_n(&reopened, 60).await),
        (0..60).map(|i| format!("event-{i:06}")).collect::<Vec<_>>()
    );
}

// Power losses (`power_loss.rs`): only what was synced survives, unlike after SIGKILL.

use super::power_loss::{CrashMode, PowerLossIo};

fn open_on(opts: &DiskOptions, io: &Arc<PowerLossIo>) -> DiskQueue {
    DiskQueue::open_with_io(opts.clone(), io.clone()).unwrap()
}

/// Reads whatever is readable within `wait`.
async fn read_available(queue: &DiskQueue, wait: Duration) -> Vec<Record> {
    let mut out = Vec::new();
    while let Ok(Some(batch)) = tokio::time::timeout(wait, queue.read(1000, usize::MAX)).await {
        out.extend(batch);
    }
    out
}

#[tokio::test]
async fn power_loss_with_batch_durability_keeps_every_answered_record() {
    for mode in [CrashMode::SyncedOnly, CrashMode::TornTail] {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(PowerLossIo::default());
        let mut opts = options(dir.path());
        opts.segment_size = 400;
        let queue = open_on(&opts, &io);
        let gen = queue.register(generation("a"));
        for chunk in 0..6 {
            let appended = queue
                .append(events(gen, chunk * 10..chunk * 10 + 10))
                .await
                .unwrap();
            assert_eq!(appended.accepted, 10);
        }
        queue.crash();
        io.crash(mode, 7).unwrap();
        let reopened = open_on(&opts, &io);
        assert_eq!(
            payloads(&read_n(&reopened, 60).await),
            (0..60).map(|i| format!("event-{i:06}")).collect::<Vec<_>>(),
            "{mode:?}: an answered append is on disk"
        );
        assert!(io.untracked().is_empty(), "{:?}", io.untracked());
    }
}

#[tokio::test]
async fn persisted_moves_only_after_the_sync_returns() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(PowerLossIo::default());
    let queue = Arc::new(open_on(&options(dir.path()), &io));
    let gen = queue.register(generation("a"));
    queue.append(events(gen, 0..5)).await.unwrap();
    io.close_gate();
    let appending = tokio::spawn({
        let queue = queue.clone();
        async move { queue.append(events(gen, 5..10)).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while io.syncs_waiting() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the batch was never synced"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The sync is under way: nothing of the batch may be published or answered yet.
    assert_eq!(
        *queue.persisted().borrow(),
        5,
        "persisted before the sync returned"
    );
    assert!(
        !appending.is_finished(),
        "answered before the sync returned"
    );
    assert!(
        read_available(&queue, Duration::from_millis(100))
            .await
            .len()
            <= 5,
        "a reader got a record before it was synced"
    );
    io.open_gate();
    let appended = within(appending).await.unwrap().unwrap();
    assert_eq!(appended.last_seq, Some(10));
    assert_eq!(*queue.persisted().borrow(), 10);
}

#[tokio::test]
async fn power_loss_with_interval_durability_never_reuses_a_delivered_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(PowerLossIo::default());
    let mut opts = options(dir.path());
    opts.durability = Durability::Interval(Duration::from_secs(3600));
    let queue = open_on(&opts, &io);
    let identity = queue.identity().to_string();
    let gen = queue.register(generation("a"));
    let appended = queue.append(events(gen, 0..5)).await.unwrap();
    assert_eq!(appended.last_seq, Some(5));
    assert_eq!(*queue.persisted().borrow(), 0, "persisted lags the answer");
    // The output must not get what a power loss can still take.
    let delivered = read_available(&queue, Duration::from_millis(200)).await;
    queue.crash();
    io.crash(CrashMode::SyncedOnly, 1).unwrap();

    let reopened = open_on(&opts, &io);
    let gen = reopened.register(generation("a"));
    let appended = reopened.append(events(gen, 100..105)).await.unwrap();
    let first_new = appended.last_seq.unwrap() - 4;
    let reused: Vec<u64> = delivered
        .iter()
        .map(|r| r.seq)
        .filter(|seq| reopened.identity() == identity && *seq >= first_new)
        .collect();
    assert!(
        reused.is_empty(),
        "sequence numbers {reused:?} were delivered, lost, and given to new events under the same queue.id"
    );
}

#[tokio::test]
async fn a_damaged_checkpoint_never_restarts_numbering_under_the_same_queue_id() {
    for remove_segments in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(PowerLossIo::default());
        let mut opts = options(dir.path());
        opts.segment_size = 300;
        let queue = open_on(&opts, &io);
        let identity = queue.identity().to_string();
        let gen = queue.register(generation("a"));
        queue.append(events(gen, 0..30)).await.unwrap();
        read_n(&queue, 30).await;
        queue.ack(1, 30);
        queue.close();
        queue.persist().await;
        drop(queue);
        // Reopen once: the acknowledged tail goes, an empty one named 31 takes its place.
        let queue = open_on(&opts, &io);
        queue.close();
        queue.persist().await;
        drop(queue);
        io.damage(&dir.path().join("checkpoint.json"), Some(b"{\"vers"))
            .unwrap();
        if remove_segments {
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "seg") {
                    io.damage(&path, None).unwrap();
                }
            }
        }
        let reopened = open_on(&opts, &io);
        let gen = reopened.register(generation("a"));
        let appended = reopened.append(events(gen, 100..101)).await.unwrap();
        let seq = appended.last_seq.unwrap();
        assert!(
            reopened.identity() != identity || seq > 30,
            "remove_segments={remove_segments}: sequence {seq} given again under queue.id {identity}"
        );
        if !remove_segments {
            assert_eq!(
                reopened.identity(),
                identity,
                "the tail's name proves continuity"
            );
        }
    }
}

#[tokio::test]
async fn a_damaged_queue_id_keeps_the_backlogs_ids() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(PowerLossIo::default());
    let opts = options(dir.path());
    let queue = open_on(&opts, &io);
    let identity = queue.identity().to_string();
    let gen = queue.register(generation("a"));
    queue.append(events(gen, 0..10)).await.unwrap();
    // Delivered (indexed under identity:seq), not yet acknowledged.
    read_n(&queue, 10).await;
    queue.crash();
    io.crash(CrashMode::SyncedOnly, 1).unwrap();
    io.damage(&dir.path().join("queue.id"), Some(b"garbage"))
        .unwrap();
    let reopened = open_on(&opts, &io);
    assert_eq!(
        reopened.identity(),
        identity,
        "a new queue.id would index the backlog again under new _ids"
    );
    assert_eq!(read_n(&reopened, 10).await.len(), 10);
}

#[tokio::test]
async fn a_seal_during_a_failing_write_never_points_past_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(PowerLossIo::default());
    let queue = Arc::new(open_on(&options(dir.path()), &io));
    let gen = queue.register(generation("a"));
    queue.append(events(gen, 0..5)).await.unwrap();
    let barrier = Arc::new(Mutex::new(None));
    let (weak, slot) = (Arc::downgrade(&queue), barrier.clone());
    io.fail_next_writes(
        1,
        Some(Box::new(move || {
            if let Some(queue) = weak.upgrade() {
                *slot.lock().unwrap() = Some((queue.seal_input("a"), queue.barrier_all()));
            }
        })),
    );
    let refused = queue.append(events(gen, 5..10)).await.unwrap();
    assert_eq!(refused.accepted, 0);
    let (sealed, all) = barrier.lock().unwrap().expect("sealed during the write");
    let head = queue.stats().head;
    assert!(
        sealed.seq <= head,
        "input barrier {} past the head {head}",
        sealed.seq
    );
    assert!(
        all.seq <= head,
        "barrier_all {} past the head {head}",
        all.seq
    );
    // The drain ends: acknowledging what is there reaches both barriers.
    read_n(&queue, 5).await;
    queue.ack(1, 5);
    let acked = *queue.acked().borrow();
    assert!(
        acked >= sealed.seq && acked >= all.seq,
        "acked {acked}, {sealed:?} {all:?}"
    );
}

/// Scenario 2.7 (issue 14): with two workers, one batch is acknowledged ahead of an older
/// one; when the older one's worker gives up (`rewind`), what was already acknowledged
/// must not be handed out again (it would be dead-lettered or counted a second time).
#[tokio::test]
async fn scenario_2_7_a_rewind_skips_what_was_acknowledged_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    // Small enough that the second pass is read from the segment files, not the cache.
    opts.read_ahead = 64;
    let queue = DiskQueue::open(opts).unwrap();
    let gen = queue.register(generation("a"));
    queue.append(events(gen, 0..10)).await.unwrap();
    assert_eq!(read_n(&queue, 10).await.len(), 10);
    queue.ack(4, 6);
    queue.ack(9, 9);
    queue.rewind();
    let again: Vec<Seq> = read_n(&queue, 5).await.iter().map(|r| r.seq).collect();
    assert_eq!(again, vec![1, 2, 3, 7, 8, 10][..5].to_vec());
    let rest: Vec<Seq> = read_n(&queue, 1).await.iter().map(|r| r.seq).collect();
    assert_eq!(rest, vec![10]);
    queue.ack(1, 10);
    assert_eq!(*queue.acked().borrow(), 10);

    // The same from the in-memory tail.
    queue.append(events(gen, 10..16)).await.unwrap();
    let seqs: Vec<Seq> = read_n(&queue, 6).await.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (11..=16).collect::<Vec<_>>());
    queue.ack(12, 13);
    queue.rewind();
    let again: Vec<Seq> = read_n(&queue, 4).await.iter().map(|r| r.seq).collect();
    assert_eq!(again, vec![11, 14, 15, 16]);
}

fn segment_files(dir: &Path) -> Vec<Seq> {
    let mut firsts: Vec<Seq> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| segment::parse_segment_name(e.ok()?.file_name().to_str()?))
        .collect();
    firsts.sort_unstable();
    firsts
}

/// Waits (bounded) until at most `count` segment files are left in `dir`.
async fn wait_for_segments_at_most(dir: &Path, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while segment_files(dir).len() > count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "acknowledged segments never freed: {:?}",
            segment_files(dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Scenario 2.4 (issue 14): a queue that filled its own disk cannot write its checkpoint
/// (ENOSPC), and used to keep every acknowledged segment until a restart, so the disk
/// stayed full forever. Here the checkpoint write fails for good (its temp path is a
/// directory): acknowledged segments are still freed, and a crash afterwards neither
/// reuses a sequence number nor loses or re-numbers an unacknowledged record.
#[tokio::test]
async fn scenario_2_4_acknowledged_segments_are_freed_while_the_checkpoint_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.segment_size = 1024;
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::create_dir(dir.path().join("checkpoint.tmp")).unwrap();
    let queue = DiskQueue::open(opts.clone()).unwrap();
    let gen = queue.register(generation("a"));
    assert_eq!(
        queue.append(events(gen, 0..200)).await.unwrap().accepted,
        200
    );
    let before = segment_files(dir.path()).len();
    assert!(before >= 5, "{before} segments");
    read_n(&queue, 200).await;
    // Acknowledge every sealed segment; the active one's records stay unacknowledged.
    let active_first = *segment_files(dir.path()).last().unwrap();
    queue.ack(1, active_first - 1);
    wait_for_segments_at_most(dir.path(), 1).await;
    assert!(
        !checkpoint::path(dir.path()).exists(),
        "the checkpoint really failed"
    );
    // The writer removes the files first and counts the bytes freed after: wait for both.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while queue.stats().bytes > 1024 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "freed segments still counted: {:?}",
            queue.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A crash now: the old checkpoint (none) must not make the queue number from 1 again,
    // nor lose or renumber the unacknowledged records.
    queue.crash();
    let queue = DiskQueue::open(opts.clone()).unwrap();
    let first = active_first;
    let all = read_n(&queue, (200 - first + 1) as usize).await;
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (first..=200).collect::<Vec<_>>()
    );
    for record in &all {
        assert_eq!(
            String::from_utf8_lossy(&record.payload),
            format!("event-{:06}", record.seq - 1),
            "same number, same payload"
        );
    }
    // Everything acknowledged while the active segment (started at the reopen) is empty:
    // the newest segment holding records is kept, so that numbering survives a restart.
    queue.ack(first, 200);
    assert_eq!(*queue.acked().borrow(), 200);
    queue.close();
    // The final checkpoint fails too; the segments it would have covered are freed.
    queue.persist().await;
    drop(queue);
    let queue = DiskQueue::open(opts).unwrap();
    let gen = queue.register(generation("a"));
    let appended = queue.append(events(gen, 200..201)).await.unwrap();
    assert_eq!(
        appended.last_seq,
        Some(201),
        "a sequence number was reused: {appended:?}"
    );
}

/// Numbers burned by several failed writes in a row (each under a seal) are adjacent
/// ranges; a reader coming from the segment files must step over all of them at once. It
/// stepped over one range per try and waited out its 200 ms no-progress back-off on each of
/// the others, so the record after a long burned run came seconds late (the power-loss
/// model, seed 7, gave up on it under load and missed a promised record).
#[tokio::test]
async fn a_reader_steps_over_adjacent_burned_ranges_without_stalling() {
    const BURNS: u64 = 15;
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(PowerLossIo::default());
    let mut opts = options(dir.path());
    // Small enough that the record after the burned run is read from the segment files.
    opts.read_ahead = 16;
    let queue = Arc::new(open_on(&opts, &io));
    let gen = queue.register(generation("a"));
    queue.append(events(gen, 0..5)).await.unwrap();
    assert_eq!(read_n(&queue, 5).await.len(), 5);
    for i in 0..BURNS {
        let weak = Arc::downgrade(&queue);
        io.fail_next_writes(
            1,
            Some(Box::new(move || {
                if let Some(queue) = weak.upgrade() {
                    queue.seal_input("a");
                }
            })),
        );
        let refused = queue.append(events(gen, 100 + i..101 + i)).await.unwrap();
        io.fail_next_writes(0, None);
        queue.unseal_input("a");
        assert_eq!(refused.accepted, 0, "burn {i}: {refused:?}");
    }
    let appended = queue.append(events(gen, 5..6)).await.unwrap();
    assert_eq!(appended.last_seq, Some(5 + BURNS + 1), "{appended:?}");
    assert_eq!(
        *queue.acked().borrow(),
        0,
        "burned numbers past the unacknowledged ones do not move the prefix"
    );
    // Far below the (BURNS - 1) x 200 ms the old stepping took.
    let next = tokio::time::timeout(Duration::from_secs(1), queue.read(10, usize::MAX))
        .await
        .expect("the record after the burned numbers is read without a stall")
        .expect("queue open");
    assert_eq!(payloads(&next), vec!["event-000005".to_string()]);
    assert_eq!(next[0].seq, 5 + BURNS + 1);

    // A rewind goes back before the burned numbers: the reader steps over them again.
    queue.rewind();
    let again = tokio::time::timeout(Duration::from_secs(1), async {
        let mut out = Vec::new();
        while out.len() < 6 {
            match queue.read(10, usize::MAX).await {
                Some(batch) => out.extend(batch),
                None => break,
            }
        }
        out
    })
    .await
    .expect("after a rewind the record after the burned numbers is read again");
    assert_eq!(
        again.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 5 + BURNS + 1]
    );
}
