//! Certificate generation (rcgen): the development PKI of `serve --dev` and
//! `dev-pki`, and the certificates end-to-end tests need (expired ones, other CAs,
//! intermediates). Keys are ECDSA P-256. Nothing here is used in a production start.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// What a leaf certificate may be used for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    ClientAndServer,
    /// No extended key usage extension at all.
    Unrestricted,
}

#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub uris: Vec<String>,
    pub usage: Usage,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// A fixed serial number (to revoke it in a CRL); random when `None`.
    pub serial: Option<u64>,
}

impl LeafSpec {
    /// A client certificate valid from an hour ago for a year, with `uri` as SAN URI
    /// when given.
    pub fn client(common_name: &str, uri: Option<&str>) -> LeafSpec {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: common_name.to_owned(),
            dns: vec![],
            ips: vec![],
            uris: uri.map(str::to_owned).into_iter().collect(),
            usage: Usage::Client,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(365),
            serial: None,
        }
    }

    /// A server certificate for localhost and the loopback addresses.
    pub fn localhost_server() -> LeafSpec {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: "localhost".to_owned(),
            dns: vec!["localhost".to_owned()],
            ips: vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])],
            uris: vec![],
            usage: Usage::Server,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(825),
            serial: None,
        }
    }
}

/// A certificate and its private key, PEM-encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

/// A certificate authority that can issue leaves and intermediates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn ca_params(name: &str) -> Result<CertificateParams, rcgen::Error> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    Ok(params)
}

impl Ca {
    /// A new self-signed root.
    pub fn new(name: &str) -> Result<Ca, PkiError> {
        let issuer = CertifiedIssuer::self_signed(ca_params(name)?, KeyPair::generate()?)?;
        Ok(Ca { issuer })
    }

    /// A new intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> Result<Ca, PkiError> {
        let issuer = CertifiedIssuer::signed_by(ca_params(name)?, KeyPair::generate()?, &self.issuer)?;
        Ok(Ca { issuer })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A CRL (PEM) from this CA revoking the given serial numbers.
    pub fn crl(&self, revoked: &[u64]) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(7),
            crl_number: rcgen::SerialNumber::from(now.unix_timestamp().unsigned_abs()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*serial),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(spec.dns.clone())?;
        for ip in &spec.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for uri in &spec.uris {
            params.subject_alt_names.push(SanType::URI(uri.as_str().try_into()?));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.common_name.as_str());
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match spec.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ClientAndServer => vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Unrestricted => vec![],
        };
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = spec.serial.map(rcgen::SerialNumber::from);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }
}

/// The dev client identities: file stem, SAN URI.
pub const DEV_CLIENTS: [(&str, &str); 3] = [
    ("checkout", "spiffe://dev.tokenvault/checkout"),
    ("gateway", "spiffe://dev.tokenvault/gateway"),
    ("security", "spiffe://dev.tokenvault/security"),
];

/// Writes a development PKI into `dir`: `ca.pem`, `server.pem`/`server.key`, and
/// one pair per dev client. Private keys are written with mode 0600. The CA's key is
/// not kept: a dev PKI is regenerated, not extended.
pub fn write_dev_pki(dir: &Path) -> Result<(), PkiError> {
    let ca = Ca::new("tokenvault development CA")?;
    write(dir, "ca.pem", ca.cert_pem().as_bytes(), false)?;
    let server = ca.issue(&LeafSpec::localhost_server())?;
    write(dir, "server.pem", server.cert_pem.as_bytes(), false)?;
    write(dir, "server.key", server.key_pem.as_bytes(), true)?;
    for (name, uri) in DEV_CLIENTS {
        let leaf = ca.issue(&LeafSpec::client(name, Some(uri)))?;
        write(dir, &format!("{name}.pem"), leaf.cert_pem.as_bytes(), false)?;
        write(dir, &format!("{name}.key"), leaf.key_pem.as_bytes(), true)?;
    }
    Ok(())
}

/// Writes `bytes` to `dir/name`, creating `dir`; private files get mode 0600.
pub fn write(dir: &Path, name: &str, bytes: &[u8], private: bool) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let io = |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}
