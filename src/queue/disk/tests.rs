//! Disk queue tests, by concern: basics, recovery, corruption, limits, ordering.

use super::*;
use crate::queue::{AppendStop, Queue};
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
    let queue = DiskQueue::open(opts).unwrap();
    let gen = queue.register(generation("a"));
    let mut persisted = queue.persisted();
    queue.append(events(gen, 0..10)).await.unwrap();
    within(persisted.wait_for(|p| *p >= 10)).await.unwrap();
    assert_eq!(read_n(&queue, 10).await.len(), 10);
}
