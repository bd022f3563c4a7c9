//! The RocksDB store: one column family per table, no compression (ciphertext does
//! not compress), synced write-ahead log for every acknowledged write.

use std::path::Path;

use rocksdb::{
    ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

use super::{KeyValue, Store, StoreError, Table, WriteOp};

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
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(DBCompressionType::None);
        options.set_max_open_files(max_open_files);
        options.set_keep_log_file_num(4);
        let cfs = Table::ALL.iter().map(|t| {
            let mut cf = Options::default();
            cf.set_compression_type(DBCompressionType::None);
            ColumnFamilyDescriptor::new(t.name(), cf)
        });
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
        let mut batch = WriteBatch::default();
        for op in ops {
            let cf = self.cf(op.table)?;
            match &op.value {
                Some(v) => batch.put_cf(cf, &op.key, v),
                None => batch.delete_cf(cf, &op.key),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch, &options).map_err(unavailable)
    }

    fn checkpoint(&self, dir: &Path) -> Result<(), StoreError> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(unavailable)?;
        checkpoint.create_checkpoint(dir).map_err(unavailable)
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

    #[test]
    fn put_get_last_scan_delete() {
        let Ok(dir) = tempfile::tempdir() else {
            unreachable!("temp dir")
        };
        let Ok(store) = RocksStore::open(dir.path(), 256) else {
            unreachable!("open")
        };
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
}
