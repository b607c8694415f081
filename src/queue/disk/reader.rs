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
        (*first, segment.last_seq.min(state.head))
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
        let lost: u64 = outcome.lost.iter().map(|(a, b)| b - a + 1).sum();
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
        shared.acked_tx.send_replace(acked);
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
                FrameStatus::Incomplete => {
                    // The file ends before `last`: the rest of this segment is lost.
                    out.lost.push((out.next_seq, last));
                    out.damage
                        .get_or_insert("segment ends before its last record");
                    out.next_seq = last + 1;
                    break 'outer;
                }
                FrameStatus::Corrupted(reason) => {
                    out.damage.get_or_insert(reason);
                    match resync(&open.file, open.offset + 1, out.next_seq, last) {
                        Some((offset, seq)) => {
                            out.lost.push((out.next_seq, seq - 1));
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

/// Finds the next frame at or after `offset` that checks out and continues the sequence
/// (`after < seq <= last`); tries every byte offset, which only happens on damage.
fn resync(file: &File, mut offset: u64, after: Seq, last: Seq) -> Option<(u64, Seq)> {
    let len = file.metadata().ok()?.len();
    let fits = |frame: &frame::Frame| frame.seq > after && frame.seq <= last;
    while offset < len {
        let mut buf = vec![0u8; CHUNK.min((len - offset) as usize)];
        let n = file.read_at(&mut buf, offset).ok()?;
        buf.truncate(n);
        let chunk = Bytes::from(buf);
        for at in 0..chunk.len() {
            match frame::decode(&chunk.slice(at..)) {
                FrameStatus::Valid(frame, _) if fits(&frame) => {
                    return Some((offset + at as u64, frame.seq))
                }
                FrameStatus::Incomplete => {
                    // A candidate running past this chunk: read it on its own.
                    let Some(total) = frame_len_hint(&chunk.slice(at..)) else {
                        continue;
                    };
                    let start = offset + at as u64;
                    if start + total as u64 > len {
                        continue;
                    }
                    let mut whole = vec![0u8; total];
                    if file.read_at(&mut whole, start).ok()? == total {
                        if let FrameStatus::Valid(frame, _) = frame::decode(&Bytes::from(whole)) {
                            if fits(&frame) {
                                return Some((start, frame.seq));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        // Overlap by a frame header so no candidate start is skipped.
        offset += (chunk.len() as u64)
            .saturating_sub(frame::FRAME_HEADER as u64)
            .max(1);
    }
    None
}
