//! A month or year field that accepts a JSON number or a string of digits, so that
//! `"00"` can be judged by the month rule instead of failing as malformed JSON.

use serde::Deserialize;

use super::expiry::RawInt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawIntInput {
    Int(i64),
    Text(String),
}

impl RawIntInput {
    pub fn as_raw(&self) -> RawInt<'_> {
        match self {
            RawIntInput::Int(v) => RawInt::Int(*v),
            RawIntInput::Text(s) => RawInt::Text(s),
        }
    }
}

impl<'de> Deserialize<'de> for RawIntInput {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawIntInput;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer or a string of digits")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawIntInput, E> {
                Ok(RawIntInput::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawIntInput, E> {
                Ok(RawIntInput::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawIntInput, E> {
                // Longer text cannot be a month or a year; keep only a bounded prefix
                // so the rule reports a format error without holding arbitrary input.
                Ok(RawIntInput::Text(v.chars().take(8).collect()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
