//! Group commit, in two stages on two threads. The writer gathers the changes of
//! concurrent requests into one RocksDB write batch, checks their preconditions,
//! gives each audit event its sequence number and chained MAC in the order it
//! writes them, and applies the batch without syncing. The syncer then fsyncs the
//! write-ahead log once for every batch applied before it started, and only then
//! answers their requests. While one fsync is in flight the writer is already
//! applying the next batches, so the CPU work and the device wait overlap, and one
//! fsync covers every request that arrived while the previous one ran.
//!
//! A request's changes and its audit entries land in the same atomic batch, and the
//! request is answered only after the log holding that batch is synced, so a `201`
//! is durable and a record never exists without its audit entry. An applied batch
//! is visible to reads before it is durable; every write path goes through the
//! writer and so waits for a later fsync that covers what it read, and reads that
//! commit nothing call `Committer::barrier` first. Because one thread owns the
//! chain head, the audit chain needs no lock and is ordered by commit order.

mod counts;
mod sync;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot, watch};

use crate::audit::{chain, head_of, seq_key, AuditEvent, ChainHead};
use crate::clock::{rfc3339, Clock};
use crate::secret::KeyBytes;
use crate::store::{Store, StoreError, Table, WriteOp};

use counts::{encode_count, kek_key};
pub use counts::{KekCount, KekCounts, KekDelta};
pub use sync::CommitStats;
use sync::{log_lost, stopped, Applied, Progress, Syncer};
/// How many queued requests one synced write may cover.
const MAX_JOBS_PER_BATCH: usize = 2048;
const QUEUE: usize = 8192;

/// A precondition: `key` in `table` must currently hold `value` (`None`: absent).
#[derive(Debug, Clone)]
pub struct Expect {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl Expect {
    pub fn absent(table: Table, key: Vec<u8>) -> Self {
        Expect {
            table,
            key,
            value: None,
        }
    }

    pub fn value(table: Table, key: Vec<u8>, value: Vec<u8>) -> Self {
        Expect {
            table,
            key,
            value: Some(value),
        }
    }
}

/// One request's share of a batch: its changes, its audit events, and its
/// preconditions. The writer checks the preconditions against the store and the
/// earlier changes of the same batch, so two concurrent inserts of one key, or a
/// write based on a stale read, cannot both succeed: the loser gets `Conflict`.
#[derive(Debug, Default)]
pub struct Change {
    pub ops: Vec<WriteOp>,
    pub events: Vec<AuditEvent>,
    pub expect: Vec<Expect>,
    /// Per key-version counter changes: records that need a version, and wraps
    /// (data keys encrypted) under it.
    pub kek: Vec<KekDelta>,
}
/// The ops of the batch being built, indexed by (table, key) hash: each hash maps
/// to the positions in `ops` of the ops with that hash, the latest last, and a
/// lookup compares the real keys. SipHash with a random key, as in `HashMap`, so
/// keys a client chooses (customers, idempotency keys) cannot force collisions.
#[derive(Default)]
struct Written {
    hasher: std::collections::hash_map::RandomState,
    at: HashMap<u64, Vec<usize>>,
}

impl Written {
    fn hash(&self, table: Table, key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((table, key))
    }

    fn note(&mut self, op: &WriteOp, index: usize) {
        let hash = self.hash(op.table, &op.key);
        self.at.entry(hash).or_default().push(index);
    }

    fn latest<'o>(&self, table: Table, key: &[u8], ops: &'o [WriteOp]) -> Option<&'o WriteOp> {
        self.at
            .get(&self.hash(table, key))?
            .iter()
            .rev()
            .filter_map(|i| ops.get(*i))
            .find(|op| op.table == table && op.key == key)
    }
}

struct Job {
    change: Change,
    reply: oneshot::Sender<Result<(), StoreError>>,
}
pub struct Committer {
    tx: mpsc::Sender<Job>,
    stats: Arc<CommitStats>,
    counts: Arc<KekCounts>,
    progress: Arc<Progress>,
}

impl Committer {
    /// Starts the writer and syncer threads, reading the audit chain head from the
    /// store's last entry (no scan). The returned handle is the writer's; it joins
    /// the syncer before it ends, so joining it means every batch was answered.
    pub fn start(
        store: Arc<dyn Store>,
        audit_key: KeyBytes,
        clock: Arc<dyn Clock>,
    ) -> Result<(Committer, JoinHandle<()>), StoreError> {
        let head = match store.last(Table::Audit)? {
            Some((_, bytes)) => {
                head_of(&bytes).ok_or_else(|| StoreError::Unavailable("the last audit entry is unreadable".into()))?
            }
            None => ChainHead::GENESIS,
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let counts = Arc::new(KekCounts::load(store.as_ref())?);
        let stats = Arc::new(CommitStats::default());
        stats.audit_seq.store(head.seq, Ordering::Relaxed);
        let progress = Arc::new(Progress {
            applied: AtomicU64::new(0),
            synced: watch::Sender::new(0),
            failed: AtomicBool::new(false),
        });
        let (to_syncer, applied) = std::sync::mpsc::channel();
        let syncer = Syncer {
            store: store.clone(),
            stats: stats.clone(),
            progress: progress.clone(),
        };
        let sync_thread = std::thread::Builder::new()
            .name("tokenvault-sync".into())
            .spawn(move || syncer.run(applied))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the sync thread: {e}")))?;
        let writer = Writer {
            store,
            audit_key,
            clock,
            head,
            stats: stats.clone(),
            counts: counts.clone(),
            progress: progress.clone(),
            next: 1,
            to_syncer,
            sync_thread,
        };
        let handle = std::thread::Builder::new()
            .name("tokenvault-commit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the commit thread: {e}")))?;
        Ok((
            Committer {
                tx,
                stats,
                counts,
                progress,
            },
            handle,
        ))
    }

    /// Writes `ops` and `events` in one durable batch (shared with whatever else is
    /// queued) and returns once the batch is synced.
    pub async fn commit(&self, change: Change) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        self.tx.send(Job { change, reply }).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// Waits until everything written so far is durable. Reads that answer a
    /// client without committing anything themselves (metadata, wallets, the audit
    /// listing, an idempotent replay) call this first, so they never show data a
    /// crash could still take back. Immediate when the log is already synced.
    pub async fn barrier(&self) -> Result<(), StoreError> {
        let target = self.progress.applied.load(Ordering::SeqCst);
        if *self.progress.synced.borrow() < target {
            let mut synced = self.progress.synced.subscribe();
            synced.wait_for(|s| *s >= target).await.map_err(|_| stopped())?;
        }
        if self.progress.failed.load(Ordering::SeqCst) {
            return Err(log_lost());
        }
        Ok(())
    }

    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    pub fn kek_counts(&self) -> &KekCounts {
        &self.counts
    }
}

/// First stage: checks preconditions, chains audit entries and applies each batch
/// to the store without syncing, then hands it to the syncer and goes straight on
/// to the next batch while the log is being synced.
struct Writer {
    store: Arc<dyn Store>,
    audit_key: KeyBytes,
    clock: Arc<dyn Clock>,
    head: ChainHead,
    stats: Arc<CommitStats>,
    counts: Arc<KekCounts>,
    progress: Arc<Progress>,
    /// The number of the next batch.
    next: u64,
    to_syncer: std::sync::mpsc::Sender<Applied>,
    sync_thread: JoinHandle<()>,
}

/// Moves queued jobs into `jobs`, up to the batch limit.
fn gather(rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>) {
    while jobs.len() < MAX_JOBS_PER_BATCH {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            gather(&mut rx, &mut jobs);
            self.write(jobs);
        }
        // The syncer answers what is still in flight, then ends.
        let Writer {
            to_syncer, sync_thread, ..
        } = self;
        drop(to_syncer);
        let _ = sync_thread.join();
    }

    /// True when every precondition holds, looking first at what earlier changes of
    /// this batch wrote (`written` finds the latest op on a key without copying
    /// keys or values), then at the store (which holds every earlier batch).
    fn holds(&self, expect: &[Expect], written: &Written, ops: &[WriteOp]) -> Result<bool, StoreError> {
        for e in expect {
            let current = match written.latest(e.table, &e.key, ops) {
                Some(op) => op.value.as_deref() == e.value.as_deref(),
                None => self.store.get(e.table, &e.key)? == e.value,
            };
            if !current {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn write(&mut self, jobs: Vec<Job>) {
        if self.progress.failed.load(Ordering::SeqCst) {
            for job in jobs {
                let _ = job.reply.send(Err(log_lost()));
            }
            return;
        }
        let mut head = self.head;
        let time = rfc3339(self.clock.now());
        let mut ops = Vec::with_capacity(jobs.iter().map(|j| j.change.ops.len() + j.change.events.len()).sum());
        let mut written = Written::default();
        let mut counts = std::collections::BTreeMap::new();
        let mut accepted = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            // A refusal may rest on what an earlier, not yet synced batch wrote:
            // it too is answered by the syncer, after the fsync.
            match self.holds(&job.change.expect, &written, &ops) {
                Ok(true) => {}
                Ok(false) => {
                    accepted.push((job.reply, Some(StoreError::Conflict)));
                    continue;
                }
                Err(e) => {
                    accepted.push((job.reply, Some(e)));
                    continue;
                }
            }
            for (i, op) in job.change.ops.iter().enumerate() {
                written.note(op, ops.len() + i);
            }
            ops.append(&mut job.change.ops);
            for delta in &job.change.kek {
                let count = counts
                    .entry(delta.version)
                    .or_insert_with(|| self.counts.get(delta.version));
                count.records += delta.records;
                count.wraps += delta.wraps;
            }
            for event in &job.change.events {
                let (bytes, next) = chain(&self.audit_key, head, event, &time);
                ops.push(WriteOp::put(Table::Audit, seq_key(next.seq), bytes));
                head = next;
            }
            accepted.push((job.reply, None));
        }
        for (version, count) in &counts {
            ops.push(WriteOp::put(Table::Meta, kek_key(*version), encode_count(*count)));
        }
        let number = self.next;
        self.next += 1;
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        self.progress.applied.store(number, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let result = if ops.is_empty() {
            Ok(())
        } else {
            self.store.write(&ops, false)
        };
        // Slow: over 10 ms beyond what the batch's size explains (≈ 5 µs per op).
        let took = started.elapsed();
        let expected = std::time::Duration::from_micros(10_000 + 5 * ops.len() as u64);
        if took > expected {
            self.stats.writes_over_10ms.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                millis = took.as_millis() as u64,
                ops = ops.len(),
                "slow store write: every request waits behind it"
            );
        }
        match &result {
            Ok(()) => {
                self.counts.merge(counts);
                self.head = head;
                self.stats.audit_seq.store(head.seq, Ordering::Relaxed);
            }
            // Part of a failed write may be in the log: what is on disk is known
            // again only after a restart replays it.
            Err(e) => {
                tracing::error!(error = %e, "a write to the store failed; refusing further writes");
                self.progress.failed.store(true, Ordering::SeqCst);
            }
        }
        let applied = Applied {
            number,
            result,
            replies: accepted,
        };
        // If the syncer is gone the replies are dropped and their requesters see
        // "the commit writer has stopped".
        let _ = self.to_syncer.send(applied);
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Verifier;
    use crate::clock::SystemClock;
    use crate::store::MemoryStore;

    /// A committer over `store`, its audit chain keyed with `[key; 32]`.
    fn start(store: Arc<dyn Store>, key: u8) -> (Arc<Committer>, JoinHandle<()>) {
        let Ok((committer, writer)) = Committer::start(store, KeyBytes::new([key; 32]), Arc::new(SystemClock)) else {
            unreachable!("start")
        };
        (Arc::new(committer), writer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_chain_in_order() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (committer, _thread) = start(store.clone(), 4);
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let c = committer.clone();
            tasks.push(tokio::spawn(async move {
                let key = (i % 100).to_be_bytes().to_vec();
                let change = Change {
                    ops: vec![WriteOp::put(Table::Records, key.clone(), vec![1])],
                    events: vec![AuditEvent::new("x", "tokenize", "ok")],
                    expect: vec![Expect::absent(Table::Records, key)],
                    kek: vec![],
                };
                c.commit(change).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await {
                Ok(Ok(())) => ok += 1,
                Ok(Err(StoreError::Conflict)) => {}
                other => unreachable!("unexpected {other:?}"),
            }
        }
        // 200 inserts over 100 distinct keys: exactly one insert per key wins.
        assert_eq!(ok, 100);
        let entries = store.scan_from(Table::Audit, &[], 1000).unwrap_or_default();
        assert_eq!(entries.len(), 100);
        let key = KeyBytes::new([4; 32]);
        let mut verifier = Verifier::new(&key);
        for (k, v) in &entries {
            assert!(verifier.check(k, v).is_ok());
        }
        assert!(committer.stats().batches.load(Ordering::Relaxed) <= 200);
    }

    /// A store that tracks which keys are durable: a write is only visible until
    /// the next `sync_log`, which can be made to fail.
    #[derive(Default)]
    struct Tracking {
        inner: MemoryStore,
        pending: std::sync::Mutex<Vec<Vec<u8>>>,
        durable: std::sync::Mutex<std::collections::HashSet<Vec<u8>>>,
        fail: AtomicBool,
        fail_writes: AtomicBool,
    }

    impl Store for Tracking {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(table, key)
        }
        fn write(&self, ops: &[WriteOp], sync: bool) -> Result<(), StoreError> {
            if self.fail_writes.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("no space left".into()));
            }
            self.inner.write(ops, sync)?;
            let keys = ops.iter().filter(|o| o.table == Table::Records).map(|o| o.key.clone());
            self.pending.lock().unwrap().extend(keys);
            Ok(())
        }
        fn sync_log(&self) -> Result<(), StoreError> {
            std::thread::sleep(std::time::Duration::from_micros(300));
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("fsync failed".into()));
            }
            let moved: Vec<_> = self.pending.lock().unwrap().drain(..).collect();
            self.durable.lock().unwrap().extend(moved);
            Ok(())
        }
        fn last(&self, table: Table) -> Result<Option<crate::store::KeyValue>, StoreError> {
            self.inner.last(table)
        }
        fn scan_from(
            &self,
            table: Table,
            from: &[u8],
            limit: usize,
        ) -> Result<Vec<crate::store::KeyValue>, StoreError> {
            self.inner.scan_from(table, from, limit)
        }
        fn checkpoint(&self, dir: &std::path::Path) -> Result<(), StoreError> {
            self.inner.checkpoint(dir)
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn properties(&self) -> Vec<(&'static str, u64)> {
            Vec::new()
        }
    }

    fn insert(i: u32) -> Change {
        let key = i.to_be_bytes().to_vec();
        Change {
            ops: vec![WriteOp::put(Table::Records, key.clone(), vec![1])],
            events: vec![AuditEvent::new("x", "tokenize", "ok")],
            expect: vec![Expect::absent(Table::Records, key)],
            kek: vec![],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_answer_waits_for_an_fsync_that_covers_it() {
        let store = Arc::new(Tracking::default());
        let dyn_store: Arc<dyn Store> = store.clone();
        let (committer, writer) = start(dyn_store, 5);
        let mut tasks = Vec::new();
        for i in 0..300u32 {
            let (c, store) = (committer.clone(), store.clone());
            tasks.push(tokio::spawn(async move {
                c.commit(insert(i)).await?;
                // Answered: the record must already be durable.
                Ok::<bool, StoreError>(store.durable.lock().unwrap().contains(&i.to_be_bytes().to_vec()))
            }));
        }
        for t in tasks {
            assert!(matches!(t.await, Ok(Ok(true))));
        }
        // Fewer fsyncs than requests: they were shared.
        let stats = committer.stats();
        assert_eq!(stats.jobs.load(Ordering::Relaxed), 300);
        assert!(stats.batches.load(Ordering::Relaxed) < 300);
        committer.barrier().await.unwrap();
        drop(committer);
        writer.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_fsync_fails_its_requests_and_everything_after() {
        let store = Arc::new(Tracking::default());
        let dyn_store: Arc<dyn Store> = store.clone();
        let (committer, _writer) = start(dyn_store, 6);
        assert!(committer.commit(insert(1)).await.is_ok());
        store.fail.store(true, Ordering::SeqCst);
        assert!(matches!(
            committer.commit(insert(2)).await,
            Err(StoreError::Unavailable(_))
        ));
        // The disk is fine again, but durability can no longer be promised.
        store.fail.store(false, Ordering::SeqCst);
        assert!(matches!(
            committer.commit(insert(3)).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(committer.barrier().await, Err(StoreError::Unavailable(_))));
        assert!(!store.durable.lock().unwrap().contains(&2u32.to_be_bytes().to_vec()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_conflict_is_answered_only_once_the_winner_is_durable() {
        let store = Arc::new(Tracking::default());
        let dyn_store: Arc<dyn Store> = store.clone();
        let (committer, _writer) = start(dyn_store, 7);
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let (c, store) = (committer.clone(), store.clone());
            // Two inserts of each key: one wins, the other is refused.
            tasks.push(tokio::spawn(async move {
                match c.commit(insert(i / 2)).await {
                    Err(StoreError::Conflict) => {
                        // The refusal rests on the winner's write: that must be on disk.
                        Some(store.durable.lock().unwrap().contains(&(i / 2).to_be_bytes().to_vec()))
                    }
                    Ok(()) => None,
                    Err(e) => unreachable!("{e:?}"),
                }
            }));
        }
        let mut conflicts = 0;
        for t in tasks {
            if let Some(durable) = t.await.unwrap() {
                assert!(durable, "a conflict was answered before the winning write was synced");
                conflicts += 1;
            }
        }
        assert_eq!(conflicts, 100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_latches_the_writer_shut() {
        let store = Arc::new(Tracking::default());
        let dyn_store: Arc<dyn Store> = store.clone();
        let (committer, _writer) = start(dyn_store, 8);
        store.fail_writes.store(true, Ordering::SeqCst);
        assert!(matches!(
            committer.commit(insert(1)).await,
            Err(StoreError::Unavailable(_))
        ));
        store.fail_writes.store(false, Ordering::SeqCst);
        assert!(matches!(
            committer.commit(insert(2)).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(store.durable.lock().unwrap().is_empty());
    }
}
