//! Tokenize, in two steps so that single requests and batches share one path:
//! `prepare_tokenize` validates, fingerprints and seals (no I/O but reads), and
//! `commit_prepared` writes everything prepared — records, indexes, audit entries,
//! the idempotency response — in one durable batch.

use std::collections::HashSet;

use super::credential::{validate_request, Credential};
use super::idempotency::IdempotencyKey;
use super::input::{TokenFormat, TokenizeRequest};
use super::record::{
    customer_key, encode_payload, expiry_key, fingerprint_key, numeric_claim_key, storage_key, Metadata, StoredRecord,
    EXPIRY_TOKEN,
};
use super::{Vault, VaultError};
use crate::audit::AuditEvent;
use crate::auth::{AuthError, Authorized, Tokenize};
use crate::clock::rfc3339;
use crate::commit::{Change, Expect};
use crate::crypto::{fingerprint, seal, RecordAad};
use crate::secret::Cvc;
use crate::store::{StoreError, Table, WriteOp};
use crate::token::Token;
use crate::validate::{Code, ValidationError};

/// The outcome of one tokenize.
#[derive(Debug, Clone)]
pub struct Tokenized {
    /// False when `reuse_existing` found the credential already tokenized.
    pub created: bool,
    pub meta: Metadata,
}

/// One item of a batch, after per-item authorization by the caller.
pub enum BatchItem<'a> {
    Ready(Authorized<Tokenize>, &'a TokenizeRequest),
    Refused(AuthError),
}

/// Prepared, not yet written.
#[derive(Default)]
pub struct Prepared {
    change: Change,
    cvcs: Vec<(Vec<u8>, Cvc)>,
    pub outcomes: Vec<Result<Tokenized, VaultError>>,
}

impl Vault {
    /// Validates and seals one request. Reads the store for `reuse_existing`.
    pub fn prepare_tokenize(
        &self,
        auth: &Authorized<Tokenize>,
        request: &TokenizeRequest,
        request_id: &str,
    ) -> Result<Prepared, VaultError> {
        let now = self.clock.now();
        let mut credential = validate_request(request, now)?;
        let tenant = auth.tenant();
        let ring = self.keyring();
        self.check_wrap_budget(ring.active_version())?;
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
        let mut prepared = Prepared::default();

        let fp_key = fingerprint_key(tenant, &fingerprint);
        if request.reuse_existing {
            let (existing, observed) = self.existing(tenant, &fingerprint, request.format)?;
            // Whoever first tokenizes this credential wins; a concurrent request
            // that saw the same index entry conflicts, retries and reuses.
            prepared.change.expect.push(Expect {
                table: Table::Fingerprints,
                key: fp_key.clone(),
                value: observed,
            });
            if let Some(meta) = existing {
                prepared.change.events.push(event("reused", &meta.token));
                if let Some(cvc) = cvc {
                    // Held under the record's storage key, where detokenize looks.
                    prepared.cvcs.push((storage_key(tenant, &meta.token), cvc));
                }
                prepared.outcomes.push(Ok(Tokenized { created: false, meta }));
                return Ok(prepared);
            }
        }

        let token = match (request.format, &credential) {
            (TokenFormat::Numeric, Credential::Card(card)) => Token::generate_numeric(card.pan.expose_secret())?,
            (TokenFormat::Numeric, _) => {
                return Err(ValidationError::new(
                    Code::InvalidRequest,
                    "format",
                    "numeric_card_only",
                    "format numeric is available for cards only",
                )
                .into())
            }
            (TokenFormat::Opaque, _) => Token::generate_opaque()?,
        };
        let expires_unix = request.ttl_seconds.map(|ttl| {
            now.unix_timestamp()
                .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))
        });
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
        let payload = encode_payload(&credential.payload_fields());
        let record = StoredRecord {
            record_type: credential.record_type(),
            created_nanos: u64::try_from(now.unix_timestamp_nanos()).unwrap_or(0),
            expires_unix,
            envelope: seal(&ring, aad, &payload)?,
            meta,
        };
        let token_key = storage_key(tenant, token.as_str());
        let change = &mut prepared.change;
        change
            .ops
            .push(WriteOp::put(Table::Records, token_key.clone(), record.encode()));
        change.ops.push(WriteOp::put(
            Table::Fingerprints,
            fp_key,
            token.as_str().as_bytes().to_vec(),
        ));
        if let Some(customer) = &request.customer {
            let key = customer_key(tenant, customer, record.created_nanos, token.as_str());
            change.ops.push(WriteOp::put(Table::Customers, key, Vec::new()));
        }
        if let Some(at) = expires_unix {
            let key = expiry_key(EXPIRY_TOKEN, at, &token_key);
            change.ops.push(WriteOp::put(Table::Expiries, key, Vec::new()));
        }
        if let Some(claim) = numeric_claim_key(token.as_str()) {
            // Numeric tokens: one number, one tenant (a draw that another tenant
            // holds conflicts and is drawn again).
            change.ops.push(WriteOp::put(
                Table::Fingerprints,
                claim.clone(),
                tenant.as_bytes().to_vec(),
            ));
            change.expect.push(Expect::absent(Table::Fingerprints, claim));
        }
        change.events.push(event("ok", token.as_str()));
        change.expect.push(Expect::absent(Table::Records, token_key.clone()));
        change.kek.push(record.kek_delta(1, 1)?);
        if let Some(cvc) = cvc {
            prepared.cvcs.push((token_key, cvc));
        }
        prepared.outcomes.push(Ok(Tokenized {
            created: true,
            meta: record.meta,
        }));
        Ok(prepared)
    }

    /// Prepares every item of a batch; an item that fails (refused, invalid) keeps
    /// its error in place and does not stop the others.
    pub fn prepare_batch(&self, identity: &str, items: Vec<BatchItem<'_>>, request_id: &str) -> Prepared {
        let mut all = Prepared::default();
        let mut tokens = HashSet::new();
        for item in items {
            // Items that fail are audited too: every item of a batch leaves a trace.
            let refused = |outcome| AuditEvent::new(identity, "tokenize", outcome).request_id(request_id);
            let prepared = match item {
                BatchItem::Refused(e) => Err(VaultError::Forbidden(e)),
                BatchItem::Ready(auth, request) => self.prepare_tokenize(&auth, request, request_id),
            };
            match prepared {
                Ok(mut p) => {
                    // Two items drawing one numeric token would overwrite each other.
                    let duplicate = p.change.expect.iter().any(|e| !tokens.insert(e.key.clone()));
                    if duplicate {
                        all.outcomes.push(Err(VaultError::TokenSpaceExhausted));
                        continue;
                    }
                    all.change.ops.append(&mut p.change.ops);
                    all.change.events.append(&mut p.change.events);
                    all.change.expect.append(&mut p.change.expect);
                    all.change.kek.append(&mut p.change.kek);
                    all.cvcs.append(&mut p.cvcs);
                    all.outcomes.append(&mut p.outcomes);
                }
                Err(e) => {
                    let outcome = if matches!(e, VaultError::Forbidden(_)) {
                        "denied"
                    } else {
                        "invalid"
                    };
                    all.change.events.push(refused(outcome));
                    all.outcomes.push(Err(e));
                }
            }
        }
        all
    }

    /// Writes a prepared tokenize (and the first response to its idempotency key)
    /// in one durable batch. `Conflict`: a drawn token or the idempotency key was
    /// taken meanwhile; the caller looks up the key again and retries.
    pub async fn commit_prepared(
        &self,
        mut prepared: Prepared,
        idempotency: Option<(&IdempotencyKey, Expect, u16, &[u8])>,
    ) -> Result<Vec<Result<Tokenized, VaultError>>, VaultError> {
        if let Some((key, expect, status, body)) = idempotency {
            prepared.change.ops.extend(self.idempotency_ops(key, status, body));
            prepared.change.expect.push(expect);
        }
        match self.committer.commit(prepared.change).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Err(VaultError::Conflict),
            Err(e) => return Err(e.into()),
        }
        let now = self.clock.now();
        for (key, cvc) in prepared.cvcs {
            self.cvc.put(key, cvc, now);
        }
        Ok(prepared.outcomes)
    }

    /// The live record of the tenant's credential with this fingerprint and token
    /// format, if any, and the index entry as read (for the precondition).
    fn existing(
        &self,
        tenant: &str,
        fingerprint: &str,
        format: TokenFormat,
    ) -> Result<(Option<Metadata>, Option<Vec<u8>>), VaultError> {
        let Some(token) = self
            .store
            .get(Table::Fingerprints, &fingerprint_key(tenant, fingerprint))?
        else {
            return Ok((None, None));
        };
        let numeric = !token.starts_with(b"tok_");
        if numeric != (format == TokenFormat::Numeric) {
            return Ok((None, Some(token)));
        }
        let tenants = [tenant.to_owned()];
        let Some((record, _)) = self.load(&tenants, &String::from_utf8_lossy(&token))? else {
            return Ok((None, Some(token)));
        };
        let live = !record.is_expired(self.now_unix());
        Ok((live.then_some(record.meta), Some(token)))
    }
}
