//! Load generator: starts the daemon (`serve --dev` on 127.0.0.1:0 in a temporary
//! directory), drives it over real mTLS with N concurrent closed-loop clients for a
//! fixed time per phase, and reports operations per second, latency percentiles,
//! errors and the daemon's CPU time per operation (from /proc/PID/stat).
//!
//! `cargo bench --bench load` — settings by environment: TV_LOAD_SECONDS (5),
//! TV_LOAD_CLIENTS (64), TV_LOAD_CONNECTIONS (4; HTTP/2 streams are spread over
//! them), TV_LOAD_HTTP1=1 (one HTTP/1.1 keep-alive connection per client),
//! TV_LOAD_JSON (where to write the JSON report, default target/load.json).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use tokenvault::client::{Client, ClientTls};
use tokenvault::validate::luhn_valid;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Daemon {
    child: Child,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The child is killed and reaped by `Daemon`'s `Drop`, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.log");
    let child = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(rest) = text.split("listening on https://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
            return Daemon { child, addr, dir };
        }
        assert!(started.elapsed() < Duration::from_secs(60), "daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn pan(i: u64) -> String {
    let body = format!("4{:014}", i);
    let check = (0..10).find(|d| luhn_valid(format!("{body}{d}").as_bytes())).unwrap();
    format!("{body}{check}")
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Hello,
    Tokenize,
    Detokenize,
    Mixed,
    Batch,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Hello => "hello",
            Phase::Tokenize => "tokenize",
            Phase::Detokenize => "detokenize",
            Phase::Mixed => "mixed",
            Phase::Batch => "batch",
        }
    }
}

struct Report {
    phase: &'static str,
    ops: u64,
    errors: u64,
    seconds: f64,
    cpu_us_per_op: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
}

async fn clients(daemon: &Daemon, name: &str, n: usize, connections: usize, http1: bool) -> Vec<Client> {
    let keys = daemon.dir.path().join("keys/dev");
    let mut tls = ClientTls::from_files(
        &keys.join("ca.pem"),
        &keys.join(format!("{name}.pem")),
        &keys.join(format!("{name}.key")),
    )
    .unwrap();
    if http1 {
        tls.alpn = vec![b"http/1.1".to_vec()];
    }
    let config = tls.config().unwrap();
    let mut out = Vec::new();
    if http1 {
        for _ in 0..n {
            out.push(Client::connect(daemon.addr, config.clone()).await.unwrap());
        }
        return out;
    }
    let mut conns = Vec::new();
    for _ in 0..connections.max(1) {
        conns.push(Client::connect(daemon.addr, config.clone()).await.unwrap());
    }
    for i in 0..n {
        out.push(conns[i % conns.len()].share().unwrap());
    }
    out
}

async fn run_phase(
    daemon: &Daemon,
    phase: Phase,
    seconds: u64,
    checkout: Vec<Client>,
    gateway: Vec<Client>,
    tokens: Arc<Vec<String>>,
    counter: Arc<AtomicU64>,
) -> (Report, Vec<String>) {
    let pid = daemon.child.id();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, (mut c, mut g)) in checkout.into_iter().zip(gateway).enumerate() {
        let tokens = tokens.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut ops, mut errors) = (0u64, 0u64);
            let mut created = Vec::new();
            let mut k = i as u64;
            while Instant::now() < deadline {
                k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let detok = match phase {
                    Phase::Detokenize => true,
                    Phase::Mixed => k % 10 < 8,
                    _ => false,
                };
                let t = Instant::now();
                let (result, n) = if phase == Phase::Hello {
                    (c.request(Method::GET, "/healthz", None).await, 1)
                } else if detok && !tokens.is_empty() {
                    let token = &tokens[(k >> 16) as usize % tokens.len()];
                    (
                        g.request(Method::POST, &format!("/v1/tokens/{token}/detokenize"), None)
                            .await,
                        1,
                    )
                } else if phase == Phase::Batch {
                    let items: Vec<String> = (0..100)
                        .map(|_| {
                            format!(
                                r#"{{"card":{{"number":"{}","exp_month":12,"exp_year":2031}}}}"#,
                                pan(counter.fetch_add(1, Ordering::Relaxed))
                            )
                        })
                        .collect();
                    let body = format!(r#"{{"items":[{}]}}"#, items.join(","));
                    (
                        c.request(Method::POST, "/v1/tokens/batch", Some(body.as_bytes())).await,
                        100,
                    )
                } else {
                    let body = format!(
                        r#"{{"card":{{"number":"{}","exp_month":12,"exp_year":2031}}}}"#,
                        pan(counter.fetch_add(1, Ordering::Relaxed))
                    );
                    (c.request(Method::POST, "/v1/tokens", Some(body.as_bytes())).await, 1)
                };
                latencies.push(t.elapsed().as_micros() as u64);
                match result {
                    Ok(reply) if reply.status < 300 => {
                        ops += n;
                        if phase == Phase::Tokenize && created.len() < 20_000 {
                            if let Some(t) = reply.json()["token"].as_str() {
                                created.push(t.to_owned());
                            }
                        }
                    }
                    _ => errors += 1,
                }
            }
            (ops, errors, latencies, created)
        }));
    }
    let (mut ops, mut errors, mut latencies, mut created) = (0, 0, Vec::new(), Vec::new());
    for t in tasks {
        let (o, e, l, c) = t.await.unwrap();
        ops += o;
        errors += e;
        latencies.extend(l);
        created.extend(c);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let report = Report {
        phase: phase.name(),
        ops,
        errors,
        seconds: elapsed,
        cpu_us_per_op: if ops > 0 { cpu * 1e6 / ops as f64 } else { 0.0 },
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
    };
    (report, created)
}

#[tokio::main]
async fn main() {
    let seconds = env("TV_LOAD_SECONDS", 5);
    let n = env("TV_LOAD_CLIENTS", 64) as usize;
    let connections = env("TV_LOAD_CONNECTIONS", 4) as usize;
    let http1 = env("TV_LOAD_HTTP1", 0) == 1;
    let daemon = start();
    let counter = Arc::new(AtomicU64::new(1));
    let mut tokens = Arc::new(Vec::new());
    let mut reports = Vec::new();
    for phase in [
        Phase::Hello,
        Phase::Tokenize,
        Phase::Detokenize,
        Phase::Mixed,
        Phase::Batch,
    ] {
        let checkout = clients(&daemon, "checkout", n, connections, http1).await;
        let gateway = clients(&daemon, "gateway", n, connections, http1).await;
        let (report, created) = run_phase(
            &daemon,
            phase,
            seconds,
            checkout,
            gateway,
            tokens.clone(),
            counter.clone(),
        )
        .await;
        if phase == Phase::Tokenize {
            tokens = Arc::new(created);
        }
        reports.push(report);
    }
    let protocol = if http1 { "HTTP/1.1 keep-alive" } else { "HTTP/2" };
    println!("\n{protocol}, {n} clients, {seconds} s per phase, daemon and load generator on one host");
    println!(
        "{:<11} {:>10} {:>8} {:>9} {:>9} {:>9} {:>13}",
        "phase", "ops/s", "errors", "p50 µs", "p99 µs", "p999 µs", "CPU µs/op"
    );
    let mut json = Vec::new();
    for r in &reports {
        let rate = r.ops as f64 / r.seconds;
        println!(
            "{:<11} {:>10.0} {:>8} {:>9} {:>9} {:>9} {:>13.1}",
            r.phase, rate, r.errors, r.p50_us, r.p99_us, r.p999_us, r.cpu_us_per_op
        );
        json.push(serde_json::json!({"phase": r.phase, "ops_per_second": rate, "errors": r.errors, "p50_us": r.p50_us,
            "p99_us": r.p99_us, "p999_us": r.p999_us, "daemon_cpu_us_per_op": r.cpu_us_per_op, "ops": r.ops, "seconds": r.seconds}));
    }
    let path = std::env::var("TV_LOAD_JSON").unwrap_or_else(|_| "target/load.json".to_owned());
    let doc = serde_json::json!({"protocol": protocol, "clients": n, "seconds_per_phase": seconds, "phases": json});
    if std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).is_ok() {
        println!("wrote {path}");
    }
}
