//! The volume checker: a disk that dies, is unmounted or turns read-only
//! must not keep taking new replicas, nor keep claiming the ones it held.
//! Every `volume_check_ms`, and soon after a block read or write fails
//! with an I/O error, each storage directory in service is checked
//! (`BlockStore::check_volume`, on a blocking thread, 30 s at most: a disk
//! that hangs fails too). A failed one leaves service; its replicas
//! are reported to the namenode as gone, so it copies them from other
//! nodes. Once more directories have failed than
//! `failed_volumes_tolerated` allows, the datanode stops: the namenode then
//! sees it dead and re-replicates the rest (HDFS does the same).

use std::sync::Arc;
use std::time::Duration;

use hstack_daemon::{Fatal, Shutdown};

use super::xceiver::{Event, XceiverCtx};

/// Checks no more often than this, however many errors ask for it.
const MIN_GAP: Duration = Duration::from_secs(1);
/// A directory whose check takes longer than this has failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn run(
    ctx: Arc<XceiverCtx>,
    every: Duration,
    tolerated: usize,
    fatal: Fatal,
    shutdown: Shutdown,
) {
    ctx.metrics
        .failed_volumes
        .set(ctx.store.failed_volumes().len() as i64);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(every) => {}
            _ = ctx.volume_check.notified() => {}
        }
        let mut failures = Vec::new();
        for i in ctx.store.in_service() {
            let c = ctx.clone();
            let check = tokio::task::spawn_blocking(move || c.store.check_volume(i));
            // A disk that hangs instead of failing fails too.
            let why = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
                Ok(Ok(Ok(()))) => continue,
                Ok(Ok(Err(e))) => e.to_string(),
                Ok(Err(e)) => format!("the check failed: {e}"),
                Err(_) => format!("the check did not finish in {CHECK_TIMEOUT:?}"),
            };
            failures.extend(ctx.store.fail_volume(i, &why));
        }
        for f in failures {
            tracing::error!(
                "storage directory {} failed ({}); out of service, its {} replicas reported gone",
                f.dir.display(),
                f.reason,
                f.lost.len()
            );
            for b in f.lost {
                ctx.event(Event::Deleted(b));
            }
            ctx.count_replicas();
        }
        let failed = ctx.store.failed_volumes();
        ctx.metrics.failed_volumes.set(failed.len() as i64);
        if failed.len() > tolerated {
            let why = format!(
                "{} storage directories failed, more than failed_volumes_tolerated = {tolerated}: stopping the datanode",
                failed.len()
            );
            fatal.fail(why);
            return;
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(MIN_GAP) => {}
        }
    }
}
