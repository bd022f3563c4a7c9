//! Card expiry: month and year rules, judged against an injected clock.
//!
//! A card is valid through the last day of its expiry month anywhere on Earth, so
//! it expires at 12:00 UTC on the first day of the following month (the moment that
//! day has begun in the westernmost time zone, UTC-12), whatever the host's zone.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use super::{Code, ValidationError};

/// How far ahead an expiry year may be.
pub const MAX_YEARS_AHEAD: i32 = 50;

/// A month or year as the client sent it: a JSON number or a string of digits.
#[derive(Debug, Clone, Copy)]
pub enum RawInt<'a> {
    Int(i64),
    Text(&'a str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct YearMonth {
    pub year: u16,
    pub month: u8,
}

fn month_error(reason: &'static str) -> ValidationError {
    ValidationError::new(
        Code::InvalidExpiryMonth,
        "card.exp_month",
        reason,
        "card.exp_month must be a month number from 1 to 12",
    )
}

fn year_error(reason: &'static str, detail: &str) -> ValidationError {
    ValidationError::new(Code::InvalidExpiryYear, "card.exp_year", reason, detail)
}

fn parse_month(raw: RawInt<'_>) -> Result<u8, ValidationError> {
    let value = match raw {
        RawInt::Int(v) => v,
        RawInt::Text(s) => {
            if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(month_error("format"));
            }
            s.parse::<i64>().map_err(|_| month_error("format"))?
        }
    };
    u8::try_from(value)
        .ok()
        .filter(|m| (1..=12).contains(m))
        .ok_or_else(|| month_error("range"))
}

fn parse_year(raw: RawInt<'_>) -> Result<u16, ValidationError> {
    const FOUR: &str = "card.exp_year must be a four-digit year";
    let value = match raw {
        RawInt::Int(v) => v,
        RawInt::Text(s) => {
            if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(year_error("format", FOUR));
            }
            s.parse::<i64>().map_err(|_| year_error("format", FOUR))?
        }
    };
    u16::try_from(value)
        .ok()
        .filter(|y| (1000..=9999).contains(y))
        .ok_or_else(|| year_error("format", FOUR))
}

/// The first instant at which a card expiring in `ym` is expired.
fn expiry_instant(ym: YearMonth) -> Option<OffsetDateTime> {
    let (year, month) = if ym.month == 12 {
        (i32::from(ym.year) + 1, Month::January)
    } else {
        (i32::from(ym.year), Month::try_from(ym.month + 1).ok()?)
    };
    let day = Date::from_calendar_date(year, month, 1).ok()?;
    Some(PrimitiveDateTime::new(day, Time::from_hms(12, 0, 0).ok()?).assume_utc())
}

/// Validates an expiry month and year against `now`.
pub fn validate_expiry(month: RawInt<'_>, year: RawInt<'_>, now: OffsetDateTime) -> Result<YearMonth, ValidationError> {
    let month = parse_month(month)?;
    let year = parse_year(year)?;
    if i32::from(year) > now.year() + MAX_YEARS_AHEAD {
        return Err(year_error("range", "card.exp_year must be at most 50 years ahead"));
    }
    let ym = YearMonth { year, month };
    match expiry_instant(ym) {
        Some(expires) if now < expires => Ok(ym),
        _ => Err(ValidationError::new(
            Code::CardExpired,
            "card.exp_year",
            "expired",
            "the card has expired",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-03 17:00 UTC);

    fn check(month: RawInt<'_>, year: RawInt<'_>, now: OffsetDateTime) -> &'static str {
        match validate_expiry(month, year, now) {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        }
    }

    #[test]
    fn month_rules() {
        use RawInt::*;
        assert_eq!(check(Int(0), Int(2030), NOW), "invalid_expiry_month");
        assert_eq!(check(Text("00"), Int(2030), NOW), "invalid_expiry_month");
        assert_eq!(check(Int(13), Int(2030), NOW), "invalid_expiry_month");
        assert_eq!(check(Int(-1), Int(2030), NOW), "invalid_expiry_month");
        assert_eq!(check(Int(i64::MAX), Int(2030), NOW), "invalid_expiry_month");
        assert_eq!(check(Text("07"), Int(2030), NOW), "ok");
        assert_eq!(check(Text(" 7"), Int(2030), NOW), "invalid_expiry_month");
    }

    #[test]
    fn year_rules() {
        use RawInt::*;
        assert_eq!(check(Int(1), Int(30), NOW), "invalid_expiry_year");
        assert_eq!(check(Int(1), Text("30"), NOW), "invalid_expiry_year");
        assert_eq!(check(Int(1), Int(2077), NOW), "invalid_expiry_year");
        assert_eq!(check(Int(1), Int(2076), NOW), "ok");
        assert_eq!(check(Int(1), Int(12030), NOW), "invalid_expiry_year");
        assert_eq!(check(Int(1), Int(1999), NOW), "card_expired");
    }

    #[test]
    fn current_month_valid_previous_expired() {
        use RawInt::*;
        assert_eq!(check(Int(12), Int(2026), NOW), "ok");
        assert_eq!(check(Int(11), Int(2026), NOW), "card_expired");
    }

    #[test]
    fn valid_until_noon_utc_on_the_first_of_next_month() {
        use RawInt::*;
        let before = datetime!(2026-12-01 11:59:59 UTC);
        let after = datetime!(2026-12-01 12:00 UTC);
        assert_eq!(check(Int(11), Int(2026), before), "ok");
        assert_eq!(check(Int(11), Int(2026), after), "card_expired");
        // December rolls into January of the next year.
        let jan = datetime!(2027-01-01 11:00 UTC);
        assert_eq!(check(Int(12), Int(2026), jan), "ok");
    }

    #[test]
    fn host_offset_does_not_matter() {
        use RawInt::*;
        let local = datetime!(2026-12-01 13:30 +05:00); // 08:30 UTC
        assert_eq!(check(Int(11), Int(2026), local), "ok");
    }
}
