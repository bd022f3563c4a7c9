//! Every fixture row through the running daemon: tokenize as checkout, read
//! metadata, detokenize as gateway, compare; invalid rows get their 422.

use crate::harness::{card_body, detokenize, fixture, get, post, TestVault};

fn digits(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_digit()).collect()
}

#[tokio::test]
async fn every_fixture_card_round_trips() {
    let vault = TestVault::start();
    let mut checkout = vault.client("checkout").await;
    let mut gateway = vault.client("gateway").await;
    for row in fixture("cards.csv") {
        let (number, brand) = (&row[0], &row[1]);
        let created = post(&mut checkout, "/v1/tokens", &card_body(number, None)).await;
        assert_eq!(created.status, 201, "{number}: {}", created.text());
        let meta = created.json();
        let token = meta["token"].as_str().unwrap().to_owned();
        let normal = digits(number);
        assert_eq!(meta["card"]["brand"], brand.as_str(), "{number}");
        assert_eq!(meta["card"]["last4"], &normal[normal.len() - 4..]);
        let bin_len = if normal.len() >= 16 { 8 } else { 6 };
        assert_eq!(meta["card"]["bin"], &normal[..bin_len]);
        assert!(!created.text().contains(&normal));

        for client in [&mut checkout, &mut gateway] {
            let read = get(client, &format!("/v1/tokens/{token}")).await;
            assert_eq!(read.status, 200);
            assert_eq!(read.json(), meta);
        }

        let revealed = detokenize(&mut gateway, &token).await;
        assert_eq!(revealed.status, 200);
        assert_eq!(revealed.headers["cache-control"], "no-store");
        let body = revealed.json();
        assert_eq!(body["card"]["number"], normal.as_str());
        assert_eq!(body["card"]["exp_month"], 12);
        assert_eq!(body["card"]["exp_year"], 2031);
        assert_eq!(body["card"]["holder_name"], "A. Example");
        assert_eq!(body["tenant"], "shop");
    }
}

#[tokio::test]
async fn every_invalid_card_gets_its_problem() {
    let vault = TestVault::start();
    let mut checkout = vault.client("checkout").await;
    for row in fixture("cards-invalid.csv") {
        let (number, code, field) = (&row[0], &row[1], &row[2]);
        let reply = post(&mut checkout, "/v1/tokens", &card_body(number, None)).await;
        assert_eq!(reply.status, 422, "{number}");
        assert_eq!(reply.headers["content-type"], "application/problem+json");
        let problem = reply.json();
        assert_eq!(problem["type"], code.as_str(), "{number}");
        assert_eq!(problem["field"], field.as_str(), "{number}");
        assert!(problem["request_id"].as_str().is_some_and(|id| id.starts_with("req_")));
        let text = reply.text();
        let d = digits(number);
        assert!(d.len() < 6 || !text.contains(&d[..6]), "echoed: {text}");
    }
}

#[tokio::test]
async fn ibans_round_trip_normalised_and_invalid_ones_are_refused() {
    let vault = TestVault::start();
    let mut checkout = vault.client("checkout").await;
    let mut gateway = vault.client("gateway").await;
    for row in fixture("ibans.csv") {
        let (iban, country) = (&row[0], &row[1]);
        let body = format!(r#"{{"bank_account":{{"iban":"{iban}","holder_name":"A. Example"}}}}"#);
        let created = post(&mut checkout, "/v1/tokens", &body).await;
        assert_eq!(created.status, 201, "{iban}: {}", created.text());
        let meta = created.json();
        let normal: String = iban.chars().filter(|c| *c != ' ').collect::<String>().to_uppercase();
        assert_eq!(meta["type"], "bank_account");
        assert_eq!(meta["bank_account"]["country"], country.as_str());
        assert_eq!(meta["bank_account"]["last4"], &normal[normal.len() - 4..]);
        let token = meta["token"].as_str().unwrap();
        let revealed = detokenize(&mut gateway, token).await.json();
        assert_eq!(revealed["bank_account"]["iban"], normal.as_str());
        assert_eq!(revealed["bank_account"]["holder_name"], "A. Example");
    }
    for row in fixture("ibans-invalid.csv") {
        let body = format!(r#"{{"bank_account":{{"iban":"{}"}}}}"#, row[0]);
        let reply = post(&mut checkout, "/v1/tokens", &body).await;
        assert_eq!(reply.status, 422, "{}", row[0]);
        assert_eq!(reply.json()["type"], row[1].as_str());
        assert_eq!(reply.json()["field"], row[2].as_str());
        assert!(!reply.text().contains("370400440532013"));
    }
}

#[tokio::test]
async fn ach_accounts_round_trip_and_bad_routing_numbers_are_refused() {
    let vault = TestVault::start();
    let mut checkout = vault.client("checkout").await;
    let mut gateway = vault.client("gateway").await;
    for row in fixture("routing.csv") {
        let (routing, valid) = (&row[0], row[1] == "true");
        let body = format!(
            r#"{{"bank_account":{{"routing_number":"{routing}","account_number":"000123456789","account_type":"checking","holder_name":"A. Example"}}}}"#
        );
        let reply = post(&mut checkout, "/v1/tokens", &body).await;
        if !valid {
            assert_eq!(reply.status, 422, "{routing}");
            assert_eq!(reply.json()["type"], "invalid_routing_number");
            assert_eq!(reply.json()["field"], "bank_account.routing_number");
            continue;
        }
        assert_eq!(reply.status, 201, "{routing}: {}", reply.text());
        let meta = reply.json();
        assert_eq!(meta["bank_account"]["routing_number"], routing.as_str());
        assert_eq!(meta["bank_account"]["account_type"], "checking");
        assert_eq!(meta["bank_account"]["last4"], "6789");
        let revealed = detokenize(&mut gateway, meta["token"].as_str().unwrap()).await.json();
        assert_eq!(revealed["bank_account"]["account_number"], "000123456789");
        assert_eq!(revealed["bank_account"]["routing_number"], routing.as_str());
    }
}
