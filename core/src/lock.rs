//! One process per data directory: an advisory lock on `DIR/.lock`, holding the PID of its owner.
//!
//! The lock is the operating system's (`flock` on unix, `LockFileEx` on Windows, through [`std::fs::File::try_lock`]),
//! so it is released when the process exits, however it exits, and a stale `.lock` file left by a killed process
//! never blocks a restart. Two opens of the file conflict even inside one process.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// File name of the lock inside a data directory.
pub const LOCK_FILE: &str = ".lock";

/// A data directory that cannot be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock (operator error: two nodes on one directory).
    #[error(
        "the data directory {} is in use by another cohort process ({}): stop that process first, or give this one \
         another data directory",
        dir.display(),
        pid.map_or_else(|| "PID unknown".to_owned(), |p| format!("PID {p}"))
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The holder's PID, as written in the lock file (absent if unreadable).
        pid: Option<u32>,
    },
    /// The directory or the lock file cannot be created or locked (local system problem).
    #[error("cannot lock the data directory {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// An exclusive lock on a data directory, held until dropped (or until the process exits).
#[derive(Debug)]
pub struct DirLock {
    file: File,
    dir: PathBuf,
}

impl DirLock {
    /// Creates `dir` if needed and locks it, writing this process's PID into `dir/.lock`. Does not wait.
    ///
    /// # Errors
    /// [`LockError::Held`] naming the directory and the holder's PID when another process (or another
    /// [`DirLock`] of this one) holds the lock; [`LockError::Io`] when the directory or file cannot be made.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        fs::create_dir_all(dir).map_err(|source| LockError::Io { path: dir.to_owned(), source })?;
        let path = dir.join(LOCK_FILE);
        let io_err = |source| LockError::Io { path: path.clone(), source };
        // Not truncated on open: the holder's PID must survive a refused attempt.
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let pid = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
                return Err(LockError::Held { dir: dir.to_owned(), pid });
            }
            Err(TryLockError::Error(source)) => return Err(io_err(source)),
        }
        file.set_len(0).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        file.sync_data().map_err(io_err)?;
        Ok(Self { file, dir: dir.to_owned() })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes it immediate and explicit.
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_fails_naming_the_directory_and_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DirLock::acquire(&data).unwrap();
        assert_eq!(first.dir(), data);
        let pid = std::process::id();
        assert_eq!(fs::read_to_string(data.join(LOCK_FILE)).unwrap().trim(), pid.to_string());
        let err = DirLock::acquire(&data).unwrap_err();
        assert!(matches!(&err, LockError::Held { pid: Some(p), .. } if *p == pid), "{err}");
        let text = err.to_string();
        assert!(text.contains(&data.display().to_string()) && text.contains(&format!("PID {pid}")), "{text}");
        // The refused attempt left the holder's PID in place.
        assert_eq!(fs::read_to_string(data.join(LOCK_FILE)).unwrap().trim(), pid.to_string());
        drop(first);
        let again = DirLock::acquire(&data).unwrap();
        drop(again);
    }

    #[test]
    fn a_stale_lock_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LOCK_FILE), "999999999\n").unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap().trim(), std::process::id().to_string());
        drop(lock);
    }

    #[test]
    fn different_directories_do_not_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let _a = DirLock::acquire(&dir.path().join("a")).unwrap();
        let _b = DirLock::acquire(&dir.path().join("b")).unwrap();
    }
}
