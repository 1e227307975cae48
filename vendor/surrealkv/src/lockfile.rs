#[cfg(not(target_arch = "wasm32"))]
use std::fs::{File, OpenOptions};
#[cfg(not(target_arch = "wasm32"))]
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
#[cfg(not(target_arch = "wasm32"))]
use std::process;
use std::sync::Arc;

#[cfg(not(target_arch = "wasm32"))]
use fs2::FileExt;

use crate::error::{Error, Result}; // Use fs2 for file locking

/// LockFile prevents multiple processes from accessing the same database
/// directory
///
/// # How it works
///
/// This implementation uses OS-level file locking (via the `fs2` crate) to
/// ensure that only one process can hold the lock at a time. The lock file
/// contains the PID of the process that currently holds the lock for debugging
/// purposes.
///
/// # Stale Lock Handling
///
/// If a process crashes or is killed while holding the lock, the OS
/// automatically releases the file lock. This means that stale lock files (with
/// old PIDs written in them) do NOT block new processes from acquiring the
/// lock. The file content (PID) is purely informational and has no impact on
/// the actual locking mechanism.
///
/// When a new process acquires the lock, it overwrites the file with its own
/// PID.
///
/// # Lock Release
///
/// The lock is released in two ways:
/// 1. Explicitly by calling `release()` (typically during database close)
/// 2. Automatically via the `Drop` implementation when the LockFile goes out of scope
///
/// Even if `release()` is not called explicitly, the OS will release the file
/// lock when the process terminates (normal exit or crash).
pub(crate) struct LockFile {
	/// The path to the lock file
	path: PathBuf,
	/// The lock file handle
	#[cfg(not(target_arch = "wasm32"))]
	file: Option<File>,
}

impl LockFile {
	/// Lock file name used in database directories
	pub const LOCK_FILE_NAME: &'static str = "LOCK";

	/// Creates a new lock file at the specified path
	pub fn new<P: AsRef<Path>>(path: P) -> Self {
		let lock_path = path.as_ref().join(Self::LOCK_FILE_NAME);
		Self {
			path: lock_path,
			#[cfg(not(target_arch = "wasm32"))]
			file: None,
		}
	}

	/// Acquires the lock, returning an error if the database is already in use
	#[cfg(not(target_arch = "wasm32"))]
	pub fn acquire(&mut self) -> Result<()> {
		// Try to open the lock file with create flag
		let file = OpenOptions::new()
			.read(true)
			.write(true)
			.create(true)
			.truncate(true)
			.open(&self.path)
			.map_err(|e| Error::Io(Arc::new(e)))?;

		// Try to lock the file exclusively using fs2
		file.try_lock_exclusive().map_err(|e| match e.kind() {
			ErrorKind::WouldBlock => Error::Other(format!(
				"Database at {} is already locked by another process",
				self.path.display()
			)),
			_ => Error::Io(Arc::new(e)),
		})?;

		// Write process ID to lock file for debugging
		let pid = process::id();
		let content = format!("{}\n", pid);
		file.set_len(0)
			.and_then(|_| file.try_clone()?.write_all(content.as_bytes()))
			.map_err(|e| Error::Io(Arc::new(e)))?;

		self.file = Some(file);
		Ok(())
	}

	/// Releases the lock
	#[cfg(not(target_arch = "wasm32"))]
	pub fn release(&mut self) -> Result<()> {
		if let Some(_file) = self.file.take() {
			// File will be closed when dropped
		}
		Ok(())
	}

	/// Acquires the lock (WASM no-op)
	#[cfg(target_arch = "wasm32")]
	pub fn acquire(&mut self) -> Result<()> {
		Ok(())
	}

	/// Releases the lock (WASM no-op)
	#[cfg(target_arch = "wasm32")]
	pub fn release(&mut self) -> Result<()> {
		Ok(())
	}
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for LockFile {
	fn drop(&mut self) {
		// Try to release the lock, but don't panic if it fails
		let _ = self.release();
	}
}
