use tokio::sync::watch;

/// A cloneable shutdown signal: one `trigger`, every waiter wakes.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(false);
        Self { tx }
    }

    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once `trigger` has been called (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // An error means the sender is gone, which cannot happen while self lives.
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Triggers on SIGTERM or SIGINT.
    pub fn trigger_on_signals(&self) {
        use tracing::Instrument;
        let me = self.clone();
        let watch = async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::error!("failed to install signal handlers");
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
            }
            me.trigger();
        };
        tokio::spawn(watch.in_current_span());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_returns_after_trigger() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        let s2 = s.clone();
        let h = tokio::spawn(async move { s2.wait().await });
        s.trigger();
        h.await.unwrap();
        assert!(s.is_triggered());
        // Waiting after the fact returns at once.
        s.wait().await;
    }
}
