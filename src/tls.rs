//! TLS: builds the rustls server configuration (mandatory client certificates
//! verified against the client CA, TLS 1.3, TLS 1.2 only when configured and then
//! only ECDHE with AEAD suites, ALPN h2 and http/1.1) and extracts the peer identity.
//! Nothing else.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS configuration rejected: {0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub crl: Vec<PathBuf>,
    pub tls12: bool,
}

/// The crypto provider of every TLS connection: ring, whose TLS 1.2 suites are all
/// ECDHE with AEAD ciphers.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file; an empty file is an error naming it.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "contains no certificate"));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, format!("no usable private key ({e})")))
}

fn load_crl(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    if bytes.starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(path, e))
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    }
}

pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| file_error(path, e))?;
    }
    Ok(roots)
}

/// Builds the server configuration from files, validating every one of them.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let chain = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let roots = load_roots(&files.client_ca)?;
    let mut crls = Vec::new();
    for path in &files.crl {
        crls.extend(load_crl(path)?);
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let versions: &[&rustls::SupportedProtocolVersion] = if files.tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| file_error(&files.key, format!("does not match the certificate ({e})")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // No session tickets: resumption state would outlive a CRL reload or key change.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The server configuration in force, replaced only by a validated new one: on
/// SIGHUP or when one of its files changes, the files are loaded and checked, and a
/// bad file keeps the old configuration (and says why in the log).
pub struct TlsReloader {
    files: TlsFiles,
    current: std::sync::RwLock<Arc<ServerConfig>>,
    stamp: std::sync::Mutex<Vec<Option<(std::time::SystemTime, u64)>>>,
    /// Counts successful reloads; open connections drain when it changes, so a
    /// certificate revoked by a new CRL loses the connections it already has.
    generation: tokio::sync::watch::Sender<u64>,
}

impl TlsReloader {
    pub fn new(files: TlsFiles) -> Result<TlsReloader, TlsError> {
        let config = server_config(&files)?;
        let stamp = Self::stamp_of(&files);
        Ok(TlsReloader {
            files,
            current: std::sync::RwLock::new(config),
            stamp: std::sync::Mutex::new(stamp),
            generation: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Changes after every successful reload.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn stamp_of(files: &TlsFiles) -> Vec<Option<(std::time::SystemTime, u64)>> {
        [&files.cert, &files.key, &files.client_ca]
            .into_iter()
            .chain(files.crl.iter())
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    /// Loads and validates the files again; publishes only a valid result.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = Self::stamp_of(&self.files);
        if let Ok(mut s) = self.stamp.lock() {
            *s = stamp;
        }
        let config = server_config(&self.files)?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = config;
        drop(current);
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
        Ok(())
    }

    /// True when a file's modification time or size changed since the last load.
    pub fn changed(&self) -> bool {
        let now = Self::stamp_of(&self.files);
        self.stamp.lock().map(|s| *s != now).unwrap_or(false)
    }
}

/// The identity of a verified client chain: its leaf's first SAN URI, else its first
/// SAN DNS name, else its subject common name.
pub fn peer_identity(chain: &[CertificateDer<'_>]) -> Option<String> {
    let leaf = chain.first()?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    let mut uri = None;
    let mut dns = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) if uri.is_none() => uri = Some(u.to_string()),
                GeneralName::DNSName(d) if dns.is_none() => dns = Some(d.to_string()),
                _ => {}
            }
        }
    }
    let cn = || {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    };
    uri.or(dns).or_else(cn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Ca, LeafSpec};

    fn der(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .filter_map(Result::ok)
            .collect()
    }

    #[test]
    fn identity_prefers_uri_then_dns_then_cn() {
        let Ok(ca) = Ca::new("test") else { unreachable!("ca") };
        let mut spec = LeafSpec::client("cn-name", Some("spiffe://x/y"));
        spec.dns = vec!["dns.example".into()];
        let issue = |spec: &LeafSpec| ca.issue(spec).map(|i| der(&i.cert_pem)).unwrap_or_default();
        assert_eq!(peer_identity(&issue(&spec)).as_deref(), Some("spiffe://x/y"));
        spec.uris.clear();
        assert_eq!(peer_identity(&issue(&spec)).as_deref(), Some("dns.example"));
        spec.dns.clear();
        assert_eq!(peer_identity(&issue(&spec)).as_deref(), Some("cn-name"));
        assert_eq!(peer_identity(&[]), None);
    }

    #[test]
    fn empty_chain_file_is_named() {
        let Ok(dir) = tempfile::tempdir() else {
            unreachable!("tempdir")
        };
        let path = dir.path().join("empty.pem");
        assert!(std::fs::write(&path, "").is_ok());
        let err = load_certs(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("empty.pem") && err.contains("no certificate"), "{err}");
    }
}
