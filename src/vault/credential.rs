//! Turning tokenize input into a validated credential, and a credential into the
//! sealed payload and public metadata of a record.

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::input::{AccountType, AddressInput, BankInput, CardInput, TokenizeRequest};
use super::record::{BankMeta, CardMeta};
use crate::secret::{AccountNumber, Cvc, Iban, Pan, Personal, SecretInput};
use crate::validate::{
    bin_and_last4, detect_brand, normalize_iban, normalize_pan, validate_account_number, validate_cvc, validate_expiry,
    validate_reference, validate_routing_number, validate_text, Brand, Code, ValidationError, YearMonth,
};

pub const TYPE_CARD: u8 = 1;
pub const TYPE_IBAN: u8 = 2;
pub const TYPE_ACH: u8 = 3;

const MAX_NAME: usize = 200;
const MAX_ADDRESS_LINE: usize = 200;

pub struct Address {
    pub line1: Option<Personal>,
    pub line2: Option<Personal>,
    pub city: Option<Personal>,
    pub state: Option<Personal>,
    pub postal_code: Option<Personal>,
    pub country: Option<Personal>,
}

impl Address {
    pub fn is_empty(&self) -> bool {
        [
            &self.line1,
            &self.line2,
            &self.city,
            &self.state,
            &self.postal_code,
            &self.country,
        ]
        .iter()
        .all(|f| f.is_none())
    }
}

pub struct Card {
    pub pan: Pan,
    pub brand: Brand,
    pub expiry: YearMonth,
    pub holder_name: Option<Personal>,
    pub cvc: Option<Cvc>,
    pub address: Option<Address>,
}

pub struct IbanAccount {
    pub iban: Iban,
    pub country: String,
    pub bic: Option<String>,
    pub holder_name: Option<Personal>,
}

pub struct AchAccount {
    pub routing_number: String,
    pub account_number: AccountNumber,
    pub account_type: AccountType,
    pub holder_name: Option<Personal>,
}

pub enum Credential {
    Card(Card),
    Iban(IbanAccount),
    Ach(AchAccount),
}

fn invalid(field: &str, reason: &'static str, detail: &str) -> ValidationError {
    ValidationError::new(Code::InvalidRequest, field, reason, detail)
}

fn personal(field: &str, input: Option<&SecretInput>, max: usize) -> Result<Option<Personal>, ValidationError> {
    match input {
        None => Ok(None),
        Some(value) => {
            validate_text(field, value.expose_secret(), max)?;
            Ok(Some(Personal::copy_from(value.expose_secret())))
        }
    }
}

/// Validates the credential part of a tokenize request against `now`.
pub fn validate_request(request: &TokenizeRequest, now: OffsetDateTime) -> Result<Credential, ValidationError> {
    if let Some(customer) = &request.customer {
        validate_reference("customer", customer)?;
    }
    if let Some(ttl) = request.ttl_seconds {
        if !(1..=10 * 365 * 24 * 3600).contains(&ttl) {
            return Err(invalid(
                "ttl_seconds",
                "range",
                "ttl_seconds must be between 1 second and 10 years",
            ));
        }
    }
    match (&request.card, &request.bank_account) {
        (Some(card), None) => validate_card(card, now).map(Credential::Card),
        (None, Some(bank)) => validate_bank(bank),
        _ => Err(invalid(
            "card",
            "one_of",
            "exactly one of card and bank_account is required",
        )),
    }
}

fn validate_card(input: &CardInput, now: OffsetDateTime) -> Result<Card, ValidationError> {
    let pan = normalize_pan(input.number.expose_secret())?;
    let brand = detect_brand(pan.expose_secret().as_bytes());
    let expiry = validate_expiry(input.exp_month.as_raw(), input.exp_year.as_raw(), now)?;
    let cvc = match &input.cvc {
        Some(raw) => Some(validate_cvc(raw.expose_secret(), brand)?),
        None => None,
    };
    let holder_name = personal("card.holder_name", input.holder_name.as_ref(), MAX_NAME)?;
    let address = match &input.billing_address {
        Some(a) => Some(validate_address(a)?),
        None => None,
    };
    Ok(Card {
        pan,
        brand,
        expiry,
        holder_name,
        cvc,
        address,
    })
}

fn validate_address(a: &AddressInput) -> Result<Address, ValidationError> {
    let f =
        |name: &str, v: Option<&SecretInput>| personal(&format!("card.billing_address.{name}"), v, MAX_ADDRESS_LINE);
    Ok(Address {
        line1: f("line1", a.line1.as_ref())?,
        line2: f("line2", a.line2.as_ref())?,
        city: f("city", a.city.as_ref())?,
        state: f("state", a.state.as_ref())?,
        postal_code: f("postal_code", a.postal_code.as_ref())?,
        country: f("country", a.country.as_ref())?,
    })
}

fn validate_bic(raw: &str) -> Result<String, ValidationError> {
    let normal = raw.to_ascii_uppercase();
    let ok = (normal.len() == 8 || normal.len() == 11)
        && normal.bytes().all(|b| b.is_ascii_alphanumeric())
        && normal.bytes().take(6).all(|b| b.is_ascii_alphabetic());
    if !ok {
        return Err(invalid(
            "bank_account.bic",
            "format",
            "bank_account.bic must be an 8- or 11-character BIC",
        ));
    }
    Ok(normal)
}

fn validate_bank(input: &BankInput) -> Result<Credential, ValidationError> {
    let holder_name = personal("bank_account.holder_name", input.holder_name.as_ref(), MAX_NAME)?;
    let ach_fields = input.routing_number.is_some() || input.account_number.is_some() || input.account_type.is_some();
    if let Some(iban) = &input.iban {
        if ach_fields {
            return Err(invalid(
                "bank_account",
                "one_of",
                "bank_account is either an IBAN or a US ACH account, not both",
            ));
        }
        let (iban, country) = normalize_iban(iban.expose_secret())?;
        let bic = input.bic.as_deref().map(validate_bic).transpose()?;
        return Ok(Credential::Iban(IbanAccount {
            iban,
            country,
            bic,
            holder_name,
        }));
    }
    if input.bic.is_some() {
        return Err(invalid(
            "bank_account.bic",
            "one_of",
            "bank_account.bic goes with an IBAN",
        ));
    }
    let routing = input.routing_number.as_deref().ok_or_else(|| {
        invalid(
            "bank_account.routing_number",
            "missing",
            "bank_account needs iban, or routing_number, account_number and account_type",
        )
    })?;
    let routing_number = validate_routing_number(routing)?;
    let account = input.account_number.as_ref().ok_or_else(|| {
        ValidationError::new(
            Code::InvalidAccountNumber,
            "bank_account.account_number",
            "missing",
            "bank_account.account_number is required with a routing number",
        )
    })?;
    let account_number = validate_account_number(account.expose_secret())?;
    let account_type = input.account_type.ok_or_else(|| {
        invalid(
            "bank_account.account_type",
            "missing",
            "bank_account.account_type (checking or savings) is required",
        )
    })?;
    Ok(Credential::Ach(AchAccount {
        routing_number,
        account_number,
        account_type,
        holder_name,
    }))
}

/// The visible tail of an account number: the last 4 digits, but only the last 2
/// of a number shorter than 8 digits, so metadata never reveals most of one.
fn short_tail(account: &str) -> String {
    let keep = if account.len() >= 8 { 4 } else { 2 };
    account
        .get(account.len().saturating_sub(keep)..)
        .unwrap_or_default()
        .to_owned()
}

/// Payload field tags (see `record.rs` for the encoding).
pub mod tag {
    pub const NUMBER: u8 = 1;
    pub const HOLDER: u8 = 2;
    pub const LINE1: u8 = 3;
    pub const LINE2: u8 = 4;
    pub const CITY: u8 = 5;
    pub const STATE: u8 = 6;
    pub const POSTAL: u8 = 7;
    pub const COUNTRY: u8 = 8;
    pub const IBAN: u8 = 10;
    pub const BIC: u8 = 11;
    pub const ACCOUNT: u8 = 12;
}

impl Credential {
    pub fn record_type(&self) -> u8 {
        match self {
            Credential::Card(_) => TYPE_CARD,
            Credential::Iban(_) => TYPE_IBAN,
            Credential::Ach(_) => TYPE_ACH,
        }
    }

    /// The kind and normalised bytes the fingerprint is computed over.
    pub fn fingerprint_input(&self) -> (&'static str, Zeroizing<Vec<u8>>) {
        match self {
            Credential::Card(c) => ("card", Zeroizing::new(c.pan.expose_secret().as_bytes().to_vec())),
            Credential::Iban(b) => ("iban", Zeroizing::new(b.iban.expose_secret().as_bytes().to_vec())),
            Credential::Ach(a) => {
                let account = a.account_number.expose_secret();
                let mut bytes = Zeroizing::new(Vec::with_capacity(a.routing_number.len() + 1 + account.len()));
                bytes.extend_from_slice(a.routing_number.as_bytes());
                bytes.push(b':');
                bytes.extend_from_slice(account.as_bytes());
                ("ach", bytes)
            }
        }
    }

    /// The secret fields to seal, as (tag, bytes) pairs.
    pub fn payload_fields(&self) -> Vec<(u8, &[u8])> {
        fn push<'a>(fields: &mut Vec<(u8, &'a [u8])>, tag: u8, value: Option<&'a Personal>) {
            if let Some(v) = value {
                fields.push((tag, v.expose_secret().as_bytes()));
            }
        }
        let mut fields: Vec<(u8, &[u8])> = Vec::new();
        let f = &mut fields;
        match self {
            Credential::Card(c) => {
                push(f, tag::HOLDER, c.holder_name.as_ref());
                if let Some(a) = &c.address {
                    push(f, tag::LINE1, a.line1.as_ref());
                    push(f, tag::LINE2, a.line2.as_ref());
                    push(f, tag::CITY, a.city.as_ref());
                    push(f, tag::STATE, a.state.as_ref());
                    push(f, tag::POSTAL, a.postal_code.as_ref());
                    push(f, tag::COUNTRY, a.country.as_ref());
                }
                f.push((tag::NUMBER, c.pan.expose_secret().as_bytes()));
            }
            Credential::Iban(b) => {
                push(f, tag::HOLDER, b.holder_name.as_ref());
                f.push((tag::IBAN, b.iban.expose_secret().as_bytes()));
                if let Some(bic) = &b.bic {
                    f.push((tag::BIC, bic.as_bytes()));
                }
            }
            Credential::Ach(a) => {
                push(f, tag::HOLDER, a.holder_name.as_ref());
                f.push((tag::ACCOUNT, a.account_number.expose_secret().as_bytes()));
            }
        }
        fields
    }

    pub fn card_meta(&self, fingerprint: &str) -> Option<CardMeta> {
        let Credential::Card(c) = self else {
            return None;
        };
        let (bin, last4) = bin_and_last4(&c.pan);
        Some(CardMeta {
            brand: c.brand.as_str().to_owned(),
            bin,
            last4,
            exp_month: c.expiry.month,
            exp_year: c.expiry.year,
            fingerprint: fingerprint.to_owned(),
        })
    }

    pub fn bank_meta(&self, fingerprint: &str) -> Option<BankMeta> {
        let last4 = |s: &str| s.get(s.len().saturating_sub(4)..).unwrap_or_default().to_owned();
        match self {
            Credential::Card(_) => None,
            Credential::Iban(b) => Some(BankMeta {
                country: Some(b.country.clone()),
                last4: last4(b.iban.expose_secret()),
                routing_number: None,
                account_type: None,
                fingerprint: fingerprint.to_owned(),
            }),
            Credential::Ach(a) => Some(BankMeta {
                country: Some("US".to_owned()),
                last4: short_tail(a.account_number.expose_secret()),
                routing_number: Some(a.routing_number.clone()),
                account_type: Some(a.account_type),
                fingerprint: fingerprint.to_owned(),
            }),
        }
    }
}
