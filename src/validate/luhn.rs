//! The Luhn (mod 10) check digit, which every card brand uses.

/// The Luhn sum of `digits` (ASCII digits only), doubling every second digit
/// counted from the right, starting with the first when `shift` is 1 (a body that
/// is still missing its check digit) or the second when it is 0.
fn luhn_sum(digits: &[u8], shift: usize) -> Option<u32> {
    let mut sum = 0u32;
    for (i, &b) in digits.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        let mut d = u32::from(b - b'0');
        if (i + shift) % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    Some(sum)
}

/// True when `digits` (ASCII digits only) satisfies the Luhn check.
/// Any non-digit byte makes it false.
pub fn luhn_valid(digits: &[u8]) -> bool {
    !digits.is_empty() && luhn_sum(digits, 0).is_some_and(|sum| sum.is_multiple_of(10))
}

/// The check digit (0–9) that makes `body` followed by it Luhn-valid; `None` if
/// `body` holds anything but ASCII digits. For test and benchmark numbers.
pub fn luhn_check_digit(body: &[u8]) -> Option<u8> {
    let sum = luhn_sum(body, 1)?;
    u8::try_from((10 - sum % 10) % 10).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_numbers_pass() {
        for n in ["4111111111111111", "378282246310005", "6212345678900000003", "0"] {
            assert!(luhn_valid(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn one_digit_changed_fails() {
        for n in ["4111111111111112", "4242424242424241", "6221558812340000"] {
            assert!(!luhn_valid(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn non_digits_and_empty_fail() {
        assert!(!luhn_valid(b""));
        assert!(!luhn_valid(b"4111 1111"));
        assert!(!luhn_valid("４２".as_bytes()));
    }

    #[test]
    fn check_digit_completes_a_body() {
        for n in [
            "4111111111111111",
            "378282246310005",
            "6212345678900000003",
            "4242424242424242",
        ] {
            let (body, last) = n.split_at(n.len() - 1);
            assert_eq!(
                luhn_check_digit(body.as_bytes()).map(|d| d.to_string()),
                Some(last.to_owned())
            );
        }
        assert_eq!(luhn_check_digit(b"4x"), None);
    }
}
