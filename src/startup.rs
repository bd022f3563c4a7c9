//! What a start needs before it can serve: the passphrase, the unsealed keyring,
//! the development files of `serve --dev`, and the file-descriptor limit.

use std::path::Path;

use crate::config::{Config, PassphraseSource};
use crate::crypto::{CryptoError, KdfParams, Keyring, SealedKeyring, SealingKey};
use crate::pki::{write_dev_pki, PkiError};
use crate::secret::Passphrase;

/// The fixed passphrase of development keyrings. A non-dev start refuses it.
pub const DEV_PASSPHRASE: &str = "tokenvault-development-passphrase-do-not-use";
pub const PASSPHRASE_ENV: &str = "TOKENVAULT_PASSPHRASE";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("passphrase: {0}")]
    Passphrase(String),
    #[error("keyring {path}: {source}")]
    Keyring { path: String, source: CryptoError },
    #[error(transparent)]
    Pki(#[from] PkiError),
}

fn from_env(name: &str) -> Option<Passphrase> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| Passphrase::new(v.into_boxed_str()))
}

/// Reads the passphrase from its configured source.
pub fn read_passphrase(source: &PassphraseSource) -> Result<Passphrase, StartupError> {
    let passphrase = match source {
        PassphraseSource::File(path) => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| StartupError::Passphrase(format!("{}: {e}", path.display())))?,
            );
            Passphrase::copy_from(text.trim_end_matches(['\n', '\r']))
        }
        PassphraseSource::Env(name) => {
            from_env(name).ok_or_else(|| StartupError::Passphrase(format!("environment variable {name} is not set")))?
        }
        PassphraseSource::Default => match from_env(PASSPHRASE_ENV) {
            Some(p) => p,
            None => rpassword::prompt_password("keyring passphrase: ")
                .map(|p| Passphrase::new(p.into_boxed_str()))
                .map_err(|e| StartupError::Passphrase(format!("no {PASSPHRASE_ENV} and no terminal to ask ({e})")))?,
        },
        PassphraseSource::Dev => match from_env(PASSPHRASE_ENV) {
            Some(p) => p,
            None => {
                tracing::warn!("using the fixed development passphrase; set {PASSPHRASE_ENV} to choose one");
                Passphrase::copy_from(DEV_PASSPHRASE)
            }
        },
    };
    if passphrase.expose_secret().is_empty() {
        return Err(StartupError::Passphrase("the passphrase is empty".into()));
    }
    let is_dev_default = passphrase.expose_secret() == DEV_PASSPHRASE;
    if is_dev_default && *source != PassphraseSource::Dev {
        return Err(StartupError::Passphrase(
            "the development passphrase is refused outside --dev".into(),
        ));
    }
    Ok(passphrase)
}

/// Creates a new sealed keyring at `path`; refuses to overwrite one.
pub fn init_keyring(path: &Path, passphrase: &Passphrase) -> Result<(), StartupError> {
    let err = |source| StartupError::Keyring {
        path: path.display().to_string(),
        source,
    };
    if path.exists() {
        return Err(err(CryptoError::Keyring(
            "a keyring already exists there; it is not overwritten",
        )));
    }
    let ring = Keyring::generate(time::OffsetDateTime::now_utc().unix_timestamp()).map_err(err)?;
    ring.seal(passphrase, KdfParams::default())
        .and_then(|s| s.write(path))
        .map_err(err)
}

/// Reads and unseals the keyring (Argon2id: a few hundred milliseconds, start-up
/// only), keeping the derived sealing key for re-seals after rotations.
pub fn unseal_keyring(path: &Path, passphrase: &Passphrase) -> Result<(Keyring, SealingKey), StartupError> {
    let err = |source| StartupError::Keyring {
        path: path.display().to_string(),
        source,
    };
    SealedKeyring::read(path)
        .and_then(|s| s.unseal_keeping_key(passphrase))
        .map_err(err)
}

/// Creates whatever of the development PKI and keyring is missing, so that a second
/// `serve --dev` reuses everything.
pub fn prepare_dev(config: &Config, passphrase: &Passphrase) -> Result<(), StartupError> {
    let tls = &config.tls;
    let dir = tls.client_ca.parent().unwrap_or(Path::new("."));
    let pki_files = [&tls.cert, &tls.key, &tls.client_ca];
    let clients_present = crate::pki::DEV_CLIENTS
        .iter()
        .all(|(name, _)| dir.join(format!("{name}.pem")).exists() && dir.join(format!("{name}.key")).exists());
    if !clients_present || pki_files.iter().any(|p| !p.exists()) {
        tracing::info!(dir = %dir.display(), "creating the development PKI");
        write_dev_pki(dir)?;
    }
    if !config.keyring.exists() {
        tracing::info!(path = %config.keyring.display(), "creating the development keyring");
        init_keyring(&config.keyring, passphrase)?;
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard limit and returns how many files
/// RocksDB may keep open (the rest is left for sockets and the WAL).
pub fn raise_fd_limit() -> i32 {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    let target = hard.min(1 << 20);
    let limit = if target > soft && rlimit::setrlimit(rlimit::Resource::NOFILE, target, hard).is_ok() {
        target
    } else {
        soft
    };
    let for_rocks = limit / 2;
    if for_rocks < 256 {
        tracing::warn!(limit, "the open-file limit is low; raise it (LimitNOFILE)");
    }
    i32::try_from(for_rocks.max(64)).unwrap_or(i32::MAX)
}
