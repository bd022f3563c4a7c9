//! Request bodies: size limit enforced before and while reading, JSON content type,
//! and decoding with errors that name the field and rule but never quote the input.
//! The raw body is collected into a buffer that is wiped when dropped.

use bytes::Buf;
use http::{header, HeaderMap};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

use super::problem::{ApiError, JsonFault};
use crate::validate::{Code, ValidationError};

/// A request body that a handler may take, or leave for `handle` to drain: an
/// error sent before the body is read would otherwise reset an HTTP/2 stream that
/// the client is still sending on, and some clients then lose the answer.
#[derive(Clone)]
pub struct BodySlot(std::sync::Arc<std::sync::Mutex<Option<Incoming>>>);

impl BodySlot {
    pub fn new(body: Incoming) -> Self {
        BodySlot(std::sync::Arc::new(std::sync::Mutex::new(Some(body))))
    }

    pub fn take(&self) -> Option<Incoming> {
        self.0
            .lock()
            .map(|mut b| b.take())
            .unwrap_or_else(|mut p| p.get_mut().take())
    }
}

/// Reads and discards at most `max` bytes of an unread body, for at most `timeout`.
pub async fn drain(mut body: Incoming, max: usize, timeout: std::time::Duration) {
    let read = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.remaining();
                if seen > max {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(timeout, read).await;
}

/// Reads the whole body, refusing more than `limit` bytes (first by
/// `Content-Length`, then while reading a body without one).
/// The memory all request bodies held at once may take (`max_buffered_body_bytes`),
/// counted in KiB: a body takes its share as it grows and gives it back when it is
/// dropped, so clients that send many large bodies slowly cannot exhaust memory.
#[derive(Clone)]
pub struct BodyBudget(Arc<Semaphore>);

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        BodyBudget(Arc::new(Semaphore::new(kib(bytes).clamp(1, Semaphore::MAX_PERMITS))))
    }
}

fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}

/// A request body read into memory: wiped when dropped, and holding its share of
/// the `BodyBudget` until then.
pub struct RequestBody {
    bytes: Zeroizing<Vec<u8>>,
    _share: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for RequestBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

pub async fn read_body(
    headers: &HeaderMap,
    slot: BodySlot,
    limit: usize,
    timeout: std::time::Duration,
    budget: &BodyBudget,
) -> Result<RequestBody, ApiError> {
    if declared_length(headers).is_some_and(|n| n > limit as u64) {
        // Left in the slot: `handle` drains a moderately sized body after answering.
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let body = slot.take().ok_or(ApiError::Internal)?;
    // A client that stops sending mid-body must not hold a connection slot.
    tokio::time::timeout(timeout, read_body_inner(headers, body, limit, budget))
        .await
        .map_err(|_| ApiError::RequestTimeout)?
}

/// Takes the budget for a buffer of `capacity` bytes, on top of what `share`
/// already holds; 503 when the vault holds too many bodies already.
fn grow_share(share: &mut Option<OwnedSemaphorePermit>, capacity: usize, budget: &BodyBudget) -> Result<(), ApiError> {
    let held = share.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
    let more = kib(capacity).saturating_sub(held);
    if more == 0 {
        return Ok(());
    }
    let extra = u32::try_from(more)
        .ok()
        .and_then(|n| budget.0.clone().try_acquire_many_owned(n).ok())
        .ok_or(ApiError::Unavailable)?;
    match share {
        Some(permit) => permit.merge(extra),
        None => *share = Some(extra),
    }
    Ok(())
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

async fn read_body_inner(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    budget: &BodyBudget,
) -> Result<RequestBody, ApiError> {
    let declared = declared_length(headers);
    // Reserve only a little up front: memory follows the bytes that arrive, not
    // what a client declares.
    let capacity = declared.map_or(1024, |n| n as usize).min(limit).min(16 * 1024);
    let mut share = None;
    grow_share(&mut share, capacity, budget)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(capacity));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::BadRequest {
            field: None,
            detail: "the request body could not be read".into(),
        })?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.remaining() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let needed = buf.len() + data.remaining();
        if needed > buf.capacity() {
            // Grow by copying into a new wiped-on-drop buffer, so the old allocation
            // is zeroized rather than freed with card data in it.
            let grown = needed.max(buf.capacity() * 2).min(limit);
            grow_share(&mut share, buf.capacity() + grown, budget)?;
            let mut bigger = Zeroizing::new(Vec::with_capacity(grown));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        while data.has_remaining() {
            let chunk = data.chunk();
            buf.extend_from_slice(chunk);
            let n = chunk.len();
            data.advance(n);
        }
    }
    Ok(RequestBody {
        bytes: buf,
        _share: share,
    })
}

/// `Content-Type` must be `application/json` (parameters such as charset allowed).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if ok {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// How deeply JSON may nest; the request schemas need four levels.
pub const MAX_DEPTH: usize = 16;

/// Checks the shape of a JSON text before it is decoded: an object at the top,
/// nesting at most `MAX_DEPTH`, and no arrays unless `arrays` (serde would accept
/// an array in place of any object, filling fields by position). Only structure is
/// inspected; string contents are skipped.
fn check_shape(bytes: &[u8], arrays: bool) -> Result<(), ApiError> {
    let shape = |detail: &str| ApiError::BadRequest {
        field: None,
        detail: detail.to_owned(),
    };
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => return Err(shape("the request body must be a JSON object")),
        None => return Err(ApiError::InvalidJson(JsonFault::Empty)),
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' if !arrays => return Err(shape("arrays are not accepted in this request")),
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(shape("the JSON nests too deeply"));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Decodes a JSON object without arrays into `T` (single-item requests).
pub fn decode_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    check_shape(bytes, false)?;
    decode(bytes)
}

/// Decodes JSON into `T`, mapping every serde failure to a problem that names the
/// field (by its JSON path) and the rule, never the submitted value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    decode_borrowed(bytes)
}

/// Like `decode`, for types that borrow from the body (batch envelopes).
pub fn decode_borrowed<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    check_shape(bytes, true)?;
    // Most requests are well formed: decode them without tracking the path, which
    // copies every key. Only a failure is decoded again, with the path, to name
    // the field (the same bytes fail the same way).
    let mut de = serde_json::Deserializer::from_slice(bytes);
    if let Ok(value) = T::deserialize(&mut de) {
        if de.end().is_ok() {
            return Ok(value);
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| map_error(&e))?;
    de.end().map_err(|e| ApiError::InvalidJson(JsonFault::of(&e)))?;
    Ok(value)
}

/// A JSON path built only from safe segments (field names of our own schema and
/// array indices). Anything else makes the path unknown rather than echoed.
fn safe_path(path: &serde_path_to_error::Path, drop_last: bool) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    let n = path.iter().count();
    let keep = if drop_last { n.saturating_sub(1) } else { n };
    for segment in path.iter().take(keep) {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if safe_name(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A field name we may repeat back: short, ASCII letters and underscores, at most
/// two digits (so no number, card or account can pass as a name).
fn safe_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.bytes().filter(u8::is_ascii_digit).count() <= 2
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

/// The name between the first pair of backticks in a serde message, if it is safe.
fn quoted_name(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    let name = rest.get(..end)?;
    safe_name(name).then(|| name.to_owned())
}

fn map_error(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let inner = e.inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => return ApiError::InvalidJson(JsonFault::of(inner)),
        Category::Data => {}
    }
    // Only the message's fixed prefix is inspected; the message itself (which may
    // quote the input) is never returned or logged.
    let message = inner.to_string();
    if message.starts_with("unknown field `") {
        // The path ends with the unknown key itself: name it only if it is safe.
        let parent = safe_path(e.path(), true);
        let name = quoted_name(&message, "unknown field `");
        let field = parent.zip(name).map(|(parent, name)| join(&parent, &name));
        return ApiError::UnknownField { field };
    }
    let Some(path) = safe_path(e.path(), false) else {
        return ApiError::BadRequest {
            field: None,
            detail: "the request does not have the expected shape".into(),
        };
    };
    if let Some(name) = quoted_name(&message, "missing field `") {
        let field = join(&path, &name);
        return field_error(&field, "missing", format!("{field} is required"));
    }
    if message.starts_with("duplicate field `") {
        let field = quoted_name(&message, "duplicate field `").map(|name| join(&path, &name));
        return ApiError::BadRequest {
            field,
            detail: "a field appears twice".into(),
        };
    }
    let field = if path.is_empty() { "request".to_owned() } else { path };
    let detail = format!("{field} {}", expectation(&field));
    field_error(&field, "type", detail)
}

/// What a field must be, for type errors.
fn expectation(field: &str) -> &'static str {
    let leaf = field.rsplit('.').next().unwrap_or(field);
    match leaf {
        "exp_month" | "exp_year" => "must be an integer or a string of digits",
        "ttl_seconds" => "must be a positive integer",
        "reuse_existing" => "must be true or false",
        "format" => "must be \"opaque\" or \"numeric\"",
        "account_type" => "must be \"checking\" or \"savings\"",
        "card" | "bank_account" | "billing_address" | "request" => "must be a JSON object",
        "tokens" | "items" => "must be an array",
        _ => "must be a string",
    }
}

/// Field-level problems use the code of the field they concern.
fn field_error(field: &str, reason: &'static str, detail: String) -> ApiError {
    let code = match field.rsplit('.').next().unwrap_or(field) {
        "number" if field.ends_with("card.number") => Code::InvalidCardNumber,
        "exp_month" => Code::InvalidExpiryMonth,
        "exp_year" => Code::InvalidExpiryYear,
        "cvc" => Code::InvalidCvc,
        "iban" => Code::InvalidIban,
        "routing_number" => Code::InvalidRoutingNumber,
        "account_number" => Code::InvalidAccountNumber,
        _ => Code::InvalidRequest,
    };
    ApiError::Invalid(ValidationError::new(code, field, reason, detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::input::TokenizeRequest;

    fn problem(json: &str) -> (String, Option<String>, String) {
        match decode::<TokenizeRequest>(json.as_bytes()) {
            Ok(_) => ("ok".into(), None, String::new()),
            Err(ApiError::Invalid(v)) => (v.code.as_str().into(), Some(v.field), v.detail),
            Err(ApiError::UnknownField { field }) => ("unknown_field".into(), field, String::new()),
            Err(ApiError::InvalidJson(fault)) => ("invalid_json".into(), None, format!("{fault:?}")),
            Err(ApiError::BadRequest { field, detail }) => ("invalid_request".into(), field, detail),
            Err(other) => (format!("{other:?}"), None, String::new()),
        }
    }

    #[test]
    fn number_as_json_number_names_the_field_not_the_value() {
        let (code, field, detail) = problem(r#"{"card":{"number":4111111111111111,"exp_month":1,"exp_year":2030}}"#);
        assert_eq!(code, "invalid_card_number");
        assert_eq!(field.as_deref(), Some("card.number"));
        assert_eq!(detail, "card.number must be a string");
    }

    #[test]
    fn unknown_fields_are_named_only_when_safe() {
        let (code, field, _) = problem(r#"{"card":{"number":"4111","exp_month":1,"exp_year":2030,"colour":1}}"#);
        assert_eq!(
            (code.as_str(), field.as_deref()),
            ("unknown_field", Some("card.colour"))
        );
        let (code, field, _) = problem(r#"{"4111111111111111":1}"#);
        assert_eq!((code.as_str(), field), ("unknown_field", None));
    }

    #[test]
    fn missing_and_syntax_errors() {
        let (code, field, _) = problem(r#"{"card":{"exp_month":1,"exp_year":2030}}"#);
        assert_eq!(
            (code.as_str(), field.as_deref()),
            ("invalid_card_number", Some("card.number"))
        );
        assert_eq!(problem(r#"{"card":"#).0, "invalid_json");
        assert_eq!(problem(r#"{} trailing"#).0, "invalid_json");
        assert_eq!(problem(r#"[]"#).0, "invalid_request");
    }

    /// Bodies take their share of the budget as they grow and give it back when
    /// dropped; one that would exceed it is refused (503), not buffered.
    #[test]
    fn bodies_share_a_bounded_budget() {
        let budget = BodyBudget::new(8 * 1024);
        let mut first = None;
        assert!(grow_share(&mut first, 2 * 1024, &budget).is_ok());
        assert!(grow_share(&mut first, 6 * 1024, &budget).is_ok());
        assert_eq!(first.as_ref().map(OwnedSemaphorePermit::num_permits), Some(6));
        let mut second = None;
        assert!(matches!(
            grow_share(&mut second, 4 * 1024, &budget),
            Err(ApiError::Unavailable)
        ));
        assert!(second.is_none());
        assert!(grow_share(&mut second, 2 * 1024, &budget).is_ok());
        drop(first);
        assert!(grow_share(&mut second, 8 * 1024, &budget).is_ok());
        assert_eq!(budget.0.available_permits(), 0);
        drop(second);
        assert_eq!(budget.0.available_permits(), 8);
    }

    /// A malformed body is answered with where it went wrong (line, column) and
    /// how, never with what it held.
    #[test]
    fn malformed_json_is_located_not_quoted() {
        let fault = |json: &str| match decode::<TokenizeRequest>(json.as_bytes()) {
            Err(ApiError::InvalidJson(fault)) => Some(fault),
            _ => None,
        };
        assert_eq!(fault("  "), Some(JsonFault::Empty));
        assert_eq!(
            fault("{\"card\":{\"number\":\"4111111111111111\",}}"),
            Some(JsonFault::Syntax { line: 1, column: 38 })
        );
        assert_eq!(
            fault("{\n  \"card\": {\n    \"number\": \"4111111111111111\"\n"),
            Some(JsonFault::EndsEarly { line: 4, column: 0 })
        );
        assert_eq!(fault("{} trailing"), Some(JsonFault::Syntax { line: 1, column: 4 }));
        assert_eq!(
            fault("{\"card\":{\"number\":'4111111111111111'}}"),
            Some(JsonFault::Syntax { line: 1, column: 19 })
        );
        for json in [
            "{\"card\":{\"number\":\"4111111111111111\",}}",
            "{\"card\":{\"number\":'4111111111111111'}}",
        ] {
            let Err(e) = decode::<TokenizeRequest>(json.as_bytes()) else {
                panic!("accepted");
            };
            let shown = format!("{e:?} {e}");
            assert!(!shown.contains("4111"), "{shown}");
        }
    }

    #[test]
    fn month_as_string_is_judged_by_the_month_rule_later() {
        assert_eq!(
            problem(r#"{"card":{"number":"4111111111111111","exp_month":"00","exp_year":2030}}"#).0,
            "ok"
        );
        let (code, field, _) = problem(r#"{"card":{"number":"4111111111111111","exp_month":true,"exp_year":2030}}"#);
        assert_eq!(
            (code.as_str(), field.as_deref()),
            ("invalid_expiry_month", Some("card.exp_month"))
        );
    }

    #[test]
    fn json_type_detail_never_contains_input() {
        for json in [
            r#"{"card":{"number":["4111111111111111"],"exp_month":1,"exp_year":2030}}"#,
            r#"{"format":"4111111111111111"}"#,
            r#"{"bank_account":{"iban":{"x":"GB82WEST12345698765432"}}}"#,
            r#"{"card":{"number":"x","exp_month":"4111111111111111","exp_year":2030}}"#,
        ] {
            let (_, field, detail) = problem(json);
            let text = format!("{field:?} {detail}");
            assert!(!text.contains("4111") && !text.contains("GB82"), "{text}");
        }
    }
}
