//! Reading the audit trail: pages of entries in sequence order, and verification
//! of the whole HMAC chain.

use super::{Vault, VaultError};
use crate::audit::{seq_key, verify_store, AuditEntry, Verdict};
use crate::auth::{Authorized, ReadAudit};
use crate::store::Table;

pub const MAX_AUDIT_PAGE: usize = 1000;

#[derive(Debug, serde::Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` to read on; `null` once the end is reached.
    pub next: Option<u64>,
}

impl Vault {
    /// Entries with a sequence number greater than `after`, at most `limit`.
    pub fn audit_entries(
        &self,
        _auth: &Authorized<ReadAudit>,
        after: u64,
        limit: usize,
    ) -> Result<AuditPage, VaultError> {
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let rows = self
            .store
            .scan_from(Table::Audit, &seq_key(after.saturating_add(1)), limit + 1)?;
        let more = rows.len() > limit;
        let mut entries = Vec::with_capacity(limit);
        for (_, bytes) in rows.iter().take(limit) {
            entries.push(serde_json::from_slice::<AuditEntry>(bytes).map_err(|_| VaultError::Corrupt)?);
        }
        let next = if more { entries.last().map(|e| e.body.seq) } else { None };
        Ok(AuditPage { entries, next })
    }

    pub fn audit_verify(&self, _auth: &Authorized<ReadAudit>) -> Result<Verdict, VaultError> {
        let ring = self.keyring();
        Ok(verify_store(self.store.as_ref(), ring.audit_key())?)
    }
}
