//! Segment files: naming, the header, scanning, and the summary written when a segment
//! is sealed.
//!
//! ```text
//! <dir>/<first-seq, 20 digits>.seg     header, then frames (frame.rs)
//! <dir>/<first-seq, 20 digits>.meta    summary of a sealed segment (JSON), written last
//! <dir>/<first-seq, 20 digits>.seg.corrupt-<n>   a quarantined segment, kept for a person
//!
//! header: magic "ASHQ" | u16 LE version (1) | u16 reserved (0) | u64 LE first sequence
//!         | u32 LE CRC32C of the 16 bytes before it            (20 bytes, FROZEN LAYOUT)
//! ```
//! A `.meta` exists only for sealed segments; opening a queue trusts it instead of reading
//! the segment, which is what keeps reopening a large backlog fast. A segment without one
//! (the tail at a crash) is scanned.

use super::frame::{self, FrameStatus};
use super::{DiskError, SegmentIo};
use bytes::Bytes;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Segment header length.
pub const HEADER_LEN: usize = 20;
/// Generation id recorded in a summary for sequence numbers whose frames are unreadable.
pub const LOST_GENERATION: u32 = u32::MAX;
/// Bytes read at a time when scanning.
const CHUNK: usize = 1 << 20;
const MAGIC: &[u8; 4] = b"ASHQ";
/// Segment format version.
pub const VERSION: u16 = 1;

/// The path of the segment starting at `first_seq`.
pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

/// The path of a sealed segment's summary.
pub fn meta_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.meta"))
}

/// The first sequence number named by a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// The first sequence number named by a quarantined segment (`<first>.seg.corrupt-<n>`).
pub fn parse_quarantined_name(name: &str) -> Option<u64> {
    let (segment, n) = name.split_once(".corrupt-")?;
    n.parse::<u32>().ok()?;
    parse_segment_name(segment)
}

/// The header bytes of a segment starting at `first_seq`.
pub fn header(first_seq: u64) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..4].copy_from_slice(MAGIC);
    out[4..6].copy_from_slice(&VERSION.to_le_bytes());
    out[8..16].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a header; returns its first sequence number.
pub fn parse_header(bytes: &[u8]) -> Result<u64, &'static str> {
    if bytes.len() < HEADER_LEN {
        return Err("shorter than a segment header");
    }
    if &bytes[0..4] != MAGIC {
        return Err("not a queue segment (bad magic)");
    }
    let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if crc32c::crc32c(&bytes[0..16]) != crc {
        return Err("segment header checksum mismatch");
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err("unsupported segment format version");
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[8..16]);
    Ok(u64::from_le_bytes(first))
}

/// What a segment holds, as far as the queue needs to know without reading it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentMeta {
    /// Format version of this summary.
    pub version: u16,
    /// First sequence number.
    pub first_seq: u64,
    /// Last sequence number (`first_seq - 1` when empty).
    pub last_seq: u64,
    /// File length in bytes.
    pub bytes: u64,
    /// Generation of each record, run-length encoded: `(generation, count)` in order.
    pub generations: Vec<(u32, u64)>,
}

impl SegmentMeta {
    /// An empty segment's summary.
    pub fn empty(first_seq: u64) -> Self {
        SegmentMeta {
            version: VERSION,
            first_seq,
            last_seq: first_seq.saturating_sub(1),
            bytes: HEADER_LEN as u64,
            generations: Vec::new(),
        }
    }

    /// Adds one record to the summary; sequence numbers skipped since the last one are
    /// recorded as lost.
    pub fn push(&mut self, seq: u64, generation: u32, frame_len: usize) {
        if seq > self.last_seq + 1 {
            self.push_run(LOST_GENERATION, seq - self.last_seq - 1);
        }
        self.last_seq = seq;
        self.bytes += frame_len as u64;
        self.push_run(generation, 1);
    }

    fn push_run(&mut self, generation: u32, count: u64) {
        match self.generations.last_mut() {
            Some((last, n)) if *last == generation => *n += count,
            _ => self.generations.push((generation, count)),
        }
    }

    /// Whether some sequence numbers of this segment are unreadable.
    pub fn has_losses(&self) -> bool {
        self.generations
            .iter()
            .any(|(generation, _)| *generation == LOST_GENERATION)
    }

    /// Writes the summary durably (temp file, fsync, rename).
    pub fn store(&self, dir: &Path, io: &dyn SegmentIo) -> Result<(), DiskError> {
        let path = meta_path(dir, self.first_seq);
        let text = serde_json::to_vec(self)
            .map_err(|err| DiskError::io(&path, std::io::Error::other(err)))?;
        write_atomically(io, &path, &text)
    }

    /// Reads a summary; `None` when it is missing or unreadable (then the segment is scanned).
    pub fn load(dir: &Path, first_seq: u64) -> Option<Self> {
        let text = std::fs::read(meta_path(dir, first_seq)).ok()?;
        let meta: SegmentMeta = serde_json::from_slice(&text).ok()?;
        (meta.version == VERSION && meta.first_seq == first_seq).then_some(meta)
    }
}

/// The result of reading a whole segment from the start.
#[derive(Debug)]
pub struct Scan {
    /// Summary of the records that check out (unreadable ones recorded as lost).
    pub meta: SegmentMeta,
    /// Offset just past the last valid frame: what follows is a torn tail.
    pub valid_len: u64,
    /// The first damage met, if any (torn tail or damaged frames).
    pub damage: Option<&'static str>,
}

/// Reads a segment from the start in bounded chunks. Damaged frames followed by valid
/// ones are skipped and recorded as lost; damage with nothing valid after it is a torn
/// tail, and `valid_len` says where it starts.
pub fn scan(path: &Path) -> Result<Scan, DiskError> {
    let file = File::open(path).map_err(|err| DiskError::io(path, err))?;
    let len = file
        .metadata()
        .map_err(|err| DiskError::io(path, err))?
        .len();
    let mut header_bytes = [0u8; HEADER_LEN];
    let got = read_at(&file, &mut header_bytes, 0).map_err(|err| DiskError::io(path, err))?;
    let first_seq = parse_header(&header_bytes[..got]).map_err(|reason| DiskError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    })?;
    let mut meta = SegmentMeta::empty(first_seq);
    let mut offset = HEADER_LEN as u64;
    let mut damage = None;
    let mut want = CHUNK;
    'chunks: while offset < len {
        let mut buf = vec![0u8; want.min((len - offset) as usize)];
        let n = read_at(&file, &mut buf, offset).map_err(|err| DiskError::io(path, err))?;
        buf.truncate(n);
        let chunk = Bytes::from(buf);
        let mut at = 0usize;
        while at < chunk.len() {
            let status = frame::decode(&chunk.slice(at..));
            let reason = match status {
                FrameStatus::Valid(frame, frame_len) if frame.seq > meta.last_seq => {
                    meta.push(frame.seq, frame.generation, frame_len);
                    at += frame_len;
                    want = CHUNK;
                    continue;
                }
                FrameStatus::Valid(..) => "sequence numbers out of order",
                // More of this frame in the file: read on from its start.
                FrameStatus::Incomplete if offset + (chunk.len() as u64) < len => {
                    offset += at as u64;
                    if at == 0 {
                        want *= 2;
                    }
                    continue 'chunks;
                }
                FrameStatus::Incomplete => "incomplete frame (torn write)",
                FrameStatus::Corrupted(reason) => reason,
            };
            let here = offset + at as u64;
            damage.get_or_insert(reason);
            // Nothing can follow the last sequence number there is.
            let next = match meta.last_seq.checked_add(1) {
                Some(min_seq) => find_next_frame(&file, here + 1, min_seq, u64::MAX),
                None => None,
            };
            match next {
                Some((next, _)) => {
                    offset = next;
                    continue 'chunks;
                }
                None => {
                    meta.bytes = here;
                    return Ok(Scan {
                        meta,
                        valid_len: here,
                        damage,
                    });
                }
            }
        }
        offset += chunk.len() as u64;
    }
    meta.bytes = len.max(meta.bytes);
    Ok(Scan {
        meta,
        valid_len: len,
        damage,
    })
}

fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// Finds the first frame at or after `offset` that checks out and whose sequence number
/// is in `min_seq..=max_seq`; tries every byte offset, which only happens on damage.
/// Candidates are filtered on their sequence field before their checksum is computed.
pub fn find_next_frame(
    file: &File,
    mut offset: u64,
    min_seq: u64,
    max_seq: u64,
) -> Option<(u64, u64)> {
    let len = file.metadata().ok()?.len();
    let plausible = |bytes: &[u8]| -> Option<(usize, u64)> {
        let head = bytes.get(..frame::FRAME_HEADER + 8)?;
        let body = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if !(frame::BODY_HEADER..=frame::MAX_BODY).contains(&body) {
            return None;
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&head[frame::FRAME_HEADER..frame::FRAME_HEADER + 8]);
        let seq = u64::from_le_bytes(seq);
        (min_seq..=max_seq)
            .contains(&seq)
            .then_some((frame::FRAME_HEADER + body, seq))
    };
    while offset < len {
        let mut buf = vec![0u8; CHUNK.min((len - offset) as usize)];
        let n = read_at(file, &mut buf, offset).ok()?;
        buf.truncate(n);
        let chunk = Bytes::from(buf);
        for at in 0..chunk.len() {
            let Some((total, seq)) = plausible(&chunk[at..]) else {
                continue;
            };
            let start = offset + at as u64;
            if start + total as u64 > len {
                continue;
            }
            let candidate = if at + total <= chunk.len() {
                chunk.slice(at..at + total)
            } else {
                let mut whole = vec![0u8; total];
                if read_at(file, &mut whole, start).ok()? != total {
                    continue;
                }
                Bytes::from(whole)
            };
            if let FrameStatus::Valid(frame, _) = frame::decode(&candidate) {
                if frame.seq == seq {
                    return Some((start, seq));
                }
            }
        }
        if offset + chunk.len() as u64 >= len {
            break;
        }
        // Overlap so a candidate whose header straddles the chunk edge is still seen.
        offset += (chunk.len() as u64)
            .saturating_sub((frame::FRAME_HEADER + 8) as u64)
            .max(1);
    }
    None
}

/// Writes `contents` to `path` so that a crash leaves either the old or the new file:
/// temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(io: &dyn SegmentIo, path: &Path, contents: &[u8]) -> Result<(), DiskError> {
    let temp = path.with_extension("tmp");
    // Owner-only, like every file the queue writes.
    let file = io.create(&temp).map_err(|err| DiskError::io(&temp, err))?;
    io.write_all_at(&file, contents, 0)
        .map_err(|err| DiskError::io(&temp, err))?;
    io.sync_all(&file)
        .map_err(|err| DiskError::io(&temp, err))?;
    io.rename(&temp, path)
        .map_err(|err| DiskError::io(path, err))?;
    sync_dir_with(io, path.parent().unwrap_or(Path::new(".")))
}

/// Makes a directory's entries (creations, renames, deletions) durable, through `io`.
pub fn sync_dir_with(io: &dyn SegmentIo, dir: &Path) -> Result<(), DiskError> {
    io.sync_dir(dir).map_err(|err| DiskError::io(dir, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_damage_is_named() {
        let bytes = header(42);
        assert_eq!(parse_header(&bytes), Ok(42));
        let mut damaged = bytes;
        damaged[9] ^= 1;
        assert_eq!(
            parse_header(&damaged),
            Err("segment header checksum mismatch")
        );
        assert_eq!(parse_header(b"ASHQ"), Err("shorter than a segment header"));
        assert_eq!(
            parse_header(&[0u8; 20]),
            Err("not a queue segment (bad magic)")
        );
    }

    #[test]
    fn names_parse() {
        assert_eq!(parse_segment_name("00000000000000000042.seg"), Some(42));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000042.meta"), None);
        assert_eq!(
            segment_path(Path::new("/q"), 7),
            PathBuf::from("/q/00000000000000000007.seg")
        );
    }

    #[test]
    fn scan_stops_at_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        let mut data = header(1).to_vec();
        for seq in 1..=3 {
            frame::encode(&mut data, seq, 0, b"event");
        }
        let whole = data.len();
        frame::encode(&mut data, 4, 0, b"torn");
        data.truncate(data.len() - 3);
        std::fs::write(&path, &data).unwrap();
        let scan = scan(&path).unwrap();
        assert_eq!(scan.meta.last_seq, 3);
        assert_eq!(scan.valid_len, whole as u64);
        assert_eq!(scan.damage, Some("incomplete frame (torn write)"));
        assert_eq!(scan.meta.generations, vec![(0, 3)]);
    }

    #[test]
    fn scan_skips_a_damaged_frame_in_the_middle_and_records_the_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        let mut data = header(1).to_vec();
        let mut damaged_at = 0;
        for seq in 1..=5 {
            if seq == 3 {
                damaged_at = data.len() + frame::FRAME_HEADER + 4;
            }
            frame::encode(&mut data, seq, 7, b"payload");
        }
        data[damaged_at] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let scan = scan(&path).unwrap();
        assert_eq!(
            scan.valid_len,
            data.len() as u64,
            "nothing after the damage is cut"
        );
        assert_eq!(scan.meta.last_seq, 5);
        assert_eq!(
            scan.meta.generations,
            vec![(7, 2), (LOST_GENERATION, 1), (7, 2)]
        );
        assert!(scan.meta.has_losses());
        assert_eq!(scan.damage, Some("checksum mismatch"));
    }
}
