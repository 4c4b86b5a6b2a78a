//! What bidding keeps only for a while: request outcomes (retries with the
//! same `request_id`, promised for at least 24 hours) and each user's
//! activity log (WatchMyActivity's events; a user's last
//! [`ACTIVITY_KEPT`] are kept whatever their age). The auction logs
//! themselves are history and are kept.
//!
//! Every node deletes what is past `bidding.request_retention_ms` and
//! `bidding.activity_retention_ms` every `bidding.retention_interval_ms`,
//! at most [`CHUNK`] rows per statement (on SQLite a statement holds the one
//! write lock the shard writers need). A statement still scans the old rows
//! it keeps (each active user's last [`ACTIVITY_KEPT`] older than the
//! retention) to find the ones to delete; users with fewer events than that
//! are skipped whole. Deleting is idempotent, so several nodes of a cluster
//! doing it is harmless. Rows carry the committing node's clock: a pruned
//! row may sit between kept ones, which a stream treats like any pruned
//! resume point (a RESUME_TOO_OLD snapshot, `crate::activity`).

use std::sync::Arc;
use std::time::Duration;

use auction_platform::Shutdown;
use auction_platform::config::BiddingConfig;

use crate::log::{Log, LogError};
use crate::shard::Clock;

/// Each user's newest activity events kept whatever their age (the
/// contract's streams resume over at least the last 1,000 events).
pub const ACTIVITY_KEPT: i64 = 1_000;

/// Rows deleted per statement.
pub const CHUNK: i64 = 1_000;

/// Runs until `shutdown`, pruning once per interval (the first time one
/// interval after the start).
pub async fn run(log: Log, clock: Arc<dyn Clock>, config: BiddingConfig, shutdown: Shutdown) {
    let interval = Duration::from_millis(config.retention_interval_ms);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.wait() => return,
        }
        let now_ms = clock.now().unix_ms();
        if let Err(error) = prune(&log, now_ms, &config, ACTIVITY_KEPT, &shutdown).await {
            tracing::warn!(error = %auction_platform::error::DisplayChain(&error), "bidding retention: pruning failed; trying again next interval");
        }
    }
}

/// Deletes everything past the retentions as of `now_ms`, keeping each
/// user's last `activity_kept` activity events; returns (request outcomes,
/// activity events) deleted.
pub async fn prune(
    log: &Log,
    now_ms: i64,
    config: &BiddingConfig,
    activity_kept: i64,
    shutdown: &Shutdown,
) -> Result<(u64, u64), LogError> {
    let age =
        |retention_ms: u64| now_ms.saturating_sub(i64::try_from(retention_ms).unwrap_or(i64::MAX));
    let mut outcomes = 0;
    loop {
        let deleted = log
            .prune_outcomes(age(config.request_retention_ms), CHUNK)
            .await?;
        outcomes += deleted;
        if deleted < CHUNK as u64 || shutdown.is_triggered() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut activity = 0;
    loop {
        let deleted = log
            .prune_activity(age(config.activity_retention_ms), activity_kept, CHUNK)
            .await?;
        activity += deleted;
        if deleted < CHUNK as u64 || shutdown.is_triggered() {
            break;
        }
        tokio::task::yield_now().await;
    }
    if outcomes + activity > 0 {
        tracing::info!(
            outcomes,
            activity,
            "bidding retention: deleted what is past its retention"
        );
    }
    Ok((outcomes, activity))
}
