//! A small mutual-TLS HTTP client for the command line, the load generator and the
//! end-to-end tests: one connection, HTTP/1.1 or HTTP/2 as ALPN decides.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls::provider;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS material: {0}")]
    Material(String),
    #[error("connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] http::Error),
}

/// What the client presents and trusts, as PEM.
#[derive(Clone)]
pub struct ClientTls {
    pub ca_pem: Vec<u8>,
    /// Certificate chain and key; `None` connects without a client certificate.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub alpn: Vec<Vec<u8>>,
}

impl ClientTls {
    /// Reads CA, certificate and key files.
    pub fn from_files(ca: &std::path::Path, cert: &std::path::Path, key: &std::path::Path) -> std::io::Result<Self> {
        Ok(ClientTls {
            ca_pem: std::fs::read(ca)?,
            identity: Some((std::fs::read(cert)?, std::fs::read(key)?)),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        })
    }

    pub fn config(&self) -> Result<Arc<ClientConfig>, ClientError> {
        let bad = |e: &dyn std::fmt::Display| ClientError::Material(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&e))?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(&e))?;
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad(&e))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| bad(&e))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One open connection to the daemon.
pub struct Client {
    sender: Sender,
    authority: String,
    alpn: Option<Vec<u8>>,
}

impl Client {
    /// Connects and completes the TLS handshake; the server must present a
    /// certificate for `localhost` signed by the CA.
    pub async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<Client, ClientError> {
        Self::connect_named(addr, "localhost", config).await
    }

    /// Connects to `addr`, expecting a server certificate for `server_name`.
    pub async fn connect_named(
        addr: SocketAddr,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> Result<Client, ClientError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(server_name.to_owned()).map_err(|e| ClientError::Material(e.to_string()))?;
        let tls = TlsConnector::from(config).connect(name, tcp).await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(Client {
            sender,
            authority: format!("localhost:{}", addr.port()),
            alpn,
        })
    }

    /// Another handle on the same HTTP/2 connection (streams are multiplexed);
    /// `None` for HTTP/1.1, which serves one request at a time.
    pub fn share(&self) -> Option<Client> {
        match &self.sender {
            Sender::H2(s) => Some(Client {
                sender: Sender::H2(s.clone()),
                authority: self.authority.clone(),
                alpn: self.alpn.clone(),
            }),
            Sender::H1(_) => None,
        }
    }

    /// The protocol ALPN chose.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    pub async fn request(&mut self, method: Method, path: &str, body: Option<&[u8]>) -> Result<Reply, ClientError> {
        self.request_with(method, path, body, &[]).await
    }

    pub async fn request_with(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, ClientError> {
        let mut builder = Request::builder().method(method);
        builder = match self.sender {
            Sender::H1(_) => builder.uri(path).header(http::header::HOST, &self.authority),
            Sender::H2(_) => builder.uri(format!("https://{}{path}", self.authority)),
        };
        let sets_type = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !sets_type {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))?;
        let response = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(request).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(request).await?
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply { status, headers, body })
    }
}
