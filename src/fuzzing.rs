//! Entry points for the fuzz targets in `fuzz/`: every parser that input reaches,
//! without making the parsers themselves public API. Each function must never
//! panic, whatever the bytes.

use std::sync::OnceLock;

use crate::api::body::{decode, decode_object};
use crate::crypto::{open, Envelope, Keyring, RecordAad, SealedKeyring};
use crate::token::Token;
use crate::validate::{
    detect_brand, normalize_iban, normalize_pan, validate_account_number, validate_expiry, validate_routing_number,
    RawInt,
};
use crate::vault::input::{TokenList, TokenizeRequest};
use crate::vault::record::{decode_payload, StoredRecord};
use crate::vault::PatchRequest;

/// Request JSON decoding, with the error mapping.
pub fn request_json(data: &[u8]) {
    let _ = decode_object::<TokenizeRequest>(data);
    let _ = decode_object::<PatchRequest>(data);
    let _ = decode::<TokenList>(data);
}

/// The card, IBAN, ABA, expiry and token validators.
pub fn validators(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = normalize_pan(text);
    let _ = normalize_iban(text);
    let _ = validate_routing_number(text);
    let _ = validate_account_number(text);
    let _ = detect_brand(data);
    let _ = Token::parse(text);
    let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    if let Some((month, year)) = text.split_at_checked(text.len() / 2) {
        let _ = validate_expiry(RawInt::Text(month), RawInt::Text(year), now);
    }
}

fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| match Keyring::generate(0) {
        Ok(ring) => ring,
        Err(_) => std::process::abort(),
    })
}

/// The stored record decoder (with a round trip: whatever decodes re-encodes to
/// the same record), the payload decoder and the envelope opener.
pub fn record(data: &[u8]) {
    if let Ok(record) = StoredRecord::decode(data) {
        match StoredRecord::decode(&record.encode()) {
            Ok(again)
                if again.meta == record.meta
                    && again.envelope == record.envelope
                    && again.record_type == record.record_type
                    && again.created_nanos == record.created_nanos
                    && again.expires_unix == record.expires_unix => {}
            _ => std::process::abort(),
        }
    }
    let _ = decode_payload(data);
    let aad = RecordAad {
        token: "tok_AAAAAAAAAAAAAAAAAAAAAAAA",
        tenant: "t",
        record_type: 1,
    };
    let _ = open(keyring(), aad, &Envelope(data.to_vec()));
}

/// The keyring file parser and the sealed plaintext parser.
pub fn keyring_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = SealedKeyring::parse(text);
    }
    let _ = Keyring::decode_for_fuzzing(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_take_garbage() {
        for data in [
            &b""[..],
            b"{",
            b"{\"card\":{}}",
            b"\xff\xfe",
            b"4111111111111111",
            b"\x01\x00\x00\x00\x05{}",
        ] {
            request_json(data);
            validators(data);
            record(data);
            keyring_file(data);
        }
    }
}
