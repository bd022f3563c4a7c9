//! The domain service: tokenize, read metadata, detokenize, delete. It knows neither
//! HTTP nor RocksDB; it validates, seals and opens records, and hands durable
//! changes (with their audit entries) to the group committer.

pub mod credential;
pub mod cvc;
pub mod input;
pub mod record;
mod reveal;

use std::sync::{Arc, RwLock};

use crate::audit::AuditEvent;
use crate::auth::{Authorized, Delete, Detokenize, ReadMetadata, Tokenize};
use crate::clock::{rfc3339, Clock};
use crate::commit::{Change, Committer};
use crate::crypto::{fingerprint, open, seal, CryptoError, Keyring, RecordAad};
use crate::store::{Store, StoreError, Table, WriteOp};
use crate::token::Token;
use crate::validate::ValidationError;

use credential::{validate_request, Credential};
use cvc::CvcCache;
use input::{TokenFormat, TokenizeRequest};
use record::{encode_payload, fingerprint_key, Metadata, StoredRecord};
pub use reveal::{Detokenized, Revealed};

/// How often tokenize draws a new token after a collision (numeric tokens of short
/// PANs have few free digits).
const MAX_TOKEN_ATTEMPTS: usize = 16;

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
    #[error("a stored record could not be read")]
    Corrupt,
    #[error("crypto failure: {0}")]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Tokenized {
    /// False when `reuse_existing` found the credential already tokenized.
    pub created: bool,
    pub meta: Metadata,
}

pub struct Vault {
    keyring: RwLock<Arc<Keyring>>,
    store: Arc<dyn Store>,
    committer: Committer,
    cvc: CvcCache,
    clock: Arc<dyn Clock>,
}

impl Vault {
    pub fn new(
        keyring: Arc<Keyring>,
        store: Arc<dyn Store>,
        committer: Committer,
        clock: Arc<dyn Clock>,
        cvc_ttl: time::Duration,
    ) -> Vault {
        Vault {
            keyring: RwLock::new(keyring),
            store,
            committer,
            cvc: CvcCache::new(cvc_ttl),
            clock,
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

    pub async fn tokenize(
        &self,
        auth: &Authorized<Tokenize>,
        request: &TokenizeRequest,
        request_id: &str,
    ) -> Result<Tokenized, VaultError> {
        let now = self.clock.now();
        let mut credential = validate_request(request, now)?;
        let tenant = auth.tenant();
        let ring = self.keyring();
        let (kind, normalized) = credential.fingerprint_input();
        let fingerprint = fingerprint(ring.fingerprint_key(), tenant, kind, &normalized);
        let cvc = match &mut credential {
            Credential::Card(card) => card.cvc.take(),
            _ => None,
        };
        let event = |outcome, token: &str| {
            AuditEvent::new(auth.identity(), "tokenize", outcome)
                .tenant(tenant)
                .token(token)
                .request_id(request_id)
                .key_version(ring.active_version())
        };

        if request.reuse_existing {
            if let Some(meta) = self.existing(tenant, &fingerprint)? {
                let change = Change {
                    events: vec![event("reused", &meta.token)],
                    ..Change::default()
                };
                self.committer.commit(change).await?;
                if let Some(cvc) = cvc {
                    self.cvc.put(meta.token.clone().into_bytes(), cvc, now);
                }
                return Ok(Tokenized {
                    created: false,
                    meta,
                });
            }
        }

        let payload = encode_payload(&credential.payload_fields());
        let expires_unix = request.ttl_seconds.map(|ttl| {
            now.unix_timestamp()
                .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))
        });
        for _ in 0..MAX_TOKEN_ATTEMPTS {
            let token = match (request.format, &credential) {
                (TokenFormat::Numeric, Credential::Card(card)) => {
                    Token::generate_numeric(card.pan.expose_secret())?
                }
                (TokenFormat::Numeric, _) => {
                    return Err(ValidationError::new(
                        crate::validate::Code::InvalidRequest,
                        "format",
                        "numeric_card_only",
                        "format numeric is available for cards only",
                    )
                    .into())
                }
                (TokenFormat::Opaque, _) => Token::generate_opaque()?,
            };
            let meta = Metadata {
                token: token.as_str().to_owned(),
                kind: if matches!(credential, Credential::Card(_)) {
                    "card"
                } else {
                    "bank_account"
                }
                .to_owned(),
                tenant: tenant.to_owned(),
                customer: request.customer.clone(),
                created_at: rfc3339(now),
                expires_at: expires_unix
                    .and_then(|at| time::OffsetDateTime::from_unix_timestamp(at).ok())
                    .map(rfc3339),
                card: credential.card_meta(&fingerprint),
                bank_account: credential.bank_meta(&fingerprint),
            };
            let aad = RecordAad {
                token: token.as_str(),
                tenant,
                record_type: credential.record_type(),
            };
            let record = StoredRecord {
                record_type: credential.record_type(),
                expires_unix,
                envelope: seal(&ring, aad, &payload)?,
                meta,
            };
            let token_key = token.as_str().as_bytes().to_vec();
            let change = Change {
                ops: vec![
                    WriteOp::put(Table::Records, token_key.clone(), record.encode()),
                    WriteOp::put(
                        Table::Fingerprints,
                        fingerprint_key(tenant, &fingerprint),
                        token_key.clone(),
                    ),
                ],
                events: vec![event("ok", token.as_str())],
                absent: vec![(Table::Records, token_key.clone())],
            };
            match self.committer.commit(change).await {
                Ok(()) => {
                    if let Some(cvc) = cvc {
                        self.cvc.put(token_key, cvc, now);
                    }
                    return Ok(Tokenized {
                        created: true,
                        meta: record.meta,
                    });
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::TokenSpaceExhausted)
    }

    /// The live record of the tenant's credential with this fingerprint, if any.
    fn existing(&self, tenant: &str, fingerprint: &str) -> Result<Option<Metadata>, VaultError> {
        let Some(token) = self
            .store
            .get(Table::Fingerprints, &fingerprint_key(tenant, fingerprint))?
        else {
            return Ok(None);
        };
        let Some(bytes) = self.store.get(Table::Records, &token)? else {
            return Ok(None);
        };
        let record = StoredRecord::decode(&bytes).map_err(|_| VaultError::Corrupt)?;
        let live =
            record.meta.tenant == tenant && !record.is_expired(self.clock.now().unix_timestamp());
        Ok(live.then_some(record.meta))
    }

    /// Reads a record the caller may see: another tenant's token and an unknown one
    /// are the same `NotFound`.
    fn find(&self, tenants: &[String], token: &str) -> Result<StoredRecord, VaultError> {
        let token = Token::parse(token).ok_or(VaultError::NotFound)?;
        let bytes = self
            .store
            .get(Table::Records, token.as_str().as_bytes())?
            .ok_or(VaultError::NotFound)?;
        let record = StoredRecord::decode(&bytes).map_err(|_| VaultError::Corrupt)?;
        if record.meta.token != token.as_str() || !tenants.contains(&record.meta.tenant) {
            return Err(VaultError::NotFound);
        }
        if record.is_expired(self.clock.now().unix_timestamp()) {
            return Err(VaultError::Expired);
        }
        Ok(record)
    }

    pub fn metadata(
        &self,
        auth: &Authorized<ReadMetadata>,
        token: &str,
    ) -> Result<Metadata, VaultError> {
        Ok(self.find(auth.tenants(), token)?.meta)
    }

    pub async fn detokenize(
        &self,
        auth: &Authorized<Detokenize>,
        token: &str,
        request_id: &str,
    ) -> Result<Detokenized, VaultError> {
        let record = match self.find(auth.tenants(), token) {
            Ok(record) => record,
            Err(e) => {
                let outcome = match e {
                    VaultError::NotFound => "not_found",
                    VaultError::Expired => "expired",
                    _ => "error",
                };
                let mut event =
                    AuditEvent::new(auth.identity(), "detokenize", outcome).request_id(request_id);
                if let Some(t) = Token::parse(token) {
                    event = event.token(t.as_str());
                }
                self.committer
                    .commit(Change {
                        events: vec![event],
                        ..Change::default()
                    })
                    .await?;
                return Err(e);
            }
        };
        let ring = self.keyring();
        let aad = RecordAad {
            token: &record.meta.token,
            tenant: &record.meta.tenant,
            record_type: record.record_type,
        };
        let plain = open(&ring, aad, &record.envelope)?;
        let key_version = record.envelope.kek_version()?;
        let cvc = self
            .cvc
            .take(record.meta.token.as_bytes(), self.clock.now());
        let revealed = Revealed::from_payload(record.record_type, &plain, &record.meta, cvc)?;
        // The disclosure is audited durably before any raw value leaves the vault.
        let event = AuditEvent::new(auth.identity(), "detokenize", "ok")
            .tenant(&record.meta.tenant)
            .token(&record.meta.token)
            .request_id(request_id)
            .key_version(key_version);
        self.committer
            .commit(Change {
                events: vec![event],
                ..Change::default()
            })
            .await?;
        Ok(Detokenized {
            meta: record.meta,
            revealed,
        })
    }

    /// Crypto-shreds a record: the record (with its wrapped data key) and its
    /// fingerprint index entry are deleted in one synced batch.
    pub async fn delete(
        &self,
        auth: &Authorized<Delete>,
        token: &str,
        request_id: &str,
    ) -> Result<(), VaultError> {
        let record = match self.find(auth.tenants(), token) {
            Ok(record) => record,
            Err(VaultError::Expired) => {
                let bytes = self
                    .store
                    .get(Table::Records, token.as_bytes())?
                    .ok_or(VaultError::NotFound)?;
                StoredRecord::decode(&bytes).map_err(|_| VaultError::Corrupt)?
            }
            Err(e) => return Err(e),
        };
        let meta = &record.meta;
        let mut ops = vec![WriteOp::delete(
            Table::Records,
            meta.token.as_bytes().to_vec(),
        )];
        let fingerprint = meta
            .card
            .as_ref()
            .map(|c| &c.fingerprint)
            .or(meta.bank_account.as_ref().map(|b| &b.fingerprint));
        if let Some(fp) = fingerprint {
            let key = fingerprint_key(&meta.tenant, fp);
            if self.store.get(Table::Fingerprints, &key)?.as_deref() == Some(meta.token.as_bytes())
            {
                ops.push(WriteOp::delete(Table::Fingerprints, key));
            }
        }
        let event = AuditEvent::new(auth.identity(), "delete", "ok")
            .tenant(&meta.tenant)
            .token(&meta.token)
            .request_id(request_id);
        self.committer
            .commit(Change {
                ops,
                events: vec![event],
                absent: vec![],
            })
            .await?;
        self.cvc.forget(meta.token.as_bytes());
        Ok(())
    }

    /// Records a refused request in the audit trail.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), VaultError> {
        self.committer
            .commit(Change {
                events: vec![event],
                ..Change::default()
            })
            .await?;
        Ok(())
    }

    /// Drops expired CVCs; the server calls this periodically.
    pub fn sweep_cvcs(&self) -> usize {
        self.cvc.sweep(self.clock.now())
    }
}
