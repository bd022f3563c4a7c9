//! PATCH: a card is reissued with a new expiry, a holder changes name or address, a
//! token moves to another customer. The token and the number stay; the payload is
//! re-sealed under a fresh data key.

use serde::Deserialize;

use super::credential::{tag, TYPE_CARD};
use super::input::AddressInput;
use super::record::{customer_key, decode_payload, encode_payload, Metadata};
use super::{Vault, VaultError};
use crate::audit::AuditEvent;
use crate::auth::{Authorized, Update};
use crate::commit::{Change, Expect};
use crate::crypto::{seal, RecordAad};
use crate::secret::SecretInput;
use crate::store::{StoreError, Table, WriteOp};
use crate::validate::expiry_input::RawIntInput;
use crate::validate::{validate_expiry, validate_reference, validate_text, Code, RawInt, ValidationError};

/// The card fields a PATCH may change.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchFields {
    pub exp_month: Option<RawIntInput>,
    pub exp_year: Option<RawIntInput>,
    pub holder_name: Option<SecretInput>,
    pub billing_address: Option<AddressInput>,
    /// Present only to be refused by name: the number of a token never changes.
    pub number: Option<serde::de::IgnoredAny>,
}

/// A PATCH body: the card fields at the top level or inside `card` (or
/// `bank_account` for the holder name), and `customer`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRequest {
    pub customer: Option<String>,
    pub card: Option<PatchFields>,
    pub bank_account: Option<PatchFields>,
    pub exp_month: Option<RawIntInput>,
    pub exp_year: Option<RawIntInput>,
    pub holder_name: Option<SecretInput>,
    pub billing_address: Option<AddressInput>,
    pub number: Option<serde::de::IgnoredAny>,
}

impl PatchRequest {
    /// One set of fields: those inside `card`/`bank_account`, else the top-level ones.
    fn merged(
        &self,
    ) -> (
        Option<&RawIntInput>,
        Option<&RawIntInput>,
        Option<&SecretInput>,
        Option<&AddressInput>,
        bool,
    ) {
        let inner = self.card.as_ref().or(self.bank_account.as_ref());
        let pick = |f: fn(&PatchFields) -> bool| inner.is_some_and(f);
        let number = self.number.is_some() || pick(|f| f.number.is_some());
        (
            inner.and_then(|f| f.exp_month.as_ref()).or(self.exp_month.as_ref()),
            inner.and_then(|f| f.exp_year.as_ref()).or(self.exp_year.as_ref()),
            inner.and_then(|f| f.holder_name.as_ref()).or(self.holder_name.as_ref()),
            inner
                .and_then(|f| f.billing_address.as_ref())
                .or(self.billing_address.as_ref()),
            number,
        )
    }
}

fn immutable(field: &str) -> VaultError {
    ValidationError::new(
        Code::InvalidRequest,
        field,
        "immutable",
        format!("{field} cannot be changed"),
    )
    .into()
}

impl Vault {
    pub async fn update(
        &self,
        auth: &Authorized<Update>,
        token: &str,
        patch: &PatchRequest,
        request_id: &str,
    ) -> Result<Metadata, VaultError> {
        let (exp_month, exp_year, holder_name, billing_address, number) = patch.merged();
        if number {
            return Err(immutable("card.number"));
        }
        let (record, old_bytes) = self.find(auth.tenants(), token, true)?;
        let mut meta = record.meta.clone();
        let is_card = record.record_type == TYPE_CARD;
        if exp_month.is_some() || exp_year.is_some() {
            let Some(card) = meta.card.as_mut().filter(|_| is_card) else {
                return Err(immutable("exp_month"));
            };
            let month = exp_month.map_or(RawInt::Int(i64::from(card.exp_month)), RawIntInput::as_raw);
            let year = exp_year.map_or(RawInt::Int(i64::from(card.exp_year)), RawIntInput::as_raw);
            let expiry = validate_expiry(month, year, self.clock.now())?;
            card.exp_month = expiry.month;
            card.exp_year = expiry.year;
        }
        if billing_address.is_some() && !is_card {
            return Err(immutable("billing_address"));
        }
        if let Some(customer) = &patch.customer {
            validate_reference("customer", customer)?;
            meta.customer = Some(customer.clone());
        }

        // Rebuild the payload: unchanged fields from the old one, new ones from the patch.
        let plain = self.open_payload(&record)?;
        let old = decode_payload(&plain).map_err(|_| VaultError::Corrupt)?;
        let address_tags = [tag::LINE1, tag::LINE2, tag::CITY, tag::STATE, tag::POSTAL, tag::COUNTRY];
        let mut new: Vec<(u8, &[u8])> = Vec::with_capacity(old.len() + 6);
        for (t, v) in &old {
            let replaced =
                (*t == tag::HOLDER && holder_name.is_some()) || (address_tags.contains(t) && billing_address.is_some());
            if !replaced {
                new.push((*t, v));
            }
        }
        if let Some(name) = holder_name {
            validate_text("holder_name", name.expose_secret(), 200)?;
            new.push((tag::HOLDER, name.expose_secret().as_bytes()));
        }
        if let Some(a) = billing_address {
            let parts = [&a.line1, &a.line2, &a.city, &a.state, &a.postal_code, &a.country];
            for (t, part) in address_tags.iter().zip(parts) {
                if let Some(value) = part {
                    validate_text("billing_address", value.expose_secret(), 200)?;
                    new.push((*t, value.expose_secret().as_bytes()));
                }
            }
        }
        let payload = encode_payload(&new);
        let ring = self.keyring();
        self.check_wrap_budget(ring.active_version())?;
        let aad = RecordAad {
            token: &meta.token,
            tenant: &meta.tenant,
            record_type: record.record_type,
        };
        let mut updated = record.clone();
        updated.envelope = seal(&ring, aad, &payload)?;
        updated.meta = meta;

        let token_key = updated.storage_key();
        let mut ops = vec![WriteOp::put(Table::Records, token_key.clone(), updated.encode())];
        if record.meta.customer != updated.meta.customer {
            let tenant = &record.meta.tenant;
            if let Some(old) = &record.meta.customer {
                ops.push(WriteOp::delete(
                    Table::Customers,
                    customer_key(tenant, old, record.created_nanos, &record.meta.token),
                ));
            }
            if let Some(new) = &updated.meta.customer {
                let key = customer_key(tenant, new, record.created_nanos, &updated.meta.token);
                ops.push(WriteOp::put(Table::Customers, key, Vec::new()));
            }
        }
        let event = AuditEvent::new(auth.identity(), "update", "ok")
            .tenant(&updated.meta.tenant)
            .token(&updated.meta.token)
            .request_id(request_id)
            .key_version(ring.active_version());
        let change = Change {
            ops,
            events: vec![event],
            expect: vec![Expect::value(Table::Records, token_key, old_bytes)],
            kek: vec![record.kek_delta(-1, 0)?, updated.kek_delta(1, 1)?],
        };
        match self.committer.commit(change).await {
            Ok(()) => Ok(updated.meta),
            Err(StoreError::Conflict) => Err(VaultError::Conflict),
            Err(e) => Err(e.into()),
        }
    }
}
