//! The record frame: length, CRC32C, then the body (sequence, generation, payload).
//!
//! ```text
//! offset  size  field
//! 0       4     body length, u32 little-endian (12 + payload length)
//! 4       4     CRC32C of the body, u32 little-endian
//! 8       8     sequence number, u64 little-endian
//! 16      4     generation id, u32 little-endian
//! 20      n     payload (the protobuf-encoded Event)
//! ```
//! FROZEN LAYOUT: frames already on disk must stay readable; a change needs a new segment
//! format version (see `segment.rs`).

use bytes::{BufMut, Bytes};

/// Bytes before the body: length and checksum.
pub const FRAME_HEADER: usize = 8;
/// Body bytes before the payload: sequence and generation.
pub const BODY_HEADER: usize = 12;
/// Largest body accepted when decoding; anything longer is damage, not data.
pub const MAX_BODY: usize = 64 << 20;

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Sequence number.
    pub seq: u64,
    /// Generation id.
    pub generation: u32,
    /// Payload.
    pub payload: Bytes,
}

/// What is found at an offset of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameStatus {
    /// A frame that checks out, and its total length on disk.
    Valid(Frame, usize),
    /// The buffer ends inside a frame: a torn write at the tail, or more to read.
    Incomplete,
    /// The bytes here are not a valid frame.
    Corrupted(&'static str),
}

/// Total on-disk length of a frame with this payload length.
pub fn encoded_len(payload_len: usize) -> usize {
    FRAME_HEADER + BODY_HEADER + payload_len
}

/// Appends one frame to `out`.
pub fn encode(out: &mut Vec<u8>, seq: u64, generation: u32, payload: &[u8]) {
    let body_len = BODY_HEADER + payload.len();
    out.reserve(FRAME_HEADER + body_len);
    let start = out.len();
    out.put_u32_le(body_len as u32);
    out.put_u32_le(0); // checksum, filled in below
    out.put_u64_le(seq);
    out.put_u32_le(generation);
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the frame at the start of `buf`. Never panics, whatever the bytes.
pub fn decode(buf: &Bytes) -> FrameStatus {
    if buf.len() < FRAME_HEADER {
        return FrameStatus::Incomplete;
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(BODY_HEADER..=MAX_BODY).contains(&body_len) {
        return FrameStatus::Corrupted("implausible frame length");
    }
    let Some(total) = FRAME_HEADER.checked_add(body_len) else {
        return FrameStatus::Corrupted("implausible frame length");
    };
    if buf.len() < total {
        return FrameStatus::Incomplete;
    }
    let expected = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let body = &buf[FRAME_HEADER..total];
    if crc32c::crc32c(body) != expected {
        return FrameStatus::Corrupted("checksum mismatch");
    }
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&body[0..8]);
    let generation = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
    let payload = buf.slice(FRAME_HEADER + BODY_HEADER..total);
    FrameStatus::Valid(
        Frame {
            seq: u64::from_le_bytes(seq_bytes),
            generation,
            payload,
        },
        total,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(seq: u64, generation: u32, payload: &[u8]) -> Bytes {
        let mut out = Vec::new();
        encode(&mut out, seq, generation, payload);
        Bytes::from(out)
    }

    #[test]
    fn round_trip_and_length() {
        let buf = one(7, 3, b"hello");
        assert_eq!(buf.len(), encoded_len(5));
        match decode(&buf) {
            FrameStatus::Valid(frame, len) => {
                assert_eq!(
                    (frame.seq, frame.generation, &frame.payload[..], len),
                    (7, 3, &b"hello"[..], buf.len())
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_frames_are_incomplete_and_garbage_is_corrupted() {
        let buf = one(1, 0, b"payload");
        for cut in 0..buf.len() {
            assert_eq!(
                decode(&buf.slice(..cut)),
                FrameStatus::Incomplete,
                "cut at {cut}"
            );
        }
        let zeros = Bytes::from(vec![0u8; 64]);
        assert_eq!(
            decode(&zeros),
            FrameStatus::Corrupted("implausible frame length")
        );
    }

    proptest! {
        #[test]
        fn any_payload_round_trips(seq in any::<u64>(), generation in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let buf = one(seq, generation, &payload);
            match decode(&buf) {
                FrameStatus::Valid(frame, len) => {
                    prop_assert_eq!(frame.seq, seq);
                    prop_assert_eq!(frame.generation, generation);
                    prop_assert_eq!(&frame.payload[..], &payload[..]);
                    prop_assert_eq!(len, buf.len());
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn any_single_byte_damage_is_detected(payload in proptest::collection::vec(any::<u8>(), 1..512), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let mut damaged = one(42, 1, &payload).to_vec();
            let at = at.index(damaged.len());
            damaged[at] ^= flip;
            match decode(&Bytes::from(damaged)) {
                // A damaged length can only make the frame look longer (incomplete) or
                // implausible; anything else must fail the checksum.
                FrameStatus::Valid(frame, _) => prop_assert!(false, "damage at {} accepted: {:?}", at, frame),
                FrameStatus::Incomplete | FrameStatus::Corrupted(_) => {}
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&Bytes::from(bytes));
        }
    }
}
