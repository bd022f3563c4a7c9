//! The Luhn (mod 10) check digit, which every card brand uses.

/// True when `digits` (ASCII digits only) satisfies the Luhn check.
/// Any non-digit byte makes it false.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, &b) in digits.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
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
}
