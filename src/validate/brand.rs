//! Card brand detection from issuer identification number (IIN) ranges.
//!
//! Every range is widened to the 8-digit BIN space, and the narrowest range that
//! contains the card's first 8 digits wins. So Elo's `401178` beats Visa's `4`, and
//! Discover's `6011` beats Maestro's broad `60`-style ranges, whatever the order of
//! the table. A unit test proves no two overlapping ranges of different brands have
//! the same width, so the answer never depends on table order.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Diners,
    Jcb,
    Unionpay,
    Maestro,
    Mir,
    Rupay,
    Elo,
    Hipercard,
    Troy,
    Unknown,
}

impl Brand {
    pub fn as_str(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Diners => "diners",
            Brand::Jcb => "jcb",
            Brand::Unionpay => "unionpay",
            Brand::Maestro => "maestro",
            Brand::Mir => "mir",
            Brand::Rupay => "rupay",
            Brand::Elo => "elo",
            Brand::Hipercard => "hipercard",
            Brand::Troy => "troy",
            Brand::Unknown => "unknown",
        }
    }

    pub fn from_name(name: &str) -> Option<Brand> {
        ALL_BRANDS.iter().copied().find(|b| b.as_str() == name)
    }
}

const ALL_BRANDS: [Brand; 14] = [
    Brand::Visa,
    Brand::Mastercard,
    Brand::Amex,
    Brand::Discover,
    Brand::Diners,
    Brand::Jcb,
    Brand::Unionpay,
    Brand::Maestro,
    Brand::Mir,
    Brand::Rupay,
    Brand::Elo,
    Brand::Hipercard,
    Brand::Troy,
    Brand::Unknown,
];

/// One IIN range: the inclusive prefixes `low..=high`, both with the same number of digits.
struct Range {
    low: u32,
    high: u32,
    digits: u32,
    brand: Brand,
}

const fn r(low: u32, high: u32, digits: u32, brand: Brand) -> Range {
    Range {
        low,
        high,
        digits,
        brand,
    }
}

const fn p(prefix: u32, digits: u32, brand: Brand) -> Range {
    r(prefix, prefix, digits, brand)
}

use Brand::*;

/// The IIN table. Sources: the networks' published ranges as collected in public
/// references (ISO/IEC 7812 registrations, network acceptance guides).
const RANGES: &[Range] = &[
    // Visa
    p(4, 1, Visa),
    // Mastercard: 51–55 and the 2-series 2221–2720
    r(51, 55, 2, Mastercard),
    r(2221, 2720, 4, Mastercard),
    // American Express
    p(34, 2, Amex),
    p(37, 2, Amex),
    // Discover (its own issuing ranges only; UnionPay's 62 is UnionPay's brand)
    p(6011, 4, Discover),
    r(644, 649, 3, Discover),
    p(65, 2, Discover),
    // Diners Club International
    r(300, 305, 3, Diners),
    p(3095, 4, Diners),
    p(36, 2, Diners),
    r(38, 39, 2, Diners),
    // JCB
    r(3528, 3589, 4, Jcb),
    // UnionPay
    p(62, 2, Unionpay),
    r(8100, 8171, 4, Unionpay),
    // Maestro
    p(50, 2, Maestro),
    r(56, 58, 2, Maestro),
    p(639, 3, Maestro),
    p(67, 2, Maestro),
    p(6304, 4, Maestro),
    p(5893, 4, Maestro),
    // Mir
    r(2200, 2204, 4, Mir),
    // RuPay
    p(60, 2, Rupay),
    r(508500, 508999, 6, Rupay),
    r(606985, 607984, 6, Rupay),
    r(608001, 608500, 6, Rupay),
    r(652150, 653149, 6, Rupay),
    // Elo (many ranges sit inside Visa, Maestro, Discover and UnionPay prefixes)
    r(401178, 401179, 6, Elo),
    p(431274, 6, Elo),
    p(438935, 6, Elo),
    p(451416, 6, Elo),
    p(457393, 6, Elo),
    r(457631, 457632, 6, Elo),
    p(504175, 6, Elo),
    r(506699, 506778, 6, Elo),
    r(509000, 509999, 6, Elo),
    p(627780, 6, Elo),
    p(636297, 6, Elo),
    p(636368, 6, Elo),
    r(650031, 650033, 6, Elo),
    r(650035, 650051, 6, Elo),
    r(650405, 650439, 6, Elo),
    r(650485, 650538, 6, Elo),
    r(650541, 650598, 6, Elo),
    r(650700, 650718, 6, Elo),
    r(650720, 650727, 6, Elo),
    r(650901, 650978, 6, Elo),
    r(651652, 651679, 6, Elo),
    r(655000, 655019, 6, Elo),
    r(655021, 655058, 6, Elo),
    // Hipercard and Hiper
    p(606282, 6, Hipercard),
    p(384100, 6, Hipercard),
    p(384140, 6, Hipercard),
    p(384160, 6, Hipercard),
    p(637095, 6, Hipercard),
    p(637568, 6, Hipercard),
    p(637599, 6, Hipercard),
    p(637609, 6, Hipercard),
    p(637612, 6, Hipercard),
    // Troy
    p(9792, 4, Troy),
    r(650052, 650399, 6, Troy),
];

const BIN_DIGITS: u32 = 8;

impl Range {
    /// The range in the 8-digit BIN space, inclusive.
    fn bounds(&self) -> (u32, u32) {
        let scale = 10u32.pow(BIN_DIGITS - self.digits);
        (self.low * scale, (self.high + 1) * scale - 1)
    }

    fn width(&self) -> u32 {
        let (lo, hi) = self.bounds();
        hi - lo
    }
}

/// The first 8 digits of `pan` as a number, right-padded with zeros for shorter input.
fn bin8(pan: &[u8]) -> u32 {
    let mut value = 0u32;
    for i in 0..BIN_DIGITS as usize {
        let d = pan.get(i).map_or(0, |b| u32::from(b.wrapping_sub(b'0')) % 10);
        value = value * 10 + d;
    }
    value
}

/// The brand of a normalised (digits-only) PAN. `Unknown` where no range matches.
pub fn detect_brand(pan: &[u8]) -> Brand {
    let bin = bin8(pan);
    RANGES
        .iter()
        .filter(|range| {
            let (lo, hi) = range.bounds();
            (lo..=hi).contains(&bin)
        })
        .min_by_key(|range| range.width())
        .map_or(Brand::Unknown, |range| range.brand)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brand(pan: &str) -> &'static str {
        detect_brand(pan.as_bytes()).as_str()
    }

    #[test]
    fn no_tie_between_overlapping_ranges_of_different_brands() {
        for a in RANGES {
            for b in RANGES {
                let (alo, ahi) = a.bounds();
                let (blo, bhi) = b.bounds();
                let overlap = alo <= bhi && blo <= ahi;
                if overlap && a.brand != b.brand {
                    assert_ne!(a.width(), b.width(), "{:?} vs {:?}", a.brand, b.brand);
                }
            }
        }
    }

    #[test]
    fn specific_ranges_win_over_broad_ones() {
        assert_eq!(brand("4011780000000006"), "elo");
        assert_eq!(brand("4111111111111111"), "visa");
        assert_eq!(brand("6011111111111117"), "discover");
        assert_eq!(brand("6011000990139424"), "discover");
        assert_eq!(brand("5066991111111118"), "elo");
        assert_eq!(brand("6362970000457013"), "elo");
        assert_eq!(brand("6062820000000003"), "hipercard");
    }

    #[test]
    fn network_carriage_is_not_brand() {
        for pan in ["36227206271667", "3056930009020004", "38520000023237"] {
            assert_eq!(brand(pan), "diners", "{pan}");
        }
        assert_eq!(brand("9792100000000001"), "troy");
        assert_eq!(brand("6502740000000001"), "troy");
        assert_eq!(brand("6522280000000004"), "rupay");
    }

    #[test]
    fn unionpay_and_maestro_lengths() {
        assert_eq!(brand("6212345678900000003"), "unionpay");
        assert_eq!(brand("6221558812340000"), "unionpay");
        assert_eq!(brand("501800000009"), "maestro");
        assert_eq!(brand("6799990100000000019"), "maestro");
        assert_eq!(brand("6304000000000000"), "maestro");
    }

    #[test]
    fn mastercard_two_series_edges() {
        assert_eq!(brand("2221000000000009"), "mastercard");
        assert_eq!(brand("2720990000000000"), "mastercard");
        assert_eq!(brand("2721000000000000"), "unknown");
        assert_eq!(brand("2220990000000000"), "unknown");
        assert_eq!(brand("2202000000000002"), "mir");
    }

    #[test]
    fn names_round_trip() {
        for b in ALL_BRANDS {
            assert_eq!(Brand::from_name(b.as_str()), Some(b));
        }
    }
}
