//! The writer's data I/O behind a small trait, so tests can inject faults (a full disk).

use std::fs::File;
use std::os::unix::fs::FileExt;

/// How the writer puts frames into the active segment and makes them durable.
///
/// [`OsIo`] is the real thing; a test implementation can fail with `ENOSPC` or `EIO` to
/// show what the queue does then (refuse appends, report it, lose nothing written before).
pub trait SegmentIo: Send + Sync + 'static {
    /// Writes all of `buf` at `offset` (positional: the file position is not used).
    ///
    /// # Errors
    /// The OS error; part of `buf` may have been written.
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> std::io::Result<()>;

    /// `fdatasync`.
    ///
    /// # Errors
    /// The OS error; the data written since the last sync may not be durable.
    fn sync_data(&self, file: &File) -> std::io::Result<()>;
}

/// The operating system's file I/O.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsIo;

impl SegmentIo for OsIo {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        FileExt::write_all_at(file, buf, offset)
    }

    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        file.sync_data()
    }
}
