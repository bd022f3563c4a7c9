//! The binary record header (record format 2): the public metadata of a record in
//! a compact, length-prefixed layout that is read without a JSON parser. Format 1
//! (a JSON header) is still read, so vaults written before keep working, and is
//! still written for the rare record whose strings do not fit a u16 length.
//!
//! Layout, integers big-endian, `str` = u16 length then UTF-8 bytes, `opt<x>` =
//! a u8 presence flag (0 or 1) then `x` when present:
//!
//! ```text
//! record_type u8, created_nanos u64, expires_unix opt<i64>,
//! token str, type str, tenant str, customer opt<str>, created_at str, expires_at opt<str>,
//! card opt<brand str, bin str, last4 str, exp_month u8, exp_year u16, fingerprint str>,
//! bank_account opt<country opt<str>, last4 str, routing_number opt<str>,
//!                  account_type u8 (0 none, 1 checking, 2 savings), fingerprint str>
//! ```
//!
//! Decoding consumes the whole header or fails: trailing bytes are malformed.

use super::input::AccountType;
use super::record::{BankMeta, CardMeta, MalformedRecord, Metadata};

/// The fields of a header, decoded (from format 2, or from format 1's JSON).
#[derive(serde::Deserialize)]
pub struct Header {
    pub record_type: u8,
    #[serde(default)]
    pub created_nanos: u64,
    pub expires_unix: Option<i64>,
    pub meta: Metadata,
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn str(&mut self, s: &str) -> Option<()> {
        let len = u16::try_from(s.len()).ok()?;
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
        Some(())
    }

    fn opt_str(&mut self, s: Option<&str>) -> Option<()> {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s)
            }
            None => {
                self.u8(0);
                Some(())
            }
        }
    }
}

/// The format-2 header of a record, or `None` when a string is too long for it
/// (the caller then writes format 1).
pub fn encode(record_type: u8, created_nanos: u64, expires_unix: Option<i64>, meta: &Metadata) -> Option<Vec<u8>> {
    let mut w = Writer(Vec::with_capacity(160));
    w.u8(record_type);
    w.0.extend_from_slice(&created_nanos.to_be_bytes());
    match expires_unix {
        Some(at) => {
            w.u8(1);
            w.0.extend_from_slice(&at.to_be_bytes());
        }
        None => w.u8(0),
    }
    w.str(&meta.token)?;
    w.str(&meta.kind)?;
    w.str(&meta.tenant)?;
    w.opt_str(meta.customer.as_deref())?;
    w.str(&meta.created_at)?;
    w.opt_str(meta.expires_at.as_deref())?;
    match &meta.card {
        Some(card) => {
            w.u8(1);
            w.str(&card.brand)?;
            w.str(&card.bin)?;
            w.str(&card.last4)?;
            w.u8(card.exp_month);
            w.0.extend_from_slice(&card.exp_year.to_be_bytes());
            w.str(&card.fingerprint)?;
        }
        None => w.u8(0),
    }
    match &meta.bank_account {
        Some(bank) => {
            w.u8(1);
            w.opt_str(bank.country.as_deref())?;
            w.str(&bank.last4)?;
            w.opt_str(bank.routing_number.as_deref())?;
            w.u8(match bank.account_type {
                None => 0,
                Some(AccountType::Checking) => 1,
                Some(AccountType::Savings) => 2,
            });
            w.str(&bank.fingerprint)?;
        }
        None => w.u8(0),
    }
    Some(w.0)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MalformedRecord> {
        if self.0.len() < n {
            return Err(MalformedRecord);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MalformedRecord> {
        self.take(N)?.try_into().map_err(|_| MalformedRecord)
    }

    fn u8(&mut self) -> Result<u8, MalformedRecord> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    fn flag(&mut self) -> Result<bool, MalformedRecord> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(MalformedRecord),
        }
    }

    fn str(&mut self) -> Result<String, MalformedRecord> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| MalformedRecord)
    }

    fn opt_str(&mut self) -> Result<Option<String>, MalformedRecord> {
        if self.flag()? {
            self.str().map(Some)
        } else {
            Ok(None)
        }
    }
}

pub fn decode(bytes: &[u8]) -> Result<Header, MalformedRecord> {
    let mut r = Reader(bytes);
    let record_type = r.u8()?;
    let created_nanos = u64::from_be_bytes(r.array()?);
    let expires_unix = if r.flag()? {
        Some(i64::from_be_bytes(r.array()?))
    } else {
        None
    };
    let token = r.str()?;
    let kind = r.str()?;
    let tenant = r.str()?;
    let customer = r.opt_str()?;
    let created_at = r.str()?;
    let expires_at = r.opt_str()?;
    let card = if r.flag()? {
        Some(CardMeta {
            brand: r.str()?,
            bin: r.str()?,
            last4: r.str()?,
            exp_month: r.u8()?,
            exp_year: u16::from_be_bytes(r.array()?),
            fingerprint: r.str()?,
        })
    } else {
        None
    };
    let bank_account = if r.flag()? {
        Some(BankMeta {
            country: r.opt_str()?,
            last4: r.str()?,
            routing_number: r.opt_str()?,
            account_type: match r.u8()? {
                0 => None,
                1 => Some(AccountType::Checking),
                2 => Some(AccountType::Savings),
                _ => return Err(MalformedRecord),
            },
            fingerprint: r.str()?,
        })
    } else {
        None
    };
    if !r.0.is_empty() {
        return Err(MalformedRecord);
    }
    Ok(Header {
        record_type,
        created_nanos,
        expires_unix,
        meta: Metadata {
            token,
            kind,
            tenant,
            customer,
            created_at,
            expires_at,
            card,
            bank_account,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-zA-Z0-9_ \\-:é\"]{0,40}").unwrap_or_else(|_| unreachable!("regex"))
    }

    fn account_type() -> impl Strategy<Value = Option<AccountType>> {
        prop_oneof![
            Just(None),
            Just(Some(AccountType::Checking)),
            Just(Some(AccountType::Savings))
        ]
    }

    prop_compose! {
        fn card()(brand in text(), bin in text(), last4 in text(), exp_month in any::<u8>(),
                  exp_year in any::<u16>(), fingerprint in text()) -> CardMeta {
            CardMeta { brand, bin, last4, exp_month, exp_year, fingerprint }
        }
    }

    prop_compose! {
        fn bank()(country in proptest::option::of(text()), last4 in text(),
                  routing_number in proptest::option::of(text()), account_type in account_type(),
                  fingerprint in text()) -> BankMeta {
            BankMeta { country, last4, routing_number, account_type, fingerprint }
        }
    }

    prop_compose! {
        fn metadata()(token in text(), kind in text(), tenant in text(),
                      customer in proptest::option::of(text()), created_at in text(),
                      expires_at in proptest::option::of(text()),
                      card in proptest::option::of(card()), bank_account in proptest::option::of(bank()))
                      -> Metadata {
            Metadata { token, kind, tenant, customer, created_at, expires_at, card, bank_account }
        }
    }

    proptest! {
        #[test]
        fn round_trips_and_every_truncation_fails(
            meta in metadata(), record_type in any::<u8>(), created in any::<u64>(),
            expires in proptest::option::of(any::<i64>()),
        ) {
            let bytes = encode(record_type, created, expires, &meta).unwrap_or_default();
            let header = decode(&bytes).map_err(|_| TestCaseError::fail("decode"))?;
            prop_assert_eq!(header.record_type, record_type);
            prop_assert_eq!(header.created_nanos, created);
            prop_assert_eq!(header.expires_unix, expires);
            prop_assert_eq!(&header.meta, &meta);
            for cut in 0..bytes.len() {
                prop_assert!(decode(bytes.get(..cut).unwrap_or_default()).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(decode(&longer).is_err());
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn a_string_too_long_for_the_format_is_refused() {
        let meta = Metadata {
            token: "tok_x".into(),
            kind: "card".into(),
            tenant: "t".into(),
            customer: Some("c".repeat(70_000)),
            created_at: "now".into(),
            expires_at: None,
            card: None,
            bank_account: None,
        };
        assert!(encode(1, 0, None, &meta).is_none());
    }
}
