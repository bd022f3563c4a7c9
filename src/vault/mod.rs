//! The domain service: tokenize, read metadata, detokenize, update, delete, list a
//! customer's wallet, purge expired tokens. It knows neither HTTP nor RocksDB; it
//! validates, seals and opens records, and hands durable changes (with their audit
//! entries and preconditions) to the group committer.

mod audit_log;
mod backup;
mod claims;
pub use claims::ClaimBackfill;
pub mod credential;
pub mod cvc;
mod header;
mod idempotency;
pub mod input;
mod keys;
mod purge;
pub mod record;
mod reveal;
mod tokenize;
mod update;
mod wallet;

use std::sync::{Arc, RwLock};

use crate::audit::AuditEvent;
use crate::auth::{Authorized, Delete, Detokenize, ReadMetadata};
use crate::clock::Clock;
use crate::commit::{Change, Committer, Expect};
use crate::crypto::{open, CryptoError, Keyring, RecordAad};
use crate::store::{Store, StoreError, Table, WriteOp};
use crate::token::Token;
use crate::validate::ValidationError;

use cvc::CvcCache;
use record::{fingerprint_key, numeric_claim_key, storage_key, Metadata, StoredRecord};

pub use backup::BackupInfo;
pub use idempotency::{IdempotencyKey, Lookup};
pub use keys::{KeyFile, KeyStatus, RewrapPace, RewrapState};
pub use reveal::{Detokenized, Revealed};
pub use tokenize::{BatchItem, Prepared, Tokenized};
pub use update::PatchRequest;
pub use wallet::WalletPage;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("no such token")]
    NotFound,
    #[error("the token has expired")]
    Expired,
    #[error("no free token could be drawn")]
    TokenSpaceExhausted,
    #[error("the token exists in more than one of the caller's tenants")]
    AmbiguousToken,
    #[error("forbidden: {0}")]
    Forbidden(#[from] crate::auth::AuthError),
    #[error("the idempotency key was used with another request")]
    IdempotencyKeyReused,
    #[error("the record changed concurrently")]
    Conflict,
    #[error("a stored record could not be read")]
    Corrupt,
    #[error("the key version is still needed")]
    KeyVersionInUse { records: Option<i64> },
    #[error("the active key has reached its wrap limit; rotate")]
    KeyExhausted,
    #[error("the keyring file was re-sealed since start; restart the daemon")]
    KeyringChanged,
    #[error("crypto failure: {0}")]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The record a detokenize found, named in its audit entry even when it was not
/// revealed.
struct Owner {
    token: String,
    tenant: String,
}

/// Identity recorded for the vault's own actions (start, stop, purge).
pub const SYSTEM: &str = "tokenvault";

/// What a vault is configured with besides its collaborators.
pub struct VaultSettings {
    pub cvc_ttl: time::Duration,
    /// Where rotations persist the keyring; `None` keeps changes in memory (tests).
    pub key_file: Option<KeyFile>,
    pub max_wraps_per_key: u64,
}

pub struct Vault {
    keyring: RwLock<Arc<Keyring>>,
    store: Arc<dyn Store>,
    committer: Committer,
    cvc: CvcCache,
    clock: Arc<dyn Clock>,
    key_file: Option<KeyFile>,
    /// Serialises rotations and retirements.
    key_admin: tokio::sync::Mutex<()>,
    /// Serialises backups.
    backup_lock: tokio::sync::Mutex<()>,
    rewrap_wake: tokio::sync::Notify,
    max_wraps_per_key: u64,
}

impl Vault {
    pub fn new(
        keyring: Arc<Keyring>,
        store: Arc<dyn Store>,
        committer: Committer,
        clock: Arc<dyn Clock>,
        settings: VaultSettings,
    ) -> Vault {
        Vault {
            keyring: RwLock::new(keyring),
            store,
            committer,
            cvc: CvcCache::new(settings.cvc_ttl),
            clock,
            key_file: settings.key_file,
            backup_lock: tokio::sync::Mutex::new(()),
            key_admin: tokio::sync::Mutex::new(()),
            rewrap_wake: tokio::sync::Notify::new(),
            max_wraps_per_key: settings.max_wraps_per_key,
        }
    }

    /// The keyring in force now (a cheap snapshot).
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    pub fn committer(&self) -> &Committer {
        &self.committer
    }

    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    fn now_unix(&self) -> i64 {
        self.clock.now().unix_timestamp()
    }

    /// Reads a record by its storage key.
    fn load_key(&self, key: &[u8]) -> Result<Option<(StoredRecord, Vec<u8>)>, VaultError> {
        let Some(bytes) = self.store.get(Table::Records, key)? else {
            return Ok(None);
        };
        let record = StoredRecord::decode(&bytes).map_err(|_| VaultError::Corrupt)?;
        if record.storage_key() != key {
            return Err(VaultError::Corrupt);
        }
        Ok(Some((record, bytes)))
    }

    /// Reads a record by token among `tenants`. `None` for unknown, malformed, or
    /// another tenant's token: the three are indistinguishable to the caller.
    fn load(&self, tenants: &[String], token: &str) -> Result<Option<(StoredRecord, Vec<u8>)>, VaultError> {
        let Some(token) = Token::parse(token) else {
            return Ok(None);
        };
        if token.as_str().starts_with("tok_") {
            // An opaque token is the same key in every tenant: one read suffices.
            let found = self.load_key(token.as_str().as_bytes())?;
            return Ok(found.filter(|(record, _)| tenants.contains(&record.meta.tenant)));
        }
        // A numeric token is keyed per tenant. New ones are unique across tenants
        // (`numeric_claim_key`); one issued before that may exist in two of the
        // caller's tenants, and then no answer is safe without a tenant.
        let mut found = None;
        for tenant in tenants {
            if let Some(hit) = self.load_key(&storage_key(tenant, token.as_str()))? {
                if found.is_some() {
                    return Err(VaultError::AmbiguousToken);
                }
                found = Some(hit);
            }
        }
        Ok(found)
    }

    /// Reads a record the caller may see. Another tenant's token and an unknown one
    /// are the same `NotFound`; an expired one is `Expired` (when `live`).
    fn find(&self, tenants: &[String], token: &str, live: bool) -> Result<(StoredRecord, Vec<u8>), VaultError> {
        let (record, bytes) = self.load(tenants, token)?.ok_or(VaultError::NotFound)?;
        if live && record.is_expired(self.now_unix()) {
            return Err(VaultError::Expired);
        }
        Ok((record, bytes))
    }

    pub fn metadata(&self, auth: &Authorized<ReadMetadata>, token: &str) -> Result<Metadata, VaultError> {
        Ok(self.find(auth.tenants(), token, true)?.0.meta)
    }

    fn open_payload(&self, record: &StoredRecord) -> Result<zeroize::Zeroizing<Vec<u8>>, VaultError> {
        let ring = self.keyring();
        let aad = RecordAad {
            token: &record.meta.token,
            tenant: &record.meta.tenant,
            record_type: record.record_type,
        };
        Ok(open(&ring, aad, &record.envelope)?)
    }

    /// Opens one record for a detokenize, without auditing: the caller audits. A
    /// record that was found (even if expired or unreadable) is named with the
    /// result, so that its audit entry carries its token and tenant.
    fn reveal(&self, tenants: &[String], token: &str) -> (Result<(Detokenized, u32), VaultError>, Option<Owner>) {
        let record = match self.load(tenants, token) {
            Ok(Some((record, _))) => record,
            Ok(None) => return (Err(VaultError::NotFound), None),
            Err(e) => return (Err(e), None),
        };
        let owner = Some(Owner {
            token: record.meta.token.clone(),
            tenant: record.meta.tenant.clone(),
        });
        if record.is_expired(self.now_unix()) {
            return (Err(VaultError::Expired), owner);
        }
        (self.open_record(record), owner)
    }

    fn open_record(&self, record: StoredRecord) -> Result<(Detokenized, u32), VaultError> {
        let plain = self.open_payload(&record)?;
        let key_version = record.envelope.kek_version()?;
        let cvc = self.cvc.take(&record.storage_key(), self.clock.now());
        let revealed = Revealed::from_payload(record.record_type, &plain, &record.meta, cvc)?;
        Ok((
            Detokenized {
                meta: record.meta,
                revealed,
            },
            key_version,
        ))
    }

    /// The audit label of a token that matched nothing (see `probe_label`).
    pub fn probe_label(&self, asked: &str) -> String {
        crate::crypto::probe_label(self.keyring().fingerprint_key(), asked.as_bytes())
    }

    fn detokenize_event(
        &self,
        identity: &str,
        tenants: &[String],
        token: &str,
        request_id: &str,
        (result, owner): &(Result<(Detokenized, u32), VaultError>, Option<Owner>),
    ) -> AuditEvent {
        let outcome = match result {
            Ok(_) => "ok",
            Err(VaultError::NotFound) => "not_found",
            Err(VaultError::Expired) => "expired",
            Err(VaultError::AmbiguousToken) => "ambiguous",
            Err(_) => "error",
        };
        let mut event = AuditEvent::new(identity, "detokenize", outcome).request_id(request_id);
        match (result, owner) {
            (Ok((d, version)), _) => {
                event = event.token(&d.meta.token).tenant(&d.meta.tenant).key_version(*version);
            }
            // A record was found but not revealed (expired, unreadable).
            (Err(_), Some(owner)) => event = event.token(&owner.token).tenant(&owner.tenant),
            // What matched nothing is caller text (it may hold a card number):
            // only its keyed MAC is named. A client of one tenant files the entry
            // under it, so other tenants' auditors do not see it.
            (Err(_), None) => {
                event = event.token(&self.probe_label(token));
                if let [tenant] = tenants {
                    event = event.tenant(tenant);
                }
            }
        }
        event
    }

    /// Reveals a token's raw values. The disclosure (or the refusal) is audited
    /// durably before any raw value leaves the vault.
    pub async fn detokenize(
        &self,
        auth: &Authorized<Detokenize>,
        token: &str,
        request_id: &str,
    ) -> Result<Detokenized, VaultError> {
        let result = self.reveal(auth.tenants(), token);
        let event = self.detokenize_event(auth.identity(), auth.tenants(), token, request_id, &result);
        self.commit_events(vec![event]).await?;
        result.0.map(|(d, _)| d)
    }

    /// Reveals up to 1,000 tokens, one result per token in order, all audited in
    /// one durable write.
    pub async fn detokenize_batch(
        &self,
        auth: &Authorized<Detokenize>,
        tokens: &[String],
        request_id: &str,
    ) -> Result<Vec<Result<Detokenized, VaultError>>, VaultError> {
        let mut events = Vec::with_capacity(tokens.len());
        let mut results = Vec::with_capacity(tokens.len());
        for token in tokens {
            let result = self.reveal(auth.tenants(), token);
            events.push(self.detokenize_event(auth.identity(), auth.tenants(), token, request_id, &result));
            results.push(result.0.map(|(d, _)| d));
        }
        self.commit_events(events).await?;
        Ok(results)
    }

    /// The deletes of a record and every index entry that points at it.
    fn removal_ops(&self, record: &StoredRecord) -> Result<Vec<WriteOp>, VaultError> {
        let meta = &record.meta;
        let mut ops = vec![WriteOp::delete(Table::Records, record.storage_key())];
        for (table, key) in record.index_keys() {
            ops.push(WriteOp::delete(table, key));
        }
        if let Some(fp) = record.fingerprint() {
            let key = fingerprint_key(&meta.tenant, fp);
            if self.store.get(Table::Fingerprints, &key)?.as_deref() == Some(meta.token.as_bytes()) {
                ops.push(WriteOp::delete(Table::Fingerprints, key));
            }
        }
        if let Some(claim) = numeric_claim_key(&meta.token) {
            // The claim is this record's only if it names this tenant (a token
            // issued before claims existed may share its number).
            if self.store.get(Table::Fingerprints, &claim)?.as_deref() == Some(meta.tenant.as_bytes()) {
                ops.push(WriteOp::delete(Table::Fingerprints, claim));
            }
        }
        Ok(ops)
    }

    /// Crypto-shreds a record: the record (with its wrapped data key) and its index
    /// entries are deleted in one synced batch, conditional on the record being the
    /// one read.
    pub async fn delete(&self, auth: &Authorized<Delete>, token: &str, request_id: &str) -> Result<(), VaultError> {
        let (record, bytes) = self.find(auth.tenants(), token, false)?;
        let meta = &record.meta;
        let event = AuditEvent::new(auth.identity(), "delete", "ok")
            .tenant(&meta.tenant)
            .token(&meta.token)
            .request_id(request_id);
        let change = Change {
            ops: self.removal_ops(&record)?,
            events: vec![event],
            expect: vec![Expect::value(Table::Records, record.storage_key(), bytes)],
            kek: vec![record.kek_delta(-1, 0)?],
        };
        match self.committer.commit(change).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Err(VaultError::Conflict),
            Err(e) => return Err(e.into()),
        }
        self.cvc.forget(&record.storage_key());
        Ok(())
    }

    async fn commit_events(&self, events: Vec<AuditEvent>) -> Result<(), VaultError> {
        let change = Change {
            events,
            ..Change::default()
        };
        self.committer.commit(change).await?;
        Ok(())
    }

    /// Records an event (a refused request, a start or stop) in the audit trail.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), VaultError> {
        self.commit_events(vec![event]).await
    }

    /// Drops expired CVCs; the server calls this periodically.
    pub fn sweep_cvcs(&self) -> usize {
        self.cvc.sweep(self.clock.now())
    }
}

#[cfg(test)]
mod tests;
