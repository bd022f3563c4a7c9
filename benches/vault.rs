//! Criterion benchmarks of the store and the vault service on the real RocksDB
//! store, without HTTP: what one put or get costs, synced and not, and what one
//! tokenize or detokenize costs through the vault and its group-committed, synced
//! writer, alone and with 64 concurrent callers sharing fsyncs.
//!
//! `cargo bench --bench vault`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tokenvault::auth::{authorize, authorize_single, Client, Detokenize, Role, Tokenize};
use tokenvault::clock::SystemClock;
use tokenvault::commit::Committer;
use tokenvault::crypto::Keyring;
use tokenvault::secret::KeyBytes;
use tokenvault::store::{RocksStore, Store, Table, WriteOp};
use tokenvault::validate::luhn_check_digit;
use tokenvault::vault::input::TokenizeRequest;
use tokenvault::vault::{Vault, VaultSettings};

const PRELOAD: u64 = 100_000;
const CONCURRENCY: u64 = 64;

fn pan(i: u64) -> String {
    let body = format!("4{:014}", i);
    format!("{body}{}", luhn_check_digit(body.as_bytes()).unwrap())
}

fn request(i: u64) -> TokenizeRequest {
    let json = format!(r#"{{"card":{{"number":"{}","exp_month":12,"exp_year":2031}}}}"#, pan(i));
    serde_json::from_str(&json).unwrap()
}

fn key(i: u64) -> Vec<u8> {
    format!("bench\0tok_{i:024}").into_bytes()
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), 1024).unwrap();
    let value = vec![7u8; 600];
    for chunk in 0..PRELOAD / 1000 {
        let ops: Vec<WriteOp> = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| WriteOp::put(Table::Records, key(i), value.clone()))
            .collect();
        store.write(&ops, false).unwrap();
    }
    let mut g = c.benchmark_group("store");
    let mut next = PRELOAD;
    g.bench_function("put_600B_unsynced", |b| {
        b.iter(|| {
            next += 1;
            store
                .write(&[WriteOp::put(Table::Records, key(next), value.clone())], false)
                .unwrap()
        })
    });
    g.bench_function("put_600B_synced", |b| {
        b.iter(|| {
            next += 1;
            store
                .write(&[WriteOp::put(Table::Records, key(next), value.clone())], true)
                .unwrap()
        })
    });
    g.bench_function("batch_100x600B_synced", |b| {
        b.iter(|| {
            let ops: Vec<WriteOp> = (0..100)
                .map(|_| {
                    next += 1;
                    WriteOp::put(Table::Records, key(next), value.clone())
                })
                .collect();
            store.write(&ops, true).unwrap()
        })
    });
    let mut k = 0u64;
    g.bench_function("get_hit_of_100k", |b| {
        b.iter(|| {
            k = (k + 7919) % PRELOAD;
            black_box(store.get(Table::Records, &key(k)).unwrap())
        })
    });
    g.bench_function("get_miss", |b| {
        b.iter(|| {
            k += 1;
            black_box(
                store
                    .get(Table::Records, &format!("bench\0tok_miss{k}").into_bytes())
                    .unwrap(),
            )
        })
    });
    g.finish();
}

struct Bench {
    vault: Arc<Vault>,
    client: Client,
    _dir: tempfile::TempDir,
}

fn vault() -> Bench {
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
    let vault = Arc::new(Vault::new(
        Arc::new(ring),
        store,
        committer,
        Arc::new(SystemClock),
        settings,
    ));
    let client = Client {
        identity: "bench".into(),
        roles: [Role::Tokenize, Role::Detokenize].into_iter().collect(),
        tenants: vec!["bench".into()],
    };
    Bench {
        vault,
        client,
        _dir: dir,
    }
}

async fn tokenize(b: &Bench, i: u64) -> String {
    let auth = authorize_single::<Tokenize>(&b.client, None).unwrap();
    let prepared = b.vault.prepare_tokenize(&auth, &request(i), "bench").unwrap();
    let outcomes = b.vault.commit_prepared(prepared, None).await.unwrap();
    outcomes.into_iter().next().unwrap().unwrap().meta.token
}

/// Runs `iters` operations over `CONCURRENCY` tasks and returns the wall time.
async fn concurrent<F, Fut>(iters: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= iters {
                    break;
                }
                op(i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn service(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let bench = Arc::new(vault());
    let counter = Arc::new(AtomicU64::new(0));
    let tokens: Vec<String> = runtime.block_on(async {
        let mut out = Vec::new();
        for i in 0..2000 {
            out.push(tokenize(&bench, 1_000_000_000 + i).await);
        }
        out
    });
    let tokens = Arc::new(tokens);
    let mut g = c.benchmark_group("vault");
    g.sample_size(20);
    g.bench_function("tokenize_synced_alone", |b| {
        b.to_async(&runtime).iter(|| {
            let (bench, counter) = (bench.clone(), counter.clone());
            async move { tokenize(&bench, counter.fetch_add(1, Ordering::Relaxed)).await }
        })
    });
    g.bench_function("tokenize_synced_64_concurrent", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (bench, counter) = (bench.clone(), counter.clone());
            async move {
                concurrent(iters, move |_| {
                    let (bench, counter) = (bench.clone(), counter.clone());
                    async move {
                        tokenize(&bench, counter.fetch_add(1, Ordering::Relaxed)).await;
                    }
                })
                .await
            }
        })
    });
    g.bench_function("detokenize_audited_64_concurrent", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (bench, tokens) = (bench.clone(), tokens.clone());
            async move {
                concurrent(iters, move |i| {
                    let (bench, tokens) = (bench.clone(), tokens.clone());
                    async move {
                        let auth = authorize::<Detokenize>(&bench.client, None).unwrap();
                        let token = &tokens[i as usize % tokens.len()];
                        black_box(bench.vault.detokenize(&auth, token, "bench").await.unwrap());
                    }
                })
                .await
            }
        })
    });
    g.finish();
}

criterion_group!(benches, store, service);
criterion_main!(benches);
