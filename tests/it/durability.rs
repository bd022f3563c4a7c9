//! Acknowledged means durable: `kill -9` right after the 201s, restart, every token
//! still detokenizes.

use crate::harness::{card_body, detokenize, fixture, post, TestVault};

#[tokio::test]
async fn kill_9_loses_no_acknowledged_token() {
    let mut vault = TestVault::start();
    let mut tokens = Vec::new();
    {
        let mut checkout = vault.client("checkout").await;
        for row in fixture("cards.csv") {
            let cvc = if row[1] == "amex" { "1234" } else { "123" };
            let reply = post(&mut checkout, "/v1/tokens", &card_body(&row[0], Some(cvc))).await;
            assert_eq!(reply.status, 201, "{}", reply.text());
            let digits: String = row[0].chars().filter(char::is_ascii_digit).collect();
            tokens.push((reply.json()["token"].as_str().unwrap().to_owned(), digits));
        }
    }
    vault.restart_after_kill();
    let mut gateway = vault.client("gateway").await;
    for (token, number) in &tokens {
        let reply = detokenize(&mut gateway, token).await;
        assert_eq!(reply.status, 200, "{token} lost after kill -9");
        let body = reply.json();
        assert_eq!(body["card"]["number"], number.as_str());
        // CVCs live in memory only: a restart forgets them.
        assert_eq!(body["card"]["cvc"], serde_json::Value::Null);
    }
}

/// A Luhn-valid 16-digit Visa-range test number, distinct for each `i`.
fn numbered_pan(i: u64) -> String {
    let body = format!("4{:014}", i);
    format!(
        "{body}{}",
        tokenvault::validate::luhn_check_digit(body.as_bytes()).unwrap()
    )
}

/// The group commit answers many requests per fsync while the next batches are
/// already being written: `kill -9` in the middle of that loses none of the
/// requests that were answered, and the audit chain still verifies. (`kill -9`
/// cannot show a missing fsync, since the page cache survives it; the commit unit
/// tests check that every answer waits for an fsync that covers it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_concurrent_load_loses_no_acknowledged_token() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    let mut vault = TestVault::start();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicU64::new(1));
    let checkout = vault.client("checkout").await;
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let mut client = checkout.share().expect("HTTP/2");
        let (acked, next) = (acked.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let pan = numbered_pan(next.fetch_add(1, Ordering::Relaxed));
                let body = format!(r#"{{"card":{{"number":"{pan}","exp_month":12,"exp_year":2031}}}}"#);
                let Ok(reply) = client
                    .request(http::Method::POST, "/v1/tokens", Some(body.as_bytes()))
                    .await
                else {
                    return;
                };
                if reply.status != 201 {
                    return;
                }
                let token = reply.json()["token"].as_str().unwrap().to_owned();
                acked.lock().unwrap().push((token, pan));
            }
        }));
    }
    // Let the load build up, then kill the daemon while requests are in flight.
    let started = std::time::Instant::now();
    while acked.lock().unwrap().len() < 300 && started.elapsed() < std::time::Duration::from_secs(60) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    vault.kill9();
    for t in tasks {
        let _ = t.await;
    }
    drop(checkout);
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300, "only {} tokenized before the kill", acked.len());

    vault.launch_now();
    let mut gateway = vault.client("gateway").await;
    for (token, pan) in &acked {
        let reply = detokenize(&mut gateway, token).await;
        assert_eq!(reply.status, 200, "{token} was acknowledged, then lost to kill -9");
        assert_eq!(reply.json()["card"]["number"], pan.as_str());
    }
    let mut security = vault.client("security").await;
    let verify = crate::harness::get(&mut security, "/v1/audit/verify").await.json();
    assert_eq!(verify["ok"], true, "{verify}");
}
