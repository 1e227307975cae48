use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::compaction::leveled::Strategy;
use crate::compaction::CompactionStrategy;
use crate::error::BackgroundErrorReason;
use crate::lsm::CompactionOperations;
use crate::stall::WriteStallController;
use crate::Options;

/// Mosaic patch: runs blocking storage work (fsync, SSTable writes) so that it does not hold
/// a runtime worker. Flushes and compactions used to run inline in `tokio::spawn`ed tasks,
/// and the WAL fsync of every synced commit inline in the committing task, under the commit
/// lock: on a two-worker runtime one flush or two concurrent commits stopped every other
/// task of the process meanwhile. On a multi-thread runtime the worker is handed off for the
/// duration (`block_in_place`); elsewhere (a current-thread runtime, no runtime) the work
/// runs as before.
pub(crate) fn off_worker<R>(work: impl FnOnce() -> R) -> R {
	match tokio::runtime::Handle::try_current() {
		Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
			tokio::task::block_in_place(work)
		}
		_ => work(),
	}
}

/// Manages background tasks for the LSM tree
pub(crate) struct TaskManager {
	/// Flag to signal tasks to stop
	stop_flag: Arc<AtomicBool>,

	/// Notification for memtable compaction task
	memtable_notify: Arc<Notify>,

	/// Notification for level compaction task
	level_notify: Arc<Notify>,

	/// Flag indicating if memtable compaction is running
	memtable_running: Arc<AtomicBool>,

	/// Flag indicating if level compaction is running
	level_running: Arc<AtomicBool>,

	/// Task handles for cleanup
	task_handles: Mutex<Option<Vec<tokio::task::JoinHandle<()>>>>,
}

impl fmt::Debug for TaskManager {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		f.debug_struct("TaskManager")
			.field("memtable_running", &self.memtable_running.load(Ordering::Acquire))
			.field("level_running", &self.level_running.load(Ordering::Acquire))
			.finish()
	}
}

impl TaskManager {
	pub(crate) fn new(
		core: Arc<dyn CompactionOperations>,
		opts: Arc<Options>,
		write_stall: Arc<WriteStallController>,
	) -> Self {
		let stop_flag = Arc::new(AtomicBool::new(false));
		let memtable_notify = Arc::new(Notify::new());
		let level_notify = Arc::new(Notify::new());
		let memtable_running = Arc::new(AtomicBool::new(false));
		let level_running = Arc::new(AtomicBool::new(false));
		let task_handles = Mutex::new(Some(Vec::new()));

		// Spawn memtable compaction task
		{
			let core = Arc::clone(&core);
			let stop_flag = Arc::clone(&stop_flag);
			let notify = Arc::clone(&memtable_notify);
			let running = Arc::clone(&memtable_running);
			let level_notify = Arc::clone(&level_notify);
			let write_stall = Arc::clone(&write_stall);

			let handle = tokio::spawn(async move {
				loop {
					// Wait for notification
					notify.notified().await;

					if stop_flag.load(Ordering::SeqCst) {
						break;
					}

					running.store(true, Ordering::SeqCst);
					log::debug!("Memtable flush task starting");

					// Flush ALL pending immutable memtables in a loop
					let mut flush_count = 0;
					loop {
						match off_worker(|| core.compact_memtable()) {
							Ok(()) => {
								flush_count += 1;
								write_stall.signal_work_done();
								// Check if there are more immutables to flush
								if !core.has_pending_immutables() {
									break;
								}
							}
							Err(e) => {
								log::error!("Memtable compaction task error: {e:?}");
								core.error_handler()
									.set_error(e, BackgroundErrorReason::MemtablaFlush);
								write_stall.signal_shutdown();
								break;
							}
						}
					}

					if flush_count > 0 {
						log::debug!(
							"Memtable flush task completed: flushed {} memtables",
							flush_count
						);
						// Trigger level compaction after successful flushes
						level_notify.notify_one();
					} else {
						log::debug!("Memtable flush task: no immutables to flush");
					}

					running.store(false, Ordering::SeqCst);
				}
			});
			task_handles.lock().unwrap().as_mut().unwrap().push(handle);
		}

		// Spawn level compaction task
		{
			let core = Arc::clone(&core);
			let stop_flag = Arc::clone(&stop_flag);
			let notify = Arc::clone(&level_notify);
			let running = Arc::clone(&level_running);
			let write_stall = Arc::clone(&write_stall);

			let handle = tokio::spawn(async move {
				loop {
					// Wait for notification
					notify.notified().await;

					if stop_flag.load(Ordering::SeqCst) {
						break;
					}

					running.store(true, Ordering::SeqCst);
					log::debug!("Level compaction task starting");

					// Use leveled compaction strategy
					let strategy: Arc<dyn CompactionStrategy> =
						Arc::new(Strategy::from_options(Arc::clone(&opts)));
					if let Err(e) = off_worker(|| core.compact(strategy)) {
						log::error!("Level compaction task error: {e:?}");
						core.error_handler().set_error(e, BackgroundErrorReason::Compaction);
						write_stall.signal_shutdown();
					} else {
						log::debug!("Level compaction completed successfully");
						write_stall.signal_work_done();
					}
					running.store(false, Ordering::SeqCst);
				}
			});
			task_handles.lock().unwrap().as_mut().unwrap().push(handle);
		}

		Self {
			stop_flag,
			memtable_notify,
			level_notify,
			memtable_running,
			level_running,
			task_handles,
		}
	}

	pub(crate) fn wake_up_memtable(&self) {
		// Only notify if not already running
		if !self.memtable_running.load(Ordering::Acquire) {
			self.memtable_notify.notify_one();
		}
	}

	pub(crate) fn wake_up_level(&self) {
		// Only notify if not already running
		if !self.level_running.load(Ordering::Acquire) {
			self.level_notify.notify_one();
		}
	}

	pub async fn stop(&self) {
		// Set the stop flag to prevent new operations from starting
		self.stop_flag.store(true, Ordering::SeqCst);

		// Wake up any waiting tasks so they can check the stop flag and exit
		self.memtable_notify.notify_one();
		self.level_notify.notify_one();

		// Wait for any in-progress compactions to complete (no timeout - wait
		// indefinitely)
		while self.memtable_running.load(Ordering::Acquire)
			|| self.level_running.load(Ordering::Acquire)
		{
			// Yield to other tasks and wait a short time before checking again
			tokio::time::sleep(tokio::time::Duration::from_millis(50)).await;
		}

		// Now it's safe to wait for all tasks to complete
		let task_handles = self.task_handles.lock().unwrap().take().unwrap();
		for handle in task_handles {
			if let Err(e) = handle.await {
				log::error!("Error shutting down task: {e:?}");
			}
		}
	}
}
