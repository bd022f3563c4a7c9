//! Configuration: the TOML file is parsed into `RawConfig` (unknown keys are errors
//! that name them) and resolved into a typed `Config` in one step. Secrets are never
//! in the file, only where to read them. `Config::dev()` is the embedded default of
//! `serve --dev`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{Client, ClientTable, Role};
use crate::pki::DEV_CLIENTS;
use crate::tls::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    data_dir: PathBuf,
    keyring: PathBuf,
    passphrase_file: Option<PathBuf>,
    passphrase_env: Option<String>,
    backup_dir: Option<PathBuf>,
    /// Optional plain-HTTP listener for `GET /metrics`, loopback addresses only.
    metrics_listen: Option<String>,
    /// `text` (default) or `json`.
    #[serde(default)]
    log_format: LogFormat,
    tls: RawTls,
    #[serde(default)]
    clients: Vec<RawClient>,
    #[serde(default)]
    limits: Limits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    #[serde(default)]
    crl: Vec<PathBuf>,
    #[serde(default)]
    tls12: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    identity: String,
    roles: Vec<Role>,
    tenants: Vec<String>,
}

/// Bounds and defaults, all overridable in `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body of single-item endpoints.
    pub max_body_bytes: usize,
    /// Largest request body of the batch endpoints.
    pub max_batch_body_bytes: usize,
    /// How often the purge of expired tokens and idempotency keys runs.
    pub purge_interval_ms: u64,
    /// Records per durable batch of the background rewrap.
    pub rewrap_batch: usize,
    /// Pause between rewrap batches, leaving the writer to live traffic.
    pub rewrap_pause_ms: u64,
    /// Data keys one key version may wrap before tokenize refuses (rotate).
    pub max_wraps_per_key: u64,
    /// How long a CVC is kept for its first detokenize (at most 600 s).
    pub cvc_ttl_seconds: u64,
    pub handshake_timeout_ms: u64,
    pub header_timeout_ms: u64,
    pub body_timeout_ms: u64,
    /// An HTTP/2 connection with no request in flight for this long is closed
    /// (GOAWAY); HTTP/1.1 idles out by `header_timeout_ms`.
    pub idle_timeout_ms: u64,
    /// Any connection older than this is drained (GOAWAY) and closed: clients
    /// reconnect, and a certificate is checked again at least this often.
    pub max_connection_age_ms: u64,
    /// Request bodies held in memory at once, all connections together; a body
    /// that would exceed it is refused with 503.
    pub max_buffered_body_bytes: usize,
    pub max_connections: usize,
    pub max_h2_streams: u32,
    pub shutdown_grace_ms: u64,
    /// Requests per second each client identity may make (token bucket); 0: off.
    pub rate_per_second: f64,
    /// Bucket size: how many requests an identity may make at once.
    pub rate_burst: f64,
    /// After SIGTERM, how long `/readyz` answers 503 while requests are still
    /// served, so that load balancers stop sending before connections close.
    pub drain_delay_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_batch_body_bytes: 4 * 1024 * 1024,
            purge_interval_ms: 60_000,
            rewrap_batch: 1000,
            rewrap_pause_ms: 2,
            max_wraps_per_key: 1 << 30,
            cvc_ttl_seconds: 600,
            handshake_timeout_ms: 10_000,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_connection_age_ms: 3_600_000,
            max_buffered_body_bytes: 256 * 1024 * 1024,
            max_connections: 4096,
            max_h2_streams: 128,
            shutdown_grace_ms: 10_000,
            drain_delay_ms: 0,
            rate_per_second: 20_000.0,
            rate_burst: 40_000.0,
        }
    }
}

impl Limits {
    pub fn cvc_ttl(&self) -> time::Duration {
        time::Duration::seconds(i64::try_from(self.cvc_ttl_seconds.min(600)).unwrap_or(600))
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    pub fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where the keyring passphrase comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassphraseSource {
    File(PathBuf),
    Env(String),
    /// `TOKENVAULT_PASSPHRASE`, else an interactive prompt.
    Default,
    /// `TOKENVAULT_PASSPHRASE`, else the fixed development passphrase.
    Dev,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub keyring: PathBuf,
    pub passphrase: PassphraseSource,
    pub backup_dir: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub tls: TlsFiles,
    pub clients: ClientTable,
    pub limits: Limits,
    pub dev: bool,
}

fn valid_tenant(t: &str) -> bool {
    (1..=64).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Config {
    /// Reads and resolves a config file. Relative paths in it are relative to the
    /// working directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file_error = |reason: String| ConfigError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Invalid(reason) => file_error(reason),
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        // toml's messages name the unknown key and its line, never a secret: the file
        // holds none.
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Invalid(e.message().to_owned()))?;
        Config::resolve(raw)
    }

    fn resolve(raw: RawConfig) -> Result<Config, ConfigError> {
        let listen = raw
            .listen
            .parse()
            .map_err(|_| ConfigError::Invalid(format!("listen: '{}' is not an address:port", raw.listen)))?;
        let passphrase = match (raw.passphrase_file, raw.passphrase_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "set passphrase_file or passphrase_env, not both".into(),
                ))
            }
            (Some(file), None) => PassphraseSource::File(file),
            (None, Some(env)) => PassphraseSource::Env(env),
            (None, None) => PassphraseSource::Default,
        };
        let metrics_listen = match raw.metrics_listen {
            None => None,
            Some(text) => {
                let addr: SocketAddr = text
                    .parse()
                    .map_err(|_| ConfigError::Invalid(format!("metrics_listen: '{text}' is not an address:port")))?;
                if !addr.ip().is_loopback() {
                    return Err(ConfigError::Invalid(
                        "metrics_listen must be a loopback address: it has no TLS".into(),
                    ));
                }
                Some(addr)
            }
        };
        let mut seen = BTreeSet::new();
        let mut clients = Vec::new();
        for c in raw.clients {
            if c.identity.is_empty() || !seen.insert(c.identity.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "clients: identity '{}' is empty or listed twice",
                    c.identity
                )));
            }
            if c.roles.is_empty() || c.tenants.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "clients: '{}' needs at least one role and one tenant",
                    c.identity
                )));
            }
            if let Some(bad) = c.tenants.iter().find(|t| !valid_tenant(t)) {
                return Err(ConfigError::Invalid(format!(
                    "clients: tenant '{bad}' must be 1-64 letters, digits, '-', '_' or '.'"
                )));
            }
            clients.push(Client {
                identity: c.identity,
                roles: c.roles.into_iter().collect(),
                tenants: c.tenants,
            });
        }
        if raw.limits.max_connections == 0 || raw.limits.max_body_bytes == 0 {
            return Err(ConfigError::Invalid("limits must be greater than zero".into()));
        }
        Ok(Config {
            listen,
            data_dir: raw.data_dir,
            keyring: raw.keyring,
            passphrase,
            backup_dir: raw.backup_dir,
            metrics_listen,
            log_format: raw.log_format,
            tls: TlsFiles {
                cert: raw.tls.cert,
                key: raw.tls.key,
                client_ca: raw.tls.client_ca,
                crl: raw.tls.crl,
                tls12: raw.tls.tls12,
            },
            clients: ClientTable::new(clients),
            limits: raw.limits,
            dev: false,
        })
    }

    /// The embedded default of `serve --dev`: loopback, files under `keys/dev/` and
    /// `data/dev/` relative to the working directory, three dev clients in tenant `dev`.
    pub fn dev() -> Config {
        let keys = PathBuf::from("keys/dev");
        let roles: [&[Role]; 3] = [&[Role::Tokenize], &[Role::Detokenize], &[Role::Keys, Role::Audit]];
        let clients = DEV_CLIENTS
            .iter()
            .zip(roles)
            .map(|((_, uri), roles)| Client {
                identity: (*uri).to_owned(),
                roles: roles.iter().copied().collect(),
                tenants: vec!["dev".to_owned()],
            })
            .collect();
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            data_dir: PathBuf::from("data/dev"),
            keyring: keys.join("keyring.sealed"),
            passphrase: PassphraseSource::Dev,
            backup_dir: Some(PathBuf::from("data/dev-backups")),
            metrics_listen: None,
            log_format: LogFormat::Text,
            tls: TlsFiles {
                cert: keys.join("server.pem"),
                key: keys.join("server.key"),
                client_ca: keys.join("ca.pem"),
                crl: vec![],
                tls12: false,
            },
            clients: ClientTable::new(clients),
            limits: Limits::default(),
            dev: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:9443"
data_dir = "/var/lib/tokenvault"
keyring = "/etc/tokenvault/keyring.sealed"
passphrase_env = "TV_PASS"

[tls]
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"

[[clients]]
identity = "spiffe://shop.example/checkout"
roles = ["tokenize"]
tenants = ["shop-eu", "shop-us"]

[limits]
cvc_ttl_seconds = 60
"#;

    #[test]
    fn parses_the_spec_shape() {
        let Ok(config) = Config::parse(GOOD) else {
            unreachable!("parses")
        };
        assert_eq!(config.listen.port(), 9443);
        assert_eq!(config.passphrase, PassphraseSource::Env("TV_PASS".into()));
        let client = config.clients.find("spiffe://shop.example/checkout");
        assert_eq!(client.map(|c| c.tenants.len()), Some(2));
        assert_eq!(config.limits.cvc_ttl_seconds, 60);
        assert_eq!(config.limits.max_body_bytes, 64 * 1024);
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = GOOD.replace("[limits]", "[limits]\nmax_bodee = 1");
        let err = Config::parse(&text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("max_bodee"), "{err}");
        let text = format!("colour = \"blue\"\n{GOOD}");
        let err = Config::parse(&text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn bad_tenants_and_roles_are_refused() {
        assert!(Config::parse(&GOOD.replace("shop-us", "shop us")).is_err());
        assert!(Config::parse(&GOOD.replace("[\"tokenize\"]", "[\"root\"]")).is_err());
        assert!(Config::parse(&GOOD.replace("127.0.0.1:9443", "nowhere")).is_err());
    }

    #[test]
    fn metrics_listener_must_be_loopback() {
        let ok = GOOD.replace("passphrase_env", "metrics_listen = \"127.0.0.1:9464\"\npassphrase_env");
        assert!(Config::parse(&ok).is_ok_and(|c| c.metrics_listen.is_some()));
        let open = GOOD.replace("passphrase_env", "metrics_listen = \"0.0.0.0:9464\"\npassphrase_env");
        assert!(Config::parse(&open).is_err());
    }

    #[test]
    fn the_example_configuration_parses() {
        let text = include_str!("../contrib/tokenvault.example.toml");
        assert!(Config::parse(text).is_ok());
    }

    #[test]
    fn dev_config_has_three_clients() {
        let dev = Config::dev();
        assert!(dev.dev);
        for (_, uri) in DEV_CLIENTS {
            assert!(dev.clients.find(uri).is_some());
        }
    }
}
