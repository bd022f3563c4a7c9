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

pub use aba::{validate_account_number, validate_routing_number};
pub use brand::{detect_brand, Brand};
pub use card::{bin_and_last4, normalize_pan, validate_cvc};
pub use expiry::{validate_expiry, RawInt, YearMonth};
pub use iban::{contains_iban, iban_country_length, normalize_iban};
pub use luhn::{luhn_check_digit, luhn_valid};

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

/// Most punctuation characters in a row that still join two groups of digits
/// ("4111-1111", "4111 | 1111", "(411) 111", "5555%205555").
const MAX_JOIN: usize = 3;

/// Checks a caller reference (customer id): 1–128 visible ASCII characters, and
/// nothing that looks like a card or account number or an IBAN, since references
/// are stored and indexed in clear. A number is 12 or more digits in groups
/// joined by up to three punctuation characters (`-`, `.`, `|`, `%20`, …); an
/// IBAN is found with its punctuation removed and must pass its checks.
pub fn validate_reference(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ValidationError::new(
            Code::InvalidRequest,
            field,
            "chars",
            format!("{field} must be 1 to 128 visible ASCII characters"),
        ));
    }
    if longest_digit_run(value.as_bytes()) >= 12 {
        return Err(ValidationError::new(
            Code::InvalidRequest,
            field,
            "pan_like",
            format!("{field} must not hold 12 or more digits, even in groups joined by punctuation"),
        ));
    }
    if contains_iban(value) {
        return Err(ValidationError::new(
            Code::InvalidRequest,
            field,
            "iban_like",
            format!("{field} must not hold an IBAN"),
        ));
    }
    Ok(())
}

/// The most digits in one run, where up to `MAX_JOIN` punctuation characters
/// between two digits do not end it (letters do).
fn longest_digit_run(bytes: &[u8]) -> usize {
    let (mut run, mut longest, mut i) = (0usize, 0usize, 0usize);
    while let Some(b) = bytes.get(i) {
        if b.is_ascii_digit() {
            run += 1;
            longest = longest.max(run);
            i += 1;
            continue;
        }
        let gap = bytes
            .get(i..)
            .unwrap_or_default()
            .iter()
            .take_while(|c| !c.is_ascii_alphanumeric())
            .count();
        let joins = run > 0 && gap <= MAX_JOIN && bytes.get(i + gap).is_some_and(u8::is_ascii_digit);
        if !joins {
            run = 0;
        }
        i += gap.max(1);
    }
    longest
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

    /// Punctuation written between groups of a number (no spaces: references
    /// are visible ASCII).
    const SEPARATORS: &[&str] = &[
        "-", ".", "_", "/", ":", ",", "+", "|", "~", "*", "=", "#", ";", "--", "%20", ")-", "__",
    ];

    #[test]
    fn references_that_hide_numbers_or_ibans_are_refused() {
        let reason = |v: &str| validate_reference("customer", v).err().map(|e| e.reason);
        for v in [
            "4111|1111|1111|1111",
            "4111~1111~1111~1111",
            "4111--1111--1111--1111",
            "5555%205555%205555%204444",
            "(411)111-111-111-11",
            "cus_4111.1111.1111.1111",
            "acct:123456789012",
        ] {
            assert_eq!(reason(v), Some("pan_like"), "{v}");
        }
        for v in [
            "NL91ABNA0417164300",
            "cus-nl91-abna-0417-1643-00",
            "ref=nl91abna0417164300;x",
        ] {
            assert_eq!(reason(v), Some("iban_like"), "{v}");
        }
        for v in [
            "cus_8842",
            "user-2024-0001",
            "order#123456789",
            "9f1c2b7e-4d3a-4c8e-b1f0-2a6d9e3c7b15",
            "NL91ABNA0417164301",
            "4111a1111b",
        ] {
            assert_eq!(reason(v), None, "{v}");
        }
    }

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
        fn references_holding_a_number_in_groups_are_refused(
            digits in "[0-9]{12,19}",
            cuts in proptest::collection::vec((1usize..19, 0usize..SEPARATORS.len()), 0..5),
            prefix in "[a-z_]{0,6}",
            suffix in "[a-z]{0,6}",
        ) {
            // The number split into groups by single separators, as written on
            // forms and in other systems' ids.
            let mut groups = digits.clone();
            let mut cuts = cuts;
            cuts.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
            cuts.dedup_by_key(|c| c.0);
            for (at, sep) in cuts.into_iter().filter(|(at, _)| *at < digits.len()) {
                groups.insert_str(at, SEPARATORS.get(sep).copied().unwrap_or("-"));
            }
            let value = format!("{prefix}{groups}{suffix}");
            let refused = validate_reference("customer", &value);
            prop_assert_eq!(refused.as_ref().map_err(|e| e.reason), Err("pan_like"));
            if let Err(e) = refused {
                let shown = format!("{:?} {}", e, e);
                prop_assert!(!shown.contains(&digits) && !shown.contains(&groups));
            }
        }

        #[test]
        fn references_with_short_digit_runs_are_accepted(parts in proptest::collection::vec(("[a-z]{1,4}", "[0-9]{0,11}"), 1..6)) {
            let value: String = parts.iter().map(|(letters, digits)| format!("{letters}{digits}")).collect();
            if value.len() <= 128 {
                prop_assert!(validate_reference("customer", &value).is_ok(), "{}", value);
            }
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
