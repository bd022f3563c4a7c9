//! The tokenize, update and batch handlers: the parts of the API that read a JSON
//! body holding raw credentials.

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::problem::ApiError;
use super::{body, views, Ctx};
use crate::auth::{authorize_single, Detokenize, Tokenize, Update};
use crate::validate::{Code, ValidationError};
use crate::vault::input::{TokenList, TokenizeRequest};
use crate::vault::record::Metadata;
use crate::vault::{BatchItem, IdempotencyKey, Lookup, PatchRequest, Prepared, VaultError};

/// How often a tokenize is retried after a conflict (a drawn token or the
/// idempotency key taken meanwhile).
const ATTEMPTS: usize = 16;
pub const MAX_BATCH_ITEMS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

fn idempotency_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("idempotency-key").map(|v| v.to_str().unwrap_or("\u{0}"))
}

fn too_many(field: &str) -> ApiError {
    ApiError::Invalid(ValidationError::new(
        Code::InvalidRequest,
        field,
        "length",
        format!("{field} must hold 1 to {MAX_BATCH_ITEMS} entries"),
    ))
}

/// One result of a tokenize batch: the token's metadata, or a problem document.
#[derive(Serialize)]
#[serde(untagged)]
enum BatchResult<'a> {
    Token(&'a Metadata),
    Error { error: serde_json::Value },
}

#[derive(Serialize)]
struct BatchResults<'a> {
    results: Vec<BatchResult<'a>>,
}

/// Runs prepare → render → commit, retrying on conflicts, with the idempotency
/// protocol around it. `prepare` and `render` are called once per attempt.
async fn with_idempotency(
    ctx: &Ctx<'_>,
    key: Option<&IdempotencyKey>,
    prepare: impl Fn() -> Result<Prepared, VaultError>,
    render: impl Fn(&Prepared) -> (StatusCode, Vec<u8>),
) -> Result<Response<Full<Bytes>>, ApiError> {
    let vault = &ctx.state.vault;
    for _ in 0..ATTEMPTS {
        let expect = match key {
            Some(key) => match vault.idempotency_lookup(key)? {
                Lookup::Replay { status, body } => {
                    let body = ctx.settled(body).await?;
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                    return Ok(views::json_bytes(
                        status,
                        body.get().as_bytes().to_vec(),
                        ctx.request_id,
                    ));
                }
                Lookup::Fresh(expect) => Some(expect),
            },
            None => None,
        };
        let prepared = prepare()?;
        let (status, body) = render(&prepared);
        let idempotency = key.zip(expect).map(|(k, e)| (k, e, status.as_u16(), body.as_slice()));
        match vault.commit_prepared(prepared, idempotency).await {
            Ok(outcomes) => {
                for t in outcomes.iter().flatten() {
                    ctx.state.metrics.count_tenant_op(&t.meta.tenant, "tokenize");
                }
                return Ok(views::json_bytes(status, body, ctx.request_id));
            }
            Err(VaultError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(VaultError::TokenSpaceExhausted.into())
}

/// Checks the content type and reads the body (bounded in size and time).
async fn json_body(
    ctx: &Ctx<'_>,
    request: Request<super::body::BodySlot>,
    limit: usize,
) -> Result<(http::request::Parts, body::RequestBody), ApiError> {
    let (parts, body) = request.into_parts();
    body::require_json(&parts.headers)?;
    let state = ctx.state;
    let raw = body::read_body(
        &parts.headers,
        body,
        limit,
        state.limits.body_timeout(),
        &state.body_budget,
    )
    .await?;
    Ok((parts, raw))
}

pub(super) async fn tokenize(
    ctx: &Ctx<'_>,
    request: Request<super::body::BodySlot>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    // The role is checked before the body (which holds card data) is read.
    ctx.permit::<Tokenize>(None).await?;
    let (parts, raw) = json_body(ctx, request, ctx.state.limits.max_body_bytes).await?;
    let input: TokenizeRequest = body::decode_object(&raw)?;
    let auth = ctx.permit_single::<Tokenize>(input.tenant.as_deref()).await?;
    let vault = &ctx.state.vault;
    let key = idempotency_header(&parts.headers)
        .map(|h| vault.idempotency_key(auth.identity(), auth.tenant(), "tokenize", h, &raw))
        .transpose()?;
    drop(raw);
    with_idempotency(
        ctx,
        key.as_ref(),
        || vault.prepare_tokenize(&auth, &input, ctx.request_id),
        |prepared| match prepared.outcomes.first() {
            Some(Ok(t)) => (
                if t.created { StatusCode::CREATED } else { StatusCode::OK },
                serde_json::to_vec(&t.meta).unwrap_or_default(),
            ),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, b"null".to_vec()),
        },
    )
    .await
}

pub(super) async fn tokenize_batch(
    ctx: &Ctx<'_>,
    request: Request<super::body::BodySlot>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let proof = ctx.permit::<Tokenize>(None).await?;
    let (parts, raw) = json_body(ctx, request, ctx.state.limits.max_batch_body_bytes).await?;
    let batch: BatchBody<'_> = body::decode_borrowed(&raw)?;
    if batch.items.is_empty() || batch.items.len() > MAX_BATCH_ITEMS {
        return Err(too_many("items"));
    }
    // Each item is decoded on its own, so a malformed item fails alone.
    let decoded: Vec<Result<TokenizeRequest, ApiError>> = batch
        .items
        .iter()
        .map(|item| body::decode(item.get().as_bytes()))
        .collect();
    let vault = &ctx.state.vault;
    let key = idempotency_header(&parts.headers)
        .map(|h| vault.idempotency_key(proof.identity(), "", "tokenize_batch", h, &raw))
        .transpose()?;
    drop(batch);
    drop(raw);
    let request_id = ctx.request_id;
    let prepare = || {
        let items = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .map(
                |input| match authorize_single::<Tokenize>(ctx.client, input.tenant.as_deref()) {
                    Ok(auth) => BatchItem::Ready(auth, input),
                    Err(e) => BatchItem::Refused(e),
                },
            )
            .collect();
        Ok(vault.prepare_batch(&ctx.client.identity, items, request_id))
    };
    let render = |prepared: &Prepared| {
        let mut outcomes = prepared.outcomes.iter();
        let results = decoded
            .iter()
            .map(|d| match d {
                Err(e) => BatchResult::Error {
                    error: e.to_problem(request_id),
                },
                Ok(_) => match outcomes.next() {
                    Some(Ok(t)) => BatchResult::Token(&t.meta),
                    Some(Err(e)) => BatchResult::Error {
                        error: ApiError::from_ref(e).to_problem(request_id),
                    },
                    None => BatchResult::Error {
                        error: ApiError::Internal.to_problem(request_id),
                    },
                },
            })
            .collect();
        let body = serde_json::to_vec(&BatchResults { results }).unwrap_or_default();
        (StatusCode::OK, body)
    };
    with_idempotency(ctx, key.as_ref(), prepare, render).await
}

pub(super) async fn detokenize_batch(
    ctx: &Ctx<'_>,
    request: Request<super::body::BodySlot>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let auth = ctx.permit::<Detokenize>(None).await?;
    let (_, raw) = json_body(ctx, request, ctx.state.limits.max_batch_body_bytes).await?;
    let list: TokenList = body::decode(&raw)?;
    if list.tokens.is_empty() || list.tokens.len() > MAX_BATCH_ITEMS {
        return Err(too_many("tokens"));
    }
    let results = ctx
        .state
        .vault
        .detokenize_batch(&auth, &list.tokens, ctx.request_id)
        .await?;
    for d in results.iter().flatten() {
        ctx.state.metrics.count_tenant_op(&d.meta.tenant, "detokenize");
    }
    let misses = results
        .iter()
        .filter(|r| matches!(r, Err(crate::vault::VaultError::NotFound)))
        .count();
    ctx.note_misses(misses as u64).await;
    Ok(views::detokenized_batch(&results, ctx.request_id))
}

pub(super) async fn update(
    ctx: &Ctx<'_>,
    token: &str,
    request: Request<super::body::BodySlot>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let auth = ctx.permit::<Update>(None).await?;
    let (_, raw) = json_body(ctx, request, ctx.state.limits.max_body_bytes).await?;
    let patch: PatchRequest = body::decode_object(&raw)?;
    drop(raw);
    let meta = ctx.state.vault.update(&auth, token, &patch, ctx.request_id).await?;
    Ok(views::json(StatusCode::OK, &meta, ctx.request_id))
}
