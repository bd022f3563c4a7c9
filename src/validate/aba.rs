//! US ACH routing (ABA) and account numbers.

use super::{Code, ValidationError};
use crate::secret::AccountNumber;

const FIELD_ROUTING: &str = "bank_account.routing_number";
const FIELD_ACCOUNT: &str = "bank_account.account_number";

fn routing_error(reason: &'static str, detail: &str) -> ValidationError {
    ValidationError::new(Code::InvalidRoutingNumber, FIELD_ROUTING, reason, detail)
}

/// True when the first two digits are an assigned Federal Reserve prefix:
/// 00–12 (banks; 00 is the US Government), 21–32 (thrifts), 61–72 (electronic
/// transactions) or 80 (traveller's cheques).
fn prefix_assigned(prefix: u8) -> bool {
    matches!(prefix, 0..=12 | 21..=32 | 61..=72 | 80)
}

/// A routing number is 9 ASCII digits with an assigned prefix, not all zeros,
/// and the ABA checksum 3·(d1+d4+d7) + 7·(d2+d5+d8) + (d3+d6+d9) ≡ 0 (mod 10).
/// Routing numbers are public bank identifiers, so the normalised value is returned
/// as a plain string.
pub fn validate_routing_number(raw: &str) -> Result<String, ValidationError> {
    if !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(routing_error(
            "chars",
            "bank_account.routing_number must contain only ASCII digits",
        ));
    }
    let digits: Vec<u32> = raw.bytes().map(|b| u32::from(b - b'0')).collect();
    let &[d1, d2, d3, d4, d5, d6, d7, d8, d9] = digits.as_slice() else {
        return Err(routing_error(
            "length",
            "bank_account.routing_number must have 9 digits",
        ));
    };
    if digits.iter().all(|&d| d == 0) {
        return Err(routing_error("zero", "bank_account.routing_number cannot be all zeros"));
    }
    let sum = 3 * (d1 + d4 + d7) + 7 * (d2 + d5 + d8) + (d3 + d6 + d9);
    if sum % 10 != 0 {
        return Err(routing_error(
            "checksum",
            "bank_account.routing_number fails the ABA checksum",
        ));
    }
    let prefix = u8::try_from(d1 * 10 + d2).unwrap_or(u8::MAX);
    if !prefix_assigned(prefix) {
        return Err(routing_error(
            "prefix",
            "bank_account.routing_number has an unassigned Federal Reserve prefix",
        ));
    }
    Ok(raw.to_owned())
}

/// An account number is 4–17 ASCII digits.
pub fn validate_account_number(raw: &str) -> Result<AccountNumber, ValidationError> {
    if !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValidationError::new(
            Code::InvalidAccountNumber,
            FIELD_ACCOUNT,
            "chars",
            "bank_account.account_number must contain only ASCII digits",
        ));
    }
    if !(4..=17).contains(&raw.len()) {
        return Err(ValidationError::new(
            Code::InvalidAccountNumber,
            FIELD_ACCOUNT,
            "length",
            "bank_account.account_number must have 4 to 17 digits",
        ));
    }
    if raw.bytes().all(|b| b == b'0') {
        return Err(ValidationError::new(
            Code::InvalidAccountNumber,
            FIELD_ACCOUNT,
            "zero",
            "bank_account.account_number cannot be all zeros",
        ));
    }
    Ok(AccountNumber::copy_from(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(raw: &str) -> &'static str {
        validate_routing_number(raw).err().map_or("ok", |e| e.reason)
    }

    #[test]
    fn accepted_routing_numbers() {
        for n in [
            "011000015",
            "021001208",
            "121000374",
            "021000021",
            "026009593",
            "121000248",
            "110000000",
        ] {
            assert_eq!(reason(n), "ok", "{n}");
        }
    }

    #[test]
    fn rejected_routing_numbers_name_the_rule() {
        assert_eq!(reason("123456789"), "checksum");
        assert_eq!(reason("021000022"), "checksum");
        assert_eq!(reason("130000006"), "prefix");
        assert_eq!(reason("500000005"), "prefix");
        assert_eq!(reason("000000000"), "zero");
        assert_eq!(reason("02100002"), "length");
        assert_eq!(reason("12345678"), "length");
        assert_eq!(reason("0210000210"), "length");
        assert_eq!(reason("０21000021"), "chars");
        assert_eq!(reason(""), "length");
    }

    #[test]
    fn account_numbers() {
        assert!(validate_account_number("1234").is_ok());
        assert!(validate_account_number("12345678901234567").is_ok());
        assert!(validate_account_number("123").is_err());
        assert!(validate_account_number("123456789012345678").is_err());
        assert!(validate_account_number("1234a").is_err());
        assert!(validate_account_number("0001").is_ok());
        for zeros in ["0000", "0000000000", "00000000000000000"] {
            assert_eq!(validate_account_number(zeros).err().map(|e| e.reason), Some("zero"));
        }
    }
}
