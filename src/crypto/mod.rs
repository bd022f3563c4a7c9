//! All cryptography of the vault: the record envelope, the sealed keyring and the
//! keyed MACs (fingerprints, audit chain). This is the only module that touches
//! `aes_gcm`, `argon2` or `hmac`; everything here comes from vetted RustCrypto crates.

mod envelope;
mod keyring;
mod mac;
mod random;

pub use envelope::{open, rewrap, seal, Envelope, RecordAad, ENVELOPE_FORMAT};
pub use keyring::{KdfParams, KekState, KekVersion, Keyring, SealedKeyring, SealingKey};
pub use mac::{audit_mac, fingerprint, idempotency_id, probe_label, MAC_LEN};
pub use random::fill_random;

/// Failures of the crypto layer. None carries key bytes or plaintext; an envelope
/// that fails to open says only that, whatever the cause (wrong key, flipped byte,
/// moved ciphertext), so the caller learns nothing from the difference.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the envelope could not be opened")]
    Open,
    #[error("the envelope is malformed")]
    Malformed,
    #[error("key version {0} is not available for encryption")]
    NoActiveKey(u32),
    #[error("the operating system's random number generator failed")]
    Random,
    #[error("{0}")]
    Keyring(&'static str),
    #[error("keyring file: {0}")]
    KeyringIo(#[from] std::io::Error),
}
