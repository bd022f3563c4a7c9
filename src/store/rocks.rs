//! The RocksDB store: one column family per table, no compression (ciphertext does
//! not compress), synced write-ahead log for every acknowledged write.

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Direction, Env, IteratorMode, Options,
    WriteBatch, WriteOptions, DB,
};

use super::{KeyValue, Store, StoreError, Table, WriteOp};

/// Block cache shared by every table (data, index and filter blocks).
const BLOCK_CACHE: usize = 256 << 20;
/// All memtables together.
const MEMTABLE_LIMIT: usize = 256 << 20;
/// Write-ahead log kept before the oldest memtables are flushed: also what a
/// start after a crash may have to replay (a graceful stop flushes first).
const WAL_LIMIT: u64 = 256 << 20;

/// Per-table options: no compression; Bloom filters on whole keys, in the SST files
/// and in the memtable, so the writer's "is this key absent" checks and lookups of
/// unknown tokens do not search every level.
fn table_options(table: Table, cache: &Cache) -> Options {
    let mut block = BlockBasedOptions::default();
    block.set_block_cache(cache);
    block.set_bloom_filter(10.0, false);
    block.set_cache_index_and_filter_blocks(true);
    block.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let mut cf = Options::default();
    cf.set_compression_type(DBCompressionType::None);
    cf.set_block_based_table_factory(&block);
    cf.set_memtable_whole_key_filtering(true);
    cf.set_memtable_prefix_bloom_ratio(0.05);
    let memtable = match table {
        Table::Records | Table::Audit | Table::Fingerprints => 32 << 20,
        _ => 8 << 20,
    };
    cf.set_write_buffer_size(memtable);
    cf
}

/// Makes a directory readable by its owner only (0700): the files RocksDB writes
/// inside follow the umask, and records carry public metadata and the audit trail.
pub fn owner_only(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

pub struct RocksStore {
    db: DB,
}

fn unavailable(e: rocksdb::Error) -> StoreError {
    // RocksDB's messages name files and states, never keys or values.
    StoreError::Unavailable(e.into_string())
}

impl RocksStore {
    /// Opens (or creates) the store in `dir`. `max_open_files` should come from the
    /// process's file limit, leaving room for sockets.
    pub fn open(dir: &Path, max_open_files: i32) -> Result<RocksStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
        owner_only(dir).map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(DBCompressionType::None);
        options.set_max_open_files(max_open_files);
        options.set_keep_log_file_num(4);
        // Flushes and compactions run at a lower CPU (and compactions at a lower
        // I/O) priority than the request path: on a small machine a compaction
        // burst otherwise takes the core the commit writer needs, and every
        // request waits behind it.
        let mut env = Env::new().map_err(|e| StoreError::Open(e.into_string()))?;
        env.lower_thread_pool_cpu_priority();
        env.lower_high_priority_thread_pool_cpu_priority();
        env.lower_thread_pool_io_priority();
        options.set_env(&env);
        // Reused WAL files are overwritten in place, so the fdatasync behind every
        // acknowledged write flushes data blocks only, not the inode and journal:
        // about half the latency and kernel CPU of an appending fdatasync here.
        options.set_recycle_log_file_num(4);
        options.set_max_total_wal_size(WAL_LIMIT);
        // Table files written by flushes and compactions are synced a megabyte at
        // a time as they are written, so that no large burst of dirty pages sits
        // in the device queue in front of a write-ahead-log fsync.
        options.set_bytes_per_sync(1 << 20);
        // Memory stays bounded whatever the number of records: memtables of all
        // tables together are capped, and index and filter blocks live in the
        // block cache instead of growing with the data.
        options.set_db_write_buffer_size(MEMTABLE_LIMIT);
        let cache = Cache::new_lru_cache(BLOCK_CACHE);
        let cfs = Table::ALL
            .iter()
            .map(|t| ColumnFamilyDescriptor::new(t.name(), table_options(*t, &cache)));
        let db = DB::open_cf_descriptors(&options, dir, cfs).map_err(|e| StoreError::Open(e.into_string()))?;
        Ok(RocksStore { db })
    }

    /// Opens a stopped (or running) daemon's data directory read-only, for offline
    /// audit verification and export. Nothing is written.
    pub fn open_read_only(dir: &Path) -> Result<RocksStore, StoreError> {
        let mut options = Options::default();
        options.set_max_open_files(256);
        let names = Table::ALL.iter().map(|t| t.name());
        let db = DB::open_cf_for_read_only(&options, dir, names, false)
            .map_err(|e| StoreError::Open(format!("{}: {}", dir.display(), e.into_string())))?;
        Ok(RocksStore { db })
    }

    fn cf(&self, table: Table) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(table.name())
            .ok_or_else(|| StoreError::Unavailable(format!("column family {} missing", table.name())))
    }
}

impl Store for RocksStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(table)?, key).map_err(unavailable)
    }

    fn write(&self, ops: &[WriteOp], sync: bool) -> Result<(), StoreError> {
        // The batch is applied in key order, table by table: each memtable's skip
        // list then starts every insert from where the previous one ended instead
        // of from its top, which is most of the writer's cost with random keys.
        // The sort is stable, so several ops on one key keep their order and the
        // last still wins.
        let mut sorted: Vec<&WriteOp> = ops.iter().collect();
        sorted.sort_by(|a, b| (a.table, &a.key).cmp(&(b.table, &b.key)));
        let mut batch = WriteBatch::default();
        let mut current: Option<(Table, &rocksdb::ColumnFamily)> = None;
        for op in sorted {
            let cf = match current {
                Some((table, cf)) if table == op.table => cf,
                _ => {
                    let cf = self.cf(op.table)?;
                    current = Some((op.table, cf));
                    cf
                }
            };
            match &op.value {
                Some(v) => batch.put_cf(cf, &op.key, v),
                None => batch.delete_cf(cf, &op.key),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch, &options).map_err(unavailable)
    }

    fn sync_log(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(unavailable)
    }

    fn checkpoint(&self, dir: &Path) -> Result<(), StoreError> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(unavailable)?;
        checkpoint.create_checkpoint(dir).map_err(unavailable)
    }

    fn flush(&self) -> Result<(), StoreError> {
        for table in Table::ALL {
            self.db.flush_cf(self.cf(table)?).map_err(unavailable)?;
        }
        Ok(())
    }

    fn properties(&self) -> Vec<(&'static str, u64)> {
        let names = [
            ("sst_bytes", "rocksdb.total-sst-files-size"),
            ("live_data_bytes", "rocksdb.estimate-live-data-size"),
            ("memtable_bytes", "rocksdb.cur-size-all-mem-tables"),
            ("delayed_write_rate", "rocksdb.actual-delayed-write-rate"),
            ("write_stopped", "rocksdb.is-write-stopped"),
            ("running_compactions", "rocksdb.num-running-compactions"),
        ];
        names
            .iter()
            .filter_map(|(label, property)| {
                self.db
                    .property_int_value(*property)
                    .ok()
                    .flatten()
                    .map(|v| (*label, v))
            })
            .collect()
    }

    fn last(&self, table: Table) -> Result<Option<KeyValue>, StoreError> {
        let mut iter = self.db.iterator_cf(self.cf(table)?, IteratorMode::End);
        match iter.next() {
            Some(Ok((k, v))) => Ok(Some((k.to_vec(), v.to_vec()))),
            Some(Err(e)) => Err(unavailable(e)),
            None => Ok(None),
        }
    }

    fn scan_from(&self, table: Table, from: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        let iter = self
            .db
            .iterator_cf(self.cf(table)?, IteratorMode::From(from, Direction::Forward));
        let mut out = Vec::new();
        for item in iter.take(limit) {
            let (k, v) = item.map_err(unavailable)?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a fresh temporary directory (removed when the guard drops).
    fn temp_store() -> (tempfile::TempDir, RocksStore) {
        let Ok(dir) = tempfile::tempdir() else {
            unreachable!("temp dir")
        };
        let Ok(store) = RocksStore::open(dir.path(), 256) else {
            unreachable!("open")
        };
        (dir, store)
    }

    #[test]
    fn put_get_last_scan_delete() {
        let (_dir, store) = temp_store();
        let ops = [
            WriteOp::put(Table::Audit, vec![1], b"one".to_vec()),
            WriteOp::put(Table::Audit, vec![2], b"two".to_vec()),
            WriteOp::put(Table::Records, b"k".to_vec(), b"v".to_vec()),
        ];
        assert!(store.write(&ops, true).is_ok());
        assert_eq!(store.get(Table::Records, b"k").ok().flatten(), Some(b"v".to_vec()));
        assert_eq!(store.get(Table::Audit, b"k").ok().flatten(), None);
        assert_eq!(store.last(Table::Audit).ok().flatten().map(|kv| kv.0), Some(vec![2]));
        assert_eq!(store.scan_from(Table::Audit, &[2], 10).map(|v| v.len()).ok(), Some(1));
        assert!(store
            .write(&[WriteOp::delete(Table::Records, b"k".to_vec())], true)
            .is_ok());
        assert_eq!(store.get(Table::Records, b"k").ok().flatten(), None);
        assert_eq!(store.last(Table::Fingerprints).ok().flatten(), None);
    }

    /// The batch is applied sorted by key, but several ops on one key still take
    /// effect in the order given: the last one wins.
    #[test]
    fn ops_on_one_key_keep_their_order() {
        let (_dir, store) = temp_store();
        let ops = [
            WriteOp::put(Table::Records, b"z".to_vec(), b"first".to_vec()),
            WriteOp::put(Table::Records, b"a".to_vec(), b"kept".to_vec()),
            WriteOp::put(Table::Records, b"z".to_vec(), b"second".to_vec()),
            WriteOp::put(Table::Meta, b"m".to_vec(), b"gone".to_vec()),
            WriteOp::delete(Table::Meta, b"m".to_vec()),
            WriteOp::delete(Table::Audit, b"d".to_vec()),
            WriteOp::put(Table::Audit, b"d".to_vec(), b"back".to_vec()),
        ];
        assert!(store.write(&ops, false).is_ok());
        let get = |t, k: &[u8]| store.get(t, k).ok().flatten();
        assert_eq!(get(Table::Records, b"z"), Some(b"second".to_vec()));
        assert_eq!(get(Table::Records, b"a"), Some(b"kept".to_vec()));
        assert_eq!(get(Table::Meta, b"m"), None);
        assert_eq!(get(Table::Audit, b"d"), Some(b"back".to_vec()));
    }
}
