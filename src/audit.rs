//! The audit trail: one entry per security-relevant event, chained by HMAC.
//!
//! An entry holds who did what to which token, and the outcome — never raw data.
//! Its `mac` is HMAC-SHA-256 (audit key from the keyring) over the previous entry's
//! MAC and this entry's canonical bytes (the JSON of every field but `mac`, in the
//! fixed field order of `EntryBody`). Sequence numbers and MACs are assigned by the
//! single commit writer (`commit.rs`), which writes each entry in the same atomic,
//! synced batch as the change it records.

use serde::{Deserialize, Serialize};

use crate::crypto::{audit_mac, MAC_LEN};
use crate::secret::KeyBytes;

/// An event before it has a place in the chain.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub identity: String,
    pub action: &'static str,
    pub tenant: Option<String>,
    pub token: Option<String>,
    pub outcome: &'static str,
    pub request_id: Option<String>,
    pub key_version: Option<u32>,
}

impl AuditEvent {
    pub fn new(identity: &str, action: &'static str, outcome: &'static str) -> Self {
        AuditEvent {
            identity: identity.to_owned(),
            action,
            tenant: None,
            token: None,
            outcome,
            request_id: None,
            key_version: None,
        }
    }

    pub fn tenant(mut self, tenant: &str) -> Self {
        self.tenant = Some(tenant.to_owned());
        self
    }

    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub fn request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_owned());
        self
    }

    pub fn key_version(mut self, version: u32) -> Self {
        self.key_version = Some(version);
        self
    }
}

/// The fields an entry's MAC covers, in canonical order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntryBody {
    pub seq: u64,
    pub time: String,
    pub identity: String,
    pub action: String,
    pub tenant: Option<String>,
    pub token: Option<String>,
    pub outcome: String,
    pub request_id: Option<String>,
    pub key_version: Option<u32>,
}

/// A stored entry: the body and its chained MAC (hex).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    #[serde(flatten)]
    pub body: EntryBody,
    pub mac: String,
}

/// Where the chain ends: the last sequence number and its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub mac: [u8; MAC_LEN],
}

impl ChainHead {
    pub const GENESIS: ChainHead = ChainHead {
        seq: 0,
        mac: [0; MAC_LEN],
    };
}

pub fn seq_key(seq: u64) -> Vec<u8> {
    seq.to_be_bytes().to_vec()
}

/// The canonical body, borrowed from the event: what `chain` serializes. Its fields
/// and their order are exactly those of `EntryBody`, which the verifier rebuilds.
#[derive(Serialize)]
struct BodyRef<'a> {
    seq: u64,
    time: &'a str,
    identity: &'a str,
    action: &'a str,
    tenant: Option<&'a str>,
    token: Option<&'a str>,
    outcome: &'a str,
    request_id: Option<&'a str>,
    key_version: Option<u32>,
}

/// Places `event` after `head`, returning the stored bytes and the new head.
///
/// The body is serialized once: the stored entry is the canonical body with the
/// MAC appended as its last field, byte for byte what serializing `AuditEntry`
/// gives (a unit test holds the two together).
pub fn chain(key: &KeyBytes, head: ChainHead, event: &AuditEvent, time: &str) -> (Vec<u8>, ChainHead) {
    let seq = head.seq + 1;
    let body = BodyRef {
        seq,
        time,
        identity: &event.identity,
        action: event.action,
        tenant: event.tenant.as_deref(),
        token: event.token.as_deref(),
        outcome: event.outcome,
        request_id: event.request_id.as_deref(),
        key_version: event.key_version,
    };
    let mut bytes = Vec::with_capacity(256);
    if serde_json::to_writer(&mut bytes, &body).is_err() {
        bytes.clear();
    }
    let mac = audit_mac(key, &head.mac, &bytes);
    // `{...}` becomes `{...,"mac":"<hex>"}`.
    if bytes.last() == Some(&b'}') {
        bytes.pop();
        bytes.extend_from_slice(b",\"mac\":\"");
        push_hex(&mut bytes, &mac);
        bytes.extend_from_slice(b"\"}");
    }
    (bytes, ChainHead { seq, mac })
}

/// Reads the chain head back from a stored last entry.
pub fn head_of(bytes: &[u8]) -> Option<ChainHead> {
    let entry: AuditEntry = serde_json::from_slice(bytes).ok()?;
    Some(ChainHead {
        seq: entry.body.seq,
        mac: unhex(&entry.mac)?,
    })
}

/// The outcome of checking a run of entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub ok: bool,
    pub entries: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// Incremental chain verification: feed entries in key order.
pub struct Verifier<'k> {
    key: &'k KeyBytes,
    head: ChainHead,
    checked: u64,
}

impl<'k> Verifier<'k> {
    pub fn new(key: &'k KeyBytes) -> Self {
        Verifier {
            key,
            head: ChainHead::GENESIS,
            checked: 0,
        }
    }

    /// Checks one stored entry (`stored_key` is its table key). On failure, returns
    /// the verdict naming the first bad sequence number.
    pub fn check(&mut self, stored_key: &[u8], bytes: &[u8]) -> Result<(), Verdict> {
        let expected = self.head.seq + 1;
        let bad = |reason| Verdict {
            ok: false,
            entries: self.checked,
            first_bad_seq: Some(expected),
            reason: Some(reason),
        };
        let entry: AuditEntry = serde_json::from_slice(bytes).map_err(|_| bad("entry is not readable"))?;
        if stored_key != seq_key(entry.body.seq).as_slice() {
            return Err(bad("entry is stored under another sequence number"));
        }
        if entry.body.seq != expected {
            return Err(bad("sequence number out of order or missing"));
        }
        let canonical = serde_json::to_vec(&entry.body).unwrap_or_default();
        let mac = audit_mac(self.key, &self.head.mac, &canonical);
        if unhex(&entry.mac) != Some(mac) {
            return Err(bad("MAC does not match"));
        }
        self.head = ChainHead { seq: expected, mac };
        self.checked += 1;
        Ok(())
    }

    pub fn finish(self) -> Verdict {
        Verdict {
            ok: true,
            entries: self.checked,
            first_bad_seq: None,
            reason: None,
        }
    }
}

/// Lower-case hex of `bytes`, appended to `out` (the writer does this for every
/// entry, so it formats nothing and allocates at most once).
fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    let digit = |n: u8| if n < 10 { b'0' + n } else { b'a' + (n - 10) };
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(b & 0x0f));
    }
}

#[cfg(test)]
fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    push_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

fn unhex(text: &str) -> Option<[u8; MAC_LEN]> {
    if text.len() != MAC_LEN * 2 {
        return None;
    }
    let mut out = [0u8; MAC_LEN];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Verifies the whole chain stored in `store`, reading it in pages.
pub fn verify_store(store: &dyn crate::store::Store, key: &KeyBytes) -> Result<Verdict, crate::store::StoreError> {
    const PAGE: usize = 4096;
    let mut verifier = Verifier::new(key);
    let mut from = Vec::new();
    loop {
        let page = store.scan_from(crate::store::Table::Audit, &from, PAGE)?;
        for (k, bytes) in &page {
            if let Err(verdict) = verifier.check(k, bytes) {
                return Ok(verdict);
            }
        }
        match page.last() {
            Some((last, _)) if page.len() == PAGE => {
                from = last.clone();
                from.push(0);
            }
            _ => break,
        }
    }
    Ok(verifier.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(n: u64, key: &KeyBytes) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut head = ChainHead::GENESIS;
        let mut out = Vec::new();
        for i in 0..n {
            let event = AuditEvent::new("gateway", "detokenize", "ok").token(&format!("tok_{i}"));
            let (bytes, next) = chain(key, head, &event, "2026-12-03T00:00:00Z");
            out.push((seq_key(next.seq), bytes));
            head = next;
        }
        out
    }

    fn verify(entries: &[(Vec<u8>, Vec<u8>)], key: &KeyBytes) -> Verdict {
        let mut v = Verifier::new(key);
        for (k, bytes) in entries {
            if let Err(verdict) = v.check(k, bytes) {
                return verdict;
            }
        }
        v.finish()
    }

    #[test]
    fn hex_is_lower_case_and_round_trips() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff, 0x5c]), "000fa0ff5c");
        let mac: [u8; MAC_LEN] = std::array::from_fn(|i| (i * 37 + 11) as u8);
        assert_eq!(unhex(&hex(&mac)), Some(mac));
    }

    #[test]
    fn stored_entry_is_the_serde_form_of_audit_entry() {
        let key = KeyBytes::new([3; 32]);
        let event = AuditEvent::new("checkout \"eu\"", "tokenize", "ok")
            .tenant("acme")
            .token("tok_x")
            .request_id("r1")
            .key_version(2);
        let (bytes, head) = chain(&key, ChainHead::GENESIS, &event, "2026-12-03T00:00:00Z");
        let parsed: AuditEntry = serde_json::from_slice(&bytes).unwrap_or_else(|_| unreachable!("parses"));
        assert_eq!(serde_json::to_vec(&parsed).ok(), Some(bytes.clone()));
        assert_eq!(parsed.body.seq, 1);
        assert_eq!(parsed.body.identity, "checkout \"eu\"");
        assert_eq!(parsed.mac, hex(&head.mac));
        let bare = AuditEvent::new("gateway", "detokenize", "not_found");
        let (bytes, _) = chain(&key, head, &bare, "2026-12-03T00:00:01Z");
        let parsed: AuditEntry = serde_json::from_slice(&bytes).unwrap_or_else(|_| unreachable!("parses"));
        assert_eq!(serde_json::to_vec(&parsed).ok(), Some(bytes));
    }

    #[test]
    fn whole_chain_verifies_and_head_reads_back() {
        let key = KeyBytes::new([9; 32]);
        let entries = build(5, &key);
        assert!(verify(&entries, &key).ok);
        let last = entries.last().and_then(|(_, b)| head_of(b));
        assert_eq!(last.map(|h| h.seq), Some(5));
    }

    #[test]
    fn edits_deletes_and_swaps_name_the_first_bad_entry() {
        let key = KeyBytes::new([9; 32]);
        let entries = build(5, &key);

        let mut edited = entries.clone();
        if let Some((_, bytes)) = edited.get_mut(2) {
            *bytes = String::from_utf8_lossy(bytes)
                .replace("\"ok\"", "\"denied\"")
                .into_bytes();
        }
        assert_eq!(verify(&edited, &key).first_bad_seq, Some(3));

        let mut deleted = entries.clone();
        deleted.remove(1);
        assert_eq!(verify(&deleted, &key).first_bad_seq, Some(2));

        let mut swapped = entries.clone();
        swapped.swap(3, 4);
        assert_eq!(verify(&swapped, &key).first_bad_seq, Some(4));

        let other = KeyBytes::new([8; 32]);
        assert_eq!(verify(&entries, &other).first_bad_seq, Some(1));
    }
}
