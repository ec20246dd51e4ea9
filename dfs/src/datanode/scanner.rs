//! The block scanner: disks rot quietly, and a replica nobody reads would
//! stay bad until the day it is the last one. Every period the scanner
//! re-reads each finalized replica against its checksums and reports the
//! bad ones, so the namenode re-replicates from a good copy and deletes
//! this one. A pass is spread over the period (at most a second between
//! blocks) so it never competes with clients for the disk for long.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::xceiver::{Event, XceiverCtx};
use crate::blockstore::ReplicaState;
use crate::error::Code;

const MAX_GAP: Duration = Duration::from_secs(1);
/// The first pass starts this soon at most after start-up (a datanode
/// restarted often must still get scanned).
const FIRST_PASS: Duration = Duration::from_secs(60);

/// Scans forever (the caller drops the task at shutdown).
pub(crate) async fn run(ctx: Arc<XceiverCtx>, period: Duration) {
    tokio::time::sleep(period.min(FIRST_PASS)).await;
    loop {
        let started = Instant::now();
        let (verified, corrupt) = pass(&ctx, period).await;
        tracing::debug!(
            verified,
            corrupt,
            took_ms = started.elapsed().as_millis() as u64,
            "block scanner pass done"
        );
        tokio::time::sleep(period.saturating_sub(started.elapsed())).await;
    }
}

/// One pass over every finalized replica: (verified, corrupt).
pub(crate) async fn pass(ctx: &Arc<XceiverCtx>, period: Duration) -> (u64, u64) {
    let blocks: Vec<_> = ctx
        .store
        .report()
        .into_iter()
        .filter(|(_, s)| *s == ReplicaState::Finalized)
        .map(|(b, _)| b)
        .collect();
    if blocks.is_empty() {
        return (0, 0);
    }
    let gap = (period / blocks.len() as u32).min(MAX_GAP);
    let (mut verified, mut corrupt) = (0, 0);
    for (i, block) in blocks.into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        let c = ctx.clone();
        // A whole replica's read: off the async workers.
        let res = tokio::task::spawn_blocking(move || c.store.verify(&block)).await;
        let Ok(res) = res else {
            continue;
        };
        match res {
            Ok(()) => {
                verified += 1;
                ctx.metrics.scanner_blocks_verified_total.inc();
            }
            Err(e) if e.code == Code::Corrupt => {
                // Still the same replica? (it may have been recovered or
                // replaced while we read it).
                let same = ctx
                    .store
                    .get(block.id)
                    .is_some_and(|r| r.gen_stamp == block.gen_stamp);
                if !same {
                    continue;
                }
                corrupt += 1;
                ctx.metrics.scanner_corrupt_total.inc();
                tracing::warn!(
                    "block scanner: replica of block {} is corrupt: {e}",
                    block.id
                );
                ctx.event(Event::Corrupt {
                    block,
                    reason: e.message,
                });
            }
            // Deleted, or moved by a recovery, while we looked.
            Err(e)
                if ctx
                    .store
                    .get(block.id)
                    .is_none_or(|r| r.state != ReplicaState::Finalized) =>
            {
                tracing::debug!("block scanner: block {} went away: {e}", block.id)
            }
            Err(e) => {
                tracing::warn!("block scanner: failed to verify block {}: {e}", block.id);
                ctx.suspect_volumes();
            }
        }
    }
    (verified, corrupt)
}
