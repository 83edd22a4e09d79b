//! The process's one tokio runtime, built on first use and never dropped.
//! Stores, vaults, remote state and the commands' walkers, signal
//! handlers and HTTP endpoint all run on it, so a command builds at most
//! one runtime, and dropping a vault never drops a runtime (which panics
//! inside an async context).
//!
//! Synchronous code waits on it with `Handle::block_on` from plain or
//! `spawn_blocking` threads, never from its worker threads.

use std::sync::{Mutex, OnceLock};
use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static BUILDING: Mutex<()> = Mutex::new(());

/// The runtime; built (multi-threaded, at least two workers, I/O and
/// timers enabled) by the first caller. Errors: the OS refused the threads
/// or the I/O driver; a later call tries again.
pub fn runtime() -> std::io::Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    // One builder at a time: a runtime built by a losing racer would be
    // dropped, which panics when the racer is inside an async context.
    let _building = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("standby-io")
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| rt))
}

#[cfg(test)]
mod tests {
    use super::runtime;

    #[test]
    fn one_runtime_for_every_caller_and_thread() {
        let a = runtime().unwrap() as *const _ as usize;
        let others: Vec<usize> = (0..4)
            .map(|_| std::thread::spawn(|| runtime().unwrap() as *const _ as usize))
            .map(|t| t.join().unwrap())
            .collect();
        assert!(others.iter().all(|&b| b == a));
        // Usable from a blocking thread of itself, as vaults are.
        let rt = runtime().unwrap();
        let n = rt.block_on(async {
            tokio::task::spawn_blocking(|| runtime().unwrap().block_on(async { 7 }))
                .await
                .unwrap()
        });
        assert_eq!(n, 7);
    }
}
