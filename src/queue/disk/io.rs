//! The queue's file operations behind a small trait, so tests can inject faults (a full
//! disk) and power losses (`power_loss.rs`: only what was synced survives).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How the queue writes its files and makes them durable: segment frames and syncs,
/// new files, renames, removals and directory fsyncs. Reads go to the OS directly.
///
/// [`OsIo`] is the real thing; a test implementation can fail with `ENOSPC` or `EIO` to
/// show what the queue does then (refuse appends, report it, lose nothing written before),
/// or record what was synced to show what a power loss keeps. Every method but the first
/// two defaults to the OS call, so a fault injector implements only what it breaks.
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

    /// `fsync` (data and metadata).
    ///
    /// # Errors
    /// The OS error; the data written since the last sync may not be durable.
    fn sync_all(&self, file: &File) -> std::io::Result<()> {
        file.sync_all()
    }

    /// Cuts or extends `file` to `len` bytes.
    ///
    /// # Errors
    /// The OS error.
    fn set_len(&self, file: &File, len: u64) -> std::io::Result<()> {
        file.set_len(len)
    }

    /// Creates `path` (emptying it if it exists), owner-only, open for reading and writing.
    /// The new directory entry is durable only after [`SegmentIo::sync_dir`].
    ///
    /// # Errors
    /// The OS error.
    fn create(&self, path: &Path) -> std::io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(path)
    }

    /// Renames `from` to `to` (durable only after [`SegmentIo::sync_dir`]).
    ///
    /// # Errors
    /// The OS error.
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }

    /// Removes `path` (durable only after [`SegmentIo::sync_dir`]).
    ///
    /// # Errors
    /// The OS error.
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }

    /// Makes the entries of `dir` (creations, renames, removals) durable.
    ///
    /// # Errors
    /// The OS error.
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }
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
