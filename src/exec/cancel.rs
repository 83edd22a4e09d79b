//! A cancellation flag shared by the walker and its steps: set once (by
//! Ctrl-C, SIGTERM or a test), awaited by anyone who can stop early.

use std::sync::Arc;
use tokio::sync::watch;

/// Cloning shares the flag.
#[derive(Debug, Clone)]
pub struct Cancel {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Cancel::new()
    }
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Ask everyone to stop; repeated calls change nothing.
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once [`Cancel::cancel`] was called (at once if it was already).
    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close under us.
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Cancel on the first SIGINT or SIGTERM; call `on_second` on the next
    /// one (e.g. to exit at once). Must run inside a tokio runtime; the
    /// handlers are in place when this returns, and stay until the
    /// returned guard is dropped (the runtime outlives any one command
    /// step, so a finished walk must not go on reacting to interrupts).
    pub fn on_signals(&self, on_second: impl Fn() + Send + 'static) -> std::io::Result<Listening> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let me = self.clone();
        let task = tokio::spawn(async move {
            let mut seen = 0;
            loop {
                let got = tokio::select! {
                    s = int.recv() => s,
                    s = term.recv() => s,
                };
                // None: the runtime is shutting down.
                if got.is_none() {
                    return;
                }
                seen += 1;
                if seen == 1 {
                    me.cancel();
                } else {
                    on_second();
                }
            }
        });
        Ok(Listening(task))
    }
}

/// Run the blocking `f` on a blocking thread of the process's runtime
/// (`store::runtime`) with Ctrl-C/SIGTERM setting its [`Cancel`]; a second
/// interrupt calls `on_second` and does not cut short what runs (cleanup
/// must finish). Errors: the runtime cannot start (`io::Error`), or `f`
/// panicked (its message).
pub fn with_cancel<T: Send + 'static>(
    on_second: impl Fn() + Send + 'static,
    f: impl FnOnce(Cancel) -> T + Send + 'static,
) -> Result<T, CancelRunError> {
    let rt = crate::store::runtime().map_err(CancelRunError::Runtime)?;
    let cancel = Cancel::new();
    rt.block_on(async {
        let _listening = cancel
            .on_signals(on_second)
            .inspect_err(|e| tracing::warn!("cannot watch for interrupts: {e}"));
        let c = cancel.clone();
        tokio::task::spawn_blocking(move || f(c)).await
    })
    .map_err(|e| CancelRunError::Crashed(e.to_string()))
}

/// Why [`with_cancel`] could not return `f`'s result.
#[derive(Debug, thiserror::Error)]
pub enum CancelRunError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the run crashed: {0}")]
    Crashed(String),
}

/// Listening for interrupts for a [`Cancel`]; dropping it stops listening.
#[derive(Debug)]
#[must_use = "dropping it stops listening for interrupts at once"]
pub struct Listening(tokio::task::JoinHandle<()>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.abort();
    }
}
