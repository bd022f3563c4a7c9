//! The record envelope: a per-record AES-256-GCM data key (DEK), wrapped by a
//! versioned key-encryption key (KEK).
//!
//! Layout (format 1), all integers big-endian:
//!
//! ```text
//! [0]        format version (1)
//! [1..5]     KEK version
//! [5..17]    nonce of the wrapped DEK
//! [17..65]   wrapped DEK: 32 bytes of ciphertext + 16-byte tag
//! [65..77]   nonce of the payload
//! [77..]     payload ciphertext + 16-byte tag
//! ```
//!
//! The payload's associated data binds it to its token, tenant, record type and
//! format version, so a ciphertext moved to another token or tenant fails to open.
//! The wrapped DEK's associated data adds the KEK version, so a record whose version
//! field is edited fails too. A rewrap replaces bytes `[1..65]` only.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use zeroize::Zeroizing;

use super::keyring::{KekVersion, Keyring};
use super::{fill_random, CryptoError};

pub const ENVELOPE_FORMAT: u8 = 1;
const NONCE: usize = 12;
const TAG: usize = 16;
const DEK: usize = 32;
const OFF_VERSION: usize = 1;
const OFF_DEK_NONCE: usize = 5;
const OFF_WRAPPED: usize = OFF_DEK_NONCE + NONCE;
const OFF_DATA_NONCE: usize = OFF_WRAPPED + DEK + TAG;
const HEADER: usize = OFF_DATA_NONCE + NONCE;

/// What a record's ciphertext is bound to.
#[derive(Debug, Clone, Copy)]
pub struct RecordAad<'a> {
    pub token: &'a str,
    pub tenant: &'a str,
    pub record_type: u8,
}

impl RecordAad<'_> {
    fn payload_aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(32 + self.token.len() + self.tenant.len());
        aad.extend_from_slice(b"tokenvault/record");
        aad.push(ENVELOPE_FORMAT);
        aad.push(self.record_type);
        for part in [self.tenant.as_bytes(), self.token.as_bytes()] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad
    }

    fn dek_aad(&self, kek_version: u32) -> Vec<u8> {
        let mut aad = b"tokenvault/dek".to_vec();
        aad.extend_from_slice(&kek_version.to_be_bytes());
        aad.extend_from_slice(&self.payload_aad());
        aad
    }
}

/// A sealed record: safe to store and to log the length of, never secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope(pub Vec<u8>);

impl Envelope {
    /// The KEK version that wraps this envelope's data key.
    pub fn kek_version(&self) -> Result<u32, CryptoError> {
        let bytes = self.0.get(OFF_VERSION..OFF_DEK_NONCE).ok_or(CryptoError::Malformed)?;
        let array: [u8; 4] = bytes.try_into().map_err(|_| CryptoError::Malformed)?;
        Ok(u32::from_be_bytes(array))
    }

    fn check_shape(&self) -> Result<(), CryptoError> {
        if self.0.len() < HEADER + TAG || self.0.first() != Some(&ENVELOPE_FORMAT) {
            return Err(CryptoError::Malformed);
        }
        Ok(())
    }
}

/// Seals `plaintext` under a fresh data key wrapped by the keyring's active KEK.
/// All random bytes (DEK and both nonces) come from one OS CSPRNG call.
pub fn seal(keyring: &Keyring, aad: RecordAad<'_>, plaintext: &[u8]) -> Result<Envelope, CryptoError> {
    let kek = keyring.active()?;
    let mut random = Zeroizing::new([0u8; DEK + 2 * NONCE]);
    fill_random(random.as_mut_slice())?;
    let (dek, nonces) = random.split_at(DEK);
    let (dek_nonce, data_nonce) = nonces.split_at(NONCE);

    // The output is allocated once at its final size; the plaintext is copied into
    // it and encrypted in place, so no clear copy outlives this function.
    let mut out = Vec::with_capacity(HEADER + plaintext.len() + TAG);
    out.push(ENVELOPE_FORMAT);
    out.extend_from_slice(&kek.version.to_be_bytes());
    out.extend_from_slice(dek_nonce);
    out.extend_from_slice(&wrap_dek(kek, &aad, dek_nonce, dek)?);
    out.extend_from_slice(data_nonce);
    out.extend_from_slice(plaintext);

    let cipher = Aes256Gcm::new_from_slice(dek).map_err(|_| CryptoError::Malformed)?;
    let body = out.get_mut(HEADER..).ok_or(CryptoError::Malformed)?;
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(data_nonce), &aad.payload_aad(), body)
        .map_err(|_| CryptoError::Open)?;
    out.extend_from_slice(&tag);
    Ok(Envelope(out))
}

/// Opens an envelope. Any failure (unknown or retired KEK version, flipped byte,
/// wrong token or tenant) is the same `CryptoError::Open`.
pub fn open(keyring: &Keyring, aad: RecordAad<'_>, envelope: &Envelope) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    envelope.check_shape()?;
    let version = envelope.kek_version()?;
    let dek = unwrap_dek(keyring.kek(version).ok_or(CryptoError::Open)?, &aad, envelope)?;
    let cipher = Aes256Gcm::new_from_slice(dek.as_slice()).map_err(|_| CryptoError::Open)?;
    let data_nonce = envelope.0.get(OFF_DATA_NONCE..HEADER).ok_or(CryptoError::Malformed)?;
    let sealed = envelope.0.get(HEADER..).ok_or(CryptoError::Malformed)?;
    let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG);
    let mut plain = Zeroizing::new(ciphertext.to_vec());
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(data_nonce),
            &aad.payload_aad(),
            plain.as_mut_slice(),
            Tag::from_slice(tag),
        )
        .map_err(|_| CryptoError::Open)?;
    Ok(plain)
}

/// Re-wraps the data key of `envelope` under the keyring's active KEK without
/// touching the payload ciphertext.
pub fn rewrap(keyring: &Keyring, aad: RecordAad<'_>, envelope: &Envelope) -> Result<Envelope, CryptoError> {
    envelope.check_shape()?;
    let old = keyring.kek(envelope.kek_version()?).ok_or(CryptoError::Open)?;
    let dek = unwrap_dek(old, &aad, envelope)?;
    let new = keyring.active()?;
    let mut nonce = [0u8; NONCE];
    fill_random(&mut nonce)?;
    let wrapped = wrap_dek(new, &aad, &nonce, dek.as_slice())?;
    let mut out = envelope.0.clone();
    let header = out.get_mut(OFF_VERSION..OFF_DATA_NONCE).ok_or(CryptoError::Malformed)?;
    let (version, rest) = header.split_at_mut(4);
    version.copy_from_slice(&new.version.to_be_bytes());
    let (nonce_slot, wrapped_slot) = rest.split_at_mut(NONCE);
    nonce_slot.copy_from_slice(&nonce);
    wrapped_slot.copy_from_slice(&wrapped);
    Ok(Envelope(out))
}

fn wrap_dek(kek: &KekVersion, aad: &RecordAad<'_>, nonce: &[u8], dek: &[u8]) -> Result<[u8; DEK + TAG], CryptoError> {
    let cipher = kek.cipher().ok_or(CryptoError::NoActiveKey(kek.version))?;
    let mut wrapped = [0u8; DEK + TAG];
    let (body, tag_slot) = wrapped.split_at_mut(DEK);
    body.copy_from_slice(dek);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(nonce), &aad.dek_aad(kek.version), body)
        .map_err(|_| CryptoError::Open)?;
    tag_slot.copy_from_slice(&tag);
    Ok(wrapped)
}

fn unwrap_dek(kek: &KekVersion, aad: &RecordAad<'_>, envelope: &Envelope) -> Result<Zeroizing<[u8; DEK]>, CryptoError> {
    let cipher = kek.cipher().ok_or(CryptoError::Open)?;
    let nonce = envelope
        .0
        .get(OFF_DEK_NONCE..OFF_WRAPPED)
        .ok_or(CryptoError::Malformed)?;
    let wrapped = envelope
        .0
        .get(OFF_WRAPPED..OFF_DATA_NONCE)
        .ok_or(CryptoError::Malformed)?;
    let (body, tag) = wrapped.split_at(DEK);
    let mut dek = Zeroizing::new([0u8; DEK]);
    dek.copy_from_slice(body);
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            &aad.dek_aad(kek.version),
            dek.as_mut_slice(),
            Tag::from_slice(tag),
        )
        .map_err(|_| CryptoError::Open)?;
    Ok(dek)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AAD: RecordAad<'static> = RecordAad {
        token: "tok_abc",
        tenant: "shop-eu",
        record_type: 1,
    };

    fn keyring() -> Keyring {
        Keyring::generate_for_tests()
    }

    #[test]
    fn round_trip() {
        let ring = keyring();
        let env = seal(&ring, AAD, b"4111111111111111").ok();
        let plain = env.as_ref().and_then(|e| open(&ring, AAD, e).ok());
        assert_eq!(plain.as_deref().map(Vec::as_slice), Some(&b"4111111111111111"[..]));
        assert!(!env.is_some_and(|e| e.0.windows(4).any(|w| w == b"4111")));
    }

    #[test]
    fn every_flipped_byte_fails_to_open() {
        let ring = keyring();
        let Ok(env) = seal(&ring, AAD, b"payload bytes") else {
            unreachable!("sealing with a fresh keyring works")
        };
        for i in 0..env.0.len() {
            let mut bad = env.clone();
            if let Some(b) = bad.0.get_mut(i) {
                *b ^= 0x01;
            }
            assert!(open(&ring, AAD, &bad).is_err(), "byte {i}");
        }
    }

    #[test]
    fn moved_ciphertext_fails_to_open() {
        let ring = keyring();
        let Ok(env) = seal(&ring, AAD, b"payload") else {
            unreachable!("sealing with a fresh keyring works")
        };
        let other_token = RecordAad {
            token: "tok_abd",
            ..AAD
        };
        let other_tenant = RecordAad {
            tenant: "shop-us",
            ..AAD
        };
        let other_type = RecordAad { record_type: 2, ..AAD };
        for aad in [other_token, other_tenant, other_type] {
            assert!(matches!(open(&ring, aad, &env), Err(CryptoError::Open)));
        }
    }

    #[test]
    fn truncated_envelopes_are_malformed_not_panics() {
        let ring = keyring();
        for len in [0, 1, 5, HEADER, HEADER + TAG - 1] {
            let env = Envelope(vec![ENVELOPE_FORMAT; len]);
            assert!(open(&ring, AAD, &env).is_err());
        }
    }

    #[test]
    fn rewrap_moves_to_the_active_version_and_keeps_the_payload() {
        let mut ring = keyring();
        let Ok(env) = seal(&ring, AAD, b"payload") else {
            unreachable!("sealing with a fresh keyring works")
        };
        assert!(ring.rotate_for_tests().is_ok());
        let Ok(moved) = rewrap(&ring, AAD, &env) else {
            unreachable!("rewrap under a rotated keyring works")
        };
        assert_eq!(moved.kek_version().ok(), Some(2));
        assert_eq!(moved.0.get(OFF_DATA_NONCE..), env.0.get(OFF_DATA_NONCE..));
        let plain = open(&ring, AAD, &moved).ok();
        assert_eq!(plain.as_deref().map(Vec::as_slice), Some(&b"payload"[..]));
    }
}
