//! Rewrap throughput: how fast a rotation re-wraps every record's data key, on the
//! real RocksDB store with synced batches, without HTTP.
//!
//! `TV_BENCH_RECORDS=1000000 cargo bench --bench rewrap` (default 200,000 records).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use tokenvault::auth::{authorize, authorize_single, Client, ManageKeys, Role, Tokenize};
use tokenvault::clock::SystemClock;
use tokenvault::commit::Committer;
use tokenvault::crypto::Keyring;
use tokenvault::secret::KeyBytes;
use tokenvault::store::{RocksStore, Store};
use tokenvault::validate::luhn_check_digit;
use tokenvault::vault::input::TokenizeRequest;
use tokenvault::vault::{BatchItem, Vault, VaultSettings};

fn pan(i: usize) -> String {
    let body = format!("4{:014}", i);
    format!("{body}{}", luhn_check_digit(body.as_bytes()).unwrap())
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("TV_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let batch: usize = std::env::var("TV_REWRAP_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path(), 1024).unwrap());
    let ring = Keyring::generate(0).unwrap();
    let audit_key = KeyBytes::new(*ring.audit_key().expose_secret());
    let (committer, _writer) = Committer::start(store.clone(), audit_key, Arc::new(SystemClock)).unwrap();
    let settings = VaultSettings {
        cvc_ttl: time::Duration::minutes(10),
        key_file: None,
        max_wraps_per_key: u64::MAX,
    };
    let vault = Vault::new(Arc::new(ring), store, committer, Arc::new(SystemClock), settings);
    let client = Client {
        identity: "bench".into(),
        roles: [Role::Tokenize, Role::Keys].into_iter().collect(),
        tenants: vec!["bench".into()],
    };

    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let chunk = (n - i).min(1000);
        let requests: Vec<TokenizeRequest> = (i..i + chunk)
            .map(|k| {
                let json = format!(r#"{{"card":{{"number":"{}","exp_month":12,"exp_year":2031}}}}"#, pan(k));
                serde_json::from_str(&json).unwrap()
            })
            .collect();
        let items = requests
            .iter()
            .map(|r| BatchItem::Ready(authorize_single::<Tokenize>(&client, None).unwrap(), r))
            .collect();
        let prepared = vault.prepare_batch("bench", items, "bench");
        vault.commit_prepared(prepared, None).await.unwrap();
        i += chunk;
    }
    let load = started.elapsed();
    println!(
        "loaded {n} records in {:.1} s ({:.0} records/s, synced batches of 1000)",
        load.as_secs_f64(),
        n as f64 / load.as_secs_f64()
    );

    let keys = authorize::<ManageKeys>(&client, None).unwrap();
    vault.rotate(&keys, "bench").await.unwrap();
    let started = Instant::now();
    while vault.rewrap_step(batch).await.unwrap() {}
    let took = started.elapsed();
    let state = vault.rewrap_state().unwrap();
    println!(
        "rewrapped {} records in {:.2} s: {:.0} records/s (batches of {batch}, one synced write each)",
        state.done,
        took.as_secs_f64(),
        state.done as f64 / took.as_secs_f64()
    );
    println!(
        "projected time for 1,000,000 records: {:.1} s",
        1_000_000.0 / (state.done as f64 / took.as_secs_f64())
    );
}
