//! Response bodies. Metadata is public and serialised plainly; a detokenize
//! response is written into one pre-sized buffer that is wiped when hyper has sent
//! it and dropped the last reference.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use zeroize::Zeroizing;

use super::problem::ApiError;
use crate::secret::Personal;
use crate::vault::input::AccountType;
use crate::vault::{Detokenized, Revealed, VaultError};

pub fn json<T: Serialize>(status: StatusCode, value: &T, request_id: &str) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    respond(status, Bytes::from(body), request_id)
}

/// A JSON response from bytes already rendered.
pub fn json_bytes(status: StatusCode, body: Vec<u8>, request_id: &str) -> Response<Full<Bytes>> {
    respond(status, Bytes::from(body), request_id)
}

fn respond(status: StatusCode, body: Bytes, request_id: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", id);
    }
    response
}

/// A plain-text response (the Prometheus exposition format).
pub fn text(status: StatusCode, body: String, request_id: &str) -> Response<Full<Bytes>> {
    let mut response = respond(status, Bytes::from(body), request_id);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

pub fn empty(status: StatusCode, request_id: &str) -> Response<Full<Bytes>> {
    let mut response = respond(status, Bytes::new(), request_id);
    response.headers_mut().remove(header::CONTENT_TYPE);
    response
}

/// A buffer that zeroizes itself when the last `Bytes` referring to it is dropped.
struct WipedOnDrop(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for WipedOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

pub fn detokenized(value: &Detokenized, request_id: &str) -> Response<Full<Bytes>> {
    let view = DetokenizedView(value);
    // Sized so that serialisation never reallocates (which would free a copy of the
    // raw values unwiped): every string at most doubles when escaped.
    let mut buf = Zeroizing::new(Vec::with_capacity(512 + 2 * secret_len(&value.revealed)));
    if serde_json::to_writer(&mut *buf, &view).is_err() {
        buf.clear();
    }
    respond(StatusCode::OK, Bytes::from_owner(WipedOnDrop(buf)), request_id)
}

/// `{"results": [...]}` of a detokenize batch, in one wiped buffer.
pub fn detokenized_batch(results: &[Result<Detokenized, VaultError>], request_id: &str) -> Response<Full<Bytes>> {
    let size: usize = results
        .iter()
        .map(|r| r.as_ref().map_or(512, |d| 512 + 2 * secret_len(&d.revealed)))
        .sum();
    let mut buf = Zeroizing::new(Vec::with_capacity(64 + size));
    let view = BatchView { results, request_id };
    if serde_json::to_writer(&mut *buf, &view).is_err() {
        buf.clear();
    }
    respond(StatusCode::OK, Bytes::from_owner(WipedOnDrop(buf)), request_id)
}

struct BatchView<'a> {
    results: &'a [Result<Detokenized, VaultError>],
    request_id: &'a str,
}

impl Serialize for BatchView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Items<'a>(&'a BatchView<'a>);
        impl Serialize for Items<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.results.len()))?;
                for result in self.0.results {
                    match result {
                        Ok(d) => seq.serialize_element(&DetokenizedView(d))?,
                        Err(e) => {
                            let problem = ApiError::from_ref(e).to_problem(self.0.request_id);
                            seq.serialize_element(&serde_json::json!({ "error": problem }))?
                        }
                    }
                }
                seq.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("results", &Items(self))?;
        map.end()
    }
}

fn opt_len(p: &Option<Personal>) -> usize {
    p.as_ref().map_or(0, |v| v.expose_secret().len())
}

fn secret_len(revealed: &Revealed) -> usize {
    match revealed {
        Revealed::Card {
            number,
            holder_name,
            billing_address,
            ..
        } => {
            let address = billing_address.as_ref().map_or(0, |a| {
                opt_len(&a.line1)
                    + opt_len(&a.line2)
                    + opt_len(&a.city)
                    + opt_len(&a.state)
                    + opt_len(&a.postal_code)
                    + opt_len(&a.country)
            });
            number.expose_secret().len() + opt_len(holder_name) + address + 8
        }
        Revealed::Iban { iban, holder_name, .. } => iban.expose_secret().len() + opt_len(holder_name) + 16,
        Revealed::Ach {
            account_number,
            holder_name,
            ..
        } => account_number.expose_secret().len() + opt_len(holder_name) + 16,
    }
}

struct DetokenizedView<'a>(&'a Detokenized);

fn expose(p: &Option<Personal>) -> Option<&str> {
    p.as_ref().map(Personal::expose_secret)
}

#[derive(Serialize)]
struct AddressView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    line1: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line2: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    postal_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<&'a str>,
}

#[derive(Serialize)]
struct CardView<'a> {
    number: &'a str,
    exp_month: u8,
    exp_year: u16,
    holder_name: Option<&'a str>,
    cvc: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    billing_address: Option<AddressView<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum BankView<'a> {
    Iban {
        iban: &'a str,
        bic: Option<&'a str>,
        holder_name: Option<&'a str>,
    },
    Ach {
        routing_number: &'a str,
        account_number: &'a str,
        account_type: Option<AccountType>,
        holder_name: Option<&'a str>,
    },
}

#[derive(Serialize)]
struct Envelope<'a> {
    token: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    tenant: &'a str,
    customer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    card: Option<CardView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bank_account: Option<BankView<'a>>,
}

impl Serialize for DetokenizedView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let (card, bank_account) = match &d.revealed {
            Revealed::Card {
                number,
                exp_month,
                exp_year,
                holder_name,
                cvc,
                billing_address,
            } => (
                Some(CardView {
                    number: number.expose_secret(),
                    exp_month: *exp_month,
                    exp_year: *exp_year,
                    holder_name: expose(holder_name),
                    cvc: cvc.as_ref().map(|c| c.expose_secret()),
                    billing_address: billing_address.as_ref().map(|a| AddressView {
                        line1: expose(&a.line1),
                        line2: expose(&a.line2),
                        city: expose(&a.city),
                        state: expose(&a.state),
                        postal_code: expose(&a.postal_code),
                        country: expose(&a.country),
                    }),
                }),
                None,
            ),
            Revealed::Iban { iban, bic, holder_name } => (
                None,
                Some(BankView::Iban {
                    iban: iban.expose_secret(),
                    bic: bic.as_deref(),
                    holder_name: expose(holder_name),
                }),
            ),
            Revealed::Ach {
                routing_number,
                account_number,
                account_type,
                holder_name,
            } => (
                None,
                Some(BankView::Ach {
                    routing_number,
                    account_number: account_number.expose_secret(),
                    account_type: *account_type,
                    holder_name: expose(holder_name),
                }),
            ),
        };
        Envelope {
            token: &d.meta.token,
            kind: &d.meta.kind,
            tenant: &d.meta.tenant,
            customer: d.meta.customer.as_deref(),
            card,
            bank_account,
        }
        .serialize(serializer)
    }
}
