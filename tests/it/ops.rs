//! Running it as a service: metrics, readiness during drain, graceful shutdown with
//! requests in flight, backup and restore, check-config, JSON logs.

use std::process::Command;
use std::time::{Duration, Instant};

use http::Method;
use tokenvault::client::Client;

use crate::harness::{card_body, detokenize, get, post, TestVault, IDENTITIES, PASSPHRASE};

/// Parses the Prometheus text format strictly enough to catch a broken page:
/// every sample line is `name{labels} value` with a numeric value.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {l}"));
            assert!(name.chars().next().unwrap().is_ascii_alphabetic(), "{l}");
            assert_eq!(name.matches('{').count(), name.matches('}').count(), "{l}");
            (name.to_owned(), value)
        })
        .collect()
}

fn value(samples: &[(String, f64)], name: &str) -> f64 {
    samples.iter().find(|(n, _)| n == name).map_or(0.0, |(_, v)| *v)
}

#[tokio::test]
async fn metrics_parse_move_with_traffic_and_hold_no_values() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let top = format!("metrics_listen = \"127.0.0.1:{port}\"");
    let vault = TestVault::start_full(IDENTITIES, &top, "");
    let mut checkout = vault.client("checkout").await;
    let mut gateway = vault.client("gateway").await;
    let before = samples(&get(&mut checkout, "/metrics").await.text());
    let name = "tokenvault_operations_total{tenant=\"shop\",operation=\"tokenize\"}";
    assert_eq!(value(&before, name), 0.0);
    let mut token = String::new();
    for _ in 0..3 {
        token = post(&mut checkout, "/v1/tokens", &card_body("4111111111111111", None))
            .await
            .json()["token"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    detokenize(&mut gateway, &token).await;
    let page = get(&mut gateway, "/metrics").await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = page.text();
    let after = samples(&text);
    assert_eq!(value(&after, name), 3.0);
    assert_eq!(
        value(
            &after,
            "tokenvault_operations_total{tenant=\"shop\",operation=\"detokenize\"}"
        ),
        1.0
    );
    assert!(value(&after, "tokenvault_requests_total{route=\"tokenize\",status=\"201\"}") >= 3.0);
    assert_eq!(value(&after, "tokenvault_key_version"), 1.0);
    assert!(value(&after, "tokenvault_audit_entries") >= 5.0);
    assert!(value(&after, "tokenvault_active_connections") >= 2.0);
    assert!(text.contains("tokenvault_request_duration_seconds_bucket"));
    assert!(!text.contains(&token) && !text.contains("4111111111111111"));

    // A handshake without a certificate is counted by reason.
    let mut tls = vault.pki.tls("checkout");
    tls.identity = None;
    if let Ok(mut c) = Client::connect(vault.addr, tls.config().unwrap()).await {
        let _ = c.request(Method::GET, "/healthz", None).await;
    }
    let mut stranger = vault.client("stranger").await;
    assert_eq!(get(&mut stranger, "/metrics").await.status, 403);

    // The plain loopback listener serves the same page.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut plain = String::new();
    tcp.read_to_string(&mut plain).await.unwrap();
    assert!(plain.starts_with("HTTP/1.1 200"));
    assert!(
        plain.contains("tokenvault_tls_handshake_failures_total{reason=\"no_certificate\"}"),
        "{plain}"
    );
}

#[tokio::test]
async fn readiness_goes_false_while_draining_and_in_flight_requests_complete() {
    let mut vault = TestVault::start_with(IDENTITIES, "drain_delay_ms = 1500\nshutdown_grace_ms = 5000");
    let mut tasks = Vec::new();
    let clients: Vec<Client> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(vault.client("checkout").await);
        }
        v
    };
    for i in 0..100 {
        let mut c = clients[i % 4].share().unwrap();
        tasks.push(tokio::spawn(async move {
            let number = [
                "4111111111111111",
                "5555555555554444",
                "378282246310005",
                "6011111111111117",
            ][i % 4];
            post(&mut c, "/v1/tokens", &card_body(number, None)).await.status
        }));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let pid = vault.pid().unwrap();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut probe = vault.client("checkout").await;
    assert_eq!(get(&mut probe, "/readyz").await.status, 503);
    assert_eq!(get(&mut probe, "/healthz").await.status, 200);
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let started = Instant::now();
    let status = vault.wait_exit(Duration::from_secs(10)).expect("exit");
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn backup_under_write_load_restores_every_acknowledged_token() {
    let mut vault = TestVault::start();
    let mut checkout = vault.client("checkout").await;
    let mut acknowledged = Vec::new();
    for i in 0..50 {
        let number = if i % 2 == 0 {
            "4111111111111111"
        } else {
            "5555555555554444"
        };
        let reply = post(&mut checkout, "/v1/tokens", &card_body(number, None)).await;
        assert_eq!(reply.status, 201);
        acknowledged.push(reply.json()["token"].as_str().unwrap().to_owned());
    }
    // Writes keep coming while the backup is taken.
    let tls = vault.pki.tls("checkout");
    let addr = vault.addr;
    let load = tokio::spawn(async move {
        let mut c = Client::connect(addr, tls.config().unwrap()).await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(1500);
        let mut n = 0;
        while Instant::now() < deadline {
            assert_eq!(
                post(&mut c, "/v1/tokens", &card_body("4012888888881881", None))
                    .await
                    .status,
                201
            );
            n += 1;
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut security = vault.client("security").await;
    let reply = security.request(Method::POST, "/v1/backups", None).await.unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());
    let info = reply.json();
    assert!(info["name"].as_str().unwrap().starts_with("backup-"));
    assert!(info["records"].as_u64().unwrap() >= 50);
    let path = info["path"].as_str().unwrap().to_owned();
    let backed_up = info["records"].as_u64().unwrap();
    assert!(load.await.unwrap() > 0);
    // Backups at the same moment queue instead of colliding.
    let mut names = std::collections::HashSet::new();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (tls, addr) = (vault.pki.tls("security"), vault.addr);
            tokio::spawn(async move {
                let mut c = Client::connect(addr, tls.config().unwrap()).await.unwrap();
                c.request(Method::POST, "/v1/backups", None).await.unwrap()
            })
        })
        .collect();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 201, "{}", reply.text());
        assert!(names.insert(reply.json()["name"].as_str().unwrap().to_owned()));
    }
    // Data and backups are readable by the daemon's user only.
    use std::os::unix::fs::PermissionsExt;
    for dir in [vault.data_dir(), std::path::PathBuf::from(&path)] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    }
    let mut gateway = vault.client("gateway").await;
    assert_eq!(
        gateway.request(Method::POST, "/v1/backups", None).await.unwrap().status,
        403
    );
    vault.kill9();

    let restored = vault.root.path().join("restored");
    let bin = env!("CARGO_BIN_EXE_tokenvault");
    let out = Command::new(bin)
        .args(["restore", "--from", &path, "--to"])
        .arg(&restored)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains(&format!("({backed_up} records)")), "{said}");
    let again = Command::new(bin)
        .args(["restore", "--from", &path, "--to"])
        .arg(&restored)
        .output()
        .unwrap();
    assert!(!again.status.success(), "a non-empty target must be refused");

    let config = std::fs::read_to_string(vault.config_path()).unwrap();
    let config = config.replace(&vault.data_dir().display().to_string(), &restored.display().to_string());
    std::fs::write(vault.config_path(), config).unwrap();
    vault.relaunch();
    let mut gateway = vault.client("gateway").await;
    for token in &acknowledged {
        assert_eq!(
            detokenize(&mut gateway, token).await.status,
            200,
            "{token} missing from the backup"
        );
    }
}

#[test]
fn check_config_names_each_broken_file() {
    let vault = TestVault::prepare(IDENTITIES, "");
    let bin = env!("CARGO_BIN_EXE_tokenvault");
    let run = || {
        Command::new(bin)
            .args(["check-config", "--config"])
            .arg(vault.config_path())
            .output()
            .unwrap()
    };
    let good = run();
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stdout));
    let pki = &vault.pki.dir;
    let cases: Vec<(&str, std::path::PathBuf, Vec<u8>)> = vec![
        ("tls.cert", pki.join("server.pem"), Vec::new()),
        ("tls.key", pki.join("server.key"), b"not a key".to_vec()),
        (
            "tls.client_ca",
            pki.join("ca.pem"),
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
        ),
        ("keyring", vault.root.path().join("keyring.sealed"), b"{}".to_vec()),
    ];
    for (item, path, broken) in cases {
        let saved = std::fs::read(&path).unwrap();
        std::fs::write(&path, broken).unwrap();
        let out = run();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(64), "{item}: {text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("FAIL") && l.contains(item))
            .unwrap_or_else(|| panic!("{item}: {text}"));
        assert!(
            line.contains(&path.file_name().unwrap().to_string_lossy().to_string()),
            "{line}"
        );
        std::fs::write(&path, saved).unwrap();
    }
    // A key that does not belong to the certificate.
    let other = tokenvault::pki::Ca::new("x")
        .unwrap()
        .issue(&tokenvault::pki::LeafSpec::localhost_server())
        .unwrap();
    let saved = std::fs::read(pki.join("server.key")).unwrap();
    std::fs::write(pki.join("server.key"), other.key_pem.as_bytes()).unwrap();
    let text = String::from_utf8_lossy(&run().stdout).into_owned();
    assert!(
        text.lines().any(|l| l.starts_with("FAIL") && l.contains("server.key")),
        "{text}"
    );
    std::fs::write(pki.join("server.key"), saved).unwrap();
    // A data directory that is a file.
    let _ = std::fs::remove_dir_all(vault.data_dir());
    std::fs::write(vault.data_dir(), b"x").unwrap();
    let text = String::from_utf8_lossy(&run().stdout).into_owned();
    assert!(
        text.lines().any(|l| l.starts_with("FAIL") && l.contains("data_dir")),
        "{text}"
    );
}

#[tokio::test]
async fn json_logs_carry_the_request_id() {
    let vault = TestVault::start_full(IDENTITIES, "log_format = \"json\"", "");
    let mut c = vault.client("checkout").await;
    let reply = post(&mut c, "/v1/tokens", &card_body("4111111111111111", None)).await;
    let id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let output = String::from_utf8_lossy(&vault.output()).into_owned();
    let mut with_id = 0;
    for line in output.lines().filter(|l| l.starts_with('{')) {
        let json: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if line.contains(&id) {
            with_id += 1;
            assert!(
                json["span"]["request_id"] == id.as_str() || json["fields"]["request_id"] == id.as_str(),
                "{line}"
            );
        }
    }
    assert!(with_id >= 1, "no log line names the request id");
    let _ = PASSPHRASE;
}
