//! Reading records back from segment files, for readers that fell behind the in-memory
//! tail. Keeps its place (segment, offset) between calls so a backlog is read once,
//! sequentially, in bounded chunks.

use super::frame::{self, FrameStatus};
use super::segment::{self, HEADER_LEN};
use super::{DiskError, Shared};
use crate::queue::{GenerationId, Record, Seq};
use bytes::Bytes;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Bytes read per `pread`.
const CHUNK: usize = 1 << 20;

/// Where the disk reader stopped.
#[derive(Default)]
pub(super) struct ReaderPos {
    open: Option<OpenSegment>,
}

struct OpenSegment {
    first: Seq,
    file: File,
    /// Offset of the frame holding `next_seq`.
    offset: u64,
    next_seq: Seq,
}

/// What one read found.
struct Outcome {
    records: Vec<Record>,
    /// Ranges of sequence numbers whose frames are unreadable: lost.
    lost: Vec<(Seq, Seq)>,
    damage: Option<&'static str>,
    /// One past the last sequence number covered (read or lost).
    next_seq: Seq,
}

/// Reads records starting at `from` from the segment files. Returns `None` when nothing
/// was read (the caller waits and retries); unreadable records are counted and skipped.
pub(super) async fn read_from_disk(
    shared: &Arc<Shared>,
    pos: &tokio::sync::Mutex<ReaderPos>,
    from: Seq,
    max_events: usize,
    max_bytes: usize,
) -> Option<Vec<Record>> {
    let mut guard = pos.lock().await;
    let (first, last) = {
        let state = shared.lock();
        let (first, segment) = state.segments.range(..=from).next_back()?;
        // Never past what is synced (see `DiskQueue::read`).
        (*first, segment.last_seq.min(state.durable))
    };
    let dir = shared.options.dir.clone();
    let mut owned = std::mem::take(&mut *guard);
    let joined = tokio::task::spawn_blocking(move || {
        let outcome = read_segment(&mut owned, &dir, first, from, last, max_events, max_bytes);
        (owned, outcome)
    })
    .await;
    let (owned, outcome) = match joined {
        Ok(pair) => pair,
        Err(err) => {
            tracing::error!(error = %err, "queue reader task failed");
            return None;
        }
    };
    *guard = owned;
    drop(guard);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(err) => {
            tracing::error!(error = %err, "cannot read the queue; will retry");
            return None;
        }
    };
    let mut state = shared.lock();
    if state.next_read != from {
        // Rewound meanwhile: the caller starts over from the new position.
        return None;
    }
    state.next_read = outcome.next_seq;
    if let Some(damage) = outcome.damage {
        // Losses already found (and counted) when the queue was opened are not new.
        let lost: u64 = outcome
            .lost
            .iter()
            .filter(|(start, end)| {
                *end > state.acked && state.acked_ahead.get(start).is_none_or(|e| e < end)
            })
            .map(|(start, end)| end - start + 1)
            .sum();
        state.counters.corrupted_events += lost;
        if let Some(segment) = state.segments.get_mut(&first) {
            segment.corrupt = true;
        }
        tracing::error!(
            path = %segment::segment_path(&shared.options.dir, first).display(),
            damage,
            lost_events = lost,
            "queue segment damaged: readable records are delivered, unreadable ones are lost and counted; the segment will be quarantined"
        );
    }
    for (start, end) in &outcome.lost {
        let entry = state.acked_ahead.entry(*start).or_insert(*end);
        *entry = (*entry).max(*end);
    }
    if !outcome.lost.is_empty() && state.advance_acked() {
        let acked = state.acked;
        drop(state);
        shared.publish_acked(acked);
    }
    (!outcome.records.is_empty()).then_some(outcome.records)
}

fn read_segment(
    pos: &mut ReaderPos,
    dir: &Path,
    first: Seq,
    from: Seq,
    last: Seq,
    max_events: usize,
    max_bytes: usize,
) -> Result<Outcome, DiskError> {
    let path = segment::segment_path(dir, first);
    let reuse = pos
        .open
        .as_ref()
        .is_some_and(|o| o.first == first && o.next_seq <= from);
    if !reuse {
        let file = File::open(&path).map_err(|err| DiskError::io(&path, err))?;
        pos.open = Some(OpenSegment {
            first,
            file,
            offset: HEADER_LEN as u64,
            next_seq: first,
        });
    }
    let Some(open) = pos.open.as_mut() else {
        return Err(DiskError::Corrupt {
            path,
            reason: "reader lost its segment".into(),
        });
    };
    let mut out = Outcome {
        records: Vec::new(),
        lost: Vec::new(),
        damage: None,
        next_seq: from,
    };
    let mut bytes = 0usize;
    let mut want = CHUNK;
    'outer: while out.next_seq <= last
        && out.records.len() < max_events
        && (out.records.is_empty() || bytes < max_bytes)
    {
        let mut buf = vec![0u8; want];
        let n = open
            .file
            .read_at(&mut buf, open.offset)
            .map_err(|err| DiskError::io(&path, err))?;
        buf.truncate(n);
        let chunk = Bytes::from(buf);
        let mut at = 0usize;
        loop {
            if out.next_seq > last
                || out.records.len() >= max_events
                || (!out.records.is_empty() && bytes >= max_bytes)
            {
                break 'outer;
            }
            match frame::decode(&chunk.slice(at..)) {
                FrameStatus::Valid(frame, len) => {
                    if frame.seq > out.next_seq && frame.seq <= last {
                        out.lost.push((out.next_seq, frame.seq - 1));
                        out.damage.get_or_insert("sequence numbers skip ahead");
                    }
                    if frame.seq >= out.next_seq && frame.seq <= last {
                        bytes += frame.payload.len();
                        out.records.push(Record {
                            seq: frame.seq,
                            generation: GenerationId(frame.generation),
                            payload: frame.payload,
                        });
                        out.next_seq = frame.seq + 1;
                    }
                    at += len;
                    open.offset += len as u64;
                    open.next_seq = out.next_seq.max(open.next_seq);
                    want = CHUNK;
                }
                FrameStatus::Incomplete if n == want && at > 0 => continue 'outer,
                FrameStatus::Incomplete if n == want => {
                    // A frame bigger than the chunk: read it whole.
                    want = frame_len_hint(&chunk).unwrap_or(want * 2).max(want * 2);
                    continue 'outer;
                }
                // The file ends inside a frame before `last`, or a frame does not check out:
                // skip to the next frame that does (a damaged length looks like a long frame).
                FrameStatus::Incomplete | FrameStatus::Corrupted(_) => {
                    let reason = match frame::decode(&chunk.slice(at..)) {
                        FrameStatus::Corrupted(reason) => reason,
                        _ => "frame runs past the end of the segment",
                    };
                    out.damage.get_or_insert(reason);
                    match segment::find_next_frame(&open.file, open.offset + 1, out.next_seq, last)
                    {
                        Some((offset, seq)) => {
                            if seq > out.next_seq {
                                out.lost.push((out.next_seq, seq - 1));
                            }
                            out.next_seq = seq;
                            open.offset = offset;
                        }
                        None => {
                            out.lost.push((out.next_seq, last));
                            out.next_seq = last + 1;
                        }
                    }
                    open.next_seq = out.next_seq;
                    continue 'outer;
                }
            }
        }
    }
    if out.next_seq > last {
        // Done with this segment; the next read opens the following one.
        pos.open = None;
    }
    Ok(out)
}

fn frame_len_hint(chunk: &Bytes) -> Option<usize> {
    let head = chunk.get(0..4)?;
    let body = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    (body <= frame::MAX_BODY).then_some(frame::FRAME_HEADER + body)
}
