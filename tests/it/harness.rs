//! The test harness: a real daemon process on a loopback port with a generated PKI,
//! a temporary data directory and keyring, and mTLS clients by identity.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokenvault::client::{Client, ClientTls, Reply};
use tokenvault::pki::{Ca, LeafSpec};

pub const PASSPHRASE: &str = "integration-test passphrase, not a secret";

/// A PKI for tests: a root CA whose key is kept, so tests can issue any leaf.
pub struct TestPki {
    pub ca: Ca,
    pub dir: PathBuf,
}

impl TestPki {
    pub fn new(dir: &Path) -> TestPki {
        let ca = Ca::new("tokenvault test CA").expect("test CA");
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("write ca");
        let server = ca.issue(&LeafSpec::localhost_server()).expect("server cert");
        std::fs::write(dir.join("server.pem"), &server.cert_pem).expect("write");
        std::fs::write(dir.join("server.key"), server.key_pem.as_bytes()).expect("write");
        TestPki { ca, dir }
    }

    /// Issues a client leaf and writes `<name>.pem`/`<name>.key`.
    pub fn issue(&self, name: &str, spec: &LeafSpec) {
        let leaf = self.ca.issue(spec).expect("client cert");
        std::fs::write(self.dir.join(format!("{name}.pem")), &leaf.cert_pem).expect("write");
        std::fs::write(self.dir.join(format!("{name}.key")), leaf.key_pem.as_bytes()).expect("write");
    }

    pub fn tls(&self, name: &str) -> ClientTls {
        ClientTls::from_files(
            &self.dir.join("ca.pem"),
            &self.dir.join(format!("{name}.pem")),
            &self.dir.join(format!("{name}.key")),
        )
        .expect("client files")
    }
}

/// The standard identities of the tests: (file name, SAN URI, roles, tenants).
pub const IDENTITIES: &[(&str, &str, &str, &str)] = &[
    ("checkout", "spiffe://test/checkout", r#"["tokenize"]"#, r#"["shop"]"#),
    ("gateway", "spiffe://test/gateway", r#"["detokenize"]"#, r#"["shop"]"#),
    (
        "security",
        "spiffe://test/security",
        r#"["keys", "audit"]"#,
        r#"["shop"]"#,
    ),
];

pub struct TestVault {
    pub root: tempfile::TempDir,
    pub pki: TestPki,
    pub addr: SocketAddr,
    child: Option<Child>,
    runs: usize,
    /// The passphrase the next launch unseals with.
    pub passphrase: String,
}

impl TestVault {
    /// Generates a PKI, a config with the standard identities and a keyring, and
    /// starts the daemon on 127.0.0.1:0.
    pub fn start() -> TestVault {
        Self::start_with(IDENTITIES, "")
    }

    /// Like `start`, with other identities and extra `[limits]` lines.
    pub fn start_with(identities: &[(&str, &str, &str, &str)], limits: &str) -> TestVault {
        Self::start_full(identities, "", limits)
    }

    /// Like `start_with`, with extra top-level configuration lines.
    pub fn start_full(identities: &[(&str, &str, &str, &str)], top: &str, limits: &str) -> TestVault {
        let mut vault = Self::prepare_full(identities, top, limits);
        vault.launch();
        vault
    }

    pub fn prepare(identities: &[(&str, &str, &str, &str)], limits: &str) -> TestVault {
        Self::prepare_full(identities, "", limits)
    }

    /// Writes PKI, config and keyring without starting a process.
    pub fn prepare_full(identities: &[(&str, &str, &str, &str)], top: &str, limits: &str) -> TestVault {
        Self::prepare_tls(identities, top, "", limits)
    }

    /// Like `prepare_full`, with extra `[tls]` lines; `{pki}` in them is the PKI folder.
    pub fn prepare_tls(identities: &[(&str, &str, &str, &str)], top: &str, tls_extra: &str, limits: &str) -> TestVault {
        let root = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::new(root.path());
        let tls_extra = tls_extra.replace("{pki}", &pki.dir.display().to_string());
        let mut clients = String::new();
        for (name, uri, roles, tenants) in identities {
            pki.issue(name, &LeafSpec::client(name, Some(uri)));
            clients.push_str(&format!(
                "[[clients]]\nidentity = \"{uri}\"\nroles = {roles}\ntenants = {tenants}\n\n"
            ));
        }
        // A valid certificate from the same CA whose identity is not configured.
        pki.issue(
            "stranger",
            &LeafSpec::client("stranger", Some("spiffe://test/stranger")),
        );
        let p = |name: &str| pki.dir.join(name).display().to_string();
        let config = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\nkeyring = \"{keyring}\"\npassphrase_env = \"TV_TEST_PASSPHRASE\"\nbackup_dir = \"{backups}\"\n{top}\n\n[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{ca}\"\n{tls_extra}\n\n{clients}[limits]\n{limits}\n",
            data = root.path().join("data").display(),
            keyring = root.path().join("keyring.sealed").display(),
            backups = root.path().join("backups").display(),
            tls_extra = tls_extra,
            cert = p("server.pem"),
            key = p("server.key"),
            ca = p("ca.pem"),
        );
        std::fs::write(root.path().join("tokenvault.toml"), config).expect("config");
        let status = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
            .args(["init", "--keyring"])
            .arg(root.path().join("keyring.sealed"))
            .env("TOKENVAULT_PASSPHRASE", PASSPHRASE)
            .stdout(Stdio::null())
            .status()
            .expect("run init");
        assert!(status.success(), "tokenvault init failed");
        TestVault {
            root,
            pki,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
            runs: 0,
            passphrase: PASSPHRASE.to_owned(),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.path().join("tokenvault.toml")
    }

    fn launch(&mut self) {
        self.runs += 1;
        let out = self.root.path().join(format!("daemon-{}.out", self.runs));
        let err = self.root.path().join(format!("daemon-{}.err", self.runs));
        let child = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
            .args(["serve", "--config"])
            .arg(self.root.path().join("tokenvault.toml"))
            .current_dir(self.root.path())
            .env("TV_TEST_PASSPHRASE", &self.passphrase)
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(std::fs::File::create(&err).expect("err"))
            .spawn()
            .expect("spawn daemon");
        self.child = Some(child);
        self.addr = wait_for_listening(&out, &err, Duration::from_secs(120));
    }

    /// `kill -9`: no shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM, then wait (at most `limit`) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let id = self.child.as_ref()?.id();
        let _ = Command::new("kill").args(["-TERM", &id.to_string()]).status();
        self.wait_exit(limit)
    }

    /// Waits (at most `limit`) for the daemon to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn launch_now(&mut self) {
        self.launch();
    }

    pub fn relaunch(&mut self) {
        self.launch();
    }

    pub fn restart_after_kill(&mut self) {
        self.kill9();
        self.launch();
    }

    pub async fn client(&self, name: &str) -> Client {
        let tls = self.pki.tls(name);
        Client::connect(self.addr, tls.config().expect("client config"))
            .await
            .expect("connect")
    }

    /// Everything the daemon printed, over all its runs.
    pub fn output(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for run in 1..=self.runs {
            for ext in ["out", "err"] {
                let path = self.root.path().join(format!("daemon-{run}.{ext}"));
                all.extend(std::fs::read(path).unwrap_or_default());
            }
        }
        all
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }
}

impl Drop for TestVault {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn wait_for_listening(out: &Path, err: &Path, limit: Duration) -> SocketAddr {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        if let Some(rest) = text.split("listening on https://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            return addr.parse().expect("listening address");
        }
        if started.elapsed() > limit {
            panic!(
                "daemon did not start: {}",
                std::fs::read_to_string(err)
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file below `dir`, read whole.
pub fn read_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out
}

pub fn card_body(number: &str, cvc: Option<&str>) -> String {
    let cvc = cvc.map(|c| format!(r#","cvc":"{c}""#)).unwrap_or_default();
    format!(r#"{{"card":{{"number":"{number}","exp_month":12,"exp_year":2031,"holder_name":"A. Example"{cvc}}}}}"#)
}

pub async fn post(client: &mut Client, path: &str, body: &str) -> Reply {
    client
        .request(http::Method::POST, path, Some(body.as_bytes()))
        .await
        .expect("request")
}

pub async fn get(client: &mut Client, path: &str) -> Reply {
    client.request(http::Method::GET, path, None).await.expect("request")
}

pub async fn detokenize(client: &mut Client, token: &str) -> Reply {
    client
        .request(http::Method::POST, &format!("/v1/tokens/{token}/detokenize"), None)
        .await
        .expect("request")
}

/// Reads a CSV fixture (simple: quoted fields only for the empty string).
pub fn fixture(name: &str) -> Vec<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(path).expect("fixture");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(|f| f.trim_matches('"').to_owned()).collect())
        .collect()
}

/// A daemon running inside the test process, with a clock the test moves.
pub struct InProcess {
    pub vault: TestVault,
    pub clock: std::sync::Arc<tokenvault::clock::ManualClock>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl InProcess {
    pub async fn start(identities: &[(&str, &str, &str, &str)], limits: &str) -> InProcess {
        let mut vault = TestVault::prepare(identities, limits);
        let config = tokenvault::config::Config::load(&vault.config_path()).expect("config");
        let clock = std::sync::Arc::new(tokenvault::clock::ManualClock::new(time::OffsetDateTime::now_utc()));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let options = tokenvault::daemon::Options {
            clock: clock.clone(),
            stop: Some(stop_rx),
        };
        let passphrase = tokenvault::secret::Passphrase::copy_from(PASSPHRASE);
        tokio::spawn(async move {
            let result = tokenvault::daemon::run_with(config, passphrase, options, move |addr, _| {
                let _ = addr_tx.send(addr);
            })
            .await;
            if let Err(e) = result {
                eprintln!("in-process daemon failed: {e}");
            }
        });
        vault.addr = addr_rx.await.expect("daemon listening");
        InProcess { vault, clock, stop }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A raw HTTP/1.1 TLS stream as `name`, for tests that write bytes by hand.
pub async fn raw_http1(vault: &TestVault, name: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = vault.pki.tls(name);
    tls.alpn = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(tls.config().expect("client config"));
    let tcp = tokio::net::TcpStream::connect(vault.addr).await.expect("connect");
    let server = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    connector.connect(server, tcp).await.expect("handshake")
}

/// POST with an `Idempotency-Key` header.
pub async fn post_idempotent(client: &mut Client, body: &str, key: &str) -> Reply {
    client
        .request_with(
            http::Method::POST,
            "/v1/tokens",
            Some(body.as_bytes()),
            &[("idempotency-key", key)],
        )
        .await
        .expect("request")
}

impl TestVault {
    /// Sends SIGHUP (reload certificates and CRLs).
    pub fn hangup(&self) {
        let pid = self.pid().expect("running").to_string();
        let status = Command::new("kill").args(["-HUP", &pid]).status().expect("kill");
        assert!(status.success());
    }
}
