//! The checkpoint: the acknowledged prefix and the generation table, written atomically.
//!
//! `<dir>/checkpoint.json` = `{"version":1,"acked":N,"generations":[{input_unit,
//! output_unit, output_config_idx}, …]}`. Generation ids are positions in the list, so the
//! list only ever grows (FROZEN ORDER). It holds unit names, never credentials.
//! `"queue_id"` (absent in older files) is a copy of `queue.id`, so a damaged id file is
//! restored rather than replaced while records it names are still queued.

use super::segment::write_atomically;
use super::{DiskError, SegmentIo};
use crate::queue::Generation;
use std::path::{Path, PathBuf};

/// Current checkpoint format version.
const VERSION: u16 = 1;

/// What the checkpoint records.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub version: u16,
    /// Every record up to and including this sequence is acknowledged.
    pub acked: u64,
    /// The generation table.
    pub generations: Vec<Generation>,
    /// A copy of `queue.id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
}

/// The checkpoint's path in a queue directory.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("checkpoint.json")
}

impl Checkpoint {
    /// Writes the checkpoint durably.
    pub fn store(&self, dir: &Path, io: &dyn SegmentIo) -> Result<(), DiskError> {
        let path = path(dir);
        let text = serde_json::to_vec(self)
            .map_err(|err| DiskError::io(&path, std::io::Error::other(err)))?;
        write_atomically(io, &path, &text)
    }

    /// Reads the checkpoint: `Ok(None)` when there is none (a new queue).
    ///
    /// # Errors
    /// [`DiskError::Corrupt`] when the file exists but cannot be used.
    pub fn load(dir: &Path) -> Result<Option<Self>, DiskError> {
        let path = path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(DiskError::io(&path, err)),
        };
        let corrupt = |reason: String| DiskError::Corrupt {
            path: path.clone(),
            reason,
        };
        let checkpoint: Checkpoint =
            serde_json::from_slice(&bytes).map_err(|err| corrupt(err.to_string()))?;
        if checkpoint.version != VERSION {
            return Err(corrupt(format!(
                "unsupported checkpoint version {}",
                checkpoint.version
            )));
        }
        Ok(Some(checkpoint))
    }

    /// A checkpoint of `acked` with `generations`, for the queue named `queue_id`.
    pub fn new(acked: u64, generations: Vec<Generation>, queue_id: &str) -> Self {
        Checkpoint {
            version: VERSION,
            acked,
            generations,
            queue_id: Some(queue_id.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), None);
        let generation = Generation {
            input_unit: "in".into(),
            output_unit: "out".into(),
            output_config_idx: 3,
        };
        let checkpoint = Checkpoint::new(41, vec![generation], "0123456789abcdef0123456789abcdef");
        checkpoint.store(dir.path(), &super::super::OsIo).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), Some(checkpoint));
        std::fs::write(path(dir.path()), b"{\"version\":1,\"ack").unwrap();
        assert!(matches!(
            Checkpoint::load(dir.path()),
            Err(DiskError::Corrupt { .. })
        ));
    }
}
