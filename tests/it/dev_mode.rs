//! The newcomer's path: `serve --dev` in an empty directory creates the dev PKI,
//! keyring and data directory, prints a usable curl line, and a second start
//! reuses everything.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokenvault::client::{Client, ClientTls};

use crate::harness::{detokenize, post};

struct Dev {
    child: Child,
    addr: std::net::SocketAddr,
    stdout: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The child is reaped by `Dev`'s `Drop`, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn start(dir: &std::path::Path, run: u32) -> Dev {
    let out = dir.join(format!("dev-{run}.out"));
    let child = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("TOKENVAULT_PASSPHRASE")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("dev-{run}.err"))).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.contains("detokenize") {
            let addr = text
                .split("listening on https://")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            return Dev {
                child,
                addr: addr.parse().unwrap(),
                stdout: text,
            };
        }
        assert!(started.elapsed() < Duration::from_secs(120), "dev daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn client(dir: &std::path::Path, addr: std::net::SocketAddr, name: &str) -> Client {
    let keys = dir.join("keys/dev");
    let tls = ClientTls::from_files(
        &keys.join("ca.pem"),
        &keys.join(format!("{name}.pem")),
        &keys.join(format!("{name}.key")),
    )
    .unwrap();
    Client::connect(addr, tls.config().unwrap()).await.unwrap()
}

#[tokio::test]
async fn serve_dev_bootstraps_once_and_reuses() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), 1);
    for file in [
        "ca.pem",
        "server.pem",
        "server.key",
        "checkout.pem",
        "checkout.key",
        "gateway.pem",
        "gateway.key",
        "security.pem",
        "security.key",
        "keyring.sealed",
    ] {
        assert!(dir.path().join("keys/dev").join(file).is_file(), "{file} missing");
    }
    assert!(dir.path().join("data/dev").is_dir());
    assert!(first
        .stdout
        .contains("curl --cacert keys/dev/ca.pem --cert keys/dev/checkout.pem --key keys/dev/checkout.key"));
    assert!(first.stdout.contains(&format!("https://{}/v1/tokens", first.addr)));
    // The banner's card is in a file, not in the daemon's output.
    assert!(first.stdout.contains("-d @keys/dev/example-card.json"));
    let stderr = std::fs::read_to_string(dir.path().join("dev-1.err")).unwrap_or_default();
    for output in [&first.stdout, &stderr] {
        let digits: String = output.chars().filter(char::is_ascii_digit).collect();
        assert!(!digits.contains("4242424242424242"), "a card number in the output");
    }

    // The curl line works as printed: its body file tokenizes.
    let example = std::fs::read_to_string(dir.path().join("keys/dev/example-card.json")).unwrap();
    let mut checkout = client(dir.path(), first.addr, "checkout").await;
    let created = post(&mut checkout, "/v1/tokens", &example).await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["tenant"], "dev");
    let token = created.json()["token"].as_str().unwrap().to_owned();

    let ca = std::fs::read(dir.path().join("keys/dev/ca.pem")).unwrap();
    let keyring = std::fs::read(dir.path().join("keys/dev/keyring.sealed")).unwrap();
    drop(first);

    let second = start(dir.path(), 2);
    assert_eq!(std::fs::read(dir.path().join("keys/dev/ca.pem")).unwrap(), ca);
    assert_eq!(
        std::fs::read(dir.path().join("keys/dev/keyring.sealed")).unwrap(),
        keyring
    );
    let mut gateway = client(dir.path(), second.addr, "gateway").await;
    let revealed = detokenize(&mut gateway, &token).await;
    assert_eq!(revealed.status, 200);
    assert_eq!(revealed.json()["card"]["number"], "4242424242424242");
    drop(second);

    // The stopped dev vault's audit chain, verified offline.
    let verify = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["audit", "verify", "--dev", "--json"])
        .current_dir(dir.path())
        .env_remove("TOKENVAULT_PASSPHRASE")
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("true"),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn config_and_dev_together_are_refused() {
    let status = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["serve", "--dev", "--config", "x.toml"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
}

#[test]
fn production_start_refuses_the_dev_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let config = "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nkeyring = \"k\"\n[tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n";
    std::fs::write(dir.path().join("c.toml"), config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["serve", "--config", "c.toml"])
        .current_dir(dir.path())
        .env("TOKENVAULT_PASSPHRASE", tokenvault::startup::DEV_PASSPHRASE)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("development passphrase is refused"));
}

#[test]
fn unknown_config_key_is_named_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "listen = \"127.0.0.1:0\"\nlisten_backlog = 5\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["serve", "--config", "c.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_backlog"));
}

#[test]
fn wrong_passphrase_refuses_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["init", "--keyring", "k.sealed"])
        .current_dir(dir.path())
        .env("TOKENVAULT_PASSPHRASE", "the right one")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let config = "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nkeyring = \"k.sealed\"\n[tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n";
    std::fs::write(dir.path().join("c.toml"), config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["serve", "--config", "c.toml"])
        .current_dir(dir.path())
        .env("TOKENVAULT_PASSPHRASE", "the wrong one")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("passphrase is wrong or the keyring file was modified"),
        "{err}"
    );
}
