//! Reading sealed DLQ segments, tolerating segments deleted under the reader.

use super::entry::DlqEntry;
use super::store::{list_sealed, SealedSegment};
use super::DlqError;
use crate::queue::disk::frame::{self, FrameStatus};
use crate::queue::disk::segment::{self, HEADER_LEN};
use bytes::Bytes;
use std::path::{Path, PathBuf};

/// A segment's entries with their sequence numbers.
pub type SegmentEntries = Vec<(u64, DlqEntry)>;

/// Every whole entry of one segment file, with its sequence number; stops at damage.
pub fn read_entries(path: &Path) -> Result<SegmentEntries, DlqError> {
    let data = std::fs::read(path).map_err(|err| DlqError::io(path, err))?;
    segment::parse_header(&data).map_err(|reason| DlqError::Io {
        path: path.to_path_buf(),
        message: reason.to_string(),
    })?;
    let data = Bytes::from(data);
    let mut at = HEADER_LEN;
    let mut out = Vec::new();
    while at < data.len() {
        match frame::decode(&data.slice(at..)) {
            FrameStatus::Valid(frame, len) => {
                match DlqEntry::decode(&frame.payload) {
                    Ok(entry) => out.push((frame.seq, entry)),
                    Err(err) => {
                        tracing::warn!(path = %path.display(), seq = frame.seq, error = %err, "skipping a malformed DLQ entry")
                    }
                }
                at += len;
            }
            FrameStatus::Incomplete | FrameStatus::Corrupted(_) => {
                // Skip the damage: entries after it are still worth reading.
                // Nothing can follow an entry with the last sequence number there is.
                let Some(after) = out.last().map_or(Some(0), |(seq, _)| seq.checked_add(1)) else {
                    tracing::warn!(path = %path.display(), offset = at, "DLQ segment damaged after its last possible entry");
                    break;
                };
                let file = std::fs::File::open(path).map_err(|err| DlqError::io(path, err))?;
                match segment::find_next_frame(&file, at as u64 + 1, after, u64::MAX) {
                    Some((next, _)) => {
                        tracing::warn!(path = %path.display(), offset = at, "DLQ segment damaged: skipped to the next whole entry");
                        at = next as usize;
                    }
                    None => {
                        tracing::warn!(path = %path.display(), offset = at, "DLQ segment damaged: no whole entry after this point");
                        break;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Walks the sealed segments in order, keeping its own position; a segment deleted under
/// it (retention, replay, purge) is skipped and it continues with the next that exists.
pub struct DlqReader {
    dir: PathBuf,
    next_seq: u64,
}

impl DlqReader {
    /// A reader at the oldest entry of `dir`.
    pub fn new(dir: &Path) -> Self {
        DlqReader {
            dir: dir.to_path_buf(),
            next_seq: 0,
        }
    }

    /// The next sealed segment with entries at or after the position, and its entries;
    /// `None` when there is none.
    pub fn next_segment(&mut self) -> Result<Option<(SealedSegment, SegmentEntries)>, DlqError> {
        loop {
            let Some(segment) = list_sealed(&self.dir)?
                .into_iter()
                .find(|s| s.first_seq + s.count > self.next_seq)
            else {
                return Ok(None);
            };
            match read_entries(&segment.path) {
                Ok(entries) => {
                    self.next_seq = segment.first_seq + segment.count;
                    return Ok(Some((segment, entries)));
                }
                // Deleted between listing and reading: go on with the next one.
                Err(DlqError::NotFound(_)) => continue,
                // A damaged header: say so and go on with the next segment.
                Err(err @ DlqError::Io { .. }) if segment.path.exists() => {
                    tracing::warn!(error = %err, "unreadable DLQ segment skipped");
                    self.next_seq = segment.first_seq + segment.count;
                    continue;
                }
                Err(err) => return Err(err),
            }
        }
    }
}
