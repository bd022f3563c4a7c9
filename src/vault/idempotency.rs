//! `Idempotency-Key`: a retry with the same key and body gets the first response;
//! the same key with another body is refused. Keys are scoped by identity and
//! tenant and expire after 24 hours. The first response is written in the same
//! durable batch as the records it created, under an insert-if-absent
//! precondition, so two concurrent requests with one key create one record. The
//! header itself is never stored: the store key holds its keyed MAC.

use serde::{Deserialize, Serialize};

use super::record::{expiry_key, EXPIRY_IDEMPOTENCY};
use super::{Vault, VaultError};
use crate::commit::Expect;
use crate::crypto::{fingerprint, idempotency_id};
use crate::store::{Table, WriteOp};
use crate::validate::{Code, ValidationError};

pub const IDEMPOTENCY_TTL_SECONDS: i64 = 24 * 3600;

/// A validated key and the MAC of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    store_key: Vec<u8>,
    request_mac: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredResponse {
    request_mac: String,
    status: u16,
    /// The response body exactly as first sent (JSON).
    body: Box<serde_json::value::RawValue>,
    created_unix: i64,
}

/// What a lookup found.
pub enum Lookup {
    /// Nothing live: go ahead; the precondition makes the write exclusive.
    Fresh(Expect),
    /// The first response to this key and body.
    Replay {
        status: u16,
        body: Box<serde_json::value::RawValue>,
    },
}

impl Vault {
    /// Validates the header value and binds it to the caller and the request. The
    /// request is MACed with the fingerprint key, never hashed bare: a body holds a
    /// card number, and an unkeyed hash of it could be brute-forced.
    pub fn idempotency_key(
        &self,
        identity: &str,
        tenant: &str,
        endpoint: &str,
        header: &str,
        body: &[u8],
    ) -> Result<IdempotencyKey, VaultError> {
        let valid = (1..=255).contains(&header.len()) && header.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return Err(ValidationError::new(
                Code::InvalidRequest,
                "Idempotency-Key",
                "format",
                "the Idempotency-Key header must be 1 to 255 visible ASCII characters",
            )
            .into());
        }
        // The header is caller text: only its keyed MAC is stored.
        let ring = self.keyring();
        let id = idempotency_id(ring.fingerprint_key(), identity, tenant, header.as_bytes());
        let mut store_key = Vec::with_capacity(identity.len() + tenant.len() + id.len() + 2);
        for part in [identity.as_bytes(), tenant.as_bytes()] {
            store_key.extend_from_slice(part);
            store_key.push(0);
        }
        store_key.extend_from_slice(id.as_bytes());
        let request_mac = fingerprint(ring.fingerprint_key(), tenant, &format!("idempotency:{endpoint}"), body);
        Ok(IdempotencyKey { store_key, request_mac })
    }

    pub fn idempotency_lookup(&self, key: &IdempotencyKey) -> Result<Lookup, VaultError> {
        let Some(bytes) = self.store.get(Table::Idempotency, &key.store_key)? else {
            return Ok(Lookup::Fresh(Expect::absent(Table::Idempotency, key.store_key.clone())));
        };
        let stored: StoredResponse = serde_json::from_slice(&bytes).map_err(|_| VaultError::Corrupt)?;
        if self.now_unix() >= stored.created_unix.saturating_add(IDEMPOTENCY_TTL_SECONDS) {
            // Expired: may be replaced, but only if nobody replaced it first.
            return Ok(Lookup::Fresh(Expect::value(
                Table::Idempotency,
                key.store_key.clone(),
                bytes,
            )));
        }
        if stored.request_mac != key.request_mac {
            return Err(VaultError::IdempotencyKeyReused);
        }
        Ok(Lookup::Replay {
            status: stored.status,
            body: stored.body,
        })
    }

    /// The writes that record the first response to `key`.
    pub(super) fn idempotency_ops(&self, key: &IdempotencyKey, status: u16, body: &[u8]) -> Vec<WriteOp> {
        let created_unix = self.now_unix();
        // The body is JSON this process rendered; anything else is stored as null.
        let body = std::str::from_utf8(body)
            .ok()
            .and_then(|text| serde_json::value::RawValue::from_string(text.to_owned()).ok())
            .or_else(|| serde_json::value::RawValue::from_string("null".to_owned()).ok())
            .unwrap_or_default();
        let stored = StoredResponse {
            request_mac: key.request_mac.clone(),
            status,
            body,
            created_unix,
        };
        let expires = created_unix.saturating_add(IDEMPOTENCY_TTL_SECONDS);
        vec![
            WriteOp::put(
                Table::Idempotency,
                key.store_key.clone(),
                serde_json::to_vec(&stored).unwrap_or_default(),
            ),
            WriteOp::put(
                Table::Expiries,
                expiry_key(EXPIRY_IDEMPOTENCY, expires, &key.store_key),
                Vec::new(),
            ),
        ]
    }

    /// Deletes an expired idempotency entry if it is still the expired one.
    pub(super) fn idempotency_purge_ops(&self, store_key: &[u8]) -> Result<Vec<WriteOp>, VaultError> {
        let Some(bytes) = self.store.get(Table::Idempotency, store_key)? else {
            return Ok(vec![]);
        };
        let stored: Option<StoredResponse> = serde_json::from_slice(&bytes).ok();
        let expired = stored.is_none_or(|s| self.now_unix() >= s.created_unix.saturating_add(IDEMPOTENCY_TTL_SECONDS));
        Ok(if expired {
            vec![WriteOp::delete(Table::Idempotency, store_key.to_vec())]
        } else {
            vec![]
        })
    }
}
