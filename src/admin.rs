//! The security team's command line: key status, rotation (with a progress bar),
//! retirement and passphrase change; audit verification and export, over mTLS
//! against a running daemon or offline on a data directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;

use crate::audit::{verify_store, Verdict};
use crate::client::{Client, ClientTls, Reply};
use crate::config::PassphraseSource;
use crate::crypto::KdfParams;
use crate::secret::Passphrase;
use crate::startup::{read_passphrase, unseal_keyring};
use crate::store::{RocksStore, Store, Table};

/// How to reach a daemon: URL and the client certificate to present.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Daemon URL.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    pub url: String,
    /// Client certificate (default: the dev security identity).
    #[arg(long, default_value = "keys/dev/security.pem")]
    pub cert: PathBuf,
    #[arg(long, default_value = "keys/dev/security.key")]
    pub key: PathBuf,
    /// CA that signed the server certificate.
    #[arg(long, default_value = "keys/dev/ca.pem")]
    pub ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the daemon: {0}")]
    Connect(String),
    #[error("the daemon answered {status}: {detail}")]
    Refused { status: u16, detail: String },
    #[error("{0}")]
    Local(String),
}

impl Connection {
    async fn open(&self) -> Result<Client, AdminError> {
        let rest = self
            .url
            .strip_prefix("https://")
            .ok_or_else(|| AdminError::Usage("--url must start with https://".into()))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let with_port = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_owned()
        } else {
            format!("{authority}:443")
        };
        let addr = tokio::net::lookup_host(with_port)
            .await
            .map_err(|e| AdminError::Connect(e.to_string()))?
            .next()
            .ok_or_else(|| AdminError::Connect(format!("{host} does not resolve")))?;
        let tls = ClientTls::from_files(&self.ca, &self.cert, &self.key)
            .map_err(|e| AdminError::Usage(format!("client certificate files: {e}")))?;
        let config = tls.config().map_err(|e| AdminError::Usage(e.to_string()))?;
        let name = if host.parse::<std::net::IpAddr>().is_ok() {
            "localhost"
        } else {
            host
        };
        Client::connect_named(addr, name, config)
            .await
            .map_err(|e| AdminError::Connect(e.to_string()))
    }
}

/// The value at a JSON pointer, `null` when absent.
fn at<'a>(value: &'a serde_json::Value, pointer: &str) -> &'a serde_json::Value {
    value.pointer(pointer).unwrap_or(&serde_json::Value::Null)
}

async fn call(client: &mut Client, method: Method, path: &str) -> Result<serde_json::Value, AdminError> {
    let reply: Reply = client
        .request(method, path, None)
        .await
        .map_err(|e| AdminError::Connect(e.to_string()))?;
    let json = reply.json();
    if reply.status >= 400 {
        let detail = at(&json, "/detail").as_str().unwrap_or("no detail").to_owned();
        return Err(AdminError::Refused {
            status: reply.status,
            detail,
        });
    }
    Ok(json)
}

fn print_status(status: &serde_json::Value) {
    println!("active version: {}", at(status, "/active_version"));
    println!(
        "{:>8}  {:<13}  {:<25}  {:>10}",
        "VERSION", "STATE", "CREATED", "RECORDS"
    );
    for v in at(status, "/versions").as_array().into_iter().flatten() {
        println!(
            "{:>8}  {:<13}  {:<25}  {:>10}",
            at(v, "/version").to_string(),
            at(v, "/state").as_str().unwrap_or("?"),
            at(v, "/created_at").as_str().unwrap_or("?"),
            at(v, "/records").to_string()
        );
    }
    let r = &at(status, "/rewrap");
    println!(
        "rewrap: {} ({} of {} records, {} records/s)",
        if at(r, "/running").as_bool() == Some(true) {
            "running"
        } else {
            "idle"
        },
        at(r, "/done"),
        at(r, "/total"),
        at(r, "/rate")
    );
}

fn output(json: &serde_json::Value, as_json: bool) {
    if as_json {
        println!("{json}");
    } else {
        print_status(json);
    }
}

pub async fn backup(conn: &Connection, as_json: bool) -> Result<(), AdminError> {
    let mut client = conn.open().await?;
    let info = call(&mut client, Method::POST, "/v1/backups").await?;
    if as_json {
        println!("{info}");
    } else {
        println!(
            "backup {} written to {} ({} records); back up the keyring separately",
            at(&info, "/name").as_str().unwrap_or("?"),
            at(&info, "/path").as_str().unwrap_or("?"),
            at(&info, "/records")
        );
    }
    Ok(())
}

pub async fn keys_status(conn: &Connection, as_json: bool) -> Result<(), AdminError> {
    let mut client = conn.open().await?;
    output(&call(&mut client, Method::GET, "/v1/keys").await?, as_json);
    Ok(())
}

pub async fn keys_rotate(conn: &Connection, wait: bool, as_json: bool) -> Result<(), AdminError> {
    let mut client = conn.open().await?;
    let mut status = call(&mut client, Method::POST, "/v1/keys/rotate").await?;
    if wait {
        let bar = indicatif::ProgressBar::new(at(&status, "/rewrap/total").as_u64().unwrap_or(0));
        if as_json {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar.set_style(
            indicatif::ProgressStyle::with_template("rewrap {bar:40} {pos}/{len} records ({per_sec})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        while at(&status, "/rewrap/running").as_bool() == Some(true) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            status = call(&mut client, Method::GET, "/v1/keys").await?;
            bar.set_length(at(&status, "/rewrap/total").as_u64().unwrap_or(0));
            bar.set_position(at(&status, "/rewrap/done").as_u64().unwrap_or(0));
        }
        bar.finish();
    }
    output(&status, as_json);
    Ok(())
}

pub async fn keys_retire(conn: &Connection, version: u32, as_json: bool) -> Result<(), AdminError> {
    let mut client = conn.open().await?;
    let status = call(&mut client, Method::POST, &format!("/v1/keys/{version}/retire")).await?;
    output(&status, as_json);
    Ok(())
}

/// Re-seals the keyring under a new passphrase (new salt); records are untouched.
/// A running daemon refuses later rotations until restarted with the new one.
pub fn change_passphrase(keyring: &Path, old: &PassphraseSource, new: &PassphraseSource) -> Result<(), AdminError> {
    let old = read_passphrase(old).map_err(|e| AdminError::Local(e.to_string()))?;
    let (ring, _) = unseal_keyring(keyring, &old).map_err(|e| AdminError::Local(e.to_string()))?;
    let new = read_passphrase(new).map_err(|e| AdminError::Local(e.to_string()))?;
    ring.seal(&new, KdfParams::default())
        .and_then(|sealed| sealed.write(keyring))
        .map_err(|e| AdminError::Local(format!("{}: {e}", keyring.display())))
}

/// Where the audit trail is read from.
pub enum AuditSource<'a> {
    Offline {
        data_dir: &'a Path,
        keyring: &'a Path,
        passphrase: Passphrase,
    },
    Online(&'a Connection),
}

/// Verifies the chain; returns whether it is whole.
pub async fn audit_verify(source: AuditSource<'_>, as_json: bool) -> Result<bool, AdminError> {
    let verdict: serde_json::Value = match source {
        AuditSource::Offline {
            data_dir,
            keyring,
            passphrase,
        } => {
            let (ring, _) = unseal_keyring(keyring, &passphrase).map_err(|e| AdminError::Local(e.to_string()))?;
            let store = RocksStore::open_read_only(data_dir).map_err(|e| AdminError::Local(e.to_string()))?;
            let verdict: Verdict =
                verify_store(&store, ring.audit_key()).map_err(|e| AdminError::Local(e.to_string()))?;
            serde_json::to_value(verdict).unwrap_or_default()
        }
        AuditSource::Online(conn) => {
            let mut client = conn.open().await?;
            call(&mut client, Method::GET, "/v1/audit/verify").await?
        }
    };
    let ok = at(&verdict, "/ok").as_bool() == Some(true);
    if as_json {
        println!("{verdict}");
    } else if ok {
        println!("audit chain whole: {} entries", at(&verdict, "/entries"));
    } else {
        println!(
            "audit chain broken at sequence number {}: {}",
            at(&verdict, "/first_bad_seq"),
            at(&verdict, "/reason").as_str().unwrap_or("?")
        );
    }
    Ok(ok)
}

/// Writes every entry as one JSON line, in sequence order.
pub async fn audit_export(source: AuditSource<'_>, out: &mut dyn Write) -> Result<u64, AdminError> {
    let io = |e: std::io::Error| AdminError::Local(e.to_string());
    let mut n = 0;
    match source {
        AuditSource::Offline { data_dir, .. } => {
            let store = RocksStore::open_read_only(data_dir).map_err(|e| AdminError::Local(e.to_string()))?;
            let mut from = Vec::new();
            loop {
                let page = store
                    .scan_from(Table::Audit, &from, 4096)
                    .map_err(|e| AdminError::Local(e.to_string()))?;
                for (_, bytes) in &page {
                    out.write_all(bytes).map_err(io)?;
                    out.write_all(b"\n").map_err(io)?;
                    n += 1;
                }
                match page.last() {
                    Some((last, _)) if page.len() == 4096 => {
                        from = last.clone();
                        from.push(0);
                    }
                    _ => break,
                }
            }
        }
        AuditSource::Online(conn) => {
            let mut client = conn.open().await?;
            let mut after = 0u64;
            loop {
                let page = call(&mut client, Method::GET, &format!("/v1/audit?after={after}&limit=1000")).await?;
                for entry in at(&page, "/entries").as_array().into_iter().flatten() {
                    writeln!(out, "{entry}").map_err(io)?;
                    n += 1;
                }
                match at(&page, "/next").as_u64() {
                    Some(next) => after = next,
                    None => break,
                }
            }
        }
    }
    Ok(n)
}
