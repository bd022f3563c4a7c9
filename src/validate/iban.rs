//! IBAN (ISO 13616): normalisation, per-country length and the mod-97 check.
//!
//! The length table follows the SWIFT IBAN Registry as published in 2025
//! (including the later additions LY, SD, RU, FK, OM, YE, SO, NI, MN, DJ, BI, HN).
//! The registry moves: add a country by adding one row.

use super::{Code, ValidationError};
use crate::secret::Iban;

const FIELD: &str = "bank_account.iban";

/// Country code → total IBAN length.
const LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HN", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

/// Country code → BBAN structure from the registry: runs of `n` digits, `a` upper
/// case letters, `c` letters or digits (`8n10n`: 8 digits then 10 digits).
const FORMATS: &[(&str, &str)] = &[
    ("AD", "4n4n12c"),
    ("AE", "3n16n"),
    ("AL", "8n16c"),
    ("AT", "5n11n"),
    ("AZ", "4a20c"),
    ("BA", "3n3n8n2n"),
    ("BE", "3n7n2n"),
    ("BG", "4a4n2n8c"),
    ("BH", "4a14c"),
    ("BI", "5n5n11n2n"),
    ("BR", "8n5n10n1a1c"),
    ("BY", "4c4n16c"),
    ("CH", "5n12c"),
    ("CR", "4n14n"),
    ("CY", "3n5n16c"),
    ("CZ", "4n6n10n"),
    ("DE", "8n10n"),
    ("DJ", "5n5n11n2n"),
    ("DK", "4n9n1n"),
    ("DO", "4c20n"),
    ("EE", "2n2n11n1n"),
    ("EG", "4n4n17n"),
    ("ES", "4n4n1n1n10n"),
    ("FI", "3n11n"),
    ("FK", "2a12n"),
    ("FO", "4n9n1n"),
    ("FR", "5n5n11c2n"),
    ("GB", "4a6n8n"),
    ("GE", "2a16n"),
    ("GI", "4a15c"),
    ("GL", "4n9n1n"),
    ("GR", "3n4n16c"),
    ("GT", "4c20c"),
    ("HN", "4a20n"),
    ("HR", "7n10n"),
    ("HU", "3n4n1n15n1n"),
    ("IE", "4a6n8n"),
    ("IL", "3n3n13n"),
    ("IQ", "4a3n12n"),
    ("IS", "4n2n6n10n"),
    ("IT", "1a5n5n12c"),
    ("JO", "4a4n18c"),
    ("KW", "4a22c"),
    ("KZ", "3n13c"),
    ("LB", "4n20c"),
    ("LC", "4a24c"),
    ("LI", "5n12c"),
    ("LT", "5n11n"),
    ("LU", "3n13c"),
    ("LV", "4a13c"),
    ("LY", "3n3n15n"),
    ("MC", "5n5n11c2n"),
    ("MD", "2c18c"),
    ("ME", "3n13n2n"),
    ("MK", "3n10c2n"),
    ("MN", "4n12n"),
    ("MR", "5n5n11n2n"),
    ("MT", "4a5n18c"),
    ("MU", "4a2n2n12n3n3a"),
    ("NI", "4a20n"),
    ("NL", "4a10n"),
    ("NO", "4n6n1n"),
    ("OM", "3n16c"),
    ("PK", "4a16c"),
    ("PL", "8n16n"),
    ("PS", "4a21c"),
    ("PT", "4n4n11n2n"),
    ("QA", "4a21c"),
    ("RO", "4a16c"),
    ("RS", "3n13n2n"),
    ("RU", "9n5n15c"),
    ("SA", "2n18c"),
    ("SC", "4a2n2n16n3a"),
    ("SD", "2n12n"),
    ("SE", "3n16n1n"),
    ("SI", "5n8n2n"),
    ("SK", "4n6n10n"),
    ("SM", "1a5n5n12c"),
    ("SO", "4n3n12n"),
    ("ST", "4n4n11n2n"),
    ("SV", "4a20n"),
    ("TL", "3n14n2n"),
    ("TN", "2n3n13n2n"),
    ("TR", "5n1n16c"),
    ("UA", "6n19c"),
    ("VA", "3n15n"),
    ("VG", "4a16n"),
    ("XK", "4n10n2n"),
    ("YE", "4a4n18c"),
];

/// True when `bban` (upper case) has the registry structure of `country`; a
/// country without a listed structure passes.
fn bban_matches(country: &str, bban: &[u8]) -> bool {
    let Some((_, format)) = FORMATS.iter().find(|(code, _)| *code == country) else {
        return true;
    };
    let mut rest = bban;
    let mut count = 0usize;
    for ch in format.bytes() {
        if ch.is_ascii_digit() {
            count = count * 10 + usize::from(ch - b'0');
            continue;
        }
        if rest.len() < count {
            return false;
        }
        let (run, tail) = rest.split_at(count);
        let ok = match ch {
            b'n' => run.iter().all(u8::is_ascii_digit),
            b'a' => run.iter().all(u8::is_ascii_uppercase),
            _ => run.iter().all(u8::is_ascii_alphanumeric),
        };
        if !ok {
            return false;
        }
        rest = tail;
        count = 0;
    }
    rest.is_empty()
}

/// The registry length of a country's IBANs, if the country uses IBAN.
pub fn iban_country_length(country: &str) -> Option<usize> {
    LENGTHS.iter().find(|(code, _)| *code == country).map(|&(_, len)| len)
}

/// True when `text`, read without its punctuation, holds a valid IBAN anywhere
/// (a registry country, its length and format, mod-97): for free-form caller
/// references, which are stored in clear.
pub fn contains_iban(text: &str) -> bool {
    let compact: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_uppercase())
        .collect();
    (0..compact.len()).any(|i| {
        let Some([a, b, c, d]) = compact.get(i..i + 4) else {
            return false;
        };
        if !(a.is_ascii_alphabetic() && b.is_ascii_alphabetic() && c.is_ascii_digit() && d.is_ascii_digit()) {
            return false;
        }
        let country = String::from_utf8_lossy(&[*a, *b]).into_owned();
        let candidate = iban_country_length(&country).and_then(|len| compact.get(i..i + len));
        candidate
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .is_some_and(|s| normalize_iban(s).is_ok())
    })
}

fn error(reason: &'static str, detail: &str) -> ValidationError {
    ValidationError::new(Code::InvalidIban, FIELD, reason, detail)
}

/// Normalises an IBAN (ASCII spaces removed, letters upper-cased) and checks it:
/// ASCII letters and digits only, a registry country, that country's length, check
/// digits 02–98, and the mod-97 remainder 1. Returns the normalised IBAN and its
/// country code.
pub fn normalize_iban(raw: &str) -> Result<(Iban, String), ValidationError> {
    let mut n = 0usize;
    for b in raw.bytes() {
        match b {
            b' ' => {}
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' => n += 1,
            _ => {
                return Err(error(
                    "chars",
                    "bank_account.iban may contain only ASCII letters, digits and spaces",
                ))
            }
        }
    }
    let mut normal = String::with_capacity(n);
    normal.extend(raw.chars().filter(|c| *c != ' ').map(|c| c.to_ascii_uppercase()));
    let iban = Iban::new(normal.into_boxed_str());
    let bytes = iban.expose_secret().as_bytes();
    let country = match bytes {
        [a, b, c, d, ..]
            if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() && c.is_ascii_digit() && d.is_ascii_digit() =>
        {
            String::from_utf8_lossy(&[*a, *b]).into_owned()
        }
        _ => {
            return Err(error(
                "format",
                "bank_account.iban must start with a country code and two check digits",
            ))
        }
    };
    let Some(expected) = iban_country_length(&country) else {
        return Err(error("country", "bank_account.iban has an unknown country code"));
    };
    if bytes.len() != expected {
        return Err(error(
            "length",
            "bank_account.iban does not have its country's registry length",
        ));
    }
    if !bban_matches(&country, bytes.get(4..).unwrap_or_default()) {
        return Err(error(
            "format",
            "bank_account.iban does not have its country's account number format",
        ));
    }
    let check = bytes.get(2..4).unwrap_or_default();
    if check == b"00" || check == b"01" || check == b"99" {
        return Err(error("checksum", "bank_account.iban fails the mod-97 check"));
    }
    if mod97(bytes) != 1 {
        return Err(error("checksum", "bank_account.iban fails the mod-97 check"));
    }
    Ok((iban, country))
}

/// The ISO 7064 MOD 97-10 remainder of the IBAN with its first four characters
/// moved to the end and letters expanded to 10–35, computed digit by digit.
fn mod97(iban: &[u8]) -> u32 {
    let (head, tail) = iban.split_at(4.min(iban.len()));
    let mut rem = 0u32;
    for &b in tail.iter().chain(head) {
        let value = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            _ => u32::from(b.to_ascii_uppercase() - b'A') + 10,
        };
        rem = if value >= 10 {
            (rem * 100 + value) % 97
        } else {
            (rem * 10 + value) % 97
        };
    }
    rem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str) -> Result<(String, String), &'static str> {
        normalize_iban(raw)
            .map(|(i, c)| (i.expose_secret().to_owned(), c))
            .map_err(|e| e.reason)
    }

    #[test]
    fn case_and_spacing_normalise_to_one_account() {
        for raw in [
            "gb82west12345698765432",
            "GB82 WEST 1234 5698 7654 32",
            " GB82WEST12345698765432 ",
            "GB82WEST12345698765432",
        ] {
            assert_eq!(
                check(raw),
                Ok(("GB82WEST12345698765432".to_owned(), "GB".to_owned())),
                "{raw}"
            );
        }
    }

    #[test]
    fn newer_registry_countries() {
        for raw in [
            "LY83002048000020100120361",
            "SD2129010501234001",
            "RU0304452522540817810538091310419",
            "FK88SC123456789012",
            "OM810180000001299123456",
            "YE15CBYE0001018861234567891234",
            "NO9386011117947",
            "LC55HEMM000100010012001200023015",
        ] {
            assert!(check(raw).is_ok(), "{raw}");
        }
    }

    #[test]
    fn registry_examples_match_their_structure() {
        for raw in [
            "BG80BNBG96611020345678",
            "CY17002001280000001200527600",
            "CZ6508000000192000145399",
            "DK5000400440116243",
            "EE382200221020145685",
            "FI2112345600000785",
            "GR1601101250000000012300695",
            "HR1210010051863000160",
            "HU42117730161111101800000000",
            "IE29AIBK93115212345678",
            "IS140159260076545510730339",
            "LI21088100002324013AA",
            "LT121000011101001000",
            "LU280019400644750000",
            "LV80BANK0000435195001",
            "MC5811222000010123456789030",
            "PL61109010140000071219812874",
            "PT50000201231234567890154",
            "RO49AAAA1B31007593840000",
            "SE4550000000058398257466",
            "SI56263300012039086",
            "SK3112000000198742637541",
            "SM86U0322509800000000270100",
            "TR330006100519786457841326",
            "AE070331234567890123456",
            "AD1200012030200359100100",
            "MU17BOMM0101101030300200000MUR",
            "SC18SSCB11010000000000001497USD",
            "DE89370400440532013000",
            "FR1420041010050500013M02606",
            "BR1800360305000010009795493C1",
            "MT84MALT011000012345MTLCAST001S",
        ] {
            assert_eq!(check(raw).err(), None, "{raw}");
        }
    }

    #[test]
    fn structure_violations_are_format_errors() {
        // Valid check digits, letters where the registry has digits.
        assert_eq!(check("DE17ABCDEFGH1234567890").err(), Some("format"));
        assert_eq!(check("GB94BARC10201530093459").err(), None);
        assert_eq!(check("GB09BA1C10201530093459").err(), Some("format"));
    }

    #[test]
    fn rejections_name_the_rule() {
        assert_eq!(check("RU030445252254081781053809131041"), Err("length"));
        assert_eq!(check("DE8937040044053201300"), Err("length"));
        assert_eq!(check("DE89370400440532013001"), Err("checksum"));
        assert_eq!(check("XX89370400440532013000"), Err("country"));
        assert_eq!(check("DE89-3704-0044-0532-0130-00"), Err("chars"));
        assert_eq!(check("FI21 1234-5600 0007?85"), Err("chars"));
        assert_eq!(check("GB82WEST1234569876543２"), Err("chars"));
        assert_eq!(check(""), Err("format"));
        assert_eq!(check("D"), Err("format"));
    }
}
