//! One dead-lettered event and its on-disk encoding.
//!
//! An entry is the payload of one queue frame (`queue/disk/frame.rs`, so it has a length
//! and a CRC32C): `u32 LE length of the JSON metadata | metadata JSON | the original
//! protobuf Event`. FROZEN LAYOUT: change it only with a new segment format version.

use bytes::{BufMut, Bytes};

/// Why an event was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reason {
    /// HTTP status of the item or request, when there was one (400, 403, …).
    pub status: Option<u16>,
    /// Error type, e.g. `mapper_parsing_exception`, `drain_timeout`, `undecodable`.
    pub error_type: String,
    /// The error text.
    pub message: String,
}

/// One event that could not be delivered, with everything needed to understand it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqEntry {
    /// The original event, protobuf-encoded, exactly as it was queued.
    pub event: Bytes,
    /// Why it is here.
    pub reason: Reason,
    /// The INPUT unit it came through.
    pub input_unit: String,
    /// The OUTPUT unit that tried to deliver it.
    pub output_unit: String,
    /// The policy revision in force.
    pub revision: u64,
    /// When it was dead-lettered, in milliseconds since the Unix epoch.
    pub dead_lettered_at_ms: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Metadata {
    reason: Reason,
    input_unit: String,
    output_unit: String,
    revision: u64,
    dead_lettered_at_ms: u64,
}

/// An entry's bytes that do not decode.
#[derive(Debug, thiserror::Error)]
#[error("dead letter entry is malformed: {0}")]
pub struct EntryError(String);

impl DlqEntry {
    /// The frame payload for this entry.
    pub fn encode(&self) -> Vec<u8> {
        let metadata = Metadata {
            reason: self.reason.clone(),
            input_unit: self.input_unit.clone(),
            output_unit: self.output_unit.clone(),
            revision: self.revision,
            dead_lettered_at_ms: self.dead_lettered_at_ms,
        };
        // Serializing plain strings and numbers cannot fail.
        let json = serde_json::to_vec(&metadata).unwrap_or_default();
        let mut out = Vec::with_capacity(4 + json.len() + self.event.len());
        out.put_u32_le(json.len() as u32);
        out.extend_from_slice(&json);
        out.extend_from_slice(&self.event);
        out
    }

    /// Decodes a frame payload. Never panics.
    pub fn decode(payload: &Bytes) -> Result<Self, EntryError> {
        let head = payload
            .get(..4)
            .ok_or_else(|| EntryError("shorter than its header".into()))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let end = 4usize
            .checked_add(len)
            .filter(|end| *end <= payload.len())
            .ok_or_else(|| EntryError("metadata runs past the entry".into()))?;
        let metadata: Metadata =
            serde_json::from_slice(&payload[4..end]).map_err(|err| EntryError(err.to_string()))?;
        Ok(DlqEntry {
            event: payload.slice(end..),
            reason: metadata.reason,
            input_unit: metadata.input_unit,
            output_unit: metadata.output_unit,
            revision: metadata.revision,
            dead_lettered_at_ms: metadata.dead_lettered_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample(at_ms: u64) -> DlqEntry {
        DlqEntry {
            event: Bytes::from_static(b"\x0a\x02\x08\x01"),
            reason: Reason {
                status: Some(403),
                error_type: "security_exception".into(),
                message: "no privilege".into(),
            },
            input_unit: "input-b".into(),
            output_unit: "output-default".into(),
            revision: 2,
            dead_lettered_at_ms: at_ms,
        }
    }

    #[test]
    fn round_trip() {
        let entry = sample(42);
        assert_eq!(
            DlqEntry::decode(&Bytes::from(entry.encode())).unwrap(),
            entry
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = DlqEntry::decode(&Bytes::from(bytes));
        }
    }
}
