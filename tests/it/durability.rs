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
