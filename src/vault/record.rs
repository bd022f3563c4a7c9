//! The stored record: public metadata, then the sealed envelope.
//!
//! Value layout, integers big-endian:
//!
//! ```text
//! [0]          record format version: 2 (binary header), or 1 (JSON header)
//! [1..5]       length N of the header
//! [5..5+N]     header, public metadata only: format 2 see `vault::header`;
//!              format 1 is the JSON of `StoredHeaderRef`
//! [5+N..]      envelope (see crypto::envelope)
//! ```
//!
//! Format 2 is written; format 1 is read (vaults written before it), and written
//! only for a record whose strings are too long for format 2's u16 lengths.
//!
//! The envelope's payload is a list of (tag u8, length u16, bytes) fields holding
//! the secret values (PAN, IBAN, account number, holder name, address). It is built
//! in a buffer allocated once at its final size.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::input::AccountType;
use crate::crypto::Envelope;

/// The record format written: binary header.
pub const RECORD_FORMAT: u8 = 2;
/// The earlier format with a JSON header: still read.
pub const RECORD_FORMAT_JSON: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardMeta {
    pub brand: String,
    pub bin: String,
    pub last4: String,
    pub exp_month: u8,
    pub exp_year: u16,
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankMeta {
    pub country: Option<String>,
    pub last4: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub routing_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub account_type: Option<AccountType>,
    pub fingerprint: String,
}

/// A token's public metadata: what `GET /v1/tokens/{token}` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub token: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub tenant: String,
    pub customer: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub card: Option<CardMeta>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bank_account: Option<BankMeta>,
}

/// The format-1 (JSON) header, written from borrowed fields; read back into
/// `header::Header`, which has the same fields in the same order.
#[derive(Serialize)]
struct StoredHeaderRef<'a> {
    record_type: u8,
    created_nanos: u64,
    expires_unix: Option<i64>,
    meta: &'a Metadata,
}

#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub record_type: u8,
    /// Creation time in Unix nanoseconds: orders a customer's wallet.
    pub created_nanos: u64,
    pub expires_unix: Option<i64>,
    pub meta: Metadata,
    pub envelope: Envelope,
}

#[derive(Debug, thiserror::Error)]
#[error("stored record is malformed")]
pub struct MalformedRecord;

impl StoredRecord {
    pub fn encode(&self) -> Vec<u8> {
        let (format, header) =
            match super::header::encode(self.record_type, self.created_nanos, self.expires_unix, &self.meta) {
                Some(binary) => (RECORD_FORMAT, binary),
                None => (
                    RECORD_FORMAT_JSON,
                    serde_json::to_vec(&StoredHeaderRef {
                        record_type: self.record_type,
                        created_nanos: self.created_nanos,
                        expires_unix: self.expires_unix,
                        meta: &self.meta,
                    })
                    .unwrap_or_default(),
                ),
            };
        let mut out = Vec::with_capacity(5 + header.len() + self.envelope.0.len());
        out.push(format);
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.envelope.0);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<StoredRecord, MalformedRecord> {
        let (&format, rest) = bytes.split_first().ok_or(MalformedRecord)?;
        if !matches!(format, RECORD_FORMAT | RECORD_FORMAT_JSON) || rest.len() < 4 {
            return Err(MalformedRecord);
        }
        let (len, rest) = rest.split_at(4);
        let len = u32::from_be_bytes(len.try_into().map_err(|_| MalformedRecord)?) as usize;
        if rest.len() < len {
            return Err(MalformedRecord);
        }
        let (header, envelope) = rest.split_at(len);
        let header = if format == RECORD_FORMAT {
            super::header::decode(header)?
        } else {
            serde_json::from_slice::<super::header::Header>(header).map_err(|_| MalformedRecord)?
        };
        Ok(StoredRecord {
            record_type: header.record_type,
            created_nanos: header.created_nanos,
            expires_unix: header.expires_unix,
            meta: header.meta,
            envelope: Envelope(envelope.to_vec()),
        })
    }

    pub fn is_expired(&self, now_unix: i64) -> bool {
        self.expires_unix.is_some_and(|at| now_unix >= at)
    }
}

/// Where a record is stored. Opaque tokens are unique everywhere and are their own
/// key; numeric tokens are unique within their tenant (`#tenant \0 token`), so one
/// tenant's numeric tokens neither collide with nor reveal another tenant's.
pub fn storage_key(tenant: &str, token: &str) -> Vec<u8> {
    if token.starts_with("tok_") {
        return token.as_bytes().to_vec();
    }
    let mut key = Vec::with_capacity(tenant.len() + token.len() + 2);
    key.push(b'#');
    key.extend_from_slice(&record_key(tenant, token));
    key
}

/// `tenant \0 id`: tenants cannot contain NUL (config validation).
pub fn record_key(tenant: &str, token: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(tenant.len() + 1 + token.len());
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    key.extend_from_slice(token.as_bytes());
    key
}

/// The claim that makes a numeric token unique across tenants, in the
/// fingerprint table: `\0numeric\0 token` → tenant. (Tenant names are never
/// empty, so no fingerprint key starts with NUL.) Records stay keyed per tenant;
/// the claim only stops two tenants from drawing the same number, which a client
/// serving both could not tell apart. `None` for an opaque token, which needs no
/// claim (144 random bits).
pub fn numeric_claim_key(token: &str) -> Option<Vec<u8>> {
    if token.starts_with("tok_") {
        return None;
    }
    let mut key = Vec::with_capacity(9 + token.len());
    key.extend_from_slice(b"\0numeric\0");
    key.extend_from_slice(token.as_bytes());
    Some(key)
}

/// `tenant \0 fingerprint`.
pub fn fingerprint_key(tenant: &str, fingerprint: &str) -> Vec<u8> {
    record_key(tenant, fingerprint)
}

/// `tenant \0 customer \0`: the prefix of a customer's wallet entries.
pub fn customer_prefix(tenant: &str, customer: &str) -> Vec<u8> {
    let mut key = record_key(tenant, customer);
    key.push(0);
    key
}

/// A wallet entry: newest first because the time is inverted.
pub fn customer_key(tenant: &str, customer: &str, created_nanos: u64, token: &str) -> Vec<u8> {
    let mut key = customer_prefix(tenant, customer);
    key.extend_from_slice(&(u64::MAX - created_nanos).to_be_bytes());
    key.extend_from_slice(token.as_bytes());
    key
}

/// Kinds of entries in the expiry index.
pub const EXPIRY_TOKEN: u8 = 1;
pub const EXPIRY_IDEMPOTENCY: u8 = 2;

/// `kind, expiry (u64 BE), id`: ordered by expiry within a kind.
pub fn expiry_key(kind: u8, expires_unix: i64, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + id.len());
    key.push(kind);
    key.extend_from_slice(&u64::try_from(expires_unix).unwrap_or(0).to_be_bytes());
    key.extend_from_slice(id);
    key
}

impl StoredRecord {
    /// The index entries that point at this record, for deletion and purge.
    pub fn index_keys(&self) -> Vec<(crate::store::Table, Vec<u8>)> {
        use crate::store::Table;
        let meta = &self.meta;
        let mut keys = Vec::new();
        if let Some(customer) = &meta.customer {
            keys.push((
                Table::Customers,
                customer_key(&meta.tenant, customer, self.created_nanos, &meta.token),
            ));
        }
        if let Some(at) = self.expires_unix {
            keys.push((Table::Expiries, expiry_key(EXPIRY_TOKEN, at, &self.storage_key())));
        }
        keys
    }

    pub fn storage_key(&self) -> Vec<u8> {
        storage_key(&self.meta.tenant, &self.meta.token)
    }

    /// A counter change for the key version that wraps this record's data key.
    pub fn kek_delta(&self, records: i64, wraps: u64) -> Result<crate::commit::KekDelta, crate::crypto::CryptoError> {
        Ok(crate::commit::KekDelta {
            version: self.envelope.kek_version()?,
            records,
            wraps,
        })
    }

    pub fn fingerprint(&self) -> Option<&str> {
        let meta = &self.meta;
        meta.card
            .as_ref()
            .map(|c| c.fingerprint.as_str())
            .or(meta.bank_account.as_ref().map(|b| b.fingerprint.as_str()))
    }
}

/// Encodes payload fields into one exact-sized buffer.
pub fn encode_payload(fields: &[(u8, &[u8])]) -> Zeroizing<Vec<u8>> {
    let size = fields.iter().map(|(_, v)| 3 + v.len()).sum();
    let mut out = Zeroizing::new(Vec::with_capacity(size));
    for (tag, value) in fields {
        out.push(*tag);
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value.get(..usize::from(len)).unwrap_or_default());
    }
    out
}

/// Splits a decrypted payload into its fields, borrowing from it.
pub fn decode_payload(bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, MalformedRecord> {
    let mut fields = Vec::new();
    let mut rest = bytes;
    while let Some((&tag, tail)) = rest.split_first() {
        if tail.len() < 2 {
            return Err(MalformedRecord);
        }
        let (len, tail) = tail.split_at(2);
        let len = usize::from(u16::from_be_bytes([
            len.first().copied().unwrap_or(0),
            len.get(1).copied().unwrap_or(0),
        ]));
        if tail.len() < len {
            return Err(MalformedRecord);
        }
        let (value, tail) = tail.split_at(len);
        fields.push((tag, value));
        rest = tail;
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_truncation() {
        let fields: Vec<(u8, &[u8])> = vec![(1, b"4111111111111111"), (2, b"A. Example"), (3, b"")];
        let bytes = encode_payload(&fields);
        assert_eq!(bytes.len(), bytes.capacity());
        assert_eq!(decode_payload(&bytes).ok(), Some(fields));
        for cut in 1..bytes.len() {
            let _ = decode_payload(bytes.get(..cut).unwrap_or_default());
        }
        assert!(decode_payload(&[1, 0]).is_err());
        assert!(decode_payload(&[1, 0, 5, 1]).is_err());
    }

    #[test]
    fn record_round_trip_and_garbage() {
        let record = StoredRecord {
            record_type: 1,
            created_nanos: 0,
            expires_unix: Some(10),
            meta: Metadata {
                token: "tok_x".into(),
                kind: "card".into(),
                tenant: "t".into(),
                customer: None,
                created_at: "now".into(),
                expires_at: None,
                card: None,
                bank_account: None,
            },
            envelope: Envelope(vec![1, 2, 3]),
        };
        let decoded = StoredRecord::decode(&record.encode());
        assert!(decoded
            .as_ref()
            .is_ok_and(|r| r.meta == record.meta && r.envelope == record.envelope));
        assert!(decoded.is_ok_and(|r| r.is_expired(10) && !r.is_expired(9)));
        for bad in [&[][..], &[1], &[1, 0, 0, 0, 9], &[2, 0, 0, 0, 0]] {
            assert!(StoredRecord::decode(bad).is_err());
        }
    }

    fn sample(customer: Option<String>) -> StoredRecord {
        StoredRecord {
            record_type: 1,
            created_nanos: 1_764_806_400_000_000_000,
            expires_unix: None,
            meta: Metadata {
                token: "tok_abc".into(),
                kind: "card".into(),
                tenant: "shop".into(),
                customer,
                created_at: "2026-12-04T00:00:00Z".into(),
                expires_at: None,
                card: Some(CardMeta {
                    brand: "visa".into(),
                    bin: "42424242".into(),
                    last4: "4242".into(),
                    exp_month: 12,
                    exp_year: 2031,
                    fingerprint: "fp_x".into(),
                }),
                bank_account: None,
            },
            envelope: Envelope(vec![9; 40]),
        }
    }

    #[test]
    fn binary_format_is_written_and_json_records_still_read() {
        let record = sample(Some("cus_1".into()));
        let binary = record.encode();
        assert_eq!(binary.first(), Some(&RECORD_FORMAT));
        // A record written by an earlier version (JSON header, format 1).
        let header = serde_json::to_vec(&StoredHeaderRef {
            record_type: record.record_type,
            created_nanos: record.created_nanos,
            expires_unix: record.expires_unix,
            meta: &record.meta,
        })
        .unwrap_or_default();
        let mut json = vec![RECORD_FORMAT_JSON];
        json.extend_from_slice(&(header.len() as u32).to_be_bytes());
        json.extend_from_slice(&header);
        json.extend_from_slice(&record.envelope.0);
        assert!(binary.len() < json.len());
        for bytes in [binary, json] {
            let decoded = StoredRecord::decode(&bytes);
            assert!(decoded.is_ok_and(|r| r.meta == record.meta
                && r.envelope == record.envelope
                && r.created_nanos == record.created_nanos));
        }
    }

    #[test]
    fn strings_too_long_for_the_binary_header_fall_back_to_json() {
        let record = sample(Some("c".repeat(70_000)));
        let bytes = record.encode();
        assert_eq!(bytes.first(), Some(&RECORD_FORMAT_JSON));
        assert!(StoredRecord::decode(&bytes).is_ok_and(|r| r.meta == record.meta));
    }
}
