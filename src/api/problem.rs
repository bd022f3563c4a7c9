//! Errors become HTTP here and nowhere else: every `ApiError` maps to one status,
//! one stable snake_case `type` and a fixed title, rendered as an RFC 9457
//! `application/problem+json` document with the request id. Inner error text is
//! never copied into a response; causes go to the log, without values.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::auth::AuthError;
use crate::store::StoreError;
use crate::validate::ValidationError;
use crate::vault::VaultError;

/// Where and how a body failed to parse as JSON; never what it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonFault {
    Empty,
    Syntax { line: usize, column: usize },
    EndsEarly { line: usize, column: usize },
}

impl JsonFault {
    pub fn of(e: &serde_json::Error) -> JsonFault {
        let (line, column) = (e.line(), e.column());
        match e.classify() {
            serde_json::error::Category::Eof => JsonFault::EndsEarly { line, column },
            _ => JsonFault::Syntax { line, column },
        }
    }

    fn describe(self) -> (String, &'static str) {
        match self {
            JsonFault::Empty => ("the request body is empty; a JSON object is expected".into(), "empty"),
            JsonFault::Syntax { line, column } => (
                format!("the request body is not valid JSON: syntax error at line {line}, column {column}"),
                "syntax",
            ),
            JsonFault::EndsEarly { line, column } => (
                format!("the request body is not valid JSON: it ends early, at line {line}, column {column}"),
                "eof",
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON")]
    InvalidJson(JsonFault),
    #[error("unknown field")]
    UnknownField { field: Option<String> },
    #[error("invalid field")]
    Invalid(ValidationError),
    #[error("malformed request")]
    BadRequest { field: Option<String>, detail: String },
    #[error("forbidden: {0}")]
    Forbidden(AuthError),
    #[error("not found")]
    NotFound,
    #[error("token expired")]
    TokenExpired,
    #[error("conflict")]
    Conflict { detail: &'static str },
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    #[error("key version in use")]
    KeyVersionInUse { records: Option<i64> },
    #[error("payload too large")]
    PayloadTooLarge { limit: usize },
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("request body timed out")]
    RequestTimeout,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("rate limited")]
    RateLimited { retry_after: u64 },
    #[error("unavailable")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::Invalid(e)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::TenantRequired => ApiError::Invalid(ValidationError::new(
                crate::validate::Code::InvalidRequest,
                "tenant",
                "required",
                "tenant is required: this identity acts in more than one tenant",
            )),
            other => ApiError::Forbidden(other),
        }
    }
}

/// The deliberate collapse of vault errors: the caller learns the category, the
/// log learns the cause (never a value).
impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        ApiError::from_ref(&e)
    }
}

impl ApiError {
    pub fn from_ref(e: &VaultError) -> ApiError {
        match e {
            VaultError::Invalid(v) => ApiError::Invalid(v.clone()),
            VaultError::NotFound => ApiError::NotFound,
            VaultError::Expired => ApiError::TokenExpired,
            VaultError::TokenSpaceExhausted => ApiError::Invalid(crate::validate::ValidationError::new(
                crate::validate::Code::InvalidRequest,
                "format",
                "exhausted",
                "no unused numeric token is left for this card number's first 6 and last 4 digits; use format opaque",
            )),
            VaultError::Forbidden(e) => ApiError::from(e.clone()),
            VaultError::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            VaultError::KeyVersionInUse { records } => ApiError::KeyVersionInUse { records: *records },
            VaultError::KeyExhausted => {
                tracing::error!("the active key version reached its wrap limit: rotate the keys");
                ApiError::Unavailable
            }
            VaultError::KeyringChanged => ApiError::Conflict {
                detail: "the keyring file was re-sealed since the daemon started; restart it first",
            },
            VaultError::Conflict => ApiError::Conflict {
                detail: "the token changed while the request was processed; retry",
            },
            VaultError::AmbiguousToken => ApiError::Conflict {
                detail:
                    "this numeric token was issued in more than one of the client's tenants; use a client of one tenant",
            },
            VaultError::Store(StoreError::Conflict) => ApiError::Conflict {
                detail: "the request conflicts with the current state",
            },
            VaultError::Store(cause) => {
                tracing::error!(error = %cause, "storage failure");
                ApiError::Unavailable
            }
            VaultError::Corrupt | VaultError::Crypto(_) => {
                tracing::error!(error = %e, "record could not be processed");
                ApiError::Internal
            }
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    request_id: &'a str,
}

impl ApiError {
    /// Status, stable code and fixed title.
    fn classify(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json", "Malformed JSON"),
            UnknownField { .. } => (StatusCode::BAD_REQUEST, "unknown_field", "Unknown field"),
            Invalid(v) => (StatusCode::UNPROCESSABLE_ENTITY, v.code.as_str(), "Validation failed"),
            BadRequest { .. } => (StatusCode::BAD_REQUEST, "invalid_request", "Malformed request"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            NotFound => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            TokenExpired => (StatusCode::GONE, "token_expired", "Token expired"),
            Conflict { .. } => (StatusCode::CONFLICT, "conflict", "Conflict"),
            IdempotencyKeyReused => (StatusCode::CONFLICT, "idempotency_key_reused", "Idempotency key reused"),
            KeyVersionInUse { .. } => (StatusCode::CONFLICT, "key_version_in_use", "Key version in use"),
            PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "Payload too large"),
            RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "invalid_request", "Request timeout"),
            HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "invalid_request",
                "Request header fields too large",
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many requests"),
            Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }

    fn detail(&self) -> (String, Option<&str>, Option<&str>) {
        use ApiError::*;
        match self {
            InvalidJson(fault) => {
                let (detail, reason) = fault.describe();
                (detail, None, Some(reason))
            }
            UnknownField { field } => (
                "the request has a field this endpoint does not accept".into(),
                field.as_deref(),
                Some("unknown_field"),
            ),
            Invalid(v) => (v.detail.clone(), Some(v.field.as_str()), Some(v.reason)),
            BadRequest { field, detail } => (detail.clone(), field.as_deref(), None),
            Forbidden(AuthError::UnknownIdentity) => (
                "the client certificate's identity is not configured".into(),
                None,
                Some("unknown_identity"),
            ),
            Forbidden(AuthError::TenantNotAllowed) => (
                "this identity may not act in that tenant".into(),
                Some("tenant"),
                Some("tenant"),
            ),
            Forbidden(_) => (
                "this identity's roles do not allow this operation".into(),
                None,
                Some("role"),
            ),
            NotFound => ("no such token or resource".into(), None, None),
            TokenExpired => ("the token has expired".into(), None, None),
            Conflict { detail } => ((*detail).into(), None, None),
            KeyVersionInUse { records: Some(n) } => (
                format!("{n} records still need this key version; let the rewrap finish"),
                None,
                Some("records"),
            ),
            KeyVersionInUse { records: None } => {
                ("the active key version cannot be retired".into(), None, Some("active"))
            }
            IdempotencyKeyReused => (
                "this Idempotency-Key was used with a different request".into(),
                Some("Idempotency-Key"),
                None,
            ),
            PayloadTooLarge { limit } => (format!("the request body exceeds {limit} bytes"), None, None),
            UnsupportedMediaType => ("send Content-Type: application/json".into(), None, None),
            RequestTimeout => ("the request body did not arrive in time".into(), None, Some("timeout")),
            HeadersTooLarge => (
                "at most 64 header fields and 16 KiB of headers are accepted".into(),
                None,
                Some("headers"),
            ),
            MethodNotAllowed { allow } => (format!("allowed methods: {allow}"), None, None),
            RateLimited { retry_after } => (
                format!("this identity exceeded its request rate; retry after {retry_after} s"),
                None,
                None,
            ),
            Unavailable => ("the vault cannot serve this request now".into(), None, None),
            Internal => ("the request could not be completed".into(), None, None),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.classify().0
    }

    /// The problem document, also used for the per-item errors of a batch.
    pub fn to_problem(&self, request_id: &str) -> serde_json::Value {
        let (status, kind, title) = self.classify();
        let (detail, field, reason) = self.detail();
        serde_json::to_value(Problem {
            kind,
            title,
            status: status.as_u16(),
            detail: &detail,
            field,
            reason,
            request_id,
        })
        .unwrap_or_default()
    }

    /// The one function that turns an error into a response.
    pub fn into_response(self, request_id: &str) -> Response<Full<Bytes>> {
        let status = self.classify().0;
        let body = serde_json::to_vec(&self.to_problem(request_id)).unwrap_or_default();
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let ApiError::MethodNotAllowed { allow } = self {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let ApiError::RateLimited { retry_after } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", id);
        }
        response
    }
}
