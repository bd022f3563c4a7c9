//! Tokens: what callers hold instead of card numbers. A token is public: it may be
//! logged, stored by callers and put in audit entries. It reveals nothing about the
//! credential.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::crypto::{fill_random, CryptoError};
use crate::validate::luhn_valid;

const PREFIX: &str = "tok_";
/// 18 random bytes: 144 bits from the OS CSPRNG, 24 URL-safe characters.
const RANDOM_BYTES: usize = 18;
const ENCODED_LEN: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(String);

impl Token {
    /// A new opaque token: `tok_` and 144 bits from the OS CSPRNG.
    pub fn generate_opaque() -> Result<Token, CryptoError> {
        let mut bytes = [0u8; RANDOM_BYTES];
        fill_random(&mut bytes)?;
        Ok(Token(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))))
    }

    /// A new numeric token for `pan` (digits only): the same length, the same first
    /// 6 and last 4 digits, random digits between, and a failing Luhn check, so it can
    /// never be mistaken for a card (and never equals the Luhn-valid PAN).
    pub fn generate_numeric(pan: &str) -> Result<Token, CryptoError> {
        let n = pan.len();
        let (Some(first6), Some(last4)) = (pan.get(..6), pan.get(n.saturating_sub(4)..)) else {
            return Err(CryptoError::Malformed);
        };
        if n < 12 {
            return Err(CryptoError::Malformed);
        }
        let middle_len = n - 10;
        let mut middle = Vec::with_capacity(middle_len);
        let mut random = [0u8; 64];
        while middle.len() < middle_len {
            fill_random(&mut random)?;
            // Rejection sampling keeps the digits uniform.
            middle.extend(
                random
                    .iter()
                    .filter(|&&b| b < 250)
                    .map(|b| b'0' + b % 10)
                    .take(middle_len - middle.len()),
            );
        }
        let mut digits = Vec::with_capacity(n);
        digits.extend_from_slice(first6.as_bytes());
        digits.extend_from_slice(&middle);
        digits.extend_from_slice(last4.as_bytes());
        if luhn_valid(&digits) {
            // Changing one digit always changes the Luhn sum modulo 10.
            if let Some(d) = digits.get_mut(n - 5) {
                *d = b'0' + (*d - b'0' + 1) % 10;
            }
        }
        Ok(Token(String::from_utf8_lossy(&digits).into_owned()))
    }

    /// Parses a token from a URL path or request body. Anything that is not a
    /// well-formed token is `None`, which callers answer with `404`.
    pub fn parse(text: &str) -> Option<Token> {
        if (12..=19).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) {
            return (!luhn_valid(text.as_bytes())).then(|| Token(text.to_owned()));
        }
        let body = text.strip_prefix(PREFIX)?;
        let well_formed = body.len() == ENCODED_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| Token(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = Token::generate_opaque().ok();
        let b = Token::generate_opaque().ok();
        assert!(a.is_some() && a != b);
        let a = a.unwrap_or_else(|| Token(String::new()));
        assert_eq!(Token::parse(a.as_str()), Some(a.clone()));
        assert_eq!(a.as_str().len(), PREFIX.len() + ENCODED_LEN);
    }

    #[test]
    fn numeric_tokens_keep_affixes_and_fail_luhn() {
        for pan in [
            "4111111111111111",
            "378282246310005",
            "501800000009",
            "6212345678900000003",
        ] {
            for _ in 0..50 {
                let Ok(token) = Token::generate_numeric(pan) else {
                    unreachable!("generation works")
                };
                let t = token.as_str();
                assert_eq!(t.len(), pan.len());
                assert_eq!(t.get(..6), pan.get(..6));
                assert_eq!(t.get(t.len() - 4..), pan.get(pan.len() - 4..));
                assert!(!luhn_valid(t.as_bytes()) && t != pan);
                assert_eq!(Token::parse(t), Some(token.clone()));
            }
        }
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        assert_eq!(
            Token::parse("4111111111111111"),
            None,
            "a Luhn-valid number is a PAN, not a token"
        );
        for t in [
            "",
            "tok_",
            "tok_short",
            "41111111111",
            "41111111111111111111",
            "tok_AAAAAAAAAAAAAAAAAAAAAAA/",
            "tok_AAAAAAAAAAAAAAAAAAAAAAAAA",
            "xok_AAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(Token::parse(t), None, "{t}");
        }
        assert!(Token::parse("tok_AAAAAAAAAAAAAAAAAAAAAAAA").is_some());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn luhn_complete(body: &str) -> String {
            (0..10u8)
                .map(|d| format!("{body}{d}"))
                .find(|candidate| luhn_valid(candidate.as_bytes()))
                .unwrap_or_default()
        }

        proptest! {
            #[test]
            fn numeric_tokens_never_pass_luhn_and_keep_affixes(body in "[1-9][0-9]{10,17}") {
                let pan = luhn_complete(&body);
                let token = Token::generate_numeric(&pan).map(|t| t.as_str().to_owned());
                let Ok(token) = token else { return Err(TestCaseError::fail("generation failed")) };
                prop_assert_eq!(token.len(), pan.len());
                prop_assert_eq!(token.get(..6), pan.get(..6));
                prop_assert_eq!(token.get(token.len() - 4..), pan.get(pan.len() - 4..));
                prop_assert!(!luhn_valid(token.as_bytes()));
                prop_assert_ne!(&token, &pan);
                prop_assert!(token.bytes().all(|b| b.is_ascii_digit()));
            }

            #[test]
            fn parse_never_panics(text in "\\PC{0,40}") {
                let _ = Token::parse(&text);
            }
        }
    }
}
