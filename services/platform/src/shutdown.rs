//! Graceful shutdown. One [`Shutdown`] token is shared by everything a
//! process runs: the listener stops accepting, live streams end, shard
//! writers drain their queues, and the process exits once in-flight calls
//! are answered (or the grace period ends).

use tokio_util::sync::CancellationToken;

/// A cloneable shutdown signal: `trigger` once, and every `wait` returns.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal; idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when the signal fires.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// A child signal: it fires with its parent, and may also fire alone
    /// (one service of several stopping).
    pub fn child(&self) -> Self {
        Self {
            token: self.token.child_token(),
        }
    }
}

/// Completes on SIGTERM or ctrl-c (SIGINT).
pub async fn terminate_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only ctrl-c stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
