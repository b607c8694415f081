//! `handoff.json`: the OUTPUT configs a stopped process's queued records need to be sent.
//!
//! The queue stores no credentials; records name their output generation (OUTPUT unit id
//! and config idx) and the process keeps each generation's config in memory. When it stops
//! with records left, it writes this file beside its queue so that whoever opens the queue
//! next (the same component after a restart, or another component adopting the directory)
//! sends each record with its own generation's credentials. It is the one file in which the
//! shipper writes a secret: mode 0600 in a 0700 directory, written atomically (temp file,
//! fsync, rename, fsync of the directory), deleted once the queue is empty.
//!
//! Frozen layout (version 1): `{"version": 1, "component_id": "…", "written_at_ms": N,
//! "outputs": [{"unit_id": "…", "config_idx": N, "pending_events": N, "config": {…}}]}`
//! where `config` is the OUTPUT unit's block exactly as the agent sent it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name inside a storage directory.
pub const FILE_NAME: &str = "handoff.json";

/// The layout version this build writes and reads.
pub const VERSION: u32 = 1;

/// One output generation's config.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HandoffOutput {
    /// The OUTPUT unit id the records were accepted under.
    pub unit_id: String,
    /// Its `config_state_idx`.
    pub config_idx: u64,
    /// Records of this generation left when the file was written (for people and logs).
    #[serde(default)]
    pub pending_events: u64,
    /// The OUTPUT unit's block as the agent sent it (credentials included).
    pub config: serde_json::Value,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Handoff {
    /// [`VERSION`].
    pub version: u32,
    /// The component that wrote it.
    #[serde(default)]
    pub component_id: String,
    /// When it was written (Unix ms).
    #[serde(default)]
    pub written_at_ms: u64,
    /// The generations with records left, oldest first.
    pub outputs: Vec<HandoffOutput>,
}

/// Why a handoff file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// An OS error on a path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a handoff this build reads. The message never quotes its content.
    #[error("{path} is not a usable handoff file: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Handoff {
    /// Writes the file in `dir` atomically, owner-only.
    ///
    /// # Errors
    /// An OS error creating, syncing or renaming it.
    pub fn write(&self, dir: &Path) -> Result<(), HandoffError> {
        let path = dir.join(FILE_NAME);
        let temp = dir.join(format!("{FILE_NAME}.tmp"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| HandoffError::Io { path, source }
        };
        let body = serde_json::to_vec(self).map_err(|err| HandoffError::Invalid {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        let mut file = crate::private_fs::private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io(&temp))?;
        file.write_all(&body).map_err(io(&temp))?;
        file.sync_all().map_err(io(&temp))?;
        drop(file);
        std::fs::rename(&temp, &path).map_err(io(&path))?;
        sync_dir(dir)
    }

    /// Reads the file in `dir`; `Ok(None)` when there is none.
    ///
    /// # Errors
    /// The file cannot be read, is not JSON of this layout, or has another version.
    pub fn read(dir: &Path) -> Result<Option<Handoff>, HandoffError> {
        let path = dir.join(FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(HandoffError::Io { path, source }),
        };
        // serde_json's message quotes no value on a type error at a key; keep only the
        // position, as the file holds credentials.
        let handoff: Handoff =
            serde_json::from_slice(&bytes).map_err(|err| HandoffError::Invalid {
                path: path.clone(),
                reason: format!(
                    "not a handoff document (line {}, column {})",
                    err.line(),
                    err.column()
                ),
            })?;
        if handoff.version != VERSION {
            return Err(HandoffError::Invalid {
                path,
                reason: format!(
                    "layout version {} (this build reads {VERSION})",
                    handoff.version
                ),
            });
        }
        Ok(Some(handoff))
    }

    /// Deletes the file in `dir` (and a leftover temp file); a missing file is fine.
    ///
    /// # Errors
    /// An OS error other than "not found".
    pub fn remove(dir: &Path) -> Result<(), HandoffError> {
        for name in [FILE_NAME.to_string(), format!("{FILE_NAME}.tmp")] {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(HandoffError::Io { path, source }),
            }
        }
        sync_dir(dir)
    }
}

fn sync_dir(dir: &Path) -> Result<(), HandoffError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| HandoffError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> Handoff {
        Handoff {
            version: VERSION,
            component_id: "agent-shipper-a".into(),
            written_at_ms: 1,
            outputs: vec![HandoffOutput {
                unit_id: "agent-shipper-a".into(),
                config_idx: 3,
                pending_events: 12,
                config: serde_json::json!({"type": "elasticsearch", "hosts": ["http://127.0.0.1:9200"], "api_key": "id:secret"}),
            }],
        }
    }

    #[test]
    fn it_round_trips_owner_only_and_is_gone_after_remove() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Handoff::read(dir.path()).unwrap(), None);
        sample().write(dir.path()).unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(Handoff::read(dir.path()).unwrap(), Some(sample()));
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());
        Handoff::remove(dir.path()).unwrap();
        assert!(!path.exists());
        Handoff::remove(dir.path()).unwrap();
    }

    #[test]
    fn a_damaged_file_is_an_error_that_quotes_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            br#"{"version": 1, "outputs": [{"unit_id": 5, "api_key": "id:secret"}]}"#,
        )
        .unwrap();
        let err = Handoff::read(dir.path()).unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        let mut other = sample();
        other.version = 9;
        other.write(dir.path()).unwrap();
        let err = Handoff::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");
    }
}
