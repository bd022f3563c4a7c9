//! A customer's saved payment methods in a tenant: metadata only, newest first,
//! paginated by an opaque cursor. Read from the `customers` index, not a scan of
//! the records; deleted and expired tokens do not appear.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::record::{customer_prefix, Metadata};
use super::{Vault, VaultError};
use crate::auth::{Authorized, ReadWallet};
use crate::store::Table;
use crate::validate::{validate_reference_lookup, Code, ValidationError};

pub const DEFAULT_PAGE: usize = 20;
pub const MAX_PAGE: usize = 100;

#[derive(Debug, Clone, serde::Serialize)]
pub struct WalletPage {
    pub tokens: Vec<Metadata>,
    pub next: Option<String>,
}

fn cursor_error() -> VaultError {
    ValidationError::new(
        Code::InvalidRequest,
        "cursor",
        "format",
        "cursor is not a cursor this vault issued",
    )
    .into()
}

impl Vault {
    pub fn list_customer(
        &self,
        auth: &Authorized<ReadWallet>,
        customer: &str,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<WalletPage, VaultError> {
        // A lookup stores nothing: references stored before the stored-reference
        // checks grew stay readable.
        validate_reference_lookup("customer", customer)?;
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(
                ValidationError::new(Code::InvalidRequest, "limit", "range", "limit must be from 1 to 100").into(),
            );
        }
        let tenant = auth.tenants().first().map(String::as_str).unwrap_or_default();
        let prefix = customer_prefix(tenant, customer);
        let mut start = prefix.clone();
        if let Some(cursor) = cursor {
            let suffix = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| cursor_error())?;
            if suffix.len() < 9 {
                return Err(cursor_error());
            }
            start.extend_from_slice(&suffix);
        }
        let now = self.now_unix();
        let mut tokens = Vec::with_capacity(limit);
        let mut next = None;
        // Bounded: at most a few index pages per request, whatever lies in the index.
        'pages: for _ in 0..8 {
            let entries = self.store.scan_from(Table::Customers, &start, limit + 1)?;
            let exhausted = entries.len() < limit + 1;
            for (key, _) in &entries {
                if !key.starts_with(&prefix) {
                    break 'pages;
                }
                let suffix = key.get(prefix.len()..).unwrap_or_default();
                if tokens.len() == limit {
                    next = Some(URL_SAFE_NO_PAD.encode(suffix));
                    break 'pages;
                }
                let token = String::from_utf8_lossy(suffix.get(8..).unwrap_or_default()).into_owned();
                if let Some((record, _)) = self.load(auth.tenants(), &token)? {
                    if record.meta.tenant == tenant && !record.is_expired(now) {
                        tokens.push(record.meta);
                    }
                }
                start = key.clone();
                start.push(0);
            }
            if exhausted {
                break;
            }
        }
        Ok(WalletPage { tokens, next })
    }
}
