//! The operator's offline commands: `check-config` (validate a configuration and
//! every file it names without starting) and `restore` (make a data directory from
//! a backup).

use std::path::Path;

use crate::config::Config;
use crate::crypto::SealedKeyring;
use crate::store::RocksStore;
use crate::tls::{load_certs, load_key, load_roots, server_config};

/// One checked item: what, and either what was found or why it is broken.
pub struct Check {
    pub item: String,
    pub result: Result<String, String>,
}

fn writable(dir: &Path) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let probe = dir.join(".tokenvault-write-test");
    std::fs::write(&probe, b"ok").map_err(|e| format!("{}: not writable ({e})", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(format!("{} is writable", dir.display()))
}

/// Checks a configuration file and everything it points to. The first item is the
/// file itself; when it does not parse, nothing else can be checked.
pub fn check_config(path: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    let config = match Config::load(path) {
        Ok(config) => {
            checks.push(Check {
                item: "config".into(),
                result: Ok(format!("{} parses", path.display())),
            });
            config
        }
        Err(e) => {
            checks.push(Check {
                item: "config".into(),
                result: Err(e.to_string()),
            });
            return checks;
        }
    };
    let tls = &config.tls;
    let certs = load_certs(&tls.cert).map(|c| format!("{}: {} certificate(s)", tls.cert.display(), c.len()));
    checks.push(Check {
        item: "tls.cert".into(),
        result: certs.map_err(|e| e.to_string()),
    });
    let key = load_key(&tls.key).map(|_| format!("{}: a private key", tls.key.display()));
    checks.push(Check {
        item: "tls.key".into(),
        result: key.map_err(|e| e.to_string()),
    });
    let ca = load_roots(&tls.client_ca).map(|r| format!("{}: {} CA certificate(s)", tls.client_ca.display(), r.len()));
    checks.push(Check {
        item: "tls.client_ca".into(),
        result: ca.map_err(|e| e.to_string()),
    });
    if checks.iter().all(|c| c.result.is_ok()) {
        // Together: the key matches the certificate, the CRLs parse, the policy builds.
        let built = server_config(tls).map(|_| "the key matches the certificate; CRLs and policy load".to_owned());
        checks.push(Check {
            item: "tls".into(),
            result: built.map_err(|e| e.to_string()),
        });
    }
    let keyring = SealedKeyring::read(&config.keyring)
        .map(|_| {
            format!(
                "{}: a sealed keyring (the passphrase is not checked)",
                config.keyring.display()
            )
        })
        .map_err(|e| format!("{}: {e}", config.keyring.display()));
    checks.push(Check {
        item: "keyring".into(),
        result: keyring,
    });
    checks.push(Check {
        item: "data_dir".into(),
        result: writable(&config.data_dir),
    });
    if let Some(dir) = &config.backup_dir {
        checks.push(Check {
            item: "backup_dir".into(),
            result: writable(dir),
        });
    }
    checks
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(to)?;
    let mut n = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            n += copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            std::fs::File::open(&target)?.sync_all()?;
            n += 1;
        }
    }
    std::fs::File::open(to)?.sync_all()?;
    Ok(n)
}

/// Copies a backup into a new data directory and checks that it opens. Refuses a
/// target that exists and is not empty. Returns the number of records it holds.
pub fn restore(from: &Path, to: &Path) -> Result<u64, String> {
    if to.exists() && std::fs::read_dir(to).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(format!(
            "{} exists and is not empty; restore only into a new directory",
            to.display()
        ));
    }
    RocksStore::open_read_only(from).map_err(|e| format!("{} is not a readable backup: {e}", from.display()))?;
    copy_tree(from, to).map_err(|e| format!("copying into {}: {e}", to.display()))?;
    crate::store::owner_only(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let store = RocksStore::open_read_only(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let counts = crate::commit::KekCounts::load(&store).map_err(|e| e.to_string())?;
    Ok(counts.records())
}
