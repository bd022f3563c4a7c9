//! Key lifecycle for security teams: rotate (new active KEK version, then a
//! background rewrap of every older data key), status, and retire (destroy a
//! version's key material once no record needs it).
//!
//! The keyring file is re-sealed atomically before a change is used; the rewrap's
//! progress (cursor, counts) is written in the same durable batches as the records
//! it rewraps, so a `kill -9` resumes where it stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::record::StoredRecord;
use super::{Vault, VaultError, SYSTEM};
use crate::audit::AuditEvent;
use crate::auth::{Authorized, ManageKeys, ReadKeys};
use crate::clock::rfc3339;
use crate::commit::{Change, Expect, KekDelta};
use crate::crypto::{rewrap, CryptoError, KekState, Keyring, RecordAad, SealedKeyring, SealingKey};
use crate::store::{StoreError, Table, WriteOp};

const REWRAP_STATE: &[u8] = b"rewrap";

/// Where the keyring lives and the key that seals it.
pub struct KeyFile {
    pub path: PathBuf,
    pub sealing: SealingKey,
}

/// Progress of the background rewrap, persisted in the `meta` table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RewrapState {
    pub running: bool,
    pub target: u32,
    /// Base64 of the last record key handled; the next batch starts after it.
    pub cursor: Option<String>,
    pub done: u64,
    pub total: u64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    #[serde(default)]
    pub started_unix: Option<f64>,
    #[serde(default)]
    pub finished_unix: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionStatus {
    pub version: u32,
    pub state: &'static str,
    pub created_at: String,
    pub records: i64,
    pub wraps: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RewrapStatus {
    pub running: bool,
    pub done: u64,
    pub total: u64,
    /// Records per second over the run so far.
    pub rate: f64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    pub active_version: u32,
    pub versions: Vec<VersionStatus>,
    pub rewrap: RewrapStatus,
}

/// Bounds of the background rewrap: records per durable batch and the pause
/// between batches, so that live traffic keeps the writer most of the time.
#[derive(Debug, Clone, Copy)]
pub struct RewrapPace {
    pub batch: usize,
    pub pause: Duration,
}

impl Vault {
    fn now_f64(&self) -> f64 {
        let now = self.clock.now();
        now.unix_timestamp() as f64 + f64::from(now.nanosecond()) / 1e9
    }

    pub fn rewrap_state(&self) -> Result<RewrapState, VaultError> {
        Ok(match self.store.get(Table::Meta, REWRAP_STATE)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|_| VaultError::Corrupt)?,
            None => RewrapState::default(),
        })
    }

    fn state_op(state: &RewrapState) -> WriteOp {
        WriteOp::put(
            Table::Meta,
            REWRAP_STATE.to_vec(),
            serde_json::to_vec(state).unwrap_or_default(),
        )
    }

    pub fn key_status(&self, _auth: &Authorized<ReadKeys>) -> Result<KeyStatus, VaultError> {
        self.status()
    }

    fn status(&self) -> Result<KeyStatus, VaultError> {
        let ring = self.keyring();
        let counts = self.committer.kek_counts().snapshot();
        let versions = ring
            .versions()
            .map(|v| {
                let count = counts.get(&v.version).copied().unwrap_or_default();
                VersionStatus {
                    version: v.version,
                    state: v.state.as_str(),
                    created_at: time::OffsetDateTime::from_unix_timestamp(v.created_at)
                        .map(rfc3339)
                        .unwrap_or_default(),
                    records: count.records,
                    wraps: count.wraps,
                }
            })
            .collect();
        let state = self.rewrap_state()?;
        let end = state.finished_unix.unwrap_or_else(|| self.now_f64());
        let elapsed = state.started_unix.map_or(0.0, |start| end - start);
        let rate = if elapsed > 0.0 {
            state.done as f64 / elapsed
        } else {
            0.0
        };
        Ok(KeyStatus {
            active_version: ring.active_version(),
            versions,
            rewrap: RewrapStatus {
                running: state.running,
                done: state.done,
                total: state.total,
                rate: (rate * 10.0).round() / 10.0,
                started_at: state.started_at,
                finished_at: state.finished_at,
            },
        })
    }

    /// Seals `ring` to the keyring file and publishes it. Refuses when the file on
    /// disk was re-sealed under another passphrase since start.
    fn persist_and_publish(&self, ring: Keyring) -> Result<(), VaultError> {
        if let Some(file) = &self.key_file {
            let on_disk = SealedKeyring::read(&file.path)?;
            if on_disk.salt() != file.sealing.salt() {
                return Err(VaultError::KeyringChanged);
            }
            ring.seal_with(&file.sealing)?.write(&file.path)?;
        }
        let mut current = self.keyring.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(ring);
        Ok(())
    }

    /// Creates version N+1, self-tests it, makes it active, persists the keyring
    /// and starts the background rewrap of every older data key.
    pub async fn rotate(&self, auth: &Authorized<ManageKeys>, request_id: &str) -> Result<KeyStatus, VaultError> {
        let _serial = self.key_admin.lock().await;
        let mut ring = self.keyring().duplicate();
        let version = ring.rotate(self.now_unix())?;
        self.persist_and_publish(ring)?;
        let counts = self.committer.kek_counts().snapshot();
        let total = counts
            .iter()
            .filter(|(v, _)| **v != version)
            .map(|(_, c)| u64::try_from(c.records).unwrap_or(0))
            .sum();
        let now = self.clock.now();
        let state = RewrapState {
            running: true,
            target: version,
            cursor: None,
            done: 0,
            total,
            started_at: Some(rfc3339(now)),
            finished_at: None,
            started_unix: Some(self.now_f64()),
            finished_unix: None,
        };
        let events = vec![
            AuditEvent::new(auth.identity(), "rotate", "ok")
                .request_id(request_id)
                .key_version(version),
            AuditEvent::new(SYSTEM, "rewrap_start", "ok").key_version(version),
        ];
        let change = Change {
            ops: vec![Self::state_op(&state)],
            events,
            ..Change::default()
        };
        self.committer.commit(change).await?;
        self.rewrap_wake.notify_one();
        self.status()
    }

    /// Destroys a version's key material. Refused while any record needs it — by
    /// the exact counters and, before anything is destroyed, by a scan of the
    /// records, so a counting error can never cost data.
    pub async fn retire(
        &self,
        auth: &Authorized<ManageKeys>,
        version: u32,
        request_id: &str,
    ) -> Result<KeyStatus, VaultError> {
        let _serial = self.key_admin.lock().await;
        let ring = self.keyring();
        let entry = ring.kek(version).ok_or(VaultError::NotFound)?;
        if entry.state == KekState::Retired {
            return self.status();
        }
        if version == ring.active_version() {
            return Err(VaultError::KeyVersionInUse { records: None });
        }
        let records = self.committer.kek_counts().get(version).records;
        if records > 0 {
            return Err(VaultError::KeyVersionInUse { records: Some(records) });
        }
        let found = self.count_records_under(version)?;
        if found > 0 {
            tracing::error!(version, found, "key counters disagree with the records; retire refused");
            return Err(VaultError::KeyVersionInUse { records: Some(found) });
        }
        // The counters and the scan may have seen a rewrap or delete that is
        // applied but not yet synced; the key is destroyed only once that state
        // is durable, or a power cut could bring back records that need it.
        self.committer.barrier().await?;
        let mut next = ring.duplicate();
        next.retire(version)?;
        self.persist_and_publish(next)?;
        let event = AuditEvent::new(auth.identity(), "retire", "ok")
            .request_id(request_id)
            .key_version(version);
        self.commit_events(vec![event]).await?;
        self.status()
    }

    fn count_records_under(&self, version: u32) -> Result<i64, VaultError> {
        let mut found = 0;
        let mut from = Vec::new();
        loop {
            let page = self.store.scan_from(Table::Records, &from, 4096)?;
            let Some((last, _)) = page.last() else { break };
            for (_, bytes) in &page {
                let record = StoredRecord::decode(bytes).map_err(|_| VaultError::Corrupt)?;
                if record.envelope.kek_version()? == version {
                    found += 1;
                }
            }
            from = last.clone();
            from.push(0);
            if page.len() < 4096 {
                break;
            }
        }
        Ok(found)
    }

    /// One rewrap batch: rewraps up to `limit` records after the cursor. Returns
    /// false when the run is over (or none is running).
    pub async fn rewrap_step(&self, limit: usize) -> Result<bool, VaultError> {
        let mut state = self.rewrap_state()?;
        if !state.running {
            return Ok(false);
        }
        let ring = self.keyring();
        let target = ring.active_version();
        if state.target != target {
            // A rotation happened meanwhile: start over towards the new version.
            state = RewrapState {
                target,
                cursor: None,
                ..state
            };
        }
        let mut from = match &state.cursor {
            Some(c) => URL_SAFE_NO_PAD.decode(c).map_err(|_| VaultError::Corrupt)?,
            None => Vec::new(),
        };
        if state.cursor.is_some() {
            from.push(0);
        }
        let page = self.store.scan_from(Table::Records, &from, limit)?;
        let mut change = Change::default();
        if page.is_empty() {
            state.running = false;
            state.finished_at = Some(rfc3339(self.clock.now()));
            state.finished_unix = Some(self.now_f64());
            change.ops.push(Self::state_op(&state));
            change
                .events
                .push(AuditEvent::new(SYSTEM, "rewrap_finish", "ok").key_version(target));
            self.committer.commit(change).await?;
            return Ok(false);
        }
        let mut rewrapped = 0u64;
        for (key, bytes) in &page {
            let mut record = StoredRecord::decode(bytes).map_err(|_| VaultError::Corrupt)?;
            let old = record.envelope.kek_version()?;
            if old == target {
                continue;
            }
            let aad = RecordAad {
                token: &record.meta.token,
                tenant: &record.meta.tenant,
                record_type: record.record_type,
            };
            record.envelope = rewrap(&ring, aad, &record.envelope)?;
            change
                .ops
                .push(WriteOp::put(Table::Records, key.clone(), record.encode()));
            change
                .expect
                .push(Expect::value(Table::Records, key.clone(), bytes.clone()));
            change.kek.push(KekDelta {
                version: old,
                records: -1,
                wraps: 0,
            });
            change.kek.push(KekDelta {
                version: target,
                records: 1,
                wraps: 1,
            });
            rewrapped += 1;
        }
        if let Some((last, _)) = page.last() {
            state.cursor = Some(URL_SAFE_NO_PAD.encode(last));
        }
        state.done += rewrapped;
        state.total = state.total.max(state.done);
        change.ops.push(Self::state_op(&state));
        match self.committer.commit(change).await {
            // A record changed under us (deleted, updated): read the batch again.
            Ok(()) | Err(StoreError::Conflict) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// The background rewrap: runs whenever a rotation starts one (or a restart
    /// finds one unfinished), in bounded batches with a pause between them.
    pub async fn run_rewrap(self: Arc<Self>, pace: RewrapPace, mut stop: watch::Receiver<bool>) {
        loop {
            match self.rewrap_step(pace.batch).await {
                Ok(true) => {
                    tokio::select! {
                        _ = tokio::time::sleep(pace.pause) => {}
                        _ = stop.changed() => return,
                    }
                }
                Ok(false) => {
                    tokio::select! {
                        _ = self.rewrap_wake.notified() => {}
                        _ = stop.changed() => return,
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "rewrap batch failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }

    /// Refuses new wraps under a key version past the configured limit, far below
    /// the 2^32 random-nonce bound of AES-GCM: rotation is the answer.
    pub(super) fn check_wrap_budget(&self, version: u32) -> Result<(), VaultError> {
        if self.committer.kek_counts().get(version).wraps >= self.max_wraps_per_key {
            return Err(VaultError::KeyExhausted);
        }
        Ok(())
    }
}

impl From<std::io::Error> for VaultError {
    fn from(e: std::io::Error) -> Self {
        VaultError::Crypto(CryptoError::KeyringIo(e))
    }
}
