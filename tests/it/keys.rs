//! Key rotation with online rewrap, retirement, and the audit trail, end to end.

use std::process::Command;
use std::time::{Duration, Instant};

use http::Method;
use tokenvault::client::{Client, Reply};
use tokenvault::crypto::SealedKeyring;
use tokenvault::secret::Passphrase;
use tokenvault::store::{RocksStore, Store, Table, WriteOp};

use crate::harness::{get, post, TestVault, IDENTITIES, PASSPHRASE};

fn batch_body(n: usize, offset: usize) -> String {
    // Distinct Luhn-valid PANs: a 15-digit body and its check digit.
    let items: Vec<String> = (0..n)
        .map(|i| {
            let body = format!("4{:014}", offset + i);
            let check = tokenvault::validate::luhn_check_digit(body.as_bytes()).unwrap();
            format!(r#"{{"card":{{"number":"{body}{check}","exp_month":12,"exp_year":2031}}}}"#)
        })
        .collect();
    format!(r#"{{"items":[{}]}}"#, items.join(","))
}

async fn tokenize_many(client: &mut Client, n: usize, offset: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut done = 0;
    while done < n {
        let chunk = (n - done).min(1000);
        let reply = post(client, "/v1/tokens/batch", &batch_body(chunk, offset + done)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        for r in reply.json()["results"].as_array().unwrap() {
            tokens.push(
                r["token"]
                    .as_str()
                    .unwrap_or_else(|| panic!("item failed: {r}"))
                    .to_owned(),
            );
        }
        done += chunk;
    }
    tokens
}

async fn detokenize_all(client: &mut Client, tokens: &[String]) {
    for chunk in tokens.chunks(1000) {
        let body = serde_json::json!({ "tokens": chunk }).to_string();
        let reply = post(client, "/v1/detokenize/batch", &body).await;
        assert_eq!(reply.status, 200);
        for r in reply.json()["results"].as_array().unwrap() {
            assert!(r["card"]["number"].is_string(), "a record did not open: {r}");
        }
    }
}

async fn status(client: &mut Client) -> serde_json::Value {
    let reply = get(client, "/v1/keys").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

fn records(status: &serde_json::Value, version: u64) -> i64 {
    status["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"].as_u64() == Some(version))
        .map_or(-1, |v| v["records"].as_i64().unwrap())
}

async fn wait_rewrap(client: &mut Client) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let s = status(client).await;
        if s["rewrap"]["running"] == false {
            return s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "rewrap did not finish: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(client: &mut Client, method: Method, path: &str) -> Reply {
    client.request(method, path, None).await.unwrap()
}

#[tokio::test]
async fn rotate_rewrap_under_load_then_retire() {
    let vault = TestVault::start_with(IDENTITIES, "rewrap_batch = 100\nrewrap_pause_ms = 25");
    let mut checkout = vault.client("checkout").await;
    let mut gateway = vault.client("gateway").await;
    let mut security = vault.client("security").await;
    let mut tokens = tokenize_many(&mut checkout, 3000, 0).await;
    let before = status(&mut security).await;
    assert_eq!(before["active_version"], 1);
    assert_eq!(records(&before, 1), 3000);

    let rotated = call(&mut security, Method::POST, "/v1/keys/rotate").await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    assert_eq!(rotated.json()["active_version"], 2);
    assert_eq!(rotated.json()["rewrap"]["running"], true);
    let early = call(&mut security, Method::POST, "/v1/keys/1/retire").await;
    assert_eq!(
        (early.status, early.json()["type"].as_str()),
        (409, Some("key_version_in_use"))
    );
    let active = call(&mut security, Method::POST, "/v1/keys/2/retire").await;
    assert_eq!(active.status, 409);

    // Traffic keeps flowing during the rewrap.
    tokens.extend(tokenize_many(&mut checkout, 200, 10_000).await);
    detokenize_all(&mut gateway, &tokens[..500]).await;

    let done = wait_rewrap(&mut security).await;
    assert_eq!(records(&done, 1), 0, "{done}");
    assert_eq!(records(&done, 2), 3200);
    assert!(done["rewrap"]["done"].as_u64().unwrap() >= 3000 - 500);
    let retired = call(&mut security, Method::POST, "/v1/keys/1/retire").await;
    assert_eq!(retired.status, 200, "{}", retired.text());
    let states: Vec<_> = retired.json()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, ["retired", "active"]);
    detokenize_all(&mut gateway, &tokens).await;

    // The sealed keyring no longer holds version 1.
    let sealed = SealedKeyring::read(&vault.root.path().join("keyring.sealed")).unwrap();
    let ring = sealed.unseal(&Passphrase::copy_from(PASSPHRASE)).unwrap();
    assert!(ring.kek(1).is_some_and(|k| k.cipher().is_none()));
    assert_eq!(ring.active_version(), 2);
}

#[tokio::test]
async fn kill_9_during_rewrap_resumes_and_loses_nothing() {
    let mut vault = TestVault::start_with(IDENTITIES, "rewrap_batch = 50\nrewrap_pause_ms = 40");
    let mut checkout = vault.client("checkout").await;
    let tokens = tokenize_many(&mut checkout, 2000, 0).await;
    let mut security = vault.client("security").await;
    assert_eq!(call(&mut security, Method::POST, "/v1/keys/rotate").await.status, 200);
    let started = Instant::now();
    loop {
        let s = status(&mut security).await;
        if s["rewrap"]["done"].as_u64().unwrap() >= 200 {
            assert_eq!(s["rewrap"]["running"], true, "finished too early to test a crash: {s}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    vault.restart_after_kill();
    let mut security = vault.client("security").await;
    let done = wait_rewrap(&mut security).await;
    assert_eq!(records(&done, 1), 0, "{done}");
    assert_eq!(records(&done, 2), 2000);
    let mut gateway = vault.client("gateway").await;
    detokenize_all(&mut gateway, &tokens).await;
    assert_eq!(call(&mut security, Method::POST, "/v1/keys/1/retire").await.status, 200);
}

/// F13: a version that still protects data cannot be retired.
#[tokio::test]
async fn version_in_use_names_how_many_records_need_it() {
    let mut vault = TestVault::start_with(IDENTITIES, "rewrap_batch = 1\nrewrap_pause_ms = 1500");
    let mut checkout = vault.client("checkout").await;
    let tokens = tokenize_many(&mut checkout, 3, 0).await;
    let mut security = vault.client("security").await;
    assert_eq!(call(&mut security, Method::POST, "/v1/keys/rotate").await.status, 200);
    // Wait for the first batch (one record); the next comes 1.5 s later.
    let started = Instant::now();
    while status(&mut security).await["rewrap"]["done"] != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the first rewrap batch did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = call(&mut security, Method::POST, "/v1/keys/1/retire").await;
    assert_eq!(refused.status, 409);
    assert!(
        refused.json()["detail"].as_str().unwrap().starts_with("2 records"),
        "{}",
        refused.text()
    );
    let keyring = vault.root.path().join("keyring.sealed");
    let ring = SealedKeyring::read(&keyring)
        .unwrap()
        .unseal(&Passphrase::copy_from(PASSPHRASE))
        .unwrap();
    assert!(
        ring.kek(1).is_some_and(|k| k.cipher().is_some()),
        "no key material removed"
    );

    wait_rewrap(&mut security).await;
    assert_eq!(call(&mut security, Method::POST, "/v1/keys/1/retire").await.status, 200);
    vault.restart_after_kill();
    let mut gateway = vault.client("gateway").await;
    detokenize_all(&mut gateway, &tokens).await;
    let ring = SealedKeyring::read(&keyring)
        .unwrap()
        .unseal(&Passphrase::copy_from(PASSPHRASE))
        .unwrap();
    assert!(ring.kek(1).is_some_and(|k| k.cipher().is_none()));
}

#[tokio::test]
async fn key_and_audit_endpoints_need_their_roles() {
    let vault = TestVault::start();
    for name in ["checkout", "gateway", "stranger"] {
        let mut client = vault.client(name).await;
        for (method, path) in [
            (Method::GET, "/v1/keys"),
            (Method::POST, "/v1/keys/rotate"),
            (Method::POST, "/v1/keys/1/retire"),
            (Method::GET, "/v1/audit"),
            (Method::GET, "/v1/audit/verify"),
        ] {
            let reply = call(&mut client, method.clone(), path).await;
            assert_eq!(reply.status, 403, "{name} {method} {path}");
        }
    }
    let mut security = vault.client("security").await;
    assert_eq!(call(&mut security, Method::GET, "/v1/keys").await.status, 200);
    assert_eq!(
        call(&mut security, Method::GET, "/v1/audit/verify").await.json()["ok"],
        true
    );
}

#[tokio::test]
async fn audit_trail_lists_verifies_and_detects_tampering_offline() {
    let mut vault = TestVault::start();
    let mut checkout = vault.client("checkout").await;
    let mut gateway = vault.client("gateway").await;
    let tokens = tokenize_many(&mut checkout, 5, 0).await;
    detokenize_all(&mut gateway, &tokens).await;
    let _ = post(&mut gateway, "/v1/tokens", "{}").await; // denied
    let mut security = vault.client("security").await;

    let page = get(&mut security, "/v1/audit?after=0&limit=3").await.json();
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["seq"], 1);
    assert_eq!(entries[0]["action"], "start");
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = get(&mut security, &format!("/v1/audit?after={after}&limit=4"))
            .await
            .json();
        all.extend(page["entries"].as_array().unwrap().clone());
        match page["next"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let actions: Vec<&str> = all.iter().map(|e| e["action"].as_str().unwrap()).collect();
    let ok = |action: &str| {
        all.iter()
            .filter(|e| e["action"] == action && e["outcome"] == "ok")
            .count()
    };
    assert_eq!(ok("tokenize"), 5);
    assert_eq!(ok("detokenize"), 5);
    assert!(actions.contains(&"start"));
    assert!(all
        .iter()
        .any(|e| e["outcome"] == "denied" && e["identity"] == "spiffe://test/gateway"));
    for e in &all {
        let text = e.to_string();
        assert!(!text.contains("4000000000000"), "raw data in the audit trail");
        assert!(e["mac"].as_str().unwrap().len() == 64 && e["request_id"].is_string() || e["action"] == "start");
    }
    let verify = get(&mut security, "/v1/audit/verify").await.json();
    assert_eq!(verify["ok"], true);
    let n = all.len() as u64;

    vault.kill9();
    let data = vault.data_dir();
    let keyring = vault.root.path().join("keyring.sealed");
    let verify = |dir: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_tokenvault"))
            .args(["audit", "verify", "--data-dir"])
            .arg(dir)
            .arg("--keyring")
            .arg(&keyring)
            .env("TOKENVAULT_PASSPHRASE", PASSPHRASE)
            .output()
            .unwrap()
    };
    let whole = verify(&data);
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stdout));

    let export = vault.root.path().join("audit.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["audit", "export", "--data-dir"])
        .arg(&data)
        .arg("--keyring")
        .arg(&keyring)
        .arg("--out")
        .arg(&export)
        .env("TOKENVAULT_PASSPHRASE", PASSPHRASE)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(std::fs::read_to_string(&export).unwrap().lines().count() as u64 >= n);

    let key = |seq: u64| seq.to_be_bytes().to_vec();
    type Tamper = Box<dyn Fn(&RocksStore)>;
    let tampers: Vec<(&str, u64, Tamper)> = vec![
        (
            "edit",
            3,
            Box::new(move |s: &RocksStore| {
                let v = s.get(Table::Audit, &key(3)).unwrap().unwrap();
                let edited = String::from_utf8(v).unwrap().replacen("\"ok\"", "\"no\"", 1);
                s.write(&[WriteOp::put(Table::Audit, key(3), edited.into_bytes())], true)
                    .unwrap();
            }),
        ),
        (
            "delete",
            4,
            Box::new(move |s: &RocksStore| s.write(&[WriteOp::delete(Table::Audit, key(4))], true).unwrap()),
        ),
        (
            "swap",
            5,
            Box::new(move |s: &RocksStore| {
                let a = s.get(Table::Audit, &key(5)).unwrap().unwrap();
                let b = s.get(Table::Audit, &key(6)).unwrap().unwrap();
                s.write(
                    &[
                        WriteOp::put(Table::Audit, key(5), b),
                        WriteOp::put(Table::Audit, key(6), a),
                    ],
                    true,
                )
                .unwrap();
            }),
        ),
        (
            "insert",
            n + 1,
            Box::new(move |s: &RocksStore| {
                let forged = serde_json::json!({"seq": n + 1, "time": "2026-01-01T00:00:00Z", "identity": "x",
                    "action": "detokenize", "tenant": "shop", "token": null, "outcome": "ok", "request_id": null,
                    "key_version": null, "mac": "00".repeat(32)});
                s.write(
                    &[WriteOp::put(Table::Audit, key(n + 1), forged.to_string().into_bytes())],
                    true,
                )
                .unwrap();
            }),
        ),
    ];
    for (name, bad, tamper) in tampers {
        let copy = vault.root.path().join(format!("tampered-{name}"));
        copy_dir(&data, &copy);
        {
            let store = RocksStore::open(&copy, 256).unwrap();
            tamper(&store);
        }
        let out = verify(&copy);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{name} not detected: {text}");
        assert!(text.contains(&format!("sequence number {bad}")), "{name}: {text}");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn command_line_rotate_status_retire_and_change_passphrase() {
    let mut vault = TestVault::start();
    let mut checkout = vault.client("checkout").await;
    let tokens = tokenize_many(&mut checkout, 50, 0).await;
    let pki = vault.pki.dir.clone();
    let url = format!("https://127.0.0.1:{}", vault.addr.port());
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tokenvault"))
            .args(args)
            .args(["--url", &url, "--cert"])
            .arg(pki.join("security.pem"))
            .arg("--key")
            .arg(pki.join("security.key"))
            .arg("--ca")
            .arg(pki.join("ca.pem"))
            .output()
            .unwrap()
    };
    let rotated = cli(&["keys", "rotate", "--wait", "--json"]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let json: serde_json::Value = serde_json::from_slice(&rotated.stdout).unwrap();
    assert_eq!(json["active_version"], 2);
    assert_eq!(json["rewrap"]["running"], false);
    let shown = cli(&["keys", "status"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("active version: 2") && text.contains("decrypt_only"),
        "{text}"
    );
    assert!(cli(&["keys", "retire", "1"]).status.success());
    let again = cli(&["keys", "retire", "2"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("409"));
    let verify = cli(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));

    vault.kill9();
    let changed = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["keys", "change-passphrase", "--keyring"])
        .arg(vault.root.path().join("keyring.sealed"))
        .env("TOKENVAULT_PASSPHRASE", PASSPHRASE)
        .env("TOKENVAULT_NEW_PASSPHRASE", "a brand new passphrase")
        .output()
        .unwrap();
    assert!(changed.status.success(), "{}", String::from_utf8_lossy(&changed.stderr));
    vault.passphrase = "a brand new passphrase".into();
    vault.relaunch();
    let mut gateway = vault.client("gateway").await;
    detokenize_all(&mut gateway, &tokens).await;
    let mut security = vault.client("security").await;
    let s = status(&mut security).await;
    assert_eq!(s["active_version"], 2);
    assert_eq!(s["versions"][0]["state"], "retired");
}
