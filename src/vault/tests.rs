//! The vault service on an in-memory store, without HTTP.

use std::sync::Arc;

use super::*;
use crate::auth::{authorize, authorize_single, Client, Detokenize, Role, Tokenize};
use crate::clock::ManualClock;
use crate::crypto::Keyring;
use crate::secret::KeyBytes;
use crate::store::{MemoryStore, Store};

struct Fixture {
    vault: Vault,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    client: Client,
}

/// A vault with a fresh keyring on `store`, its commit writer running.
pub(super) fn vault_on(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Option<Vault> {
    let ring = Keyring::generate(0).ok()?;
    let audit_key = KeyBytes::new(*ring.audit_key().expose_secret());
    let (committer, _writer) = Committer::start(store.clone(), audit_key, clock.clone()).ok()?;
    let settings = VaultSettings {
        cvc_ttl: time::Duration::minutes(10),
        key_file: None,
        max_wraps_per_key: u64::MAX,
    };
    Some(Vault::new(Arc::new(ring), store, committer, clock, settings))
}

fn fixture() -> Option<Fixture> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let vault = vault_on(store.clone(), clock.clone())?;
    let client = Client {
        identity: "spiffe://test/both".into(),
        roles: [Role::Tokenize, Role::Detokenize].into_iter().collect(),
        tenants: vec!["t".into()],
    };
    Some(Fixture {
        vault,
        store,
        clock,
        client,
    })
}

/// The last audit entry's (outcome, token, tenant).
fn last_entry(store: &Arc<dyn Store>) -> Option<(String, Option<String>, Option<String>)> {
    let (_, bytes) = store.last(Table::Audit).ok()??;
    let entry: crate::audit::AuditEntry = serde_json::from_slice(&bytes).ok()?;
    Some((entry.body.outcome, entry.body.token, entry.body.tenant))
}

/// An expired token's detokenize is refused and audited with the record's token
/// and tenant (the record was found); an unknown one with a probe label.
#[tokio::test]
async fn expired_and_unknown_detokenizes_are_audited_apart() {
    let Some(f) = fixture() else {
        panic!("fixture");
    };
    let request: input::TokenizeRequest = match serde_json::from_str(
        r#"{"ttl_seconds":60,"card":{"number":"4111111111111111","exp_month":12,"exp_year":2031}}"#,
    ) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let Ok(auth) = authorize_single::<Tokenize>(&f.client, None) else {
        panic!("authorize");
    };
    let Ok(prepared) = f.vault.prepare_tokenize(&auth, &request, "req") else {
        panic!("prepare");
    };
    let token = match f.vault.commit_prepared(prepared, None).await {
        Ok(outcomes) => match outcomes.into_iter().next() {
            Some(Ok(t)) => t.meta.token,
            _ => panic!("no token"),
        },
        Err(e) => panic!("{e}"),
    };
    let Ok(reader) = authorize::<Detokenize>(&f.client, None) else {
        panic!("authorize");
    };
    f.clock.advance(time::Duration::seconds(61));
    assert!(matches!(
        f.vault.detokenize(&reader, &token, "req").await,
        Err(VaultError::Expired)
    ));
    assert_eq!(
        last_entry(&f.store),
        Some(("expired".into(), Some(token.clone()), Some("t".into())))
    );
    assert!(matches!(
        f.vault.detokenize(&reader, "tok_4111111111111111AAAAAAAA", "req").await,
        Err(VaultError::NotFound)
    ));
    let Some((outcome, label, tenant)) = last_entry(&f.store) else {
        panic!("no entry");
    };
    assert_eq!((outcome.as_str(), tenant.as_deref()), ("not_found", Some("t")));
    assert!(label.is_some_and(|l| l.starts_with("probe_") && !l.contains("4111")));
}
