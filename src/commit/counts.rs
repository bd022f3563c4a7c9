//! Per key-version counters (records that need a version, data keys wrapped
//! under it), kept by the writer in the same batches as the records they count.

use crate::store::{Store, StoreError, Table};

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

pub(super) const KEK_PREFIX: &[u8] = b"kek/";

pub(super) fn kek_key(version: u32) -> Vec<u8> {
    let mut key = KEK_PREFIX.to_vec();
    key.extend_from_slice(&version.to_be_bytes());
    key
}

pub(super) fn encode_count(count: KekCount) -> Vec<u8> {
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
    pub fn load(store: &dyn Store) -> Result<KekCounts, StoreError> {
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

    /// Takes over the counts a batch has just written.
    pub(super) fn merge(&self, written: std::collections::BTreeMap<u32, KekCount>) {
        if let Ok(mut shared) = self.0.lock() {
            shared.extend(written);
        }
    }

    /// Records in all key versions together.
    pub fn records(&self) -> u64 {
        self.snapshot()
            .values()
            .map(|c| u64::try_from(c.records).unwrap_or(0))
            .fold(0, u64::saturating_add)
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
