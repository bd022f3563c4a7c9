//! Keyed MACs: credential fingerprints, idempotency keys and the audit chain.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::KeyBytes;

type HmacSha256 = Hmac<Sha256>;

pub const MAC_LEN: usize = 32;

fn hmac(key: &KeyBytes) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail for a 32-byte key; the
    // fallback keeps this path free of panics all the same.
    HmacSha256::new_from_slice(key.expose_secret()).unwrap_or_else(|_| HmacSha256::new(&Default::default()))
}

fn put_field(mac: &mut HmacSha256, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_be_bytes());
    mac.update(bytes);
}

/// HMAC-SHA-256 over `fields`, each length-prefixed (the first names the use).
fn mac_fields(key: &KeyBytes, fields: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut mac = hmac(key);
    for field in fields {
        put_field(&mut mac, field);
    }
    mac.finalize().into_bytes().into()
}

/// The fingerprint of a normalised credential: HMAC-SHA-256 under the keyring's
/// fingerprint key over the tenant, the credential kind and the value, each length
/// prefixed. Stable within a tenant, unlinkable across tenants, and not brute-forceable
/// from BIN and last 4 without the key.
pub fn fingerprint(key: &KeyBytes, tenant: &str, kind: &str, normalized: &[u8]) -> String {
    let tag = mac_fields(
        key,
        &[
            b"tokenvault/fingerprint/v1",
            tenant.as_bytes(),
            kind.as_bytes(),
            normalized,
        ],
    );
    format!("fp_{}", URL_SAFE_NO_PAD.encode(tag))
}

/// What the store keeps of a caller's `Idempotency-Key` header: HMAC-SHA-256
/// under the fingerprint key over the identity, tenant and header, each length
/// prefixed. The header is caller text (it could hold a card number) and never
/// reaches the disk itself.
pub fn idempotency_id(key: &KeyBytes, identity: &str, tenant: &str, header: &[u8]) -> String {
    let tag = mac_fields(
        key,
        &[
            b"tokenvault/idempotency-key/v1",
            identity.as_bytes(),
            tenant.as_bytes(),
            header,
        ],
    );
    format!("ik_{}", URL_SAFE_NO_PAD.encode(tag))
}

/// What the audit trail names when a request asks for a token that matches
/// nothing: the asked-for text is caller text (it could be a card number), so
/// only its HMAC under the fingerprint key is kept, truncated to 128 bits.
/// Repeated probes of one value show the same label, and an investigator holding
/// a candidate token can be told whether it was asked for.
pub fn probe_label(key: &KeyBytes, asked: &[u8]) -> String {
    let tag = mac_fields(key, &[b"tokenvault/audit-probe/v1", asked]);
    format!("probe_{}", URL_SAFE_NO_PAD.encode(tag.get(..16).unwrap_or_default()))
}

/// The MAC of one audit entry: HMAC-SHA-256 over the previous entry's MAC and this
/// entry's canonical bytes.
pub fn audit_mac(key: &KeyBytes, previous: &[u8; MAC_LEN], entry: &[u8]) -> [u8; MAC_LEN] {
    let mut mac = hmac(key);
    put_field(&mut mac, b"tokenvault/audit/v1");
    put_field(&mut mac, previous);
    put_field(&mut mac, entry);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_keyed_and_per_tenant() {
        let k1 = KeyBytes::new([1; 32]);
        let k2 = KeyBytes::new([2; 32]);
        let a = fingerprint(&k1, "t1", "card", b"4111111111111111");
        assert_eq!(a, fingerprint(&k1, "t1", "card", b"4111111111111111"));
        assert_ne!(a, fingerprint(&k2, "t1", "card", b"4111111111111111"));
        assert_ne!(a, fingerprint(&k1, "t2", "card", b"4111111111111111"));
        assert_ne!(a, fingerprint(&k1, "t1", "card", b"4012888888881881"));
        assert!(a.starts_with("fp_") && !a.contains("4111"));
    }

    #[test]
    fn idempotency_ids_are_keyed_per_caller_and_hide_the_header() {
        let k = KeyBytes::new([4; 32]);
        let a = idempotency_id(&k, "spiffe://a", "t1", b"4111111111111111");
        assert_eq!(a, idempotency_id(&k, "spiffe://a", "t1", b"4111111111111111"));
        assert_ne!(
            a,
            idempotency_id(&KeyBytes::new([5; 32]), "spiffe://a", "t1", b"4111111111111111")
        );
        assert_ne!(a, idempotency_id(&k, "spiffe://b", "t1", b"4111111111111111"));
        assert_ne!(a, idempotency_id(&k, "spiffe://a", "t2", b"4111111111111111"));
        assert_ne!(a, idempotency_id(&k, "spiffe://a", "t1", b"4111111111111112"));
        // Length prefixes: moving bytes between fields changes the MAC.
        assert_ne!(idempotency_id(&k, "ab", "c", b"d"), idempotency_id(&k, "a", "bc", b"d"));
        // Not the fingerprint of the same bytes.
        assert_ne!(&a[3..], &fingerprint(&k, "t1", "spiffe://a", b"4111111111111111")[3..]);
        assert!(a.starts_with("ik_") && !a.contains("4111"));
    }

    #[test]
    fn audit_mac_chains() {
        let k = KeyBytes::new([3; 32]);
        let first = audit_mac(&k, &[0; MAC_LEN], b"entry one");
        let second = audit_mac(&k, &first, b"entry two");
        assert_ne!(second, audit_mac(&k, &[0; MAC_LEN], b"entry two"));
    }
}
