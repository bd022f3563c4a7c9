//! An in-memory `Store` for unit tests: the same contract, no durability.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{KeyValue, Store, StoreError, Table, WriteOp};

type Tables = HashMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Tables>, StoreError> {
        self.tables
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))
    }
}

impl Store for MemoryStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()?.get(&table).and_then(|t| t.get(key)).cloned())
    }

    fn write(&self, ops: &[WriteOp], _sync: bool) -> Result<(), StoreError> {
        let mut tables = self.lock()?;
        for op in ops {
            let table = tables.entry(op.table).or_default();
            match &op.value {
                Some(v) => {
                    table.insert(op.key.clone(), v.clone());
                }
                None => {
                    table.remove(&op.key);
                }
            }
        }
        Ok(())
    }

    fn last(&self, table: Table) -> Result<Option<KeyValue>, StoreError> {
        Ok(self
            .lock()?
            .get(&table)
            .and_then(|t| t.iter().next_back())
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    fn checkpoint(&self, _dir: &std::path::Path) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("the in-memory store has no checkpoints".into()))
    }

    fn properties(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn sync_log(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn scan_from(&self, table: Table, from: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        Ok(self
            .lock()?
            .get(&table)
            .map(|t| {
                t.range(from.to_vec()..)
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }
}
