//! Load generator: starts the daemon (the release binary, with the development
//! PKI, a fresh keyring and default limits but no per-identity rate limit, on
//! 127.0.0.1:0 in a temporary directory), drives it over real mTLS with N concurrent closed-loop clients for a
//! fixed time per phase, and reports operations per second, latency percentiles,
//! errors and the daemon's CPU time per operation (from /proc/PID/stat).
//!
//! `cargo bench --bench load` — settings by environment: TV_LOAD_SECONDS (5),
//! TV_LOAD_CLIENTS (64), TV_LOAD_CONNECTIONS (4; HTTP/2 streams are spread over
//! them), TV_LOAD_HTTP1=1 (one HTTP/1.1 keep-alive connection per client),
//! TV_LOAD_JSON (where to write the JSON report, default target/load.json),
//! TV_LOAD_PREFILL (records stored through batches before the phases, untimed,
//! so the vault is measured in steady state; default 200000),
//! TV_LOAD_PHASES (comma list, default hello,tokenize,detokenize,mixed,batch),
//! TV_LOAD_HALF (1: after the closed-loop tokenize and detokenize phases, run each
//! again paced at half the measured peak, for p99 at half load; 0 skips this),
//! TV_LOAD_RATE_LIMIT (the daemon's per-identity requests/s; default 0, off),
//! TV_LOAD_DAEMON_WORKERS (the daemon's tokio worker threads; default one per core),
//! TV_LOAD_KEEP=1 (keep the daemon's directory, with RocksDB's LOG, and print it),
//! TV_LOAD_PERF=1 or dwarf (`perf record` on the daemon during each phase, call
//! graphs from frame pointers or DWARF, written to target/perf-PHASE.data).
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
use tokenvault::validate::luhn_check_digit;

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
        if env("TV_LOAD_KEEP", 0) == 1 {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            println!("kept {}", dir.keep().display());
        }
    }
}

/// The benchmark's configuration: the development PKI's identities and roles,
/// default limits, except the per-identity rate limit, which is off unless
/// TV_LOAD_RATE_LIMIT sets it (the default 20,000/s would cap the phases).
fn config_toml(rate_limit: u64) -> String {
    let roles = ["tokenize", "detokenize", "keys\", \"audit"];
    let mut text = String::from(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nkeyring = \"keys/keyring.sealed\"\n\
         passphrase_env = \"TV_BENCH_PASSPHRASE\"\n\n[tls]\ncert = \"keys/dev/server.pem\"\n\
         key = \"keys/dev/server.key\"\nclient_ca = \"keys/dev/ca.pem\"\n",
    );
    for ((_, uri), roles) in tokenvault::pki::DEV_CLIENTS.iter().zip(roles) {
        text.push_str(&format!(
            "\n[[clients]]\nidentity = \"{uri}\"\nroles = [\"{roles}\"]\ntenants = [\"dev\"]\n"
        ));
    }
    text.push_str(&format!("\n[limits]\nrate_per_second = {rate_limit}.0\n"));
    text
}

/// Runs a setup command of the daemon's binary to completion.
fn setup(dir: &std::path::Path, args: &[&str], passphrase: &str) {
    let status = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(args)
        .current_dir(dir)
        .env("TOKENVAULT_PASSPHRASE", passphrase)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "tokenvault {args:?} failed");
}

// The child is killed and reaped by `Daemon`'s `Drop`, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let passphrase = format!("load generator {}", std::process::id());
    setup(dir.path(), &["dev-pki", "--out", "keys/dev"], &passphrase);
    setup(dir.path(), &["init", "--keyring", "keys/keyring.sealed"], &passphrase);
    let config = dir.path().join("bench.toml");
    std::fs::write(&config, config_toml(env("TV_LOAD_RATE_LIMIT", 0))).unwrap();
    let out = dir.path().join("out.log");
    let child = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["serve", "--config", "bench.toml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .env("TV_BENCH_PASSPHRASE", &passphrase)
        .envs(std::env::var("TV_LOAD_DAEMON_WORKERS").map(|n| ("TOKIO_WORKER_THREADS", n)))
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.path().join("err.log")).unwrap())
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

/// User + system CPU seconds in a `/proc/.../stat` file.
fn stat_seconds(path: &std::path::Path) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    stat_seconds(std::path::Path::new(&format!("/proc/{pid}/stat")))
}

/// CPU seconds per thread group of the daemon: the tokio workers, the commit
/// writer, RocksDB's background threads, and the rest, keyed by thread name.
fn thread_seconds(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in dir.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let group = match name.trim() {
            n if n.starts_with("tokio-r") => "tokio workers",
            n if n.starts_with("tokenvault-comm") => "commit writer",
            n if n.starts_with("rocksdb") => "rocksdb background",
            _ => "other",
        };
        *out.entry(group.to_owned()).or_insert(0.0) += stat_seconds(&task.path().join("stat"));
    }
    out
}

/// A distinct Luhn-valid 16-digit number for each `i`.
fn pan(i: u64) -> String {
    let body = format!("4{:014}", i);
    format!("{body}{}", luhn_check_digit(body.as_bytes()).unwrap())
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
    phase: String,
    /// Daemon CPU µs per operation by thread group.
    threads: Vec<(String, f64)>,
    fsyncs_per_second: f64,
    /// Commit requests (one per HTTP request that writes) covered by one synced write.
    requests_per_fsync: f64,
    /// Mean fsync time (ms), and fsyncs over 2 ms, 10 ms and 50 ms.
    fsync_ms: f64,
    /// Requests per write batch the writer applied.
    requests_per_write: f64,
    slow_fsyncs: (f64, f64, f64),
    /// Batch applications by the writer that took over 10 ms.
    slow_writes: f64,
    /// Requests that took the daemon over 2.5 ms and over 10 ms (its own histogram).
    server_slow: (f64, f64),
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

/// Starts `perf record` on the daemon for the phase when TV_LOAD_PERF=1.
fn perf(pid: u32, label: &str, seconds: u64) -> Option<Child> {
    let graph = match std::env::var("TV_LOAD_PERF").as_deref() {
        Ok("1") => "fp",
        Ok("dwarf") => "dwarf",
        _ => return None,
    };
    let out = format!("target/perf-{label}.data");
    Command::new("perf")
        .args([
            "record",
            "-F",
            "499",
            "--call-graph",
            graph,
            "-q",
            "-o",
            &out,
            "-p",
            &pid.to_string(),
        ])
        .args(["--", "sleep"])
        .arg(seconds.saturating_sub(1).max(1).to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// Counters read from the daemon's `/metrics`.
#[derive(Clone, Copy, Default)]
struct Counters {
    /// Synced batches (fsyncs) and the requests they answered.
    fsyncs: f64,
    requests: f64,
    fsync_seconds: f64,
    fsyncs_over_2ms: f64,
    fsyncs_over_10ms: f64,
    fsyncs_over_50ms: f64,
    /// Write batches the writer applied, and those that were slow.
    writes: f64,
    slow_writes: f64,
    /// Requests handled, and those the daemon handled within 2.5 ms and 10 ms
    /// (from routing to the response, its own histogram).
    served: f64,
    within_2_5ms: f64,
    within_10ms: f64,
}

impl Counters {
    fn since(&self, before: &Counters) -> Counters {
        Counters {
            fsyncs: self.fsyncs - before.fsyncs,
            requests: self.requests - before.requests,
            fsync_seconds: self.fsync_seconds - before.fsync_seconds,
            fsyncs_over_2ms: self.fsyncs_over_2ms - before.fsyncs_over_2ms,
            fsyncs_over_10ms: self.fsyncs_over_10ms - before.fsyncs_over_10ms,
            fsyncs_over_50ms: self.fsyncs_over_50ms - before.fsyncs_over_50ms,
            writes: self.writes - before.writes,
            slow_writes: self.slow_writes - before.slow_writes,
            served: self.served - before.served,
            within_2_5ms: self.within_2_5ms - before.within_2_5ms,
            within_10ms: self.within_10ms - before.within_10ms,
        }
    }
}

async fn commit_counters(client: &mut Client) -> Counters {
    let Ok(reply) = client.request(Method::GET, "/metrics", None).await else {
        return Counters::default();
    };
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let bucket = |le: &str| -> f64 {
        let tail = format!("le=\"{le}\"}} ");
        text.lines()
            .filter(|l| l.starts_with("tokenvault_request_duration_seconds_bucket{") && l.contains(&tail))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    };
    Counters {
        fsyncs: value("tokenvault_commit_batches"),
        requests: value("tokenvault_commit_requests"),
        fsync_seconds: value("tokenvault_wal_sync_seconds"),
        fsyncs_over_2ms: value("tokenvault_wal_syncs_over_2ms"),
        fsyncs_over_10ms: value("tokenvault_wal_syncs_over_10ms"),
        fsyncs_over_50ms: value("tokenvault_wal_syncs_over_50ms"),
        writes: value("tokenvault_commit_writes"),
        slow_writes: value("tokenvault_store_writes_over_10ms"),
        served: bucket("+Inf"),
        within_2_5ms: bucket("0.0025"),
        within_10ms: bucket("0.01"),
    }
}

/// One run of a phase: closed loop (`rate: None`, every client sends its next
/// request when the last one is answered) or paced at `rate` requests per second
/// in total, where a request held back by a slow answer counts its latency from
/// when it was due, not when it was sent, so a stall is not hidden (no
/// coordinated omission).
#[allow(clippy::too_many_arguments)]
async fn run_phase(
    daemon: &Daemon,
    phase: Phase,
    rate: Option<f64>,
    seconds: u64,
    checkout: Vec<Client>,
    gateway: Vec<Client>,
    tokens: Arc<Vec<String>>,
    counter: Arc<AtomicU64>,
) -> (Report, Vec<String>) {
    let pid = daemon.child.id();
    let label = match rate {
        Some(_) => format!("{}@half", phase.name()),
        None => phase.name().to_owned(),
    };
    let mut probe = checkout.first().and_then(|c| c.share());
    let commits_before = match probe.as_mut() {
        Some(c) => commit_counters(c).await,
        None => Counters::default(),
    };
    let mut recorder = perf(pid, &label, seconds);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cpu_before = cpu_seconds(pid);
    let threads_before = thread_seconds(pid);
    let started = Instant::now();
    let clients = checkout.len();
    let mut tasks = Vec::new();
    for (i, (mut c, mut g)) in checkout.into_iter().zip(gateway).enumerate() {
        let tokens = tokens.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut ops, mut errors) = (0u64, 0u64);
            let mut created = Vec::new();
            let mut k = i as u64;
            let period = rate.map(|r| Duration::from_secs_f64(clients as f64 / r));
            let mut due = started + period.map(|p| p.mul_f64(i as f64 / clients as f64)).unwrap_or_default();
            let mut last_done = started;
            while Instant::now() < deadline {
                k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let detok = match phase {
                    Phase::Detokenize => true,
                    Phase::Mixed => k % 10 < 8,
                    _ => false,
                };
                let t = match period {
                    Some(p) => {
                        tokio::time::sleep_until(due.into()).await;
                        // Sent late because the previous answer came after this
                        // request was due: the daemon's delay, so latency counts
                        // from when it was due (no coordinated omission). Sent late
                        // only because the timer (1 ms resolution) woke this task
                        // late: the load generator's delay, counted from the send.
                        let t = if last_done > due { due } else { Instant::now() };
                        due += p;
                        t
                    }
                    None => Instant::now(),
                };
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
                last_done = Instant::now();
                latencies.push(last_done.duration_since(t).as_micros() as u64);
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
    let threads_after = thread_seconds(pid);
    let threads = threads_after
        .iter()
        .map(|(name, after)| {
            let spent = after - threads_before.get(name).copied().unwrap_or(0.0);
            (name.clone(), if ops > 0 { spent * 1e6 / ops as f64 } else { 0.0 })
        })
        .collect();
    if let Some(r) = recorder.as_mut() {
        let _ = r.wait();
    }
    let commits_after = match probe.as_mut() {
        Some(c) => commit_counters(c).await,
        None => Counters::default(),
    };
    let d = commits_after.since(&commits_before);
    let batches = d.fsyncs;
    let per_fsync = if batches > 0.0 { d.requests / batches } else { 0.0 };
    let fsync_ms = if batches > 0.0 {
        d.fsync_seconds * 1e3 / batches
    } else {
        0.0
    };
    let per_write = if d.writes > 0.0 { d.requests / d.writes } else { 0.0 };
    // The metrics probe itself is one of the requests counted.
    let served = (d.served - 1.0).max(0.0);
    let server_slow = ((served - d.within_2_5ms).max(0.0), (served - d.within_10ms).max(0.0));
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let report = Report {
        phase: label,
        threads,
        fsyncs_per_second: batches / elapsed,
        requests_per_fsync: per_fsync,
        fsync_ms,
        requests_per_write: per_write,
        slow_fsyncs: (d.fsyncs_over_2ms, d.fsyncs_over_10ms, d.fsyncs_over_50ms),
        slow_writes: d.slow_writes,
        server_slow,
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

/// Fills the vault with `records` cards through batch requests, untimed, so that
/// the phases measure a vault in steady state (memtables flushed, write-ahead log
/// files recycled, records on disk) rather than an empty one.
async fn prefill(daemon: &Daemon, records: u64, counter: Arc<AtomicU64>) {
    if records == 0 {
        return;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    let workers = 8;
    for mut c in clients(daemon, "checkout", workers, 2, false).await {
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            while counter.load(Ordering::Relaxed) < records {
                let items: Vec<String> = (0..500)
                    .map(|_| {
                        format!(
                            r#"{{"card":{{"number":"{}","exp_month":12,"exp_year":2031}}}}"#,
                            pan(counter.fetch_add(1, Ordering::Relaxed))
                        )
                    })
                    .collect();
                let body = format!(r#"{{"items":[{}]}}"#, items.join(","));
                let reply = c.request(Method::POST, "/v1/tokens/batch", Some(body.as_bytes())).await;
                assert!(matches!(reply, Ok(ref r) if r.status == 200), "prefill failed");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "prefilled {} records in {:.1} s",
        counter.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}

fn parse_phase(name: &str) -> Option<Phase> {
    [
        Phase::Hello,
        Phase::Tokenize,
        Phase::Detokenize,
        Phase::Mixed,
        Phase::Batch,
    ]
    .into_iter()
    .find(|p| p.name() == name.trim())
}

#[tokio::main]
async fn main() {
    let seconds = env("TV_LOAD_SECONDS", 5);
    let n = env("TV_LOAD_CLIENTS", 64) as usize;
    let connections = env("TV_LOAD_CONNECTIONS", 4) as usize;
    let http1 = env("TV_LOAD_HTTP1", 0) == 1;
    let half = env("TV_LOAD_HALF", 1) == 1;
    let mut phases: Vec<Phase> = std::env::var("TV_LOAD_PHASES")
        .map(|list| list.split(',').filter_map(parse_phase).collect())
        .unwrap_or_else(|_| {
            vec![
                Phase::Hello,
                Phase::Tokenize,
                Phase::Detokenize,
                Phase::Mixed,
                Phase::Batch,
            ]
        });
    // Detokenizing needs tokens: tokenize first when a phase reads them.
    if phases.iter().any(|p| matches!(p, Phase::Detokenize | Phase::Mixed)) && !phases.contains(&Phase::Tokenize) {
        phases.insert(0, Phase::Tokenize);
    }
    // Reports go under ./target (created if the build directory is elsewhere).
    let _ = std::fs::create_dir_all("target");
    let daemon = start();
    let counter = Arc::new(AtomicU64::new(1));
    prefill(&daemon, env("TV_LOAD_PREFILL", 200_000), counter.clone()).await;
    let mut tokens = Arc::new(Vec::new());
    let mut reports = Vec::new();
    for phase in phases {
        let mut rate = None;
        // Closed loop finds the peak; then tokenize and detokenize run again, paced
        // at half of it, for the latency a half-loaded vault gives.
        loop {
            let checkout = clients(&daemon, "checkout", n, connections, http1).await;
            let gateway = clients(&daemon, "gateway", n, connections, http1).await;
            let (report, created) = run_phase(
                &daemon,
                phase,
                rate,
                seconds,
                checkout,
                gateway,
                tokens.clone(),
                counter.clone(),
            )
            .await;
            if phase == Phase::Tokenize && rate.is_none() {
                tokens = Arc::new(created);
            }
            let peak = report.ops as f64 / report.seconds;
            reports.push(report);
            if rate.is_some() || !half || !matches!(phase, Phase::Hello | Phase::Tokenize | Phase::Detokenize) {
                break;
            }
            rate = Some(peak / 2.0);
        }
    }
    let protocol = if http1 { "HTTP/1.1 keep-alive" } else { "HTTP/2" };
    println!("\n{protocol}, {n} clients, {seconds} s per phase, daemon and load generator on one host");
    println!(
        "{:<16} {:>10} {:>8} {:>9} {:>9} {:>9} {:>13}",
        "phase", "ops/s", "errors", "p50 µs", "p99 µs", "p999 µs", "CPU µs/op"
    );
    let mut json = Vec::new();
    for r in &reports {
        let rate = r.ops as f64 / r.seconds;
        println!(
            "{:<16} {:>10.0} {:>8} {:>9} {:>9} {:>9} {:>13.1}",
            r.phase, rate, r.errors, r.p50_us, r.p99_us, r.p999_us, r.cpu_us_per_op
        );
        let threads: serde_json::Map<String, serde_json::Value> = r
            .threads
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect();
        json.push(
            serde_json::json!({"phase": r.phase, "ops_per_second": rate, "errors": r.errors, "p50_us": r.p50_us,
            "p99_us": r.p99_us, "p999_us": r.p999_us, "daemon_cpu_us_per_op": r.cpu_us_per_op,
            "daemon_cpu_us_per_op_by_thread": threads, "fsyncs_per_second": r.fsyncs_per_second,
            "requests_per_fsync": r.requests_per_fsync, "fsync_ms": r.fsync_ms,
            "requests_per_write_batch": r.requests_per_write,
            "fsyncs_over_2ms": r.slow_fsyncs.0, "fsyncs_over_10ms": r.slow_fsyncs.1,
            "fsyncs_over_50ms": r.slow_fsyncs.2, "writes_over_10ms": r.slow_writes,
            "daemon_requests_over_2_5ms": r.server_slow.0, "daemon_requests_over_10ms": r.server_slow.1,
            "ops": r.ops, "seconds": r.seconds}),
        );
    }
    println!("\ndaemon CPU µs per operation by thread, and group commit");
    for r in &reports {
        let parts: Vec<String> = r.threads.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
        println!(
            "{:<16} {}; {:.0} synced writes/s, {:.1} requests per synced write ({:.1} per write batch), {:.2} ms per sync, \
             {:.0} over 2 ms, {:.0} over 10 ms, {:.0} over 50 ms; {:.0} writes over 10 ms; daemon-side requests over 2.5 ms {:.3} %, over 10 ms {:.3} %",
            r.phase,
            parts.join(", "),
            r.fsyncs_per_second,
            r.requests_per_fsync,
            r.requests_per_write,
            r.fsync_ms,
            r.slow_fsyncs.0,
            r.slow_fsyncs.1,
            r.slow_fsyncs.2,
            r.slow_writes,
            100.0 * r.server_slow.0 / (r.ops.max(1) as f64),
            100.0 * r.server_slow.1 / (r.ops.max(1) as f64),
        );
    }
    let path = std::env::var("TV_LOAD_JSON").unwrap_or_else(|_| "target/load.json".to_owned());
    let doc = serde_json::json!({"protocol": protocol, "clients": n, "seconds_per_phase": seconds, "phases": json});
    if std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).is_ok() {
        println!("wrote {path}");
    }
}
