//! Start-up time and memory at scale. Fills a development vault with N real card
//! records through the vault service (synced batches of 5,000, each with its audit
//! entries), then starts the real daemon on it and reports: the time from spawn to
//! listening (nothing at start-up scans the records), resident memory at start and
//! after detokenizing a random sample of the records over mTLS, and the size of
//! the data directory.
//!
//! `TV_BENCH_RECORDS=10000000 cargo bench --bench startup` (default 1,000,000).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use tokenvault::auth::{authorize_single, Client as Identity, Tokenize};
use tokenvault::client::{Client, ClientTls};
use tokenvault::clock::SystemClock;
use tokenvault::commit::Committer;
use tokenvault::config::Config;
use tokenvault::pki::DEV_CLIENTS;
use tokenvault::secret::{KeyBytes, Passphrase};
use tokenvault::startup::{unseal_keyring, DEV_PASSPHRASE};
use tokenvault::store::{RocksStore, Store};
use tokenvault::validate::luhn_check_digit;
use tokenvault::vault::input::TokenizeRequest;
use tokenvault::vault::{BatchItem, Vault, VaultSettings};

fn pan(i: usize) -> String {
    let body = format!("5{:014}", i);
    format!("{body}{}", luhn_check_digit(body.as_bytes()).unwrap())
}

/// Starts `serve --dev` in `dir`; returns the child, its address and the time
/// from spawn to its "listening" line. The caller stops it with `stop`.
#[allow(clippy::zombie_processes)]
fn start(dir: &Path) -> (Child, std::net::SocketAddr, Duration) {
    let out = dir.join(format!("out-{}.log", Instant::now().elapsed().as_nanos()));
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(rest) = text.split("listening on https://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
            return (child, addr, started.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(120), "daemon did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Fills the vault with `n` records; returns every 1,000th token.
async fn fill(dir: &Path, n: usize) -> Vec<String> {
    let config = Config::dev();
    let (ring, _) = unseal_keyring(&dir.join(&config.keyring), &Passphrase::copy_from(DEV_PASSPHRASE)).unwrap();
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(&dir.join(&config.data_dir), 1024).unwrap());
    let flush_target = store.clone();
    let audit_key = KeyBytes::new(*ring.audit_key().expose_secret());
    let (committer, writer) = Committer::start(store.clone(), audit_key, Arc::new(SystemClock)).unwrap();
    let settings = VaultSettings {
        cvc_ttl: time::Duration::minutes(10),
        key_file: None,
        max_wraps_per_key: u64::MAX,
    };
    let vault = Vault::new(Arc::new(ring), store, committer, Arc::new(SystemClock), settings);
    let checkout = config.clients.find(DEV_CLIENTS[0].1).unwrap();
    let identity = Identity {
        identity: checkout.identity.clone(),
        roles: checkout.roles.clone(),
        tenants: checkout.tenants.clone(),
    };
    let started = Instant::now();
    let mut sample = Vec::new();
    let mut i = 0;
    while i < n {
        let chunk = (n - i).min(5000);
        let requests: Vec<TokenizeRequest> = (i..i + chunk)
            .map(|k| {
                let json = format!(r#"{{"card":{{"number":"{}","exp_month":12,"exp_year":2031}}}}"#, pan(k));
                serde_json::from_str(&json).unwrap()
            })
            .collect();
        let items = requests
            .iter()
            .map(|r| BatchItem::Ready(authorize_single::<Tokenize>(&identity, None).unwrap(), r))
            .collect();
        let prepared = vault.prepare_batch(&identity.identity, items, "fill");
        let outcomes = vault.commit_prepared(prepared, None).await.unwrap();
        sample.extend(outcomes.into_iter().step_by(1000).map(|o| o.unwrap().meta.token));
        i += chunk;
        if i % 1_000_000 == 0 {
            println!("  {i} records, {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    println!(
        "filled {n} records in {:.1} s ({:.0}/s)",
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64()
    );
    drop(vault);
    // As a graceful stop of the daemon does: nothing left to replay at the next start.
    flush_target.flush().unwrap();
    drop(flush_target);
    // The writer thread holds the last reference to the store; joining it closes RocksDB.
    writer.join().unwrap();
    sample
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("TV_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    // A first start creates the development keyring, certificates and store.
    let (child, _, empty_start) = start(dir.path());
    stop(child);
    let sample = fill(dir.path(), n).await;
    let data = dir_bytes(&dir.path().join(Config::dev().data_dir));

    let (child, addr, full_start) = start(dir.path());
    let pid = child.id();
    let rss_start = rss_mib(pid);
    let keys = dir.path().join("keys/dev");
    let tls = ClientTls::from_files(
        &keys.join("ca.pem"),
        &keys.join("gateway.pem"),
        &keys.join("gateway.key"),
    )
    .unwrap();
    let mut client = Client::connect(addr, tls.config().unwrap()).await.unwrap();
    let started = Instant::now();
    let mut k = 12345u64;
    let reads = 5000.min(sample.len() * 10);
    for _ in 0..reads {
        k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let token = &sample[(k >> 20) as usize % sample.len()];
        let reply = client
            .request(Method::POST, &format!("/v1/tokens/{token}/detokenize"), None)
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
    }
    let read_time = started.elapsed();
    let rss_after = rss_mib(pid);
    stop(child);
    println!("\nrecords                      {n}");
    println!(
        "data directory               {:.2} GiB",
        data as f64 / (1u64 << 30) as f64
    );
    println!("start, empty vault           {:.0} ms", empty_start.as_secs_f64() * 1e3);
    println!("start, full vault            {:.0} ms", full_start.as_secs_f64() * 1e3);
    println!("resident memory after start  {rss_start:.0} MiB");
    println!(
        "after {reads} random detokenizes {rss_after:.0} MiB ({:.0} µs each, one client, cold cache)",
        read_time.as_secs_f64() * 1e6 / reads as f64
    );
}
