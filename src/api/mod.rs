//! The HTTP API: routing, authorization of each request by the client
//! certificate's identity, and the handlers. This is the only module that knows
//! HTTP and JSON. Every error leaves through `problem::ApiError::into_response`.

pub mod body;
pub mod problem;
mod route;
mod tokens;
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
    authorize, authorize_single, AuthError, Authorized, Client, ClientTable, Delete, Detokenize, ManageKeys,
    Permission, ReadAudit, ReadKeys, ReadMetadata, ReadWallet,
};
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::vault::Vault;
use problem::ApiError;
use route::{percent_decode, Query, Route};

/// Everything a request handler needs, shared by all connections.
pub struct AppState {
    pub vault: Arc<Vault>,
    pub clients: ClientTable,
    pub limits: Limits,
    pub ready: AtomicBool,
    pub metrics: Arc<Metrics>,
    pub backup_dir: Option<std::path::PathBuf>,
    pub limiter: RateLimiter,
    /// Memory for request bodies, all connections together.
    pub body_budget: body::BodyBudget,
    request_ids: RequestIds,
}

impl AppState {
    pub fn new(vault: Arc<Vault>, clients: ClientTable, limits: Limits) -> Result<Self, crate::crypto::CryptoError> {
        Ok(AppState {
            vault,
            clients,
            limiter: RateLimiter::new(limits.rate_per_second, limits.rate_burst),
            body_budget: body::BodyBudget::new(limits.max_buffered_body_bytes),
            limits,
            ready: AtomicBool::new(true),
            metrics: Arc::new(Metrics::default()),
            backup_dir: None,
            request_ids: RequestIds::new()?,
        })
    }

    /// Returns once everything applied so far is durable (`Committer::barrier`).
    async fn durable(&self) -> Result<(), ApiError> {
        self.vault
            .committer()
            .barrier()
            .await
            .map_err(|e| crate::vault::VaultError::from(e).into())
    }

    /// The metrics page: counters kept by the server and gauges read now.
    pub fn render_metrics(&self) -> String {
        let vault = &self.vault;
        let mut gauges: Vec<(String, &str, f64)> = vec![
            (
                "tokenvault_ready".into(),
                "1 when unsealed, store open and not draining.",
                f64::from(u8::from(self.ready.load(Ordering::Relaxed))),
            ),
            (
                "tokenvault_key_version".into(),
                "Active key-encryption key version.",
                f64::from(vault.keyring().active_version()),
            ),
        ];
        gauges.extend(
            vault
                .committer()
                .stats()
                .figures()
                .into_iter()
                .map(|(name, help, value)| (name.to_owned(), help, value)),
        );
        if let Ok(state) = vault.rewrap_state() {
            gauges.push((
                "tokenvault_rewrap_running".into(),
                "1 while a rewrap runs.",
                f64::from(u8::from(state.running)),
            ));
            gauges.push((
                "tokenvault_rewrap_done".into(),
                "Records rewrapped in the current or last run.",
                state.done as f64,
            ));
            gauges.push((
                "tokenvault_rewrap_total".into(),
                "Records to rewrap in the current or last run.",
                state.total as f64,
            ));
        }
        for (name, value) in vault.store_properties() {
            gauges.push((format!("tokenvault_rocksdb_{name}"), "RocksDB property.", value as f64));
        }
        let refs: Vec<(&str, &str, f64)> = gauges.iter().map(|(n, h, v)| (n.as_str(), *h, *v)).collect();
        self.metrics.render(&refs)
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

/// Serves one request. Never fails: every error becomes a problem response.
pub async fn handle(
    state: Arc<AppState>,
    peer: Arc<Peer>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let slot = body::BodySlot::new(body);
    let request = Request::from_parts(parts, slot.clone());
    let started = Instant::now();
    let request_id = state.request_ids.next();
    let path = request.uri().path().to_owned();
    let route = Route::parse(&path);
    let head = request.method() == Method::HEAD;
    let span = tracing::debug_span!("request", request_id = %request_id);
    let mut response =
        match tracing::Instrument::instrument(dispatch(&state, &peer, route, request, &request_id), span).await {
            Ok(response) => response,
            // An error can rest on a read of data that is applied but not yet
            // durable (a 404 after an unsynced delete, a 410, a 409): it waits
            // for the same barrier as a successful read.
            Err(error) => match state.durable().await {
                Ok(()) => error.into_response(&request_id),
                Err(e) => e.into_response(&request_id),
            },
        };
    state
        .metrics
        .observe_request(route.name(), response.status().as_u16(), started.elapsed());
    if response.status().as_u16() >= 400 {
        if let Some(unread) = slot.take() {
            body::drain(unread, DRAIN_LIMIT, std::time::Duration::from_secs(2)).await;
        }
    }
    if head {
        // A response to HEAD has headers only (HTTP/2 treats a body as a protocol error).
        *response.body_mut() = Full::new(Bytes::new());
    }
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

const MAX_HEADERS: usize = 64;
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How much of an unread body is drained after an early error response.
const DRAIN_LIMIT: usize = 1024 * 1024;

async fn dispatch(
    state: &AppState,
    peer: &Peer,
    route: Route<'_>,
    request: Request<body::BodySlot>,
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
        (
            Route::Tokens | Route::TokensBatch | Route::Detokenize(_) | Route::DetokenizeBatch,
            &Method::POST
        ) | (Route::Token(_), &Method::GET | &Method::PATCH | &Method::DELETE)
            | (
                Route::CustomerTokens(_) | Route::Keys | Route::Audit | Route::AuditVerify,
                &Method::GET
            )
            | (Route::KeysRotate | Route::KeyRetire(_) | Route::Backups, &Method::POST)
            | (Route::Metrics, &Method::GET)
    );
    if !allowed {
        return Err(ApiError::MethodNotAllowed { allow: route.allow() });
    }
    // Header limits are enforced here, below hyper's own (which answer without a
    // problem document), so that a client gets the usual error format.
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if request.headers().len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::HeadersTooLarge);
    }
    let client = identify(state, peer, route, request_id).await?;
    state
        .limiter
        .check(&client.identity)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let ctx = Ctx {
        state,
        client,
        route,
        request_id,
    };
    match route {
        Route::Tokens => tokens::tokenize(&ctx, request).await,
        Route::TokensBatch => tokens::tokenize_batch(&ctx, request).await,
        Route::Token(token) if method == Method::PATCH => {
            let result = tokens::update(&ctx, token, request).await;
            ctx.audit_unknown_token(&result, "update", token).await;
            result
        }
        Route::Token(token) if method == Method::GET => {
            let auth = ctx.permit::<ReadMetadata>(None).await?;
            let result = state.vault.metadata(&auth, token).map_err(ApiError::from);
            ctx.audit_unknown_token(&result, "metadata", token).await;
            let meta = ctx.settled(result?).await?;
            Ok(views::json(StatusCode::OK, &meta, request_id))
        }
        Route::Token(token) => {
            let auth = ctx.permit::<Delete>(None).await?;
            let result = state
                .vault
                .delete(&auth, token, request_id)
                .await
                .map_err(ApiError::from);
            ctx.audit_unknown_token(&result, "delete", token).await;
            result?;
            Ok(views::empty(StatusCode::NO_CONTENT, request_id))
        }
        Route::Detokenize(token) => {
            let auth = ctx.permit::<Detokenize>(None).await?;
            // The body is not used; it is read (bounded) and wiped.
            let (parts, body) = request.into_parts();
            drop(
                body::read_body(
                    &parts.headers,
                    body,
                    state.limits.max_body_bytes,
                    state.limits.body_timeout(),
                    &state.body_budget,
                )
                .await?,
            );
            let revealed = match state.vault.detokenize(&auth, token, request_id).await {
                Ok(revealed) => revealed,
                Err(crate::vault::VaultError::NotFound) => {
                    ctx.note_misses(1).await;
                    return Err(ApiError::NotFound);
                }
                Err(e) => return Err(e.into()),
            };
            state.metrics.count_tenant_op(&revealed.meta.tenant, "detokenize");
            Ok(views::detokenized(&revealed, request_id))
        }
        Route::DetokenizeBatch => tokens::detokenize_batch(&ctx, request).await,
        Route::Keys => {
            let auth = ctx.permit::<ReadKeys>(None).await?;
            let status = ctx.settled(state.vault.key_status(&auth)?).await?;
            Ok(views::json(StatusCode::OK, &status, request_id))
        }
        Route::KeysRotate => {
            let auth = ctx.permit::<ManageKeys>(None).await?;
            let status = ctx.settled(state.vault.rotate(&auth, request_id).await?).await?;
            Ok(views::json(StatusCode::OK, &status, request_id))
        }
        Route::KeyRetire(version) => {
            let auth = ctx.permit::<ManageKeys>(None).await?;
            let version = version.parse::<u32>().map_err(|_| ApiError::NotFound)?;
            let status = ctx
                .settled(state.vault.retire(&auth, version, request_id).await?)
                .await?;
            Ok(views::json(StatusCode::OK, &status, request_id))
        }
        Route::Audit => {
            let auth = ctx.permit::<ReadAudit>(None).await?;
            let query = Query::parse(request.uri().query().unwrap_or_default());
            let number = |name: &'static str, default: u64| match query.get(name) {
                None => Ok(default),
                Some(text) => text.parse::<u64>().map_err(|_| {
                    ApiError::Invalid(crate::validate::ValidationError::new(
                        crate::validate::Code::InvalidRequest,
                        name,
                        "format",
                        format!("{name} must be a whole number"),
                    ))
                }),
            };
            let (after, limit) = (number("after", 0)?, number("limit", 100)?);
            let page = state
                .vault
                .audit_entries(&auth, after, usize::try_from(limit).unwrap_or(usize::MAX))?;
            let page = ctx.settled(page).await?;
            Ok(views::json(StatusCode::OK, &page, request_id))
        }
        Route::Metrics => Ok(views::text(StatusCode::OK, state.render_metrics(), request_id)),
        Route::Backups => {
            let auth = ctx.permit::<ManageKeys>(None).await?;
            let dir = state.backup_dir.as_deref().ok_or(ApiError::Conflict {
                detail: "no backup_dir is configured",
            })?;
            let info = state.vault.backup(&auth, dir, request_id).await?;
            Ok(views::json(StatusCode::CREATED, &info, request_id))
        }
        Route::AuditVerify => {
            let auth = ctx.permit::<ReadAudit>(None).await?;
            let report = ctx.settled(state.vault.audit_verify(&auth)?).await?;
            Ok(views::json(StatusCode::OK, &report, request_id))
        }
        Route::CustomerTokens(customer) => {
            let customer = percent_decode(customer).ok_or(ApiError::NotFound)?;
            let query = Query::parse(request.uri().query().unwrap_or_default());
            let auth = ctx.permit_single::<ReadWallet>(query.get("tenant")).await?;
            let limit = match query.get("limit") {
                Some(text) => Some(text.parse::<usize>().map_err(|_| limit_error())?),
                None => None,
            };
            let page = state
                .vault
                .list_customer(&auth, &customer, limit, query.get("cursor"))?;
            let page = ctx.settled(page).await?;
            Ok(views::json(StatusCode::OK, &page, request_id))
        }
        _ => Err(ApiError::NotFound),
    }
}

fn limit_error() -> ApiError {
    ApiError::Invalid(crate::validate::ValidationError::new(
        crate::validate::Code::InvalidRequest,
        "limit",
        "format",
        "limit must be a whole number from 1 to 100",
    ))
}

/// What a handler needs about the request it serves.
pub(crate) struct Ctx<'a> {
    pub state: &'a AppState,
    pub client: &'a Client,
    route: Route<'a>,
    pub request_id: &'a str,
}

impl Ctx<'_> {
    /// Checks the role (and a named tenant); a refusal is `403` and an audit entry.
    pub async fn permit<P: Permission>(&self, tenant: Option<&str>) -> Result<Authorized<P>, ApiError> {
        match authorize::<P>(self.client, tenant) {
            Ok(proof) => Ok(proof),
            Err(e) => {
                self.audit_denied(tenant).await;
                Err(ApiError::from(e))
            }
        }
    }

    /// Like `permit`, resolving exactly one tenant (named, or the client's only one).
    pub async fn permit_single<P: Permission>(&self, tenant: Option<&str>) -> Result<Authorized<P>, ApiError> {
        match authorize_single::<P>(self.client, tenant) {
            Ok(proof) => Ok(proof),
            Err(AuthError::TenantRequired) => Err(ApiError::from(AuthError::TenantRequired)),
            Err(e) => {
                self.audit_denied(tenant).await;
                Err(ApiError::from(e))
            }
        }
    }

    /// Waits until what a read saw is durable (see `Committer::barrier`), then
    /// hands it back to be sent.
    pub(super) async fn settled<T>(&self, value: T) -> Result<T, ApiError> {
        self.state.durable().await?;
        Ok(value)
    }

    /// An unknown, malformed or another tenant's token (one case to the caller) is
    /// audited, so that probing for tokens leaves a trace; the entry names a keyed
    /// MAC of what was asked for, never the text.
    async fn audit_unknown_token<T>(&self, result: &Result<T, ApiError>, action: &'static str, token: &str) {
        if !matches!(result, Err(ApiError::NotFound)) {
            return;
        }
        // What matched nothing is caller text (it may hold a card number): only
        // its keyed MAC is named. A client of one tenant files the entry under it.
        let mut event = AuditEvent::new(&self.client.identity, action, "not_found")
            .request_id(self.request_id)
            .token(&self.state.vault.probe_label(token));
        if let [tenant] = self.client.tenants.as_slice() {
            event = event.tenant(tenant);
        }
        if let Err(e) = self.state.vault.audit(event).await {
            tracing::error!(error = %e, "could not write an audit entry");
        }
    }

    /// Counts detokenizes of unknown tokens towards the enumeration alarm, and
    /// audits the identity once per window when it crosses the threshold.
    pub(super) async fn note_misses(&self, n: u64) {
        let identity = &self.client.identity;
        if n > 0 && self.state.limiter.note_misses(identity, n) {
            tracing::warn!(identity = %identity, "many detokenize misses: possible token enumeration");
            let event = AuditEvent::new(identity, "detokenize", "possible_enumeration").request_id(self.request_id);
            if let Err(e) = self.state.vault.audit(event).await {
                tracing::error!(error = %e, "could not write an audit entry");
            }
        }
    }

    async fn audit_denied(&self, tenant: Option<&str>) {
        // A tenant named by the caller is written only if it is one of the
        // client's own: anything else is caller text and could hold anything.
        let tenant = tenant.filter(|t| self.client.tenants.iter().any(|c| c == t));
        audit_denied(
            self.state,
            &self.client.identity,
            self.route.name(),
            tenant,
            self.request_id,
        )
        .await;
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

/// Writes a `denied` audit entry. A failure to write it is logged; the request is
/// refused either way.
async fn audit_denied(state: &AppState, identity: &str, action: &'static str, tenant: Option<&str>, request_id: &str) {
    tracing::info!(action, identity, request_id, "request denied");
    let mut event = AuditEvent::new(identity, action, "denied").request_id(request_id);
    if let Some(t) = tenant {
        event = event.tenant(t);
    }
    if let Err(e) = state.vault.audit(event).await {
        tracing::error!(error = %e, "could not write the audit entry of a denied request");
    }
}
