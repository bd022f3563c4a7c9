//! Request routing: the path to a `Route` (with a fixed name for logs and
//! metrics), and query strings.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route<'a> {
    Health,
    Ready,
    Tokens,
    TokensBatch,
    Token(&'a str),
    Detokenize(&'a str),
    DetokenizeBatch,
    CustomerTokens(&'a str),
    Keys,
    KeysRotate,
    KeyRetire(&'a str),
    Audit,
    AuditVerify,
    Metrics,
    Backups,
    Unknown,
}

impl Route<'_> {
    pub(super) fn parse(path: &str) -> Route<'_> {
        let mut parts = path.trim_start_matches('/').split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("healthz"), None, ..) => Route::Health,
            (Some("readyz"), None, ..) => Route::Ready,
            (Some("metrics"), None, ..) => Route::Metrics,
            (Some("v1"), Some("backups"), None, ..) => Route::Backups,
            (Some("v1"), Some("tokens"), None, ..) => Route::Tokens,
            (Some("v1"), Some("keys"), None, ..) => Route::Keys,
            (Some("v1"), Some("keys"), Some("rotate"), None, _) => Route::KeysRotate,
            (Some("v1"), Some("keys"), Some(v), Some("retire"), None) => Route::KeyRetire(v),
            (Some("v1"), Some("audit"), None, ..) => Route::Audit,
            (Some("v1"), Some("audit"), Some("verify"), None, _) => Route::AuditVerify,
            (Some("v1"), Some("tokens"), Some("batch"), None, _) => Route::TokensBatch,
            (Some("v1"), Some("detokenize"), Some("batch"), None, _) => Route::DetokenizeBatch,
            (Some("v1"), Some("customers"), Some(c), Some("tokens"), None) if !c.is_empty() => Route::CustomerTokens(c),
            (Some("v1"), Some("tokens"), Some(t), None, _) if !t.is_empty() => Route::Token(t),
            (Some("v1"), Some("tokens"), Some(t), Some("detokenize"), None) if !t.is_empty() => Route::Detokenize(t),
            _ => Route::Unknown,
        }
    }

    /// A fixed name for logs and metrics: never the path, which may hold anything.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Route::Health => "healthz",
            Route::Ready => "readyz",
            Route::Tokens => "tokenize",
            Route::TokensBatch => "tokenize_batch",
            Route::Token(_) => "token",
            Route::Detokenize(_) => "detokenize",
            Route::DetokenizeBatch => "detokenize_batch",
            Route::CustomerTokens(_) => "customer_tokens",
            Route::Keys => "keys",
            Route::KeysRotate => "rotate",
            Route::KeyRetire(_) => "retire",
            Route::Audit => "audit",
            Route::AuditVerify => "audit_verify",
            Route::Metrics => "metrics",
            Route::Backups => "backup",
            Route::Unknown => "unknown",
        }
    }

    pub(super) fn allow(&self) -> &'static str {
        match self {
            Route::Health | Route::Ready => "GET",
            Route::Tokens | Route::TokensBatch | Route::Detokenize(_) | Route::DetokenizeBatch => "POST",
            Route::Token(_) => "GET, PATCH, DELETE",
            Route::CustomerTokens(_) | Route::Keys | Route::Audit | Route::AuditVerify => "GET",
            Route::KeysRotate | Route::KeyRetire(_) | Route::Backups => "POST",
            Route::Metrics => "GET",
            Route::Unknown => "",
        }
    }
}

/// Decodes `%XX` escapes of a path segment; `None` for malformed escapes or
/// non-UTF-8 results.
pub(super) fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A parsed query string (first value of each name wins).
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(query: &str) -> Query {
        Query(
            query
                .split('&')
                .filter_map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    Some((percent_decode(name)?, percent_decode(value)?))
                })
                .collect(),
        )
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/healthz"), Route::Health);
        assert_eq!(Route::parse("/v1/tokens"), Route::Tokens);
        assert_eq!(Route::parse("/v1/tokens/tok_x"), Route::Token("tok_x"));
        assert_eq!(Route::parse("/v1/tokens/tok_x/detokenize"), Route::Detokenize("tok_x"));
        assert_eq!(Route::parse("/v1/tokens/tok_x/other"), Route::Unknown);
        assert_eq!(Route::parse("/v1/tokens/"), Route::Unknown);
        assert_eq!(Route::parse("/"), Route::Unknown);
        assert_eq!(Route::parse("/v1/tokens/a/detokenize/x"), Route::Unknown);
        assert_eq!(Route::parse("/v1/tokens/batch"), Route::TokensBatch);
        assert_eq!(Route::parse("/v1/detokenize/batch"), Route::DetokenizeBatch);
        assert_eq!(
            Route::parse("/v1/customers/cus_1/tokens"),
            Route::CustomerTokens("cus_1")
        );
        assert_eq!(percent_decode("cus%5F1").as_deref(), Some("cus_1"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }
}
