//! A [`SegmentIo`] that remembers what a power loss would keep, for tests.
//!
//! Every file the queue (or the DLQ) creates, writes, renames or removes goes through
//! it. Per file it keeps the bytes as of the last `fsync`/`fdatasync` and the writes
//! since; per directory, the entries as of the last directory fsync. [`PowerLossIo::crash`]
//! then rewrites the real directory to what a power loss leaves: synced bytes only
//! ([`CrashMode::SyncedOnly`]), or synced bytes plus a random prefix of the later writes,
//! the last one torn at a random byte ([`CrashMode::TornTail`]). Entries created, renamed
//! or removed without a directory fsync revert. Unlike a killed process, nothing survives
//! in a page cache.

use super::SegmentIo;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

/// What survives [`PowerLossIo::crash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Only synced bytes.
    SyncedOnly,
    /// Synced bytes and a random prefix of the unsynced writes, the last one torn.
    TornTail,
}

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

fn apply(content: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, bytes } => {
            let end = *offset as usize + bytes.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[*offset as usize..end].copy_from_slice(bytes);
        }
        Op::SetLen(len) => content.resize(*len as usize, 0),
    }
}

#[derive(Debug, Default)]
struct Inode {
    synced: Vec<u8>,
    unsynced: Vec<Op>,
}

#[derive(Default)]
struct Model {
    next_id: u64,
    inodes: HashMap<u64, Inode>,
    /// OS inode number of an open file → our id (reset when a path is created anew).
    by_ino: HashMap<(u64, u64), u64>,
    /// The directory entries now.
    live: BTreeMap<PathBuf, u64>,
    /// The directory entries a power loss keeps.
    durable: BTreeMap<PathBuf, u64>,
    /// Files written or synced that were never created through this I/O (a routing gap).
    untracked: Vec<String>,
    /// Open files from before the last crash: what a writer still holding one does is
    /// ignored, as a dead machine's writes are.
    stale: HashSet<(u64, u64)>,
}

impl Model {
    fn id_of(&mut self, file: &File, what: &str) -> Option<u64> {
        let meta = file.metadata().ok()?;
        let key = (meta.dev(), meta.ino());
        let id = self.by_ino.get(&key).copied();
        if id.is_none() && !self.stale.contains(&key) {
            self.untracked
                .push(format!("{what} on inode {}", meta.ino()));
        }
        id
    }

    fn new_inode(&mut self, path: &Path, synced: Vec<u8>) -> std::io::Result<u64> {
        let meta = std::fs::metadata(path)?;
        self.next_id += 1;
        let id = self.next_id;
        self.inodes.insert(
            id,
            Inode {
                synced,
                unsynced: Vec::new(),
            },
        );
        // A number freed by a closed stale file may come back for a new one.
        self.stale.remove(&(meta.dev(), meta.ino()));
        self.by_ino.insert((meta.dev(), meta.ino()), id);
        self.live.insert(path.to_path_buf(), id);
        Ok(id)
    }
}

/// Fails writes on demand (a full disk), running a hook at the moment of the failure.
type FailHook = Box<dyn FnOnce() + Send>;

/// The recording I/O; share it as `Arc<PowerLossIo>`.
#[derive(Default)]
pub struct PowerLossIo {
    model: Mutex<Model>,
    /// Writes fail with `ENOSPC` while this is above zero (counted down per write).
    fail_writes: Mutex<u64>,
    on_fail: Mutex<Option<FailHook>>,
    /// While true, `sync_data` waits (to look at the queue in the middle of a sync).
    gate: Mutex<bool>,
    gate_changed: Condvar,
    syncs_waiting: Mutex<u64>,
}

impl PowerLossIo {
    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next `count` segment writes fail with `ENOSPC`; `hook` runs on the first.
    pub fn fail_next_writes(&self, count: u64, hook: Option<FailHook>) {
        *self.fail_writes.lock().unwrap() = count;
        *self.on_fail.lock().unwrap() = hook;
    }

    /// Holds every `sync_data` until [`PowerLossIo::open_gate`].
    pub fn close_gate(&self) {
        *self.gate.lock().unwrap() = true;
    }

    /// Lets held and later syncs through.
    pub fn open_gate(&self) {
        *self.gate.lock().unwrap() = false;
        self.gate_changed.notify_all();
    }

    /// How many `sync_data` calls are held at the gate now.
    pub fn syncs_waiting(&self) -> u64 {
        *self.syncs_waiting.lock().unwrap()
    }

    /// Operations on files this I/O never saw created (each a missing route to fix).
    pub fn untracked(&self) -> Vec<String> {
        self.model().untracked.clone()
    }

    /// Rewrites every file this I/O knows to what a power loss keeps. The queue (and any
    /// process using the files) must be stopped first. `seed` picks the torn prefix.
    pub fn crash(&self, mode: CrashMode, seed: u64) -> std::io::Result<()> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut model = self.model();
        let paths: Vec<PathBuf> = model
            .live
            .keys()
            .chain(model.durable.keys())
            .cloned()
            .collect();
        for path in paths {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        let durable = std::mem::take(&mut model.durable);
        let old_inodes = std::mem::take(&mut model.inodes);
        model.live.clear();
        let stale: Vec<(u64, u64)> = model.by_ino.drain().map(|(key, _)| key).collect();
        model.stale.extend(stale);
        for (path, id) in durable {
            let mut content = Vec::new();
            if let Some(inode) = old_inodes.get(&id) {
                content = inode.synced.clone();
                if mode == CrashMode::TornTail && !inode.unsynced.is_empty() {
                    let kept = rng.usize(0..=inode.unsynced.len());
                    for op in &inode.unsynced[..kept] {
                        apply(&mut content, op);
                    }
                    if let Some(Op::Write { offset, bytes }) = inode.unsynced.get(kept) {
                        let torn = Op::Write {
                            offset: *offset,
                            bytes: bytes[..rng.usize(0..bytes.len().max(1))].to_vec(),
                        };
                        apply(&mut content, &torn);
                    }
                }
            }
            std::fs::write(&path, &content)?;
            let id = model.new_inode(&path, content)?;
            model.durable.insert(path, id);
        }
        Ok(())
    }

    /// Damage from outside (a bad block, a person): `path` durably holds `bytes`, or is
    /// durably gone when `bytes` is `None`. The queue must be stopped.
    pub fn damage(&self, path: &Path, bytes: Option<&[u8]>) -> std::io::Result<()> {
        let mut model = self.model();
        model.live.remove(path);
        model.durable.remove(path);
        let _ = std::fs::remove_file(path);
        if let Some(bytes) = bytes {
            std::fs::write(path, bytes)?;
            let id = model.new_inode(path, bytes.to_vec())?;
            model.durable.insert(path.to_path_buf(), id);
        }
        Ok(())
    }

    fn record(&self, file: &File, op: Op, what: &str) {
        let mut model = self.model();
        if let Some(id) = model.id_of(file, what) {
            if let Some(inode) = model.inodes.get_mut(&id) {
                inode.unsynced.push(op);
            }
        }
    }

    fn synced(&self, file: &File) {
        let mut model = self.model();
        if let Some(id) = model.id_of(file, "sync") {
            if let Some(inode) = model.inodes.get_mut(&id) {
                let ops = std::mem::take(&mut inode.unsynced);
                for op in &ops {
                    apply(&mut inode.synced, op);
                }
            }
        }
    }
}

impl SegmentIo for PowerLossIo {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let failing = {
            let mut left = self.fail_writes.lock().unwrap();
            let failing = *left > 0;
            *left = left.saturating_sub(1);
            failing
        };
        if failing {
            let hook = self.on_fail.lock().unwrap().take();
            if let Some(hook) = hook {
                hook();
            }
            return Err(std::io::Error::from_raw_os_error(28));
        }
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)?;
        self.record(
            file,
            Op::Write {
                offset,
                bytes: buf.to_vec(),
            },
            "write",
        );
        Ok(())
    }

    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        let mut gate = self.gate.lock().unwrap();
        if *gate {
            *self.syncs_waiting.lock().unwrap() += 1;
            while *gate {
                gate = self.gate_changed.wait(gate).unwrap();
            }
            *self.syncs_waiting.lock().unwrap() -= 1;
        }
        drop(gate);
        // No real sync: the model decides what survives, and tests stay fast.
        self.synced(file);
        Ok(())
    }

    fn sync_all(&self, file: &File) -> std::io::Result<()> {
        self.synced(file);
        Ok(())
    }

    fn set_len(&self, file: &File, len: u64) -> std::io::Result<()> {
        file.set_len(len)?;
        self.record(file, Op::SetLen(len), "set_len");
        Ok(())
    }

    fn create(&self, path: &Path) -> std::io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(path)?;
        let mut model = self.model();
        match model.live.get(path).copied() {
            // O_TRUNC on an existing entry: same inode, emptied (not yet durably).
            Some(id) => {
                if let Some(inode) = model.inodes.get_mut(&id) {
                    inode.unsynced.push(Op::SetLen(0));
                }
                let meta = file.metadata()?;
                model.stale.remove(&(meta.dev(), meta.ino()));
                model.by_ino.insert((meta.dev(), meta.ino()), id);
            }
            None => {
                model.new_inode(path, Vec::new())?;
            }
        }
        Ok(file)
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)?;
        let mut model = self.model();
        if let Some(id) = model.live.remove(from) {
            model.live.insert(to.to_path_buf(), id);
        } else {
            model
                .untracked
                .push(format!("rename of {}", from.display()));
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)?;
        self.model().live.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        let mut model = self.model();
        let in_dir = |path: &Path| path.parent() == Some(dir);
        model.durable.retain(|path, _| !in_dir(path));
        let entries: Vec<(PathBuf, u64)> = model
            .live
            .iter()
            .filter(|(path, _)| in_dir(path))
            .map(|(path, id)| (path.clone(), *id))
            .collect();
        model.durable.extend(entries);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_synced_bytes_and_synced_entries_survive() {
        let dir = tempfile::tempdir().unwrap();
        let io = PowerLossIo::default();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let file = io.create(&a).unwrap();
        io.write_all_at(&file, b"synced", 0).unwrap();
        io.sync_data(&file).unwrap();
        io.write_all_at(&file, b"+lost", 6).unwrap();
        io.sync_dir(dir.path()).unwrap();
        let other = io.create(&b).unwrap();
        io.write_all_at(&other, b"never in the directory", 0)
            .unwrap();
        io.sync_all(&other).unwrap();
        io.crash(CrashMode::SyncedOnly, 1).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"synced");
        assert!(
            !b.exists(),
            "an entry made after the last directory fsync vanishes"
        );
    }

    #[test]
    fn an_unsynced_rename_and_remove_revert() {
        let dir = tempfile::tempdir().unwrap();
        let io = PowerLossIo::default();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        for (path, text) in [(&a, "old a"), (&c, "c")] {
            let file = io.create(path).unwrap();
            io.write_all_at(&file, text.as_bytes(), 0).unwrap();
            io.sync_all(&file).unwrap();
        }
        io.sync_dir(dir.path()).unwrap();
        let file = io.create(&b).unwrap();
        io.write_all_at(&file, b"new a", 0).unwrap();
        io.sync_all(&file).unwrap();
        io.rename(&b, &a).unwrap();
        io.remove_file(&c).unwrap();
        io.crash(CrashMode::SyncedOnly, 1).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"old a");
        assert_eq!(std::fs::read(&c).unwrap(), b"c");
    }

    #[test]
    fn a_torn_crash_keeps_a_prefix_of_the_unsynced_writes() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let dir = tempfile::tempdir().unwrap();
            let io = PowerLossIo::default();
            let a = dir.path().join("a");
            let file = io.create(&a).unwrap();
            io.sync_dir(dir.path()).unwrap();
            io.write_all_at(&file, b"0123", 0).unwrap();
            io.sync_data(&file).unwrap();
            io.write_all_at(&file, b"4567", 4).unwrap();
            io.write_all_at(&file, b"89", 8).unwrap();
            io.crash(CrashMode::TornTail, seed).unwrap();
            let kept = std::fs::read(&a).unwrap();
            assert!(b"0123456789".starts_with(&kept) && kept.len() >= 4);
            seen.insert(kept.len());
        }
        assert!(seen.len() > 3, "torn lengths vary: {seen:?}");
    }
}
