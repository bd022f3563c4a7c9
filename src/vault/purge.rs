//! The purge of expired tokens and idempotency entries, in bounded batches, from
//! the `expiries` index (oldest first): no scan of the records.

use super::record::{EXPIRY_IDEMPOTENCY, EXPIRY_TOKEN};
use super::{Vault, VaultError, SYSTEM};
use crate::audit::AuditEvent;
use crate::commit::{Change, Expect};
use crate::store::{StoreError, Table, WriteOp};

impl Vault {
    /// Removes up to `limit` expired entries of each kind in one durable batch and
    /// returns how many index entries it handled. Run it until it returns less
    /// than the limit.
    pub async fn purge_expired(&self, limit: usize) -> Result<usize, VaultError> {
        let now = u64::try_from(self.now_unix()).unwrap_or(0);
        let mut change = Change::default();
        let mut handled = 0;
        for kind in [EXPIRY_TOKEN, EXPIRY_IDEMPOTENCY] {
            for (key, _) in self.store.scan_from(Table::Expiries, &[kind], limit)? {
                let (Some(&k), Some(at), Some(id)) = (key.first(), key.get(1..9), key.get(9..)) else {
                    continue;
                };
                let at = u64::from_be_bytes(at.try_into().unwrap_or([0xff; 8]));
                if k != kind || at > now {
                    break;
                }
                handled += 1;
                change.ops.push(WriteOp::delete(Table::Expiries, key.clone()));
                if kind == EXPIRY_IDEMPOTENCY {
                    change.ops.extend(self.idempotency_purge_ops(id)?);
                    continue;
                }
                let Some((record, bytes)) = self.load_key(id)? else {
                    continue;
                };
                if record.expires_unix.and_then(|t| u64::try_from(t).ok()) != Some(at) {
                    continue;
                }
                change.ops.extend(self.removal_ops(&record)?);
                change.expect.push(Expect::value(Table::Records, id.to_vec(), bytes));
                change.kek.push(record.kek_delta(-1, 0)?);
                change.events.push(
                    AuditEvent::new(SYSTEM, "purge", "ok")
                        .tenant(&record.meta.tenant)
                        .token(&record.meta.token),
                );
            }
        }
        if change.ops.is_empty() {
            return Ok(0);
        }
        match self.committer.commit(change).await {
            // A record changed meanwhile (deleted, updated): the next round sees it anew.
            Ok(()) | Err(StoreError::Conflict) => Ok(handled),
            Err(e) => Err(e.into()),
        }
    }
}
