//! Reading the audit trail: pages of entries in sequence order, and verification
//! of the whole HMAC chain.

use super::{Vault, VaultError};
use crate::audit::{seq_key, verify_store, AuditEntry, Verdict};
use crate::auth::{Authorized, ReadAudit};
use crate::store::Table;

pub const MAX_AUDIT_PAGE: usize = 1000;
/// Most entries one page request reads while skipping other tenants' entries.
pub const MAX_AUDIT_SCAN: usize = 10 * MAX_AUDIT_PAGE;
/// Fewest entries read per store scan while filling a page, so that skipping
/// another tenant's entries takes few scans even for small pages.
const MIN_SCAN_CHUNK: usize = 64;

#[derive(Debug, serde::Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` to read on; `null` once the end is reached.
    pub next: Option<u64>,
}

impl Vault {
    /// Entries with a sequence number greater than `after`, at most `limit`, that
    /// the caller may read: those of its own tenants and those of no tenant
    /// (start, stop, key events, refusals before a tenant was known). Another
    /// tenant's entries are skipped; at most `MAX_AUDIT_SCAN` entries are read per
    /// call, so a page may hold fewer than `limit` with `next` still set.
    pub fn audit_entries(
        &self,
        auth: &Authorized<ReadAudit>,
        after: u64,
        limit: usize,
    ) -> Result<AuditPage, VaultError> {
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let visible = |entry: &AuditEntry| {
            entry
                .body
                .tenant
                .as_ref()
                .is_none_or(|t| auth.tenants().iter().any(|own| own == t))
        };
        // A page and the entry after it, read in one scan when no entry is skipped.
        let chunk = (limit + 1).max(MIN_SCAN_CHUNK);
        let mut entries = Vec::with_capacity(limit);
        let mut cursor = after;
        let mut scanned = 0usize;
        loop {
            let rows = self
                .store
                .scan_from(Table::Audit, &seq_key(cursor.saturating_add(1)), chunk)?;
            for (key, bytes) in &rows {
                if entries.len() == limit {
                    // Another entry exists after the page: read on from its end.
                    return Ok(AuditPage {
                        entries,
                        next: Some(cursor),
                    });
                }
                // The cursor moves by the store's key, which only grows: an entry
                // whose body disagrees is corrupt, and paging cannot loop.
                let seq = key
                    .as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| VaultError::Corrupt)?;
                let entry = serde_json::from_slice::<AuditEntry>(bytes).map_err(|_| VaultError::Corrupt)?;
                if seq <= cursor || entry.body.seq != seq {
                    return Err(VaultError::Corrupt);
                }
                cursor = seq;
                scanned += 1;
                if visible(&entry) {
                    entries.push(entry);
                }
            }
            if rows.len() < chunk {
                return Ok(AuditPage { entries, next: None });
            }
            if scanned >= MAX_AUDIT_SCAN {
                return Ok(AuditPage {
                    entries,
                    next: Some(cursor),
                });
            }
        }
    }

    pub fn audit_verify(&self, _auth: &Authorized<ReadAudit>) -> Result<Verdict, VaultError> {
        let ring = self.keyring();
        Ok(verify_store(self.store.as_ref(), ring.audit_key())?)
    }
}
