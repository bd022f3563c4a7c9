//! Validation and normalisation of the credentials the vault accepts: card numbers,
//! expiry dates, CVCs, IBANs and US ACH routing/account numbers.
//!
//! Every rejection is a [`ValidationError`] naming the field, the rule and a stable
//! code; none of them carries the submitted value.

mod aba;
mod brand;
mod card;
mod expiry;
pub mod expiry_input;
mod iban;
mod luhn;
mod reference;

pub use aba::{validate_account_number, validate_routing_number};
pub use brand::{detect_brand, Brand};
pub use card::{bin_and_last4, normalize_pan, validate_cvc};
pub use expiry::{validate_expiry, RawInt, YearMonth};
pub use iban::{contains_iban, iban_country_length, normalize_iban};
pub use luhn::{luhn_check_digit, luhn_valid};
pub use reference::{validate_reference, validate_reference_lookup};

/// The stable error codes of the SPEC that validation can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidCardNumber,
    InvalidExpiryMonth,
    InvalidExpiryYear,
    CardExpired,
    InvalidCvc,
    InvalidIban,
    InvalidRoutingNumber,
    InvalidAccountNumber,
    InvalidRequest,
}

impl Code {
    /// The snake_case `type` of the problem document.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidCardNumber => "invalid_card_number",
            Code::InvalidExpiryMonth => "invalid_expiry_month",
            Code::InvalidExpiryYear => "invalid_expiry_year",
            Code::CardExpired => "card_expired",
            Code::InvalidCvc => "invalid_cvc",
            Code::InvalidIban => "invalid_iban",
            Code::InvalidRoutingNumber => "invalid_routing_number",
            Code::InvalidAccountNumber => "invalid_account_number",
            Code::InvalidRequest => "invalid_request",
        }
    }
}

/// A rejected field. `field` is the JSON path (`card.number`), `reason` a short
/// machine-readable rule (`checksum`, `length`, `chars`, `prefix`, …) and `detail`
/// a fixed human sentence. None of them is built from the submitted value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct ValidationError {
    pub code: Code,
    pub field: String,
    pub reason: &'static str,
    pub detail: String,
}

impl ValidationError {
    pub fn new(code: Code, field: &str, reason: &'static str, detail: impl Into<String>) -> Self {
        ValidationError {
            code,
            field: field.to_owned(),
            reason,
            detail: detail.into(),
        }
    }
}

/// Checks a free-text field (holder name, address line, customer reference):
/// bounded length, no control characters. The value is never echoed.
pub fn validate_text(field: &str, value: &str, max_chars: usize) -> Result<(), ValidationError> {
    let n = value.chars().count();
    if n == 0 || n > max_chars {
        return Err(ValidationError::new(
            Code::InvalidRequest,
            field,
            "length",
            format!("{field} must have 1 to {max_chars} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            Code::InvalidRequest,
            field,
            "chars",
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pan_normalisation_never_panics_and_is_idempotent(raw in "\\PC{0,40}") {
            if let Ok(pan) = normalize_pan(&raw) {
                let again = normalize_pan(pan.expose_secret()).map(|p| p.expose_secret().to_owned());
                prop_assert_eq!(again.as_deref(), Ok(pan.expose_secret()));
                prop_assert!(luhn_valid(pan.expose_secret().as_bytes()));
            }
        }

        #[test]
        fn digit_strings_with_separators(digits in "[0-9]{12,19}", seps in proptest::collection::vec(0usize..20, 0..4)) {
            let mut raw = digits.clone();
            for s in seps {
                let at = s.min(raw.len());
                raw.insert(at, if s % 2 == 0 { ' ' } else { '-' });
            }
            let a = normalize_pan(&raw).map(|p| p.expose_secret().to_owned());
            let b = normalize_pan(&digits).map(|p| p.expose_secret().to_owned());
            prop_assert_eq!(a, b);
        }

        #[test]
        fn iban_normalisation_never_panics_and_is_idempotent(raw in "\\PC{0,40}") {
            if let Ok((iban, country)) = normalize_iban(&raw) {
                let again = normalize_iban(iban.expose_secret()).map(|(i, c)| (i.expose_secret().to_owned(), c));
                prop_assert_eq!(again, Ok((iban.expose_secret().to_owned(), country)));
            }
        }

        #[test]
        fn routing_and_brand_never_panic(raw in "\\PC{0,20}") {
            let _ = validate_routing_number(&raw);
            let _ = detect_brand(raw.as_bytes());
            let _ = validate_account_number(&raw);
        }

        #[test]
        fn rejections_never_contain_the_input(raw in "[0-9 -]{12,25}") {
            if let Err(e) = normalize_pan(&raw) {
                let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
                if digits.len() >= 6 {
                    let shown = format!("{:?} {}", e, e);
                    prop_assert!(!shown.contains(&digits));
                }
            }
        }
    }
}
