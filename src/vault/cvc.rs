//! CVCs live here and nowhere else: in memory, for a bounded time, handed out once.
//!
//! PCI DSS forbids storing the CVC after authorisation; the vault keeps it only long
//! enough for the first charge. It is never written to disk, so a restart forgets
//! every CVC.

use std::collections::HashMap;
use std::sync::Mutex;

use time::OffsetDateTime;

use crate::secret::Cvc;

/// The most CVCs held at once; beyond it the oldest-expiring are dropped first.
const MAX_ENTRIES: usize = 1_000_000;

pub struct CvcCache {
    ttl: time::Duration,
    entries: Mutex<HashMap<Vec<u8>, (Cvc, OffsetDateTime)>>,
}

impl CvcCache {
    pub fn new(ttl: time::Duration) -> Self {
        CvcCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, (Cvc, OffsetDateTime)>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn put(&self, key: Vec<u8>, cvc: Cvc, now: OffsetDateTime) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, expires)| *expires > now);
        }
        if entries.len() < MAX_ENTRIES {
            entries.insert(key, (cvc, now + self.ttl));
        }
    }

    /// Removes and returns the CVC if it has not expired.
    pub fn take(&self, key: &[u8], now: OffsetDateTime) -> Option<Cvc> {
        let (cvc, expires) = self.lock().remove(key)?;
        (now < expires).then_some(cvc)
    }

    pub fn forget(&self, key: &[u8]) {
        self.lock().remove(key);
    }

    /// Drops every expired CVC (zeroized on drop). Run periodically.
    pub fn sweep(&self, now: OffsetDateTime) -> usize {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, (_, expires)| *expires > now);
        before - entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn returned_once_and_only_within_ttl() {
        let now = datetime!(2026-12-03 12:00 UTC);
        let cache = CvcCache::new(time::Duration::minutes(10));
        cache.put(b"a".to_vec(), Cvc::copy_from("123"), now);
        assert_eq!(
            cache.take(b"a", now).map(|c| c.expose_secret().to_owned()).as_deref(),
            Some("123")
        );
        assert!(cache.take(b"a", now).is_none());

        cache.put(b"b".to_vec(), Cvc::copy_from("456"), now);
        assert!(cache.take(b"b", now + time::Duration::minutes(10)).is_none());

        cache.put(b"c".to_vec(), Cvc::copy_from("789"), now);
        assert_eq!(cache.sweep(now + time::Duration::minutes(11)), 1);
    }
}
