//! Owner-only storage: the directories (0700) and files (0600) the shipper keeps events in.
//!
//! Queue segments, checkpoints, the queue id, lock files and the dead letter queue hold
//! events (and so whatever the inputs read) or their bookkeeping; no other local user
//! needs them. Modes are given at creation (`open(2)`'s mode, masked only further by the
//! umask), so there is no moment in which a file is readable by others.

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file the queue and the DLQ create.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the queue and DLQ directories.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) with mode 0700 and narrows an existing `dir` to
/// 0700: the directory is the shipper's own. Parents that exist are left alone.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode != DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// `OpenOptions` that create a file with mode 0600 (the caller adds read/write/create).
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_and_files_are_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_private_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        private_file().write(true).create(true).open(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
    }
}
