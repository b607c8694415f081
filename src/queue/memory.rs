//! The bounded in-memory queue. Its content is lost if the process dies; the persisted
//! index it reports is therefore the acknowledged prefix, never the write head.

use super::generations::GenerationTable;
use super::{
    AppendStop, Appended, Barrier, Generation, GenerationId, Queue, QueueError, QueueStats, Record,
    Seq,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::{watch, Notify};

/// A bounded FIFO held in memory, bounded by event count and payload bytes.
pub struct MemoryQueue {
    /// Shared mutable state: appenders, readers and ackers all touch it, each for a few
    /// instructions; the lock is never held across an `.await`.
    state: Mutex<State>,
    records_ready: Notify,
    acked_tx: watch::Sender<Seq>,
    max_events: u64,
    max_bytes: u64,
    identity: String,
}

#[derive(Default)]
struct State {
    /// Unacknowledged records; `records[i].seq == acked + 1 + i`.
    records: VecDeque<Record>,
    bytes: u64,
    head: Seq,
    acked: Seq,
    next_read: Seq,
    /// Acked ranges beyond the prefix, keyed by first sequence.
    acked_ahead: BTreeMap<Seq, Seq>,
    generations: GenerationTable,
    closed: bool,
}

impl MemoryQueue {
    /// A queue holding at most `max_events` records and `max_bytes` payload bytes.
    pub fn new(max_events: u64, max_bytes: u64) -> Self {
        let (acked_tx, _) = watch::channel(0);
        MemoryQueue {
            state: Mutex::new(State {
                next_read: 1,
                ..State::default()
            }),
            records_ready: Notify::new(),
            acked_tx,
            max_events,
            max_bytes,
            identity: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain counters behind; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn try_read(&self, max_events: usize, max_bytes: usize) -> Option<Option<Vec<Record>>> {
        let mut state = self.lock();
        let start = state.next_read.saturating_sub(state.acked + 1) as usize;
        if start >= state.records.len() {
            return if state.closed { Some(None) } else { None };
        }
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for record in state.records.iter().skip(start).take(max_events.max(1)) {
            if !batch.is_empty() && bytes + record.payload.len() > max_bytes {
                break;
            }
            bytes += record.payload.len();
            batch.push(record.clone());
        }
        state.next_read += batch.len() as u64;
        // After a rewind: what was acknowledged out of order is not handed out again (the
        // batch may come back empty; the caller then reads on).
        super::skip_acked_ahead(&mut batch, &state.acked_ahead);
        Some(Some(batch))
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    fn register(&self, generation: Generation) -> GenerationId {
        self.lock().generations.register(generation).0
    }

    fn generation(&self, id: GenerationId) -> Option<Generation> {
        let state = self.lock();
        state.generations.get(id).map(|g| g.generation.clone())
    }

    async fn append(&self, events: Vec<(GenerationId, Bytes)>) -> Result<Appended, QueueError> {
        let mut state = self.lock();
        if state.closed {
            return Err(QueueError::Closed);
        }
        let mut accepted = 0;
        let mut stopped_by = None;
        for (generation, payload) in events {
            // Unknown ids cannot be routed; sealed inputs are draining.
            if let Some(refusal) = state.generations.refusal(generation) {
                stopped_by = Some(refusal);
                break;
            }
            let len = payload.len() as u64;
            let empty = state.records.is_empty();
            let full =
                state.records.len() as u64 >= self.max_events || state.bytes + len > self.max_bytes;
            // One oversized event in an empty queue is still accepted, so it cannot wedge.
            if full && !empty {
                stopped_by = Some(AppendStop::Full);
                break;
            }
            state.head += 1;
            let seq = state.head;
            state.bytes += len;
            if let Some(gen_state) = state.generations.get_mut(generation) {
                gen_state.last_seq = seq;
                gen_state.unacked += 1;
            }
            state.records.push_back(Record {
                seq,
                generation,
                payload,
            });
            accepted += 1;
        }
        let last_seq = (accepted > 0).then_some(state.head);
        drop(state);
        if accepted > 0 {
            self.records_ready.notify_waiters();
        }
        Ok(Appended {
            accepted,
            last_seq,
            stopped_by,
        })
    }

    async fn read(&self, max_events: usize, max_bytes: usize) -> Option<Vec<Record>> {
        loop {
            let notified = self.records_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_read(max_events, max_bytes) {
                // Every record taken was already acknowledged: read on (each pass moves on).
                Some(Some(batch)) if batch.is_empty() => continue,
                Some(result) => return result,
                None => {}
            }
            notified.await;
        }
    }

    fn ack(&self, first: Seq, last: Seq) {
        if first > last {
            return;
        }
        let mut state = self.lock();
        if last <= state.acked || last > state.head {
            return;
        }
        let start = first.max(state.acked + 1);
        let entry = state.acked_ahead.entry(start).or_insert(last);
        *entry = (*entry).max(last);
        let before = state.acked;
        while let Some((&start, &end)) = state.acked_ahead.first_key_value() {
            if start > state.acked + 1 {
                break;
            }
            state.acked_ahead.pop_first();
            while state.acked < end {
                let Some(record) = state.records.pop_front() else {
                    break;
                };
                state.acked = record.seq;
                state.bytes -= record.payload.len() as u64;
                if let Some(g) = state.generations.get_mut(record.generation) {
                    g.unacked -= 1;
                }
            }
        }
        // A record acknowledged without being read (never today, but cheap to guard) must
        // not leave the cursor behind the records still held.
        state.next_read = state.next_read.max(state.acked + 1);
        let acked = state.acked;
        drop(state);
        if acked != before {
            self.acked_tx.send_replace(acked);
        }
    }

    fn rewind(&self) {
        let mut state = self.lock();
        state.next_read = state.acked + 1;
        drop(state);
        self.records_ready.notify_waiters();
    }

    fn pending_generations(&self) -> Vec<(Generation, u64)> {
        self.lock().generations.pending_list()
    }

    fn seal_input(&self, input_unit: &str) -> Barrier {
        self.lock().generations.seal(input_unit)
    }

    fn unseal_input(&self, input_unit: &str) {
        self.lock().generations.unseal(input_unit);
    }

    fn pending_for_input(&self, input_unit: &str) -> u64 {
        self.lock().generations.pending(input_unit)
    }

    fn barrier_all(&self) -> Barrier {
        let state = self.lock();
        Barrier {
            seq: state.head,
            pending: state.records.len() as u64,
        }
    }

    fn acked(&self) -> watch::Receiver<Seq> {
        self.acked_tx.subscribe()
    }

    fn persisted(&self) -> watch::Receiver<Seq> {
        // In memory nothing is safe before the output has it.
        self.acked_tx.subscribe()
    }

    fn close(&self) {
        self.lock().closed = true;
        self.records_ready.notify_waiters();
    }

    async fn persist(&self) {
        // Nothing to make durable: the memory queue promises nothing past the process.
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn stats(&self) -> QueueStats {
        let state = self.lock();
        QueueStats {
            kind: "memory",
            events: state.records.len() as u64,
            bytes: state.bytes,
            max_bytes: self.max_bytes,
            head: state.head,
            acked: state.acked,
            oldest_unacked: state.records.front().map(|r| r.seq),
            ..QueueStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn generation(input: &str) -> Generation {
        Generation {
            input_unit: input.into(),
            output_unit: "out".into(),
            output_config_idx: 1,
        }
    }

    fn payloads(gen: GenerationId, count: usize) -> Vec<(GenerationId, Bytes)> {
        (0..count)
            .map(|i| (gen, Bytes::from(format!("event-{i}"))))
            .collect()
    }

    async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), future)
            .await
            .expect("timed out")
    }

    /// Scenario 2.7 (issue 14): a rewind hands out again only what is not acknowledged.
    #[tokio::test]
    async fn scenario_2_7_a_rewind_skips_what_was_acknowledged_out_of_order() {
        let queue = MemoryQueue::new(100, 1 << 20);
        let gen = queue.register(generation("a"));
        queue.append(payloads(gen, 6)).await.unwrap();
        let batch = within(queue.read(10, 1 << 20)).await.unwrap();
        assert_eq!(batch.len(), 6);
        queue.ack(3, 4);
        queue.ack(6, 6);
        queue.rewind();
        let mut again = Vec::new();
        for _ in 0..10 {
            if again.len() == 3 {
                break;
            }
            let batch = within(queue.read(10, 1 << 20)).await.unwrap();
            again.extend(batch.iter().map(|r| r.seq));
        }
        assert_eq!(again, vec![1, 2, 5]);
    }

    #[tokio::test]
    async fn full_queue_accepts_a_prefix_and_says_so() {
        let queue = MemoryQueue::new(3, 1 << 20);
        let gen = queue.register(generation("a"));
        let appended = queue.append(payloads(gen, 5)).await.unwrap();
        assert_eq!(appended.accepted, 3);
        assert_eq!(appended.last_seq, Some(3));
        assert_eq!(appended.stopped_by, Some(AppendStop::Full));
        // Acknowledging frees room; nothing was dropped.
        let batch = within(queue.read(10, 1 << 20)).await.unwrap();
        assert_eq!(
            batch.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        queue.ack(1, 3);
        assert_eq!(
            queue.append(payloads(gen, 2)).await.unwrap().last_seq,
            Some(5)
        );
    }

    #[tokio::test]
    async fn out_of_order_acks_advance_only_the_contiguous_prefix() {
        let queue = MemoryQueue::new(100, 1 << 20);
        let gen = queue.register(generation("a"));
        queue.append(payloads(gen, 6)).await.unwrap();
        let acked = queue.acked();
        queue.ack(4, 6);
        assert_eq!(*acked.borrow(), 0);
        queue.ack(1, 2);
        assert_eq!(*acked.borrow(), 2);
        queue.ack(3, 3);
        assert_eq!(*acked.borrow(), 6);
        assert_eq!(queue.stats().events, 0);
        assert_eq!(queue.stats().bytes, 0);
    }

    #[tokio::test]
    async fn sealing_refuses_the_input_and_sets_an_exact_barrier() {
        let queue = MemoryQueue::new(100, 1 << 20);
        let a = queue.register(generation("a"));
        let b = queue.register(generation("b"));
        queue.append(payloads(a, 2)).await.unwrap();
        queue.append(payloads(b, 3)).await.unwrap();
        queue.append(payloads(a, 1)).await.unwrap();
        let barrier = queue.seal_input("b");
        assert_eq!(barrier, Barrier { seq: 5, pending: 3 });
        let refused = queue.append(payloads(b, 1)).await.unwrap();
        assert_eq!(refused.accepted, 0);
        assert_eq!(
            refused.stopped_by,
            Some(AppendStop::Sealed {
                input_unit: "b".into()
            })
        );
        // Other inputs still flow.
        assert_eq!(queue.append(payloads(a, 1)).await.unwrap().accepted, 1);
        queue.ack(1, 5);
        assert_eq!(queue.pending_for_input("b"), 0);
        queue.unseal_input("b");
        assert_eq!(queue.append(payloads(b, 1)).await.unwrap().accepted, 1);
    }

    #[tokio::test]
    async fn readers_wait_for_records_and_end_after_close() {
        let queue = std::sync::Arc::new(MemoryQueue::new(100, 1 << 20));
        let gen = queue.register(generation("a"));
        let reader = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.read(10, 1 << 20).await })
        };
        queue.append(payloads(gen, 2)).await.unwrap();
        let batch = within(reader).await.unwrap().unwrap();
        assert_eq!(batch.len(), 2);
        queue.close();
        assert!(within(queue.read(10, 1 << 20)).await.is_none());
        assert_eq!(
            queue.append(payloads(gen, 1)).await,
            Err(QueueError::Closed)
        );
    }

    // The module's promise: nothing held only in memory is reported persisted, so a
    // producer is never told an event is safe before the output acknowledged it.
    #[tokio::test]
    async fn persisted_is_the_acknowledged_prefix_never_the_write_head() {
        let queue = MemoryQueue::new(100, 1 << 20);
        let gen = queue.register(generation("a"));
        let persisted = queue.persisted();
        let appended = queue.append(payloads(gen, 5)).await.unwrap();
        assert_eq!(appended.last_seq, Some(5));
        assert_eq!(*persisted.borrow(), 0, "appended is not persisted");
        let batch = within(queue.read(10, 1 << 20)).await.unwrap();
        assert_eq!(batch.len(), 5);
        assert_eq!(*persisted.borrow(), 0, "read is not persisted");
        queue.ack(3, 5);
        assert_eq!(
            *persisted.borrow(),
            0,
            "acked ahead of a gap is not persisted"
        );
        queue.ack(1, 2);
        assert_eq!(*persisted.borrow(), 5);
        queue.append(payloads(gen, 2)).await.unwrap();
        assert_eq!(*persisted.borrow(), 5, "new appends do not move it");
        queue.persist().await;
        assert_eq!(*persisted.borrow(), 5, "persist() promises nothing more");
        assert_eq!(*persisted.borrow(), *queue.acked().borrow());
    }

    #[tokio::test]
    async fn byte_limit_bounds_batches_but_never_wedges() {
        let queue = MemoryQueue::new(100, 10);
        let gen = queue.register(generation("a"));
        let big = vec![(gen, Bytes::from(vec![0u8; 64]))];
        assert_eq!(
            queue.append(big.clone()).await.unwrap().accepted,
            1,
            "oversized event in empty queue"
        );
        assert_eq!(
            queue.append(big).await.unwrap().stopped_by,
            Some(AppendStop::Full)
        );
        let batch = within(queue.read(10, 1)).await.unwrap();
        assert_eq!(batch.len(), 1);
    }
}
