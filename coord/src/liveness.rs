//! Session liveness: which sessions were heard from, and (on the leader)
//! when each expires. Pure bookkeeping, driven by the member's ticker; the
//! expiry itself goes through the log.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Liveness {
    /// Sessions heard from on this member since the last tick.
    touched: HashSet<u64>,
    /// Leader only: when each session expires unless heard from.
    deadlines: HashMap<u64, Instant>,
    /// Leader only: expiries proposed and not yet applied.
    expiring: HashSet<u64>,
}

impl Liveness {
    /// A session connected here sent something.
    pub fn touch(&mut self, session: u64) {
        self.touched.insert(session);
    }

    /// The sessions heard from since the last call.
    pub fn take_touched(&mut self) -> Vec<u64> {
        self.touched.drain().collect()
    }

    /// Leader: these sessions (with their timeouts) were heard from at `now`.
    pub fn renew(&mut self, sessions: &[(u64, u32)], now: Instant) {
        for (s, timeout_ms) in sessions {
            self.deadlines
                .insert(*s, now + Duration::from_millis(*timeout_ms as u64));
        }
    }

    /// A member that just became leader knows nothing of when sessions were
    /// last heard from: every session gets a full timeout from now.
    pub fn became_leader(&mut self) {
        self.deadlines.clear();
        self.expiring.clear();
    }

    /// Leader: of the open `sessions` (id, timeout), those silent past their
    /// deadline and not already being expired. Forgets closed sessions.
    pub fn due(&mut self, sessions: &[(u64, u32)], now: Instant) -> Vec<u64> {
        let open: HashSet<u64> = sessions.iter().map(|(id, _)| *id).collect();
        self.deadlines.retain(|id, _| open.contains(id));
        self.expiring.retain(|id| open.contains(id));
        let mut due = Vec::new();
        for (id, timeout_ms) in sessions {
            let deadline = *self
                .deadlines
                .entry(*id)
                .or_insert(now + Duration::from_millis(*timeout_ms as u64));
            if now > deadline && self.expiring.insert(*id) {
                due.push(*id);
            }
        }
        due
    }

    /// The expiry proposal failed; propose it again next tick.
    pub fn expiry_failed(&mut self, session: u64) {
        self.expiring.remove(&session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn silent_sessions_expire_after_their_timeout_not_before() {
        let mut l = Liveness::default();
        let t0 = Instant::now();
        let sessions = [(1, 1000), (2, 3000)];
        assert!(l.due(&sessions, t0).is_empty());
        assert!(l.due(&sessions, t0 + 999 * MS).is_empty());
        assert_eq!(l.due(&sessions, t0 + 1001 * MS), vec![1]);
        // proposed once, not again while the proposal is in flight
        assert!(l.due(&sessions, t0 + 1500 * MS).is_empty());
        assert_eq!(l.due(&sessions, t0 + 3001 * MS), vec![2]);
    }

    #[test]
    fn touches_keep_a_session_alive() {
        let mut l = Liveness::default();
        let t0 = Instant::now();
        let sessions = [(7, 1000)];
        l.due(&sessions, t0);
        for i in 1..10 {
            l.touch(7);
            let touched = l.take_touched();
            assert_eq!(touched, vec![7]);
            l.renew(&[(7, 1000)], t0 + i * 500 * MS);
            assert!(l.due(&sessions, t0 + i * 500 * MS + 900 * MS).is_empty());
        }
        assert!(l.take_touched().is_empty());
    }

    #[test]
    fn a_new_leader_grants_a_full_timeout() {
        let mut l = Liveness::default();
        let t0 = Instant::now();
        let sessions = [(1, 1000)];
        l.due(&sessions, t0);
        l.became_leader();
        assert!(l.due(&sessions, t0 + 1500 * MS).is_empty());
        assert_eq!(l.due(&sessions, t0 + 2501 * MS), vec![1]);
    }

    #[test]
    fn failed_expiry_is_retried_and_closed_sessions_forgotten() {
        let mut l = Liveness::default();
        let t0 = Instant::now();
        l.due(&[(1, 100)], t0);
        assert_eq!(l.due(&[(1, 100)], t0 + 200 * MS), vec![1]);
        l.expiry_failed(1);
        assert_eq!(l.due(&[(1, 100)], t0 + 300 * MS), vec![1]);
        // closed: forgotten entirely
        assert!(l.due(&[], t0 + 400 * MS).is_empty());
        assert!(l.deadlines.is_empty() && l.expiring.is_empty());
    }
}
