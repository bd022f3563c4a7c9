//! The pipeline's second stage and the state the two stages share.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use crate::store::{Store, StoreError};

/// Where a request's outcome is sent.
pub(super) type Reply = oneshot::Sender<Result<(), StoreError>>;

/// A batch the writer has applied (visible, not yet durable), on its way to the
/// syncer, which answers its requests once the log is synced.
pub(super) struct Applied {
    pub(super) number: u64,
    pub(super) result: Result<(), StoreError>,
    /// Each request's waiter, with its refusal (`None`: its change is in the batch).
    pub(super) replies: Vec<(Reply, Option<StoreError>)>,
}

/// Counters of the writer, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Synced writes (fsyncs of the write-ahead log).
    pub batches: AtomicU64,
    /// Requests answered by those synced writes.
    pub jobs: AtomicU64,
    pub audit_seq: AtomicU64,
    /// Write batches the writer applied (several may share one fsync).
    pub writes: AtomicU64,
    /// Time spent in those fsyncs, in microseconds.
    pub sync_micros: AtomicU64,
    /// Fsyncs that took over 2 ms, over 10 ms and over 50 ms.
    pub syncs_over_2ms: AtomicU64,
    pub syncs_over_10ms: AtomicU64,
    pub syncs_over_50ms: AtomicU64,
    /// Batch applications (WAL append and memtable inserts) that took over 10 ms
    /// more than their size explains.
    pub writes_over_10ms: AtomicU64,
}

impl CommitStats {
    /// The counters as metrics: (name, help, value).
    pub fn figures(&self) -> Vec<(&'static str, &'static str, f64)> {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
        vec![
            (
                "tokenvault_audit_entries",
                "Length of the audit chain.",
                read(&self.audit_seq),
            ),
            (
                "tokenvault_commit_batches",
                "Synced write batches since start.",
                read(&self.batches),
            ),
            (
                "tokenvault_commit_requests",
                "Changes written since start (one or more per synced batch).",
                read(&self.jobs),
            ),
            (
                "tokenvault_commit_writes",
                "Write batches applied since start (each fsync covers one or more).",
                read(&self.writes),
            ),
            (
                "tokenvault_wal_sync_seconds",
                "Time spent syncing the write-ahead log since start.",
                read(&self.sync_micros) / 1e6,
            ),
            (
                "tokenvault_wal_syncs_over_2ms",
                "Write-ahead log syncs that took over 2 ms.",
                read(&self.syncs_over_2ms),
            ),
            (
                "tokenvault_wal_syncs_over_10ms",
                "Write-ahead log syncs that took over 10 ms.",
                read(&self.syncs_over_10ms),
            ),
            (
                "tokenvault_wal_syncs_over_50ms",
                "Write-ahead log syncs that took over 50 ms.",
                read(&self.syncs_over_50ms),
            ),
            (
                "tokenvault_store_writes_over_10ms",
                "Batch applications (log append, memtable inserts) that took over 10 ms.",
                read(&self.writes_over_10ms),
            ),
        ]
    }

    fn record_sync(&self, took: std::time::Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sync_micros.fetch_add(micros, Ordering::Relaxed);
        if micros > 2_000 {
            self.syncs_over_2ms.fetch_add(1, Ordering::Relaxed);
        }
        if micros > 10_000 {
            self.syncs_over_10ms.fetch_add(1, Ordering::Relaxed);
        }
        if micros > 50_000 {
            self.syncs_over_50ms.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where the pipeline is: batches are numbered from 1 in write order.
pub(super) struct Progress {
    /// The last batch handed to the store, set before the write so that a reader
    /// that sees a batch's data also sees its number.
    pub(super) applied: AtomicU64,
    /// The last batch known durable.
    pub(super) synced: watch::Sender<u64>,
    /// A sync failed: the writer refuses everything from then on.
    pub(super) failed: AtomicBool,
}

pub(super) fn stopped() -> StoreError {
    StoreError::Unavailable("the commit writer has stopped".into())
}

pub(super) fn log_lost() -> StoreError {
    StoreError::Unavailable("the write-ahead log could not be synced; restart the daemon".into())
}

/// Second stage: one fsync of the write-ahead log covers every batch applied
/// before it started; then those batches' requests are answered. While it syncs,
/// the writer applies the next batches, which the next fsync covers together.
pub(super) struct Syncer {
    pub(super) store: Arc<dyn Store>,
    pub(super) stats: Arc<CommitStats>,
    pub(super) progress: Arc<Progress>,
}

impl Syncer {
    pub(super) fn run(self, applied: std::sync::mpsc::Receiver<Applied>) {
        while let Ok(first) = applied.recv() {
            let mut batches = vec![first];
            while let Ok(more) = applied.try_recv() {
                batches.push(more);
            }
            // After a failed fsync or write, a later fsync that succeeds proves
            // nothing about the pages before it: answer nothing as durable.
            let synced = if self.progress.failed.load(Ordering::SeqCst) {
                Err(log_lost())
            } else {
                let started = std::time::Instant::now();
                let synced = self.store.sync_log();
                self.stats.record_sync(started.elapsed());
                synced
            };
            if let Err(e) = &synced {
                // Applied but perhaps not durable: nothing more is accepted.
                tracing::error!(error = %e, "syncing the write-ahead log failed; refusing further writes");
                self.progress.failed.store(true, Ordering::SeqCst);
            }
            let requests: usize = batches.iter().map(|b| b.replies.len()).sum();
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats.jobs.fetch_add(requests as u64, Ordering::Relaxed);
            if let Some(last) = batches.last() {
                self.progress.synced.send_replace(last.number);
            }
            for batch in batches {
                for (reply, refused) in batch.replies {
                    let result = match (refused, &batch.result, &synced) {
                        (_, _, Err(_)) => Err(log_lost()),
                        (Some(e), _, Ok(())) => Err(e),
                        (None, Err(e), Ok(())) => Err(e.clone()),
                        (None, Ok(()), Ok(())) => Ok(()),
                    };
                    // A requester that has gone away no longer needs the answer.
                    let _ = reply.send(result);
                }
            }
        }
    }
}
