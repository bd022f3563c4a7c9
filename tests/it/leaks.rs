//! No raw PAN, IBAN or account number in anything the daemon printed (at trace
//! level) or wrote to its data directory.

use http::Method;

use crate::harness::{card_body, contains, detokenize, fixture, post, read_tree, TestVault};

#[tokio::test]
async fn no_raw_value_in_output_or_data_dir() {
    let vault = TestVault::start();
    let mut checkout = vault.client("checkout").await;
    let mut gateway = vault.client("gateway").await;
    let mut secrets: Vec<String> = Vec::new();
    for row in fixture("cards.csv") {
        let reply = post(&mut checkout, "/v1/tokens", &card_body(&row[0], None)).await;
        let digits: String = row[0].chars().filter(char::is_ascii_digit).collect();
        assert_eq!(
            detokenize(&mut gateway, reply.json()["token"].as_str().unwrap())
                .await
                .status,
            200
        );
        secrets.push(digits);
    }
    for row in fixture("ibans.csv") {
        let body = format!(r#"{{"bank_account":{{"iban":"{}"}}}}"#, row[0]);
        let reply = post(&mut checkout, "/v1/tokens", &body).await;
        assert_eq!(
            detokenize(&mut gateway, reply.json()["token"].as_str().unwrap())
                .await
                .status,
            200
        );
        secrets.push(row[0].replace(' ', "").to_uppercase());
    }
    let ach =
        r#"{"bank_account":{"routing_number":"021000021","account_number":"98765432101234","account_type":"savings"}}"#;
    post(&mut checkout, "/v1/tokens", ach).await;
    secrets.push("98765432101234".into());
    // Error paths: Luhn failure, wrong type, bad IBAN, PAN in an unknown field name
    // and in the URL path.
    for body in [
        card_body("4111111111111112", Some("123")),
        r#"{"card":{"number":4111111111111111,"exp_month":1,"exp_year":2031}}"#.to_owned(),
        r#"{"bank_account":{"iban":"GB82WEST12345698765433"}}"#.to_owned(),
        r#"{"4111111111111111":true}"#.to_owned(),
        r#"{"card":{"number":"4111111111111111","exp_month":"4111111111111111","exp_year":2031}}"#.to_owned(),
    ] {
        let reply = post(&mut checkout, "/v1/tokens", &body).await;
        assert!(reply.status >= 400);
    }
    secrets.push("4111111111111112".into());
    secrets.push("GB82WEST12345698765433".into());
    let _ = gateway
        .request(Method::POST, "/v1/tokens/4111111111111111/detokenize", None)
        .await;

    let output = vault.output();
    assert!(contains(&output, b"listening on"), "the output was captured");
    let files = read_tree(&vault.data_dir());
    assert!(!files.is_empty());
    for secret in &secrets {
        assert!(!contains(&output, secret.as_bytes()), "daemon output holds a raw value");
        // The longest run that identifies the account without its BIN: all but
        // the first digit.
        let tail = &secret[1..];
        assert!(
            !contains(&output, tail.as_bytes()),
            "daemon output holds most of a raw value"
        );
        for (path, bytes) in &files {
            assert!(
                !contains(bytes, secret.as_bytes()),
                "{} holds a raw value",
                path.display()
            );
        }
    }
    // The CVC of the first error-path body.
    for (path, bytes) in &files {
        assert!(
            !contains(bytes, b"A. Example"),
            "{} holds a holder name",
            path.display()
        );
    }
}

/// Every fixture PAN through every error path, then the daemon's whole output is
/// searched for each of them.
#[tokio::test]
async fn every_fixture_pan_through_every_error_path_leaves_no_trace() {
    let vault = TestVault::start();
    let mut checkout = vault.client("checkout").await;
    let mut gateway = vault.client("gateway").await;
    let mut pans = Vec::new();
    for row in fixture("cards.csv") {
        let pan: String = row[0].chars().filter(char::is_ascii_digit).collect();
        let bodies = [
            format!(r#"{{"card":{{"number":{pan},"exp_month":12,"exp_year":2031}}}}"#),
            format!(r#"{{"card":{{"number":"{pan}","exp_month":13,"exp_year":2031}}}}"#),
            format!(r#"{{"card":{{"number":"{pan}","exp_month":12,"exp_year":31}}}}"#),
            format!(r#"{{"card":{{"number":"{pan}","exp_month":1,"exp_year":2001}}}}"#),
            format!(r#"{{"card":{{"number":"{pan}","exp_month":12,"exp_year":2031,"cvc":"12x"}}}}"#),
            format!(r#"{{"card":{{"number":"{pan}","exp_month":12,"exp_year":2031,"{pan}":1}}}}"#),
            format!(r#"{{"customer":"{pan}","card":{{"number":"{pan}","exp_month":12,"exp_year":2031}}}}"#),
            format!(r#"{{"tenant":"{pan}","card":{{"number":"{pan}","exp_month":12,"exp_year":2031}}}}"#),
            format!(r#"{{"format":"{pan}","card":{{"number":"{pan}","exp_month":12,"exp_year":2031}}}}"#),
            format!(r#"{{"bank_account":{{"iban":"{pan}"}}}}"#),
            format!(
                r#"{{"bank_account":{{"routing_number":"{pan}","account_number":"{pan}","account_type":"checking"}}}}"#
            ),
            format!(r#"{{"card":{{"number":"{pan}""#),
            format!(r#"["{pan}"]"#),
        ];
        for body in &bodies {
            let reply = post(&mut checkout, "/v1/tokens", body).await;
            assert!(reply.status >= 400, "{body}");
            assert!(
                !reply.text().contains(&pan),
                "a response echoed the PAN: {}",
                reply.text()
            );
        }
        let reply = checkout
            .request_with(
                Method::POST,
                "/v1/tokens",
                Some(bodies[1].as_bytes()),
                &[("content-type", "text/plain")],
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 415);
        let big = format!(
            r#"{{"card":{{"number":"{pan}","holder_name":"{}"}}}}"#,
            "x".repeat(70_000)
        );
        assert_eq!(post(&mut checkout, "/v1/tokens", &big).await.status, 413);
        assert_eq!(post(&mut gateway, "/v1/tokens", &bodies[1]).await.status, 403);
        for path in [
            format!("/v1/tokens/{pan}"),
            format!("/v1/tokens/{pan}/detokenize"),
            format!("/v1/customers/{pan}/tokens"),
        ] {
            let _ = checkout.request(Method::GET, &path, None).await;
            let _ = gateway.request(Method::POST, &path, None).await;
        }
        let patch = format!(r#"{{"card":{{"number":"{pan}"}}}}"#);
        let _ = checkout
            .request(
                Method::PATCH,
                "/v1/tokens/tok_AAAAAAAAAAAAAAAAAAAAAAAA",
                Some(patch.as_bytes()),
            )
            .await;
        pans.push(pan);
    }
    let output = vault.output();
    let files = read_tree(&vault.data_dir());
    for pan in &pans {
        assert!(!contains(&output, pan.as_bytes()), "daemon output holds a fixture PAN");
        for (path, bytes) in &files {
            assert!(
                !contains(bytes, pan.as_bytes()),
                "{} holds a fixture PAN",
                path.display()
            );
        }
    }
}
