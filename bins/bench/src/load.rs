//! What the open-loop generators (`social`, `chat`) share: a thread of their own, the open
//! files they need, and how their latencies print.

use anyhow::{Context as _, bail};
use std::future::Future;
use std::sync::{Mutex, PoisonError};

/// Sockets, HTTP connections and files beyond the per-request or per-socket ones.
pub(crate) const SPARE_FDS: u64 = 256;

/// Runs the generator `make` returns on a thread of its own with a single-threaded
/// runtime, so it takes at most one core and its timers are not shared with other work.
pub(crate) async fn on_own_thread<F, Fut>(name: &str, make: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building the load generator's runtime")
                .and_then(|rt| rt.block_on(make()));
            let _ = done_tx.send(result);
        })
        .context("starting the load generator thread")?;
    done_rx.await.context("the load generator thread panicked")?
}

/// Raises this process's soft limit on open files to the hard limit, and fails clearly if
/// that is still below what the run needs.
pub(crate) fn raise_fd_limit(needed: u64) -> anyhow::Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().context("reading RLIMIT_NOFILE")?;
    // Linux refuses a soft limit above fs.nr_open (2^20 by default) even when the hard
    // limit is unlimited.
    let target = hard.min(1 << 20);
    let limit = if soft < target {
        match rlimit::increase_nofile_limit(target) {
            Ok(limit) => limit,
            Err(e) => {
                eprintln!("warning: could not raise the open-file limit from {soft} to {target}: {e}");
                soft
            }
        }
    } else {
        soft
    };
    if limit < needed {
        bail!(
            "this run needs about {needed} file descriptors but the open-file limit is {limit} (hard limit {hard}); \
             raise it (e.g. `ulimit -n {needed}` in the shell, which may need root for the hard limit) or ask for fewer \
             (--max-in-flight, --fanout)"
        );
    }
    Ok(limit)
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

pub(crate) fn ms(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}

/// Samples are recorded from many tasks on one thread; a panicking task must not take the
/// others' samples with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
