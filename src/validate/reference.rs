//! Caller references (customer ids): stored and indexed in clear, so they must
//! not carry a card number or an IBAN.

use super::{contains_iban, luhn_valid, Code, ValidationError};

/// Checks a caller reference (customer id) that is about to be stored: the
/// rules of `validate_reference_lookup`, and nothing that looks like a card
/// number written in groups or an IBAN, since references are stored and indexed
/// in clear. A card in groups is a run of digit-only groups joined by
/// punctuation (`4111-1111-…`, `4111|1111…`, `(411) 111…`, percent-encoded
/// separators decoded first) whose consecutive groups hold 12–19 digits that
/// pass Luhn; an IBAN is found with punctuation removed and must pass its checks.
/// Ids such as UUIDs, whose groups mix letters and digits, are not affected.
pub fn validate_reference(field: &str, value: &str) -> Result<(), ValidationError> {
    validate_reference_lookup(field, value)?;
    if holds_grouped_card_number(&percent_decoded(value)) {
        return Err(pan_like(field));
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

/// Checks a caller reference used to look something up (nothing is stored): 1–128
/// visible ASCII characters and no run of 12 or more digits. References stored
/// before the checks of `validate_reference` grew stay readable.
pub fn validate_reference_lookup(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ValidationError::new(
            Code::InvalidRequest,
            field,
            "chars",
            format!("{field} must be 1 to 128 visible ASCII characters"),
        ));
    }
    let mut run = 0usize;
    for b in value.bytes() {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        if run >= 12 {
            return Err(pan_like(field));
        }
    }
    Ok(())
}

fn pan_like(field: &str) -> ValidationError {
    ValidationError::new(
        Code::InvalidRequest,
        field,
        "pan_like",
        format!("{field} must not hold a card or account number (12 or more digits, or a card number in groups)"),
    )
}

/// `%XX` escapes decoded (others kept as they are), so that an encoded separator
/// separates. Not `api::route::percent_decode`, which refuses a malformed escape
/// anywhere: here one bad escape must not hide the good ones from the filter.
fn percent_decoded(value: &str) -> Vec<u8> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// True when consecutive runs of digits joined only by punctuation (no letters
/// between them) hold 12–19 digits in all that pass Luhn: a card number written in
/// groups. UUIDs in their canonical form are skipped first: their hex groups
/// often join into long runs of digits that mean nothing.
fn holds_grouped_card_number(bytes: &[u8]) -> bool {
    let masked = mask_uuids(bytes);
    // Maximal digit runs, each with whether it joins the run before it.
    let mut runs: Vec<(&[u8], bool)> = Vec::new();
    let mut i = 0;
    let mut gap_is_punctuation = false;
    while let Some(b) = masked.get(i) {
        if b.is_ascii_digit() {
            let len = masked
                .get(i..)
                .unwrap_or_default()
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            let joins = gap_is_punctuation && !runs.is_empty();
            runs.push((masked.get(i..i + len).unwrap_or_default(), joins));
            i += len;
            gap_is_punctuation = true;
        } else {
            if b.is_ascii_alphabetic() {
                gap_is_punctuation = false;
            }
            i += 1;
        }
    }
    let mut digits: Vec<u8> = Vec::with_capacity(19);
    for start in 0..runs.len() {
        digits.clear();
        for (n, (run, joins)) in runs.iter().skip(start).enumerate() {
            if (n > 0 && !joins) || digits.len() + run.len() > 19 {
                break;
            }
            digits.extend_from_slice(run);
            if digits.len() >= 12 && luhn_valid(&digits) {
                return true;
            }
        }
    }
    false
}

/// `bytes` with every canonical UUID (8-4-4-4-12 hex digits) replaced by letters.
fn mask_uuids(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let is_uuid = |w: &[u8]| {
        w.len() == 36
            && w.iter().enumerate().all(|(k, c)| {
                if [8, 13, 18, 23].contains(&k) {
                    *c == b'-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
    };
    let mut i = 0;
    while i + 36 <= out.len() {
        if out.get(i..i + 36).is_some_and(is_uuid) {
            for c in out.iter_mut().skip(i).take(36) {
                *c = b'u';
            }
            i += 36;
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::luhn_check_digit;
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
            "4111----1111----1111----1111",
            "5555%205555%205555%204444",
            "4111%2D1111%2D1111%2D1111",
            "(411)111-111-111-111-1",
            "cus_4111.1111.1111.1111",
            "acct:123456789012",
            "3782-822463-10005",
            "cus4111-1111-1111-1111",
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
            "cus_NffrFeUfNV2Hib",
            "user-2024-0001",
            "order#123456789",
            "9f1c2b7e-4d3a-4c8e-b1f0-2a6d9e3c7b15",
            "d0493791-2686-4028-980c-efedfdf44dfa",
            "3522d9fa-564b-4d43-8432-3925554d4c79",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "NL91ABNA0417164301",
            "4111a1111b",
            "4111-1111-1111-1112",
        ] {
            assert_eq!(reason(v), None, "{v}");
        }
        // A lookup only refuses unbroken runs: references stored before stay readable.
        assert!(validate_reference_lookup("customer", "4111-1111-1111-1111").is_ok());
        assert!(validate_reference_lookup("customer", "4111111111111111").is_err());
    }

    #[test]
    fn random_uuids_are_accepted() {
        // A fixed-seed xorshift stands in for random v4 UUIDs.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut refused = 0;
        for _ in 0..20_000 {
            let (a, b) = (next(), next());
            let uuid = format!(
                "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                a >> 32,
                (a >> 16) & 0xffff,
                a & 0xfff,
                (b >> 48) | 0x8000,
                b & 0xffff_ffff_ffff
            );
            refused += usize::from(validate_reference("customer", &uuid).is_err());
        }
        // Only a UUID whose last group is 12 decimal digits (about 0.35 %) is refused.
        assert!(refused < 200, "{refused} of 20,000 UUIDs refused");
    }

    proptest! {
        #[test]
        fn references_holding_a_card_number_in_groups_are_refused(
            body in "[0-9]{11,18}",
            cuts in proptest::collection::vec((1usize..19, 0usize..SEPARATORS.len()), 0..5),
            prefix in "[a-z_]{0,6}",
            suffix in "[a-z]{0,6}",
        ) {
            // A Luhn-valid number split into groups by separators, as written on
            // forms and in other systems' ids.
            let check = luhn_check_digit(body.as_bytes()).unwrap_or(0);
            let digits = format!("{body}{check}");
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
                // Never taken for a card number. (Letters and digits can spell a valid
                // IBAN by chance: about one in a hundred strings shaped like one.)
                let reason = validate_reference("customer", &value).err().map(|e| e.reason);
                prop_assert!(reason.is_none() || reason == Some("iban_like"), "{}", value);
            }
        }
    }
}
