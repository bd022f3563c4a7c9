//! The keyring: versioned key-encryption keys, the fingerprint key and the audit MAC
//! key, sealed in one file under a key stretched from a passphrase with Argon2id.
//!
//! File (JSON, `keyring.sealed`):
//! `{"format":"tokenvault-keyring","version":1,"kdf":{…,"salt":…},"nonce":…,"sealed":…}`.
//! The sealed plaintext is a small binary document (see `encode`); the header's KDF
//! parameters and salt are the associated data, so editing any of them, or any byte
//! of the ciphertext, makes the file refuse to open.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{fill_random, CryptoError};
use crate::secret::{KeyBytes, Passphrase};

const FORMAT: &str = "tokenvault-keyring";
const FILE_VERSION: u32 = 1;
const MAGIC: &[u8; 4] = b"TVKR";
/// The floor the SPEC sets for the passphrase KDF, and a ceiling that keeps an
/// edited file from turning start-up into a memory bomb.
const MIN_MEMORY_KIB: u32 = 64 * 1024;
const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
const MIN_ITERATIONS: u32 = 3;
const MAX_ITERATIONS: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KekState {
    Active,
    DecryptOnly,
    Retired,
}

impl KekState {
    fn code(self) -> u8 {
        match self {
            KekState::Active => 0,
            KekState::DecryptOnly => 1,
            KekState::Retired => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(KekState::Active),
            1 => Some(KekState::DecryptOnly),
            2 => Some(KekState::Retired),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KekState::Active => "active",
            KekState::DecryptOnly => "decrypt_only",
            KekState::Retired => "retired",
        }
    }
}

/// One key-encryption key version. A retired version has no key material left.
pub struct KekVersion {
    pub version: u32,
    pub state: KekState,
    /// Unix seconds.
    pub created_at: i64,
    key: Option<KeyBytes>,
    cipher: Option<Aes256Gcm>,
}

impl KekVersion {
    fn new(version: u32, state: KekState, created_at: i64, key: Option<KeyBytes>) -> Self {
        let cipher = key
            .as_ref()
            .and_then(|k| Aes256Gcm::new_from_slice(k.expose_secret()).ok());
        KekVersion {
            version,
            state,
            created_at,
            key,
            cipher,
        }
    }

    /// The AES-GCM instance for this version, absent once retired.
    pub fn cipher(&self) -> Option<&Aes256Gcm> {
        self.cipher.as_ref()
    }
}

impl std::fmt::Debug for KekVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KekVersion")
            .field("version", &self.version)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// The unsealed keyring, held in memory for the daemon's lifetime.
pub struct Keyring {
    versions: BTreeMap<u32, KekVersion>,
    active: u32,
    fingerprint_key: KeyBytes,
    audit_key: KeyBytes,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("versions", &self.versions.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn random_key() -> Result<KeyBytes, CryptoError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    fill_random(bytes.as_mut_slice())?;
    Ok(KeyBytes::new(*bytes))
}

impl Keyring {
    /// A new keyring with KEK version 1 active and fresh fingerprint and audit keys.
    pub fn generate(now_unix: i64) -> Result<Keyring, CryptoError> {
        let mut versions = BTreeMap::new();
        versions.insert(1, KekVersion::new(1, KekState::Active, now_unix, Some(random_key()?)));
        Ok(Keyring {
            versions,
            active: 1,
            fingerprint_key: random_key()?,
            audit_key: random_key()?,
        })
    }

    pub fn active_version(&self) -> u32 {
        self.active
    }

    pub fn active(&self) -> Result<&KekVersion, CryptoError> {
        self.versions
            .get(&self.active)
            .filter(|v| v.cipher.is_some())
            .ok_or(CryptoError::NoActiveKey(self.active))
    }

    pub fn kek(&self, version: u32) -> Option<&KekVersion> {
        self.versions.get(&version)
    }

    pub fn versions(&self) -> impl Iterator<Item = &KekVersion> {
        self.versions.values()
    }

    pub fn fingerprint_key(&self) -> &KeyBytes {
        &self.fingerprint_key
    }

    pub fn audit_key(&self) -> &KeyBytes {
        &self.audit_key
    }

    /// A copy to change and then publish (the keyring in use is shared read-only).
    /// Key material is copied into new wiped-on-drop allocations.
    pub fn duplicate(&self) -> Keyring {
        let copy = |k: &KeyBytes| KeyBytes::new(*k.expose_secret());
        Keyring {
            versions: self
                .versions
                .values()
                .map(|v| {
                    (
                        v.version,
                        KekVersion::new(v.version, v.state, v.created_at, v.key.as_ref().map(copy)),
                    )
                })
                .collect(),
            active: self.active,
            fingerprint_key: copy(&self.fingerprint_key),
            audit_key: copy(&self.audit_key),
        }
    }

    /// Adds version N+1 as the active key; the previous active one becomes
    /// decrypt-only. The new key is self-tested (wrap, unwrap) before it is used.
    pub fn rotate(&mut self, now_unix: i64) -> Result<u32, CryptoError> {
        let next = self
            .versions
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or(CryptoError::Keyring("key version space exhausted"))?;
        let candidate = KekVersion::new(next, KekState::Active, now_unix, Some(random_key()?));
        self_test(&candidate)?;
        if let Some(old) = self.versions.get_mut(&self.active) {
            old.state = KekState::DecryptOnly;
        }
        self.versions.insert(next, candidate);
        self.active = next;
        Ok(next)
    }

    /// Destroys a non-active version's key material.
    pub fn retire(&mut self, version: u32) -> Result<(), CryptoError> {
        if version == self.active {
            return Err(CryptoError::Keyring("the active key version cannot be retired"));
        }
        let entry = self
            .versions
            .get_mut(&version)
            .ok_or(CryptoError::Keyring("no such key version"))?;
        entry.state = KekState::Retired;
        entry.key = None;
        entry.cipher = None;
        Ok(())
    }

    /// Seals the keyring under `passphrase` with fresh salt and nonce.
    pub fn seal(&self, passphrase: &Passphrase, params: KdfParams) -> Result<SealedKeyring, CryptoError> {
        params.check()?;
        let mut salt = [0u8; 16];
        fill_random(&mut salt)?;
        let key = SealingKey {
            key: derive(passphrase, &salt, params)?,
            salt: STANDARD.encode(salt),
            params,
        };
        self.seal_with(&key)
    }

    /// Seals the keyring again under an already derived key (same passphrase and
    /// salt, fresh nonce): a rotation re-seals without Argon2 and without keeping
    /// the passphrase.
    pub fn seal_with(&self, sealing: &SealingKey) -> Result<SealedKeyring, CryptoError> {
        let mut nonce = [0u8; 12];
        fill_random(&mut nonce)?;
        let kdf = KdfHeader {
            algorithm: "argon2id".to_owned(),
            memory_kib: sealing.params.memory_kib,
            iterations: sealing.params.iterations,
            parallelism: sealing.params.parallelism,
            salt: sealing.salt.clone(),
        };
        let aad = Header {
            format: FORMAT,
            version: FILE_VERSION,
            kdf: &kdf,
        }
        .aad();
        let cipher = Aes256Gcm::new_from_slice(sealing.key.as_slice())
            .map_err(|_| CryptoError::Keyring("key derivation failed"))?;
        let mut body = self.encode();
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, body.as_mut_slice())
            .map_err(|_| CryptoError::Keyring("sealing the keyring failed"))?;
        let mut sealed = body.to_vec();
        sealed.extend_from_slice(&tag);
        Ok(SealedKeyring {
            format: FORMAT.to_owned(),
            version: FILE_VERSION,
            kdf,
            nonce: STANDARD.encode(nonce),
            sealed: STANDARD.encode(sealed),
        })
    }

    /// The plaintext layout, allocated once at its final size:
    /// magic, fingerprint key, audit key, active version, count, then per version:
    /// version, state, created_at, has-key flag and the key if present.
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let per_version = 4 + 1 + 8 + 1 + 32;
        let size = MAGIC.len() + 64 + 4 + 4 + per_version * self.versions.len();
        let mut out = Zeroizing::new(Vec::with_capacity(size));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(self.fingerprint_key.expose_secret());
        out.extend_from_slice(self.audit_key.expose_secret());
        out.extend_from_slice(&self.active.to_be_bytes());
        out.extend_from_slice(&(self.versions.len() as u32).to_be_bytes());
        for v in self.versions.values() {
            out.extend_from_slice(&v.version.to_be_bytes());
            out.push(v.state.code());
            out.extend_from_slice(&v.created_at.to_be_bytes());
            match &v.key {
                Some(key) => {
                    out.push(1);
                    out.extend_from_slice(key.expose_secret());
                }
                None => out.push(0),
            }
        }
        out
    }

    /// The plaintext parser, exposed to the fuzz targets only.
    #[doc(hidden)]
    pub fn decode_for_fuzzing(bytes: &[u8]) -> Result<Keyring, CryptoError> {
        Self::decode(bytes)
    }

    fn decode(bytes: &[u8]) -> Result<Keyring, CryptoError> {
        const BAD: CryptoError = CryptoError::Keyring("the keyring's contents are malformed");
        let mut r = Reader(bytes);
        if r.take(4).ok_or(BAD)? != MAGIC {
            return Err(BAD);
        }
        let fingerprint_key = KeyBytes::from_slice(r.take(32).ok_or(BAD)?).ok_or(BAD)?;
        let audit_key = KeyBytes::from_slice(r.take(32).ok_or(BAD)?).ok_or(BAD)?;
        let active = r.u32().ok_or(BAD)?;
        let count = r.u32().ok_or(BAD)?;
        let mut versions = BTreeMap::new();
        for _ in 0..count {
            let version = r.u32().ok_or(BAD)?;
            let state = KekState::from_code(r.u8().ok_or(BAD)?).ok_or(BAD)?;
            let created_at = r.i64().ok_or(BAD)?;
            let key = match r.u8().ok_or(BAD)? {
                0 => None,
                1 => Some(KeyBytes::from_slice(r.take(32).ok_or(BAD)?).ok_or(BAD)?),
                _ => return Err(BAD),
            };
            versions.insert(version, KekVersion::new(version, state, created_at, key));
        }
        if !r.0.is_empty() || versions.get(&active).is_none_or(|v| v.cipher.is_none()) {
            return Err(BAD);
        }
        Ok(Keyring {
            versions,
            active,
            fingerprint_key,
            audit_key,
        })
    }

    #[cfg(test)]
    pub fn generate_for_tests() -> Keyring {
        match Keyring::generate(0) {
            Ok(ring) => ring,
            Err(e) => unreachable!("the OS RNG works in tests: {e}"),
        }
    }

    #[cfg(test)]
    pub fn rotate_for_tests(&mut self) -> Result<u32, CryptoError> {
        self.rotate(1)
    }
}

fn self_test(kek: &KekVersion) -> Result<(), CryptoError> {
    const FAILED: CryptoError = CryptoError::Keyring("the new key failed its self-test");
    let cipher = kek.cipher().ok_or(FAILED)?;
    let nonce = [0u8; 12];
    let mut block = *b"tokenvault self-test block 32 B!";
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"self-test", &mut block)
        .map_err(|_| FAILED)?;
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(&nonce), b"self-test", &mut block, &tag)
        .map_err(|_| FAILED)?;
    if &block != b"tokenvault self-test block 32 B!" {
        return Err(FAILED);
    }
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The Argon2id-derived key that seals a keyring file, kept by the daemon so that a
/// rotation can re-seal without the passphrase. Wiped on drop, never printed.
pub struct SealingKey {
    key: Zeroizing<[u8; 32]>,
    salt: String,
    params: KdfParams,
}

impl SealingKey {
    /// The salt it was derived with: a keyring file with another salt was re-sealed
    /// under another passphrase meanwhile.
    pub fn salt(&self) -> &str {
        &self.salt
    }
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey([REDACTED])")
    }
}

/// Argon2id cost parameters, stored in the keyring header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            memory_kib: MIN_MEMORY_KIB,
            iterations: MIN_ITERATIONS,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    fn check(&self) -> Result<(), CryptoError> {
        if self.memory_kib < MIN_MEMORY_KIB || self.iterations < MIN_ITERATIONS {
            return Err(CryptoError::Keyring(
                "the keyring's Argon2id parameters are below 64 MiB and 3 passes",
            ));
        }
        if self.memory_kib > MAX_MEMORY_KIB || self.iterations > MAX_ITERATIONS || !(1..=16).contains(&self.parallelism)
        {
            return Err(CryptoError::Keyring(
                "the keyring's Argon2id parameters are out of range",
            ));
        }
        Ok(())
    }
}

fn derive(passphrase: &Passphrase, salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    const FAILED: CryptoError = CryptoError::Keyring("Argon2id key derivation failed");
    let argon_params =
        Params::new(params.memory_kib, params.iterations, params.parallelism, Some(32)).map_err(|_| FAILED)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.expose_secret().as_bytes(), salt, key.as_mut_slice())
        .map_err(|_| FAILED)?;
    Ok(key)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfHeader {
    algorithm: String,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    salt: String,
}

struct Header<'a> {
    format: &'a str,
    version: u32,
    kdf: &'a KdfHeader,
}

impl Header<'_> {
    fn aad(&self) -> Vec<u8> {
        format!(
            "{}/{}/{}/m={}/t={}/p={}/salt={}",
            self.format,
            self.version,
            self.kdf.algorithm,
            self.kdf.memory_kib,
            self.kdf.iterations,
            self.kdf.parallelism,
            self.kdf.salt
        )
        .into_bytes()
    }
}

/// The keyring as stored on disk: public header, sealed body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedKeyring {
    format: String,
    version: u32,
    kdf: KdfHeader,
    nonce: String,
    sealed: String,
}

impl SealedKeyring {
    fn header(&self) -> Header<'_> {
        Header {
            format: &self.format,
            version: self.version,
            kdf: &self.kdf,
        }
    }
}

const UNSEAL_FAILED: &str = "the keyring cannot be unsealed: the passphrase is wrong or the keyring file was modified";

impl SealedKeyring {
    pub fn parse(text: &str) -> Result<SealedKeyring, CryptoError> {
        let sealed: SealedKeyring = serde_json::from_str(text)
            .map_err(|_| CryptoError::Keyring("the keyring file is not a tokenvault keyring"))?;
        if sealed.format != FORMAT || sealed.version != FILE_VERSION {
            return Err(CryptoError::Keyring(
                "the keyring file has an unknown format or version",
            ));
        }
        if sealed.kdf.algorithm != "argon2id" {
            return Err(CryptoError::Keyring("the keyring file names an unsupported KDF"));
        }
        Ok(sealed)
    }

    pub fn read(path: &Path) -> Result<SealedKeyring, CryptoError> {
        let text = std::fs::read_to_string(path)?;
        SealedKeyring::parse(&text)
    }

    pub fn kdf_params(&self) -> KdfParams {
        KdfParams {
            memory_kib: self.kdf.memory_kib,
            iterations: self.kdf.iterations,
            parallelism: self.kdf.parallelism,
        }
    }

    /// Derives the sealing key with Argon2id and opens the keyring. A wrong
    /// passphrase and an edited file give the same error.
    pub fn unseal(&self, passphrase: &Passphrase) -> Result<Keyring, CryptoError> {
        self.unseal_keeping_key(passphrase).map(|(ring, _)| ring)
    }

    pub fn salt(&self) -> &str {
        &self.kdf.salt
    }

    /// Like `unseal`, also returning the derived sealing key for later re-seals.
    pub fn unseal_keeping_key(&self, passphrase: &Passphrase) -> Result<(Keyring, SealingKey), CryptoError> {
        let params = self.kdf_params();
        params.check()?;
        let salt = STANDARD
            .decode(&self.kdf.salt)
            .map_err(|_| CryptoError::Keyring(UNSEAL_FAILED))?;
        let nonce = STANDARD
            .decode(&self.nonce)
            .map_err(|_| CryptoError::Keyring(UNSEAL_FAILED))?;
        let mut body = Zeroizing::new(
            STANDARD
                .decode(&self.sealed)
                .map_err(|_| CryptoError::Keyring(UNSEAL_FAILED))?,
        );
        if nonce.len() != 12 || body.len() < 16 || salt.len() < 16 {
            return Err(CryptoError::Keyring(UNSEAL_FAILED));
        }
        let key = derive(passphrase, &salt, params)?;
        let cipher = Aes256Gcm::new_from_slice(key.as_slice()).map_err(|_| CryptoError::Keyring(UNSEAL_FAILED))?;
        let tag_at = body.len() - 16;
        let tag = Tag::clone_from_slice(body.get(tag_at..).unwrap_or_default());
        body.truncate(tag_at);
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                &self.header().aad(),
                body.as_mut_slice(),
                &tag,
            )
            .map_err(|_| CryptoError::Keyring(UNSEAL_FAILED))?;
        let ring = Keyring::decode(&body)?;
        let sealing = SealingKey {
            key,
            salt: self.kdf.salt.clone(),
            params,
        };
        Ok((ring, sealing))
    }

    /// Writes the file atomically: a temporary file beside it (mode 0600), fsync,
    /// rename over the old one, fsync of the directory.
    pub fn write(&self, path: &Path) -> Result<(), CryptoError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|_| CryptoError::Keyring("the keyring could not be serialised"))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension("sealed.tmp");
        {
            let mut file = open_private(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(s: &str) -> Passphrase {
        Passphrase::copy_from(s)
    }

    fn sealed() -> (Keyring, SealedKeyring) {
        let ring = Keyring::generate_for_tests();
        match ring.seal(&pass("correct horse"), KdfParams::default()) {
            Ok(sealed) => (ring, sealed),
            Err(e) => unreachable!("sealing works: {e}"),
        }
    }

    #[test]
    fn seal_unseal_round_trip_through_text() {
        let (ring, sealed) = sealed();
        let text = serde_json::to_string(&sealed).unwrap_or_default();
        let opened = SealedKeyring::parse(&text).and_then(|s| s.unseal(&pass("correct horse")));
        let Ok(opened) = opened else {
            unreachable!("unseal works")
        };
        assert_eq!(opened.active_version(), 1);
        assert_eq!(
            opened.fingerprint_key().expose_secret(),
            ring.fingerprint_key().expose_secret()
        );
        assert!(!text.contains("correct horse"));
    }

    #[test]
    fn wrong_passphrase_and_edits_refuse() {
        let (_, sealed) = sealed();
        assert!(sealed.unseal(&pass("wrong")).is_err());
        let mut edited = sealed.clone();
        edited.kdf.iterations = 4;
        assert!(edited.unseal(&pass("correct horse")).is_err());
        let mut weakened = sealed.clone();
        weakened.kdf.memory_kib = 1024;
        assert!(weakened.unseal(&pass("correct horse")).is_err());
        let mut flipped = sealed;
        let mut body = STANDARD.decode(&flipped.sealed).unwrap_or_default();
        if let Some(b) = body.get_mut(5) {
            *b ^= 1;
        }
        flipped.sealed = STANDARD.encode(body);
        assert!(flipped.unseal(&pass("correct horse")).is_err());
    }

    #[test]
    fn garbage_files_are_errors_not_panics() {
        for text in ["", "{}", "null", "{\"format\":1}", "[1,2,3]"] {
            assert!(SealedKeyring::parse(text).is_err());
        }
        assert!(Keyring::decode(b"TVKR").is_err());
        assert!(Keyring::decode(&[0u8; 200]).is_err());
    }

    #[test]
    fn rotate_and_retire() {
        let mut ring = Keyring::generate_for_tests();
        assert_eq!(ring.rotate(5).ok(), Some(2));
        assert_eq!(ring.kek(1).map(|v| v.state), Some(KekState::DecryptOnly));
        assert!(ring.retire(2).is_err());
        assert!(ring.retire(1).is_ok());
        assert!(ring.kek(1).is_some_and(|v| v.cipher().is_none()));
        let encoded = ring.encode();
        let Ok(decoded) = Keyring::decode(&encoded) else {
            unreachable!("decode works")
        };
        assert_eq!(decoded.kek(1).map(|v| v.state), Some(KekState::Retired));
        assert!(decoded.kek(1).is_some_and(|v| v.cipher().is_none()));
    }
}
