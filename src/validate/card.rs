//! Card number normalisation and the CVC rule.

use super::{luhn_valid, Brand, Code, ValidationError};
use crate::secret::{Cvc, Pan};

const FIELD_NUMBER: &str = "card.number";
const FIELD_CVC: &str = "card.cvc";
pub const MIN_PAN_DIGITS: usize = 12;
pub const MAX_PAN_DIGITS: usize = 19;

fn number_error(reason: &'static str, detail: &str) -> ValidationError {
    ValidationError::new(Code::InvalidCardNumber, FIELD_NUMBER, reason, detail)
}

/// Strips ASCII spaces and dashes and checks the rules every brand shares:
/// ASCII digits only, 12–19 of them, not all zeros, Luhn.
///
/// The result is allocated once at its final size, so no partial copy of the PAN
/// is left behind in freed memory by a growing buffer.
pub fn normalize_pan(raw: &str) -> Result<Pan, ValidationError> {
    let mut n_digits = 0usize;
    for b in raw.bytes() {
        match b {
            b'0'..=b'9' => n_digits += 1,
            b' ' | b'-' => {}
            _ => {
                return Err(number_error(
                    "chars",
                    "card.number may contain only ASCII digits, spaces and dashes",
                ))
            }
        }
    }
    if !(MIN_PAN_DIGITS..=MAX_PAN_DIGITS).contains(&n_digits) {
        return Err(number_error("length", "card.number must have 12 to 19 digits"));
    }
    let mut digits = String::with_capacity(n_digits);
    digits.extend(raw.chars().filter(char::is_ascii_digit));
    let pan = Pan::new(digits.into_boxed_str());
    let bytes = pan.expose_secret().as_bytes();
    if bytes.iter().all(|&b| b == b'0') {
        return Err(number_error("zero", "card.number cannot be all zeros"));
    }
    if !luhn_valid(bytes) {
        return Err(number_error("checksum", "card.number fails the Luhn check"));
    }
    Ok(pan)
}

/// A CVC is 3 ASCII digits, 4 for American Express.
pub fn validate_cvc(raw: &str, brand: Brand) -> Result<Cvc, ValidationError> {
    let want = if brand == Brand::Amex { 4 } else { 3 };
    if !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValidationError::new(
            Code::InvalidCvc,
            FIELD_CVC,
            "chars",
            "card.cvc must contain only ASCII digits",
        ));
    }
    if raw.len() != want {
        let detail = if want == 4 {
            "card.cvc must have 4 digits for this brand"
        } else {
            "card.cvc must have 3 digits for this brand"
        };
        return Err(ValidationError::new(Code::InvalidCvc, FIELD_CVC, "length", detail));
    }
    Ok(Cvc::copy_from(raw))
}

/// The metadata a PAN may reveal: the BIN (8 digits for PANs of 16 or more digits,
/// else 6) and the last 4 digits.
pub fn bin_and_last4(pan: &Pan) -> (String, String) {
    let digits = pan.expose_secret();
    let bin_len = if digits.len() >= 16 { 8 } else { 6 };
    let bin = digits.get(..bin_len).unwrap_or_default().to_owned();
    let last4 = digits
        .get(digits.len().saturating_sub(4)..)
        .unwrap_or_default()
        .to_owned();
    (bin, last4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(raw: &str) -> &'static str {
        match normalize_pan(raw) {
            Ok(_) => "ok",
            Err(e) => {
                assert_eq!(e.code, Code::InvalidCardNumber);
                assert_eq!(e.field, "card.number");
                e.reason
            }
        }
    }

    #[test]
    fn spaces_and_dashes_are_stripped() {
        let pan = normalize_pan(" 4242 4242-4242 4242 ").map(|p| p.expose_secret().to_owned());
        assert_eq!(pan.as_deref(), Ok("4242424242424242"));
    }

    #[test]
    fn rejections_name_the_rule() {
        assert_eq!(reason("4242 4242 4242 424x"), "chars");
        assert_eq!(reason("４２４２４２４２４２４２４２４２"), "chars");
        assert_eq!(reason(""), "length");
        assert_eq!(reason("0"), "length");
        assert_eq!(reason("50180000007"), "length");
        assert_eq!(reason("50180000000000000009"), "length");
        assert_eq!(reason("0000000000000000"), "zero");
        assert_eq!(reason("000000000000000000"), "zero");
        assert_eq!(reason("4242424242424241"), "checksum");
        assert_eq!(reason("6221558812340000"), "checksum");
        assert_eq!(reason("501800000009"), "ok");
        assert_eq!(reason("6799990100000000019"), "ok");
    }

    #[test]
    fn error_text_never_holds_the_number() {
        let err = normalize_pan("4111111111111112").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| !e.contains("411111")));
    }

    #[test]
    fn bin_length_follows_pan_length() {
        for (pan, bin, last4) in [
            ("4111111111111111", "41111111", "1111"),
            ("378282246310005", "378282", "0005"),
            ("6212345678900000003", "62123456", "0003"),
            ("36227206271667", "362272", "1667"),
            ("501800000009", "501800", "0009"),
        ] {
            let got = bin_and_last4(&Pan::copy_from(pan));
            assert_eq!(got, (bin.to_owned(), last4.to_owned()), "{pan}");
        }
    }

    #[test]
    fn cvc_length_depends_on_brand() {
        assert!(validate_cvc("123", Brand::Visa).is_ok());
        assert!(validate_cvc("1234", Brand::Amex).is_ok());
        assert_eq!(
            validate_cvc("1234", Brand::Visa).err().map(|e| e.reason),
            Some("length")
        );
        assert_eq!(validate_cvc("123", Brand::Amex).err().map(|e| e.reason), Some("length"));
        assert_eq!(validate_cvc("12a", Brand::Visa).err().map(|e| e.reason), Some("chars"));
    }
}
