//! Storage behind a narrow trait: the few operations the vault needs, nothing that
//! names RocksDB. `rocks.rs` is the only file that imports `rocksdb`; `memory.rs` is
//! an in-memory store for fast unit tests.

mod memory;
#[cfg(feature = "rocksdb")]
mod rocks;

pub use memory::MemoryStore;
#[cfg(feature = "rocksdb")]
pub use rocks::{owner_only, RocksStore};

/// The tables (RocksDB column families) of the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `tenant \0 token` → record (public metadata + envelope).
    Records,
    /// `tenant \0 fingerprint` → token, for `reuse_existing`.
    Fingerprints,
    /// big-endian sequence number → audit entry.
    Audit,
    /// `tenant \0 customer \0 inverted-time token` → empty: a customer's wallet, newest first.
    Customers,
    /// `kind, expiry (u64 BE), id` → empty: what the purge task removes, oldest first.
    Expiries,
    /// `identity \0 tenant \0 key` → the first response to an `Idempotency-Key`.
    Idempotency,
    /// Small vault state: per-key-version counters, rewrap progress.
    Meta,
}

impl Table {
    pub const ALL: [Table; 7] = [
        Table::Meta,
        Table::Records,
        Table::Fingerprints,
        Table::Audit,
        Table::Customers,
        Table::Expiries,
        Table::Idempotency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Records => "records",
            Table::Fingerprints => "fingerprints",
            Table::Audit => "audit",
            Table::Customers => "customers",
            Table::Expiries => "expiries",
            Table::Idempotency => "idempotency",
            Table::Meta => "meta",
        }
    }
}

/// One change in an atomic write: a put, or a delete when `value` is `None`.
#[derive(Debug, Clone)]
pub struct WriteOp {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl WriteOp {
    pub fn put(table: Table, key: Vec<u8>, value: Vec<u8>) -> Self {
        WriteOp {
            table,
            key,
            value: Some(value),
        }
    }

    pub fn delete(table: Table, key: Vec<u8>) -> Self {
        WriteOp {
            table,
            key,
            value: None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("a key that must be new already exists")]
    Conflict,
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    #[error("storage could not be opened: {0}")]
    Open(String),
}

pub type KeyValue = (Vec<u8>, Vec<u8>);

pub trait Store: Send + Sync + 'static {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Applies all `ops` atomically. With `sync`, the write-ahead log is on disk
    /// before this returns; without, the write is visible at once and durable
    /// after the next `sync_log`.
    fn write(&self, ops: &[WriteOp], sync: bool) -> Result<(), StoreError>;

    /// Makes every write that has returned so far durable (fsync of the
    /// write-ahead log). Safe to call while other writes go on.
    fn sync_log(&self) -> Result<(), StoreError>;

    /// The entry with the greatest key in `table`, found without a scan.
    fn last(&self, table: Table) -> Result<Option<KeyValue>, StoreError>;

    /// Up to `limit` entries with keys `>= from`, in key order.
    fn scan_from(&self, table: Table, from: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError>;

    /// A consistent copy of the whole store in `dir` (which must not exist), taken
    /// while serving.
    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), StoreError>;

    /// Writes the memtables to table files, so that the next start has no
    /// write-ahead log to replay (called on a graceful stop).
    fn flush(&self) -> Result<(), StoreError>;

    /// Engine figures for metrics: (name, value).
    fn properties(&self) -> Vec<(&'static str, u64)>;
}
