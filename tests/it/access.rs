//! Who may connect and who may do what: handshake refusals, role refusals, unknown
//! identities and unknown tokens.

use http::Method;
use tokenvault::client::{Client, ClientTls};
use tokenvault::pki::{Ca, LeafSpec};

use crate::harness::{card_body, detokenize, get, post, TestVault};

async fn token(vault: &TestVault) -> String {
    let mut checkout = vault.client("checkout").await;
    let reply = post(&mut checkout, "/v1/tokens", &card_body("4111111111111111", None)).await;
    reply.json()["token"].as_str().unwrap().to_owned()
}

/// A connection attempt must fail during the handshake or on the first request
/// (TLS 1.3 reports the server's refusal of a client certificate after the
/// client's side of the handshake has finished).
async fn refused(vault: &TestVault, tls: ClientTls) {
    refused_config(vault, tls.config().unwrap()).await;
}

async fn refused_config(vault: &TestVault, config: std::sync::Arc<rustls::ClientConfig>) {
    match Client::connect(vault.addr, config).await {
        Err(_) => {}
        Ok(mut client) => {
            let reply = client.request(Method::GET, "/healthz", None).await;
            assert!(reply.is_err(), "request on a refused connection answered: {reply:?}");
        }
    }
}

#[tokio::test]
async fn handshake_without_client_certificate_is_refused() {
    let vault = TestVault::start();
    let mut tls = vault.pki.tls("checkout");
    tls.identity = None;
    refused(&vault, tls).await;
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let vault = TestVault::start();
    let other = Ca::new("someone else's CA").unwrap();
    let leaf = other
        .issue(&LeafSpec::client("checkout", Some("spiffe://test/checkout")))
        .unwrap();
    let mut tls = vault.pki.tls("checkout");
    tls.identity = Some((leaf.cert_pem.into_bytes(), leaf.key_pem.as_bytes().to_vec()));
    refused(&vault, tls).await;
}

#[tokio::test]
async fn roles_are_enforced() {
    let vault = TestVault::start();
    let token = token(&vault).await;
    let mut gateway = vault.client("gateway").await;
    let mut checkout = vault.client("checkout").await;
    let mut security = vault.client("security").await;

    let reply = post(&mut gateway, "/v1/tokens", &card_body("4242424242424242", None)).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["type"], "forbidden");
    assert_eq!(detokenize(&mut checkout, &token).await.status, 403);
    assert_eq!(detokenize(&mut security, &token).await.status, 403);
    assert_eq!(get(&mut security, &format!("/v1/tokens/{token}")).await.status, 403);
    let delete = gateway
        .request(Method::DELETE, &format!("/v1/tokens/{token}"), None)
        .await
        .unwrap();
    assert_eq!(delete.status, 403);
    // The refusals changed nothing.
    assert_eq!(detokenize(&mut gateway, &token).await.status, 200);
}

#[tokio::test]
async fn unknown_identity_is_forbidden_and_health_is_open() {
    let vault = TestVault::start();
    let mut stranger = vault.client("stranger").await;
    assert_eq!(get(&mut stranger, "/healthz").await.status, 200);
    let reply = post(&mut stranger, "/v1/tokens", &card_body("4111111111111111", None)).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["reason"], "unknown_identity");
}

#[tokio::test]
async fn unknown_and_malformed_tokens_are_404() {
    let vault = TestVault::start();
    let mut gateway = vault.client("gateway").await;
    for t in [
        "tok_AAAAAAAAAAAAAAAAAAAAAAAA",
        "tok_x",
        "4111111111111112",
        "%00",
        "4111111111111111",
    ] {
        let reply = detokenize(&mut gateway, t).await;
        assert_eq!(reply.status, 404, "{t}");
        assert_eq!(reply.json()["type"], "not_found");
        let reply = get(&mut gateway, &format!("/v1/tokens/{t}")).await;
        assert_eq!(reply.status, 404, "{t}");
    }
    let reply = get(&mut gateway, "/v2/nothing").await;
    assert_eq!(reply.status, 404);
}

#[tokio::test]
async fn wrong_method_and_media_type() {
    let vault = TestVault::start();
    let mut checkout = vault.client("checkout").await;
    let reply = checkout.request(Method::PUT, "/v1/tokens", Some(b"{}")).await.unwrap();
    assert_eq!(reply.status, 405);
    assert_eq!(reply.headers["allow"], "POST");
    let reply = checkout
        .request_with(
            Method::POST,
            "/v1/tokens",
            Some(b"{}"),
            &[("content-type", "text/plain")],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 415);
    let reply = post(&mut checkout, "/v1/tokens", "{\"card\":").await;
    assert_eq!(
        (
            reply.status,
            reply.json()["type"].as_str(),
            reply.json()["reason"].as_str()
        ),
        (400, Some("invalid_json"), Some("eof"))
    );
    let reply = post(
        &mut checkout,
        "/v1/tokens",
        r#"{"card":{"number":"4111111111111111",}}"#,
    )
    .await;
    assert_eq!((reply.status, reply.json()["reason"].as_str()), (400, Some("syntax")));
    assert!(reply.json()["detail"].as_str().unwrap().ends_with("line 1, column 38"));
    assert!(!reply.text().contains("4111"));
    let reply = post(&mut checkout, "/v1/tokens", r#"{"colour":"red","card":{}}"#).await;
    assert_eq!((reply.status, reply.json()["field"].as_str()), (400, Some("colour")));
}

#[tokio::test]
async fn alpn_selects_http2_or_http1() {
    let vault = TestVault::start();
    let mut tls = vault.pki.tls("checkout");
    let h2 = Client::connect(vault.addr, tls.config().unwrap()).await.unwrap();
    assert_eq!(h2.alpn(), Some(&b"h2"[..]));
    tls.alpn = vec![b"http/1.1".to_vec()];
    let mut h1 = Client::connect(vault.addr, tls.config().unwrap()).await.unwrap();
    assert_eq!(h1.alpn(), Some(&b"http/1.1"[..]));
    assert_eq!(get(&mut h1, "/healthz").await.status, 200);
    // A client offering only an unknown protocol is refused by the handshake
    // (rustls answers no_application_protocol).
    tls.alpn = vec![b"spdy/3".to_vec()];
    assert!(Client::connect(vault.addr, tls.config().unwrap()).await.is_err());
}

/// F15: extended key usage and chain order of client certificates.
#[tokio::test]
async fn client_certificate_purpose_and_chain() {
    use tokenvault::pki::Usage;
    let vault = TestVault::start();
    let uri = "spiffe://test/checkout";
    let with = |cert: String, key: &[u8]| {
        let mut tls = vault.pki.tls("checkout");
        tls.identity = Some((cert.into_bytes(), key.to_vec()));
        tls
    };
    let accepted = |tls: ClientTls| async move {
        let mut client = Client::connect(vault.addr, tls.config().unwrap()).await.unwrap();
        let reply = post(&mut client, "/v1/tokens", &card_body("4111111111111111", None)).await;
        assert_eq!(reply.status, 201);
    };

    for (usage, ok) in [
        (Usage::Client, true),
        (Usage::ClientAndServer, true),
        (Usage::Unrestricted, true),
        (Usage::Server, false),
    ] {
        let mut spec = LeafSpec::client("checkout", Some(uri));
        spec.usage = usage;
        let leaf = vault.pki.ca.issue(&spec).unwrap();
        let tls = with(leaf.cert_pem, leaf.key_pem.as_bytes());
        if ok {
            accepted(tls).await;
        } else {
            refused(&vault, tls).await;
        }
    }

    let intermediate = vault.pki.ca.intermediate("test intermediate").unwrap();
    let leaf = intermediate.issue(&LeafSpec::client("checkout", Some(uri))).unwrap();
    let key = leaf.key_pem.as_bytes().to_vec();
    accepted(with(format!("{}{}", leaf.cert_pem, intermediate.cert_pem()), &key)).await;
    refused(&vault, with(leaf.cert_pem.clone(), &key)).await;
    // rustls's own client refuses to send a chain whose first certificate does not
    // match the key, so present one through a resolver that skips that check.
    let reversed = format!("{}{}", intermediate.cert_pem(), leaf.cert_pem);
    refused_config(&vault, raw_chain_config(&vault, &reversed, &key)).await;
}

#[derive(Debug)]
struct FixedCert(std::sync::Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedCert {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client config presenting `chain_pem` as is, signing with `key_pem`.
fn raw_chain_config(vault: &TestVault, chain_pem: &str, key_pem: &[u8]) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = tokenvault::tls::provider();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::from_pem_slice(key_pem).unwrap())
        .unwrap();
    let certified = std::sync::Arc::new(rustls::sign::CertifiedKey::new(chain, key));
    let roots = tokenvault::tls::load_roots(&vault.pki.dir.join("ca.pem")).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(std::sync::Arc::new(FixedCert(certified)));
    std::sync::Arc::new(config)
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let vault = TestVault::start();
    let mut spec = LeafSpec::client("checkout", Some("spiffe://test/checkout"));
    spec.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    spec.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let leaf = vault.pki.ca.issue(&spec).unwrap();
    let mut tls = vault.pki.tls("checkout");
    tls.identity = Some((leaf.cert_pem.into_bytes(), leaf.key_pem.as_bytes().to_vec()));
    refused(&vault, tls).await;
}

/// Revocation: a revoked client is refused at the handshake; CRLs reload on SIGHUP
/// and when their file changes; a bad CRL keeps the previous configuration.
#[tokio::test]
async fn revoked_certificates_are_refused_and_crls_reload() {
    let mut vault = TestVault::prepare_tls(crate::harness::IDENTITIES, "", "crl = [\"{pki}/clients.crl\"]", "");
    let crl = vault.pki.dir.join("clients.crl");
    std::fs::write(&crl, vault.pki.ca.crl(&[]).unwrap()).unwrap();
    let mut spec = LeafSpec::client("checkout", Some("spiffe://test/checkout"));
    spec.serial = Some(777_001);
    vault.pki.issue("doomed", &spec);
    vault.launch_now();
    let mut doomed = vault.client("doomed").await;
    assert_eq!(
        post(&mut doomed, "/v1/tokens", &card_body("4111111111111111", None))
            .await
            .status,
        201
    );

    // Revoke it: the next connection is refused (file change picked up, or SIGHUP),
    // and the connection it already had is drained and closed.
    std::fs::write(&crl, vault.pki.ca.crl(&[777_001]).unwrap()).unwrap();
    vault.hangup();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    refused(&vault, vault.pki.tls("doomed")).await;
    let old_connection = doomed.request(http::Method::GET, "/healthz", None).await;
    assert!(old_connection.is_err(), "the revoked client kept its open connection");
    let mut fine = vault.client("checkout").await;
    assert_eq!(get(&mut fine, "/healthz").await.status, 200);

    // A broken CRL file is refused; the last good configuration stays.
    std::fs::write(&crl, b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n").unwrap();
    vault.hangup();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    refused(&vault, vault.pki.tls("doomed")).await;
    let mut fine = vault.client("checkout").await;
    assert_eq!(get(&mut fine, "/healthz").await.status, 200);
    let output = String::from_utf8_lossy(&vault.output()).into_owned();
    assert!(output.contains("TLS reload refused"), "the refusal is logged");
}

#[tokio::test]
async fn not_yet_valid_client_certificate_is_refused() {
    let vault = TestVault::start();
    let mut spec = LeafSpec::client("checkout", Some("spiffe://test/checkout"));
    spec.not_before = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    spec.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let leaf = vault.pki.ca.issue(&spec).unwrap();
    let mut tls = vault.pki.tls("checkout");
    tls.identity = Some((leaf.cert_pem.into_bytes(), leaf.key_pem.as_bytes().to_vec()));
    refused(&vault, tls).await;
}

/// HTTP/2 connections end on their own: after `idle_timeout_ms` with no request
/// in flight, and after `max_connection_age_ms` however busy (GOAWAY, then closed),
/// so no client can hold a connection slot for ever.
#[tokio::test]
async fn idle_and_old_http2_connections_are_closed() {
    let vault = TestVault::start_with(
        crate::harness::IDENTITIES,
        "idle_timeout_ms = 600\nmax_connection_age_ms = 3000",
    );
    let mut idle = vault.client("checkout").await;
    assert_eq!(idle.alpn(), Some(&b"h2"[..]));
    assert_eq!(get(&mut idle, "/healthz").await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        idle.request(http::Method::GET, "/healthz", None).await.is_err(),
        "an idle connection stayed open"
    );

    // A busy connection: a request every 100 ms keeps it from idling out, until
    // its age passes the limit.
    let mut busy_again = vault.client("checkout").await;
    let started = std::time::Instant::now();
    let mut served = 0;
    while started.elapsed() < std::time::Duration::from_secs(10) {
        match busy_again.request(http::Method::GET, "/healthz", None).await {
            Ok(reply) if reply.status == 200 => served += 1,
            _ => break,
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let lasted = started.elapsed();
    assert!(served >= 10, "only {served} requests before the connection ended");
    assert!(
        lasted < std::time::Duration::from_secs(8),
        "the connection outlived its age limit: {lasted:?}"
    );
    // New connections are served as ever.
    let mut fresh = vault.client("checkout").await;
    assert_eq!(get(&mut fresh, "/healthz").await.status, 200);
}

/// Request bodies held in memory are bounded across all connections: one that
/// would exceed `max_buffered_body_bytes` is refused with 503, small ones pass.
#[tokio::test]
async fn buffered_request_bodies_are_bounded() {
    let vault = TestVault::start_with(crate::harness::IDENTITIES, "max_buffered_body_bytes = 8192");
    let mut checkout = vault.client("checkout").await;
    assert_eq!(
        post(&mut checkout, "/v1/tokens", &card_body("4111111111111111", None))
            .await
            .status,
        201
    );
    let item = r#"{"card":{"number":"4111111111111111","exp_month":12,"exp_year":2031}}"#;
    let batch = format!(r#"{{"items":[{}]}}"#, vec![item; 200].join(","));
    let reply = post(&mut checkout, "/v1/tokens/batch", &batch).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json()["type"], "unavailable");
    assert!(!reply.text().contains("4111"));
    assert_eq!(
        post(&mut checkout, "/v1/tokens", &card_body("4111111111111111", None))
            .await
            .status,
        201
    );
}
