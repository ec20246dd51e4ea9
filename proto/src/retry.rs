//! Waiting between tries of a call that failed with a retryable error
//! (`crate::error`): exponential, capped, with jitter, so that many
//! clients that failed at once (every datanode when the namenode restarts)
//! do not all come back in the same instant. One copy for every client and
//! daemon, beside the error model that says what may be retried.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Sleeps between tries of one operation: the first pause is about
/// `initial`, each bound doubles up to `max`, every pause is drawn
/// uniformly from half the bound to the bound, and no pause is taken that
/// would end past the deadline (if one was set).
#[derive(Debug)]
pub struct Backoff {
    bound: Duration,
    initial: Duration,
    max: Duration,
    deadline: Option<Instant>,
    pauses: u32,
}

impl Backoff {
    /// Pauses forever (no deadline).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            bound: initial,
            initial,
            max,
            deadline: None,
            pauses: 0,
        }
    }

    /// Gives up once `patience` from now has passed.
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.deadline = Some(Instant::now() + patience);
        self
    }

    /// Whether no pause was taken yet (the time to say why we wait).
    pub fn first(&self) -> bool {
        self.pauses == 0
    }

    /// Back to the first pause (after a success).
    pub fn reset(&mut self) {
        self.bound = self.initial;
        self.pauses = 0;
    }

    /// The next pause, or `None` once the deadline would pass.
    pub fn next_pause(&mut self) -> Option<Duration> {
        let half = self.bound / 2;
        let pause = half + rand::thread_rng().gen_range(Duration::ZERO..=half);
        if let Some(d) = self.deadline {
            if Instant::now() + pause > d {
                return None;
            }
        }
        self.pauses += 1;
        self.bound = (self.bound * 2).min(self.max);
        Some(pause)
    }

    /// Sleeps before the next try; false once the deadline would pass.
    pub async fn pause(&mut self) -> bool {
        match self.next_pause() {
            Some(p) => {
                tokio::time::sleep(p).await;
                true
            }
            None => false,
        }
    }
}

/// Calls `f` with a clone of `client` until it answers, trying again
/// after each retryable error (`Error::retryable`) while `backoff` allows.
/// Only for calls that are safe to repeat.
pub async fn call_repeatable<C, T, F, Fut>(
    client: &C,
    mut backoff: Backoff,
    f: F,
) -> Result<T, crate::Error>
where
    C: Clone,
    F: Fn(C) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    loop {
        match f(client.clone()).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) => {
                let e = crate::Error::from_status(&s);
                if !e.retryable() || !backoff.pause().await {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pauses_grow_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(b.next_pause().unwrap());
        }
        assert!(seen[0] >= Duration::from_millis(50) && seen[0] <= Duration::from_millis(100));
        assert!(seen[7] >= Duration::from_millis(500) && seen[7] <= Duration::from_secs(1));
        // many clients do not pause in step
        let firsts: std::collections::HashSet<Duration> = (0..20)
            .map(|_| {
                Backoff::new(Duration::from_secs(1), Duration::from_secs(1))
                    .next_pause()
                    .unwrap()
            })
            .collect();
        assert!(firsts.len() > 10, "{firsts:?}");
        b.reset();
        assert!(b.first() && b.next_pause().unwrap() <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn no_pause_past_the_deadline() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(2))
            .with_patience(Duration::from_millis(500));
        assert!(b.next_pause().is_none());
        assert!(!b.pause().await);
    }
}
