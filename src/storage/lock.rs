//! One process per storage directory: an OS lock on `<dir>/lock`, which holds the holder's pid.
//!
//! The lock is `flock(2)` through std's [`File::try_lock`]: released by the kernel when the
//! process exits, however it exits (a SIGKILL included), so a stale file never blocks the
//! next process. Each [`DirLock::try_acquire`] opens its own file description, so two
//! acquisitions in one process exclude each other as two processes do.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The lock file's name inside the directory it guards.
pub const FILE_NAME: &str = "lock";

/// How often a held lock is tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// How often a wait for a held lock is logged again.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (or another open in this one) holds it.
    #[error("{}", held_message(dir, *pid))]
    Held {
        /// The directory.
        dir: PathBuf,
        /// The holder's pid, when its lock file says.
        pid: Option<u32>,
    },
    /// The directory or the lock file cannot be created or opened.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn held_message(dir: &Path, pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(
            "waiting for {}: held by agent-shipper pid {pid}",
            dir.display()
        ),
        None => format!(
            "waiting for {}: held by another agent-shipper",
            dir.display()
        ),
    }
}

impl LockError {
    /// Whether trying again later may succeed (the lock is held), rather than failing alike.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LockError::Held { .. })
    }

    /// The standalone wording: the directory is in use, which is an error there.
    pub fn in_use_message(&self) -> String {
        match self {
            LockError::Held { dir, pid } => format!(
                "{} is already locked by another agent-shipper{}: two shippers must not share one data path (give each its own -E path.data)",
                dir.display(),
                pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
            ),
            other => other.to_string(),
        }
    }
}

/// A held lock on a directory; released when dropped.
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    _file: File,
}

impl DirLock {
    /// Creates `dir` (0700) if it does not exist and takes its lock now, writing this
    /// process's pid.
    ///
    /// # Errors
    /// [`LockError::Held`] naming the holder's pid when another holds it;
    /// [`LockError::Io`] when the directory or file cannot be created.
    pub fn try_acquire(dir: &Path) -> Result<DirLock, LockError> {
        // A directory that exists keeps its mode: `path.data` may hold a Producer socket
        // that `socket_mode` opens to a group. A new one is the shipper's own (0700).
        if !dir.is_dir() {
            crate::private_fs::create_private_dir(dir).map_err(|source| LockError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let path = dir.join(FILE_NAME);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = crate::private_fs::private_file()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    pid: read_pid(&mut file),
                })
            }
            Err(std::fs::TryLockError::Error(err)) => return Err(io(err)),
        }
        // The pid is for people and for the "held by" line; the lock itself is the flock.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io)?;
        Ok(DirLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// Takes the lock, trying again every [`RETRY_INTERVAL`] while it is held. `waiting` is
    /// called with the reason at the first miss and then at most every [`LOG_INTERVAL`]
    /// (and logs it here at INFO). Returns `None` once `cancel` fires first.
    ///
    /// # Errors
    /// [`LockError::Io`]: the directory cannot be locked at all (retrying would not help).
    pub async fn acquire_waiting(
        dir: &Path,
        cancel: &CancellationToken,
        mut waiting: impl FnMut(&LockError),
    ) -> Result<Option<DirLock>, LockError> {
        let mut last_logged: Option<Instant> = None;
        loop {
            let attempt = {
                let target = dir.to_path_buf();
                tokio::task::spawn_blocking(move || DirLock::try_acquire(&target))
                    .await
                    .map_err(|err| LockError::Io {
                        path: dir.to_path_buf(),
                        source: std::io::Error::other(err.to_string()),
                    })?
            };
            match attempt {
                Ok(lock) => {
                    if last_logged.is_some() {
                        tracing::info!(dir = %dir.display(), "lock taken after waiting");
                    }
                    return Ok(Some(lock));
                }
                Err(held) if held.is_retryable() => {
                    if last_logged.is_none_or(|at| at.elapsed() >= LOG_INTERVAL) {
                        tracing::info!(dir = %dir.display(), "{held}");
                        waiting(&held);
                        last_logged = Some(Instant::now());
                    }
                }
                Err(err) => return Err(err),
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(None),
                _ = tokio::time::sleep(RETRY_INTERVAL) => {}
            }
        }
    }

    /// The directory this lock guards.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The pid a holder wrote into its lock file, if it is readable.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_second_open_is_refused_naming_the_holders_pid_until_the_first_is_dropped() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("agent-shipper-a");
        let first = DirLock::try_acquire(&dir).unwrap();
        assert_eq!(first.dir(), dir);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE_NAME)), 0o600);
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(dir.join(FILE_NAME)).unwrap().trim(),
            pid.to_string()
        );

        let err = DirLock::try_acquire(&dir).unwrap_err();
        assert!(err.is_retryable());
        assert!(
            matches!(err, LockError::Held { pid: Some(p), .. } if p == pid),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "waiting for {}: held by agent-shipper pid {pid}",
                dir.display()
            )
        );
        let standalone = err.in_use_message();
        assert!(
            standalone.contains("already locked by another agent-shipper")
                && standalone.contains(&format!("pid {pid}")),
            "{standalone}"
        );

        drop(first);
        let again = DirLock::try_acquire(&dir).unwrap();
        drop(again);
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_an_io_error_not_a_wait() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = DirLock::try_acquire(&file.join("sub")).unwrap_err();
        assert!(!err.is_retryable(), "{err:?}");
    }

    #[tokio::test]
    async fn a_waiter_reports_the_holder_and_takes_the_lock_once_it_is_released() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        let held = DirLock::try_acquire(&dir).unwrap();
        let cancel = CancellationToken::new();
        let (told_tx, mut told) = tokio::sync::mpsc::unbounded_channel();
        let waiter = {
            let dir = dir.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                DirLock::acquire_waiting(&dir, &cancel, |why| {
                    let _ = told_tx.send(why.to_string());
                })
                .await
            })
        };
        let said = tokio::time::timeout(Duration::from_secs(10), told.recv())
            .await
            .expect("the wait is reported")
            .unwrap();
        assert!(
            said.contains(&format!("held by agent-shipper pid {}", std::process::id())),
            "{said}"
        );
        drop(held);
        let taken = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the lock is taken once released")
            .unwrap()
            .unwrap();
        assert!(taken.is_some());
    }

    #[tokio::test]
    async fn a_wait_ends_without_the_lock_on_cancel() {
        let root = tempfile::tempdir().unwrap();
        let _held = DirLock::try_acquire(root.path()).unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            DirLock::acquire_waiting(root.path(), &cancel, |_| {}),
        )
        .await
        .expect("cancel ends the wait")
        .unwrap();
        assert!(outcome.is_none());
    }
}
