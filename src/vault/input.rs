//! The shapes of tokenize input, as deserialised from a request body. Raw secrets
//! are `SecretInput`: never printed, copied once. Every struct refuses unknown fields.

use serde::Deserialize;

use crate::secret::SecretInput;
use crate::validate::expiry_input::RawIntInput;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    pub tenant: Option<String>,
    pub customer: Option<String>,
    pub card: Option<CardInput>,
    pub bank_account: Option<BankInput>,
    #[serde(default)]
    pub format: TokenFormat,
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub reuse_existing: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenFormat {
    #[default]
    Opaque,
    Numeric,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardInput {
    pub number: SecretInput,
    pub exp_month: RawIntInput,
    pub exp_year: RawIntInput,
    pub holder_name: Option<SecretInput>,
    pub cvc: Option<SecretInput>,
    pub billing_address: Option<AddressInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressInput {
    pub line1: Option<SecretInput>,
    pub line2: Option<SecretInput>,
    pub city: Option<SecretInput>,
    pub state: Option<SecretInput>,
    pub postal_code: Option<SecretInput>,
    pub country: Option<SecretInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankInput {
    pub iban: Option<SecretInput>,
    pub bic: Option<String>,
    pub holder_name: Option<SecretInput>,
    pub routing_number: Option<String>,
    pub account_number: Option<SecretInput>,
    pub account_type: Option<AccountType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountType {
    Checking,
    Savings,
}

/// `{"tokens": [...]}` of the detokenize batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenList {
    pub tokens: Vec<String>,
}
