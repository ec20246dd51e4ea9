//! The namenode's background work, on one timer: dead datanodes, the end
//! of start-up safe mode, the replication monitor, decommissioning, lease
//! expiry and recovery, checkpoints, and the gauges.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hstack_daemon::Shutdown;

use super::{checkpoint, Namenode, State};

const TICK: Duration = Duration::from_millis(200);
/// After a failed checkpoint the next try waits this long, doubling with
/// each failure up to the checkpoint period (a replay is not free).
const CHECKPOINT_RETRY: Duration = Duration::from_secs(60);

pub async fn run(nn: Arc<Namenode>, shutdown: Shutdown) {
    let mut last_replication = Instant::now();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A checkpoint runs beside the monitor (it holds no lock the monitor
    // needs), one at a time.
    let mut checkpointing: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
    let mut next_checkpoint_try = Instant::now();
    let mut checkpoint_failures = 0u32;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait() => {
                if let Some(h) = checkpointing.take() {
                    // Let an image being written finish rather than leave
                    // its temporary file behind (shutdown joins
                    // the monitor).
                    let _ = h.await;
                }
                return;
            }
        }
        let now = Instant::now();
        let replication_due = now.duration_since(last_replication)
            >= Duration::from_millis(nn.cfg.replication_interval_ms);
        if replication_due {
            last_replication = now;
        }
        {
            let mut st = nn.lock();
            let dead = st
                .bm
                .check_dead(now, Duration::from_millis(nn.cfg.dead_node_timeout_ms));
            for id in dead {
                tracing::warn!(datanode = %id, "datanode declared dead; its replicas will be copied elsewhere");
            }
            nn.safe_mode_tick(&mut st, now);
            st.bm.postpone_deletes = st.in_safe_mode();
            nn.lease_tick(&mut st, now);
            if replication_due {
                nn.replication_tick(&mut st, now);
            }
        }
        if checkpointing.as_ref().is_some_and(|h| h.is_finished()) {
            let r = checkpointing.take().expect("checked").await;
            let failure = match r {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(e) => Some(e.to_string()),
            };
            match failure {
                None => checkpoint_failures = 0,
                Some(e) => {
                    let cap = Duration::from_secs(nn.cfg.checkpoint_period_s).max(CHECKPOINT_RETRY);
                    let wait = CHECKPOINT_RETRY
                        .saturating_mul(1 << checkpoint_failures.min(16))
                        .min(cap);
                    checkpoint_failures += 1;
                    tracing::error!("checkpoint failed: {e}; retrying in {}s", wait.as_secs());
                    next_checkpoint_try = now + wait;
                }
            }
        }
        if checkpointing.is_none() && now >= next_checkpoint_try && nn.checkpoint_due(now) {
            checkpointing = Some(tokio::spawn(checkpoint(nn.clone())));
        }
    }
}

impl Namenode {
    fn checkpoint_due(&self, now: Instant) -> bool {
        let (txid, at) = *self.last_checkpoint.lock().expect("lock");
        let last = self.log.last_txid();
        // A failed edit log takes no roll (and no change to save).
        self.log.failure().is_none()
            && last > txid
            && (last - txid >= self.cfg.checkpoint_txns
                || now.duration_since(at) >= Duration::from_secs(self.cfg.checkpoint_period_s))
    }

    fn safe_mode_tick(&self, st: &mut State, now: Instant) {
        if !st.safe.startup {
            return;
        }
        let (total, safe) = st.safe_counts();
        let reached = total == 0 || safe as f64 >= total as f64 * self.cfg.safemode_threshold;
        if !reached {
            st.safe.reached = None;
            return;
        }
        let since = *st.safe.reached.get_or_insert(now);
        if now.duration_since(since) >= Duration::from_millis(self.cfg.safemode_extension_ms) {
            st.safe.startup = false;
            tracing::info!(
                blocks = total,
                reported = safe,
                "leaving safe mode: enough blocks have been reported"
            );
        }
    }

    fn lease_tick(&self, st: &mut State, now: Instant) {
        // Not in safe mode (as HDFS): the holders of a last block may not
        // have reported yet, and recovery would close the file without it.
        if st.in_safe_mode() {
            return;
        }
        let hard = Duration::from_millis(self.cfg.lease_hard_limit_ms);
        let mut files = Vec::new();
        for (client, l) in &st.leases {
            if now.duration_since(l.renewed) >= hard {
                tracing::warn!(client = %client, files = l.files.len(), "lease expired (hard limit); recovering its files");
                files.extend(l.files.iter().copied());
            }
        }
        // A recovery that has not finished (its primary died, say) starts
        // again with a new stamp.
        let retry = Duration::from_millis((self.cfg.heartbeat_ms as u64 * 5).max(10_000));
        for (inode, r) in &st.recovering {
            if now.duration_since(r.since) >= retry {
                files.push(*inode);
            }
        }
        files.sort_unstable();
        files.dedup();
        for inode in files {
            if let Err(e) = self.start_recovery(st, inode, now) {
                tracing::error!(inode, "lease recovery failed to start: {e}");
            }
        }
    }

    fn replication_tick(&self, st: &mut State, now: Instant) {
        if !st.in_safe_mode() {
            let State { ns, bm, rng, .. } = st;
            let expected = |id, inode| super::expected(ns, id, inode);
            let n = bm.replication_pass(
                rng,
                expected,
                now,
                Duration::from_millis(self.cfg.pending_replication_timeout_ms),
                self.cfg.replication_work_per_pass,
            );
            bm.check_decommission(expected);
            self.metrics.replications_scheduled.inc_by(n as u64);
        }
        self.update_gauges(st);
    }

    pub(crate) fn update_gauges(&self, st: &State) {
        let m = &self.metrics;
        let h = st.bm.health(st.expected_fn());
        m.blocks.set(h.blocks as i64);
        m.under_replicated.set(h.under_replicated as i64);
        m.missing.set(h.missing as i64);
        m.corrupt.set(h.corrupt as i64);
        m.pending_replication.set(h.pending_replication as i64);
        let live: Vec<_> = st.bm.nodes.iter().filter(|n| n.alive).collect();
        m.live_datanodes.set(live.len() as i64);
        m.dead_datanodes
            .set((st.bm.listed().count() - live.len()) as i64);
        m.failed_volumes
            .set(live.iter().map(|n| n.failed_volumes as i64).sum());
        m.decommissioning_datanodes.set(
            live.iter()
                .filter(|n| n.admin == crate::blockmap::AdminState::Decommissioning)
                .count() as i64,
        );
        m.capacity.set(live.iter().map(|n| n.capacity as i64).sum());
        m.remaining
            .set(live.iter().map(|n| n.remaining as i64).sum());
        m.safe_mode.set(st.in_safe_mode() as i64);
        m.open_leases.set(st.leases.len() as i64);
        m.inodes.set(st.ns.inode_count() as i64);
        m.files.set(st.ns.files().count() as i64);
        m.last_txid.set(st.ns.txid as i64);
    }
}
