//! The HTTP API: routing, authorization of each request by the client
//! certificate's identity, and the handlers. This is the only module that knows
//! HTTP and JSON. Every error leaves through `problem::ApiError::into_response`.

pub mod body;
pub mod problem;
pub mod views;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::audit::AuditEvent;
use crate::auth::{
    authorize, authorize_single, AuthError, Client, ClientTable, Delete, Detokenize, Permission,
    ReadMetadata, Tokenize,
};
use crate::config::Limits;
use crate::vault::input::TokenizeRequest;
use crate::vault::Vault;
use problem::ApiError;

/// Everything a request handler needs, shared by all connections.
pub struct AppState {
    pub vault: Arc<Vault>,
    pub clients: ClientTable,
    pub limits: Limits,
    pub ready: AtomicBool,
    request_ids: RequestIds,
}

impl AppState {
    pub fn new(
        vault: Arc<Vault>,
        clients: ClientTable,
        limits: Limits,
    ) -> Result<Self, crate::crypto::CryptoError> {
        Ok(AppState {
            vault,
            clients,
            limits,
            ready: AtomicBool::new(true),
            request_ids: RequestIds::new()?,
        })
    }
}

/// The verified peer of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// SAN URI, SAN DNS or CN of the verified client certificate.
    pub identity: Option<String>,
}

/// Request ids: a random per-process prefix and a counter, so that ids are unique
/// without a system call per request.
struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Result<Self, crate::crypto::CryptoError> {
        let mut bytes = [0u8; 8];
        crate::crypto::fill_random(&mut bytes)?;
        Ok(RequestIds {
            prefix: u64::from_be_bytes(bytes),
            counter: AtomicU64::new(0),
        })
    }

    fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("req_{:016x}{:08x}", self.prefix, n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Health,
    Ready,
    Tokens,
    Token(&'a str),
    Detokenize(&'a str),
    Unknown,
}

impl Route<'_> {
    fn parse(path: &str) -> Route<'_> {
        let mut parts = path.trim_start_matches('/').split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("healthz"), None, ..) => Route::Health,
            (Some("readyz"), None, ..) => Route::Ready,
            (Some("v1"), Some("tokens"), None, ..) => Route::Tokens,
            (Some("v1"), Some("tokens"), Some(t), None, _) if !t.is_empty() => Route::Token(t),
            (Some("v1"), Some("tokens"), Some(t), Some("detokenize"), None) if !t.is_empty() => {
                Route::Detokenize(t)
            }
            _ => Route::Unknown,
        }
    }

    /// A fixed name for logs and metrics: never the path, which may hold anything.
    fn name(&self) -> &'static str {
        match self {
            Route::Health => "healthz",
            Route::Ready => "readyz",
            Route::Tokens => "tokens",
            Route::Token(_) => "token",
            Route::Detokenize(_) => "detokenize",
            Route::Unknown => "unknown",
        }
    }

    fn allow(&self) -> &'static str {
        match self {
            Route::Health | Route::Ready => "GET",
            Route::Tokens | Route::Detokenize(_) => "POST",
            Route::Token(_) => "GET, DELETE",
            Route::Unknown => "",
        }
    }
}

/// Serves one request. Never fails: every error becomes a problem response.
pub async fn handle(
    state: Arc<AppState>,
    peer: Arc<Peer>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let request_id = state.request_ids.next();
    let path = request.uri().path().to_owned();
    let route = Route::parse(&path);
    let response = match dispatch(&state, &peer, route, request, &request_id).await {
        Ok(response) => response,
        Err(error) => error.into_response(&request_id),
    };
    tracing::debug!(
        route = route.name(),
        status = response.status().as_u16(),
        identity = peer.identity.as_deref().unwrap_or("-"),
        request_id = %request_id,
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(response)
}

async fn dispatch(
    state: &AppState,
    peer: &Peer,
    route: Route<'_>,
    request: Request<Incoming>,
    request_id: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let method = request.method().clone();
    match (route, &method) {
        (Route::Health, &Method::GET) => {
            return Ok(views::json(
                StatusCode::OK,
                &serde_json::json!({"status": "ok"}),
                request_id,
            ))
        }
        (Route::Ready, &Method::GET) => {
            return if state.ready.load(Ordering::Relaxed) {
                Ok(views::json(
                    StatusCode::OK,
                    &serde_json::json!({"status": "ready"}),
                    request_id,
                ))
            } else {
                Err(ApiError::Unavailable)
            };
        }
        (Route::Unknown, _) => return Err(ApiError::NotFound),
        _ => {}
    }
    let allowed = matches!(
        (route, &method),
        (Route::Tokens, &Method::POST)
            | (Route::Detokenize(_), &Method::POST)
            | (Route::Token(_), &Method::GET)
            | (Route::Token(_), &Method::DELETE)
    );
    if !allowed {
        return Err(ApiError::MethodNotAllowed {
            allow: route.allow(),
        });
    }
    let client = identify(state, peer, route, request_id).await?;
    match route {
        Route::Tokens => tokenize(state, client, request, request_id).await,
        Route::Token(token) if method == Method::GET => {
            let auth = permit::<ReadMetadata>(state, client, None, route, request_id).await?;
            let meta = state.vault.metadata(&auth, token)?;
            Ok(views::json(StatusCode::OK, &meta, request_id))
        }
        Route::Token(token) => {
            let auth = permit::<Delete>(state, client, None, route, request_id).await?;
            state.vault.delete(&auth, token, request_id).await?;
            Ok(views::empty(StatusCode::NO_CONTENT, request_id))
        }
        Route::Detokenize(token) => {
            let auth = permit::<Detokenize>(state, client, None, route, request_id).await?;
            // The body is not used; it is read (bounded) and wiped.
            let (parts, body) = request.into_parts();
            drop(body::read_body(&parts.headers, body, state.limits.max_body_bytes).await?);
            let revealed = state.vault.detokenize(&auth, token, request_id).await?;
            Ok(views::detokenized(&revealed, request_id))
        }
        _ => Err(ApiError::NotFound),
    }
}

/// Finds the configured client of the connection's identity; an unknown identity is
/// `403` and an audit entry.
async fn identify<'s>(
    state: &'s AppState,
    peer: &Peer,
    route: Route<'_>,
    request_id: &str,
) -> Result<&'s Client, ApiError> {
    let identity = peer.identity.as_deref().unwrap_or("");
    match state.clients.find(identity) {
        Some(client) => Ok(client),
        None => {
            audit_denied(state, identity, route.name(), None, request_id).await;
            Err(ApiError::Forbidden(AuthError::UnknownIdentity))
        }
    }
}

async fn permit<P: Permission>(
    state: &AppState,
    client: &Client,
    tenant: Option<&str>,
    route: Route<'_>,
    request_id: &str,
) -> Result<crate::auth::Authorized<P>, ApiError> {
    match authorize::<P>(client, tenant) {
        Ok(proof) => Ok(proof),
        Err(e) => {
            audit_denied(state, &client.identity, route.name(), tenant, request_id).await;
            Err(ApiError::from(e))
        }
    }
}

async fn permit_single<P: Permission>(
    state: &AppState,
    client: &Client,
    tenant: Option<&str>,
    route: Route<'_>,
    request_id: &str,
) -> Result<crate::auth::Authorized<P>, ApiError> {
    match authorize_single::<P>(client, tenant) {
        Ok(proof) => Ok(proof),
        Err(AuthError::TenantRequired) => Err(ApiError::from(AuthError::TenantRequired)),
        Err(e) => {
            audit_denied(state, &client.identity, route.name(), tenant, request_id).await;
            Err(ApiError::from(e))
        }
    }
}

/// Writes a `denied` audit entry. A failure to write it is logged; the request is
/// refused either way.
async fn audit_denied(
    state: &AppState,
    identity: &str,
    action: &'static str,
    tenant: Option<&str>,
    request_id: &str,
) {
    tracing::info!(action, identity, request_id, "request denied");
    let mut event = AuditEvent::new(identity, action, "denied").request_id(request_id);
    if let Some(t) = tenant {
        event = event.tenant(t);
    }
    if let Err(e) = state.vault.audit(event).await {
        tracing::error!(error = %e, "could not write the audit entry of a denied request");
    }
}

async fn tokenize(
    state: &AppState,
    client: &Client,
    request: Request<Incoming>,
    request_id: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    // The role is checked before the body (which holds card data) is read.
    permit::<Tokenize>(state, client, None, Route::Tokens, request_id).await?;
    let (parts, body) = request.into_parts();
    body::require_json(&parts.headers)?;
    let raw = body::read_body(&parts.headers, body, state.limits.max_body_bytes).await?;
    let input: TokenizeRequest = body::decode(&raw)?;
    drop(raw);
    let auth = permit_single::<Tokenize>(
        state,
        client,
        input.tenant.as_deref(),
        Route::Tokens,
        request_id,
    )
    .await?;
    let outcome = state.vault.tokenize(&auth, &input, request_id).await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(views::json(status, &outcome.meta, request_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/healthz"), Route::Health);
        assert_eq!(Route::parse("/v1/tokens"), Route::Tokens);
        assert_eq!(Route::parse("/v1/tokens/tok_x"), Route::Token("tok_x"));
        assert_eq!(
            Route::parse("/v1/tokens/tok_x/detokenize"),
            Route::Detokenize("tok_x")
        );
        assert_eq!(Route::parse("/v1/tokens/tok_x/other"), Route::Unknown);
        assert_eq!(Route::parse("/v1/tokens/"), Route::Unknown);
        assert_eq!(Route::parse("/"), Route::Unknown);
        assert_eq!(Route::parse("/v1/tokens/a/detokenize/x"), Route::Unknown);
    }
}
