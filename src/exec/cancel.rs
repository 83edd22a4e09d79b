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
    /// handlers are in place when this returns.
    pub fn on_signals(&self, on_second: impl Fn() + Send + 'static) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let me = self.clone();
        tokio::spawn(async move {
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
        Ok(())
    }
}
