//! Group commit: one writer thread gathers the changes of concurrent requests into a
//! single synced RocksDB write batch, and gives each audit event its sequence number
//! and chained MAC in the order it writes them.
//!
//! A request's changes and its audit entries land in the same atomic batch, and the
//! request is answered only after that batch's write-ahead log is synced, so a `201`
//! is durable and a record never exists without its audit entry. Because one thread
//! owns the chain head, the audit chain needs no lock and is ordered by commit order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::audit::{chain, head_of, seq_key, AuditEvent, ChainHead};
use crate::clock::{rfc3339, Clock};
use crate::secret::KeyBytes;
use crate::store::{Store, StoreError, Table, WriteOp};

/// How many queued requests one synced write may cover.
const MAX_JOBS_PER_BATCH: usize = 2048;
const QUEUE: usize = 8192;
/// With at least this many requests queued the writer writes at once.
const ENOUGH_TO_WRITE: usize = 16;

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

#[derive(Debug, Clone, Copy)]
pub struct KekDelta {
    pub version: u32,
    pub records: i64,
    pub wraps: u64,
}

/// What the store knows about one key version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KekCount {
    pub records: i64,
    pub wraps: u64,
}

const KEK_PREFIX: &[u8] = b"kek/";

fn kek_key(version: u32) -> Vec<u8> {
    let mut key = KEK_PREFIX.to_vec();
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn encode_count(count: KekCount) -> Vec<u8> {
    let mut out = count.records.to_be_bytes().to_vec();
    out.extend_from_slice(&count.wraps.to_be_bytes());
    out
}

fn decode_count(bytes: &[u8]) -> Option<KekCount> {
    Some(KekCount {
        records: i64::from_be_bytes(bytes.get(..8)?.try_into().ok()?),
        wraps: u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?),
    })
}

/// Exact per-version counts, maintained by the writer in the same batches as the
/// records they count. Read by the vault for key status, retire and the wrap limit.
#[derive(Debug, Default)]
pub struct KekCounts(std::sync::Mutex<std::collections::BTreeMap<u32, KekCount>>);

impl KekCounts {
    fn load(store: &dyn Store) -> Result<KekCounts, StoreError> {
        let mut map = std::collections::BTreeMap::new();
        for (key, value) in store.scan_from(Table::Meta, KEK_PREFIX, 1 << 20)? {
            let Some(version) = key.strip_prefix(KEK_PREFIX) else {
                break;
            };
            let (Ok(v), Some(count)) = (<[u8; 4]>::try_from(version), decode_count(&value)) else {
                continue;
            };
            map.insert(u32::from_be_bytes(v), count);
        }
        Ok(KekCounts(std::sync::Mutex::new(map)))
    }

    pub fn snapshot(&self) -> std::collections::BTreeMap<u32, KekCount> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn get(&self, version: u32) -> KekCount {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(&version).copied())
            .unwrap_or_default()
    }
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

/// Counters of the writer, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub batches: AtomicU64,
    pub jobs: AtomicU64,
    pub audit_seq: AtomicU64,
}

pub struct Committer {
    tx: mpsc::Sender<Job>,
    stats: Arc<CommitStats>,
    counts: Arc<KekCounts>,
}

impl Committer {
    /// Starts the writer thread, reading the audit chain head from the store's last
    /// entry (no scan).
    /// `window`: how long the writer, woken by a lone request, waits for others
    /// to share its fsync (zero: never).
    pub fn start(
        store: Arc<dyn Store>,
        audit_key: KeyBytes,
        clock: Arc<dyn Clock>,
        window: std::time::Duration,
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
        let writer = Writer {
            store,
            audit_key,
            clock,
            head,
            stats: stats.clone(),
            counts: counts.clone(),
            window,
        };
        let handle = std::thread::Builder::new()
            .name("tokenvault-commit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the commit thread: {e}")))?;
        Ok((Committer { tx, stats, counts }, handle))
    }

    /// Writes `ops` and `events` in one durable batch (shared with whatever else is
    /// queued) and returns once the batch is synced.
    pub async fn commit(&self, change: Change) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send(Job { change, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the commit writer has stopped".into()))?;
        done.await
            .map_err(|_| StoreError::Unavailable("the commit writer has stopped".into()))?
    }

    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    pub fn kek_counts(&self) -> &KekCounts {
        &self.counts
    }
}

struct Writer {
    store: Arc<dyn Store>,
    audit_key: KeyBytes,
    clock: Arc<dyn Clock>,
    head: ChainHead,
    stats: Arc<CommitStats>,
    counts: Arc<KekCounts>,
    window: std::time::Duration,
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
        let (mut last_write, mut last_jobs) = (std::time::Instant::now(), 0);
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            gather(&mut rx, &mut jobs);
            // Every synced write costs the same fixed kernel and device time
            // whatever it carries. When requests are arriving concurrently (the
            // last write, moments ago, carried several) but few are queued now,
            // waiting a moment lets one fsync cover several requests instead of
            // one or two. A lone caller, or one after a quiet spell, never waits.
            let concurrent = last_jobs > 1 && last_write.elapsed() < self.window.saturating_mul(4);
            if concurrent && jobs.len() < ENOUGH_TO_WRITE && !self.window.is_zero() {
                std::thread::sleep(self.window);
                gather(&mut rx, &mut jobs);
            }
            last_jobs = jobs.len();
            self.write(jobs);
            last_write = std::time::Instant::now();
        }
    }

    /// True when every precondition holds, looking first at what earlier changes of
    /// this batch wrote (`written` finds the latest op on a key without copying
    /// keys or values), then at the store.
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
        let mut head = self.head;
        let time = rfc3339(self.clock.now());
        let mut ops = Vec::with_capacity(jobs.iter().map(|j| j.change.ops.len() + j.change.events.len()).sum());
        let mut written = Written::default();
        let mut counts = std::collections::BTreeMap::new();
        let mut accepted = Vec::with_capacity(jobs.len());
        let n_jobs = jobs.len() as u64;
        for mut job in jobs {
            match self.holds(&job.change.expect, &written, &ops) {
                Ok(true) => {}
                Ok(false) => {
                    let _ = job.reply.send(Err(StoreError::Conflict));
                    continue;
                }
                Err(e) => {
                    let _ = job.reply.send(Err(e));
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
            accepted.push(job.reply);
        }
        for (version, count) in &counts {
            ops.push(WriteOp::put(Table::Meta, kek_key(*version), encode_count(*count)));
        }
        let result = if ops.is_empty() {
            Ok(())
        } else {
            self.store.write(&ops, true)
        };
        if result.is_ok() {
            if let Ok(mut shared) = self.counts.0.lock() {
                shared.extend(counts);
            }
            self.head = head;
            self.stats.audit_seq.store(head.seq, Ordering::Relaxed);
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.jobs.fetch_add(n_jobs, Ordering::Relaxed);
        for reply in accepted {
            // A requester that has gone away no longer needs the answer.
            let _ = reply.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Verifier;
    use crate::clock::SystemClock;
    use crate::store::MemoryStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_chain_in_order() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let Ok((committer, _thread)) = Committer::start(
            store.clone(),
            KeyBytes::new([4; 32]),
            Arc::new(SystemClock),
            std::time::Duration::from_micros(100),
        ) else {
            unreachable!("start")
        };
        let committer = Arc::new(committer);
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
}
