//! Online backup: a consistent RocksDB checkpoint of the data directory, taken while
//! serving. A backup holds records (ciphertext and public metadata), indexes and the
//! audit trail; it does not hold the keyring, which must be backed up separately.

use std::path::Path;

use super::{Vault, VaultError};
use crate::audit::AuditEvent;
use crate::auth::{Authorized, ManageKeys};
use crate::store::StoreError;

#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupInfo {
    pub name: String,
    pub path: String,
    pub records: u64,
}

impl Vault {
    pub async fn backup(
        &self,
        auth: &Authorized<ManageKeys>,
        dir: &Path,
        request_id: &str,
    ) -> Result<BackupInfo, VaultError> {
        // One at a time: two in the same second would share a name.
        let _one = self.backup_lock.lock().await;
        let now = self.clock.now();
        let stamp = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        std::fs::create_dir_all(dir)
            .and_then(|()| crate::store::owner_only(dir))
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        let mut name = format!("backup-{stamp}");
        let mut n = 1;
        while dir.join(&name).exists() {
            n += 1;
            name = format!("backup-{stamp}-{n}");
        }
        let path = dir.join(&name);
        self.store.checkpoint(&path)?;
        crate::store::owner_only(&path).map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        // What the checkpoint holds, not the live count (writes go on meanwhile).
        let records = crate::store::RocksStore::open_read_only(&path)
            .and_then(|backup| crate::commit::KekCounts::load(&backup))
            .map(|counts| counts.records())
            .map_err(|e| StoreError::Unavailable(format!("the backup does not open: {e}")))?;
        let event = AuditEvent::new(auth.identity(), "backup", "ok").request_id(request_id);
        // The checkpoint may hold batches applied but not yet synced; this
        // commit's fsync covers them. If it fails they may never become durable,
        // and a backup holding them would fork from the vault: remove it.
        if let Err(e) = self.commit_events(vec![event]).await {
            if let Err(removed) = std::fs::remove_dir_all(&path) {
                tracing::error!(path = %path.display(), error = %removed, "could not remove an unconfirmed backup");
            }
            return Err(e);
        }
        tracing::info!(name = %name, records, "backup written");
        Ok(BackupInfo {
            name,
            path: path.display().to_string(),
            records,
        })
    }

    pub fn store_properties(&self) -> Vec<(&'static str, u64)> {
        self.store.properties()
    }
}
