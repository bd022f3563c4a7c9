//! Tenants, customer wallets, reuse, idempotency, token formats, batches, PATCH and
//! TTL, over mTLS with a two-tenant configuration.

use http::Method;
use tokenvault::client::Client;
use tokenvault::validate::luhn_valid;

use crate::harness::{card_body, detokenize, fixture, get, post, post_idempotent, InProcess, TestVault};

const TWO_TENANTS: &[(&str, &str, &str, &str)] = &[
    (
        "checkout_eu",
        "spiffe://test/checkout-eu",
        r#"["tokenize"]"#,
        r#"["eu"]"#,
    ),
    (
        "checkout_us",
        "spiffe://test/checkout-us",
        r#"["tokenize"]"#,
        r#"["us"]"#,
    ),
    (
        "checkout_both",
        "spiffe://test/checkout-both",
        r#"["tokenize"]"#,
        r#"["eu", "us"]"#,
    ),
    (
        "gateway_eu",
        "spiffe://test/gateway-eu",
        r#"["detokenize"]"#,
        r#"["eu"]"#,
    ),
    (
        "gateway_us",
        "spiffe://test/gateway-us",
        r#"["detokenize"]"#,
        r#"["us"]"#,
    ),
];

fn customer_card(number: &str, customer: &str) -> String {
    format!(r#"{{"customer":"{customer}","card":{{"number":"{number}","exp_month":12,"exp_year":2031}}}}"#)
}

fn token_of(reply: &tokenvault::client::Reply) -> String {
    reply.json()["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {}", reply.text()))
        .to_owned()
}

/// A problem without its request id: what must be identical between an unknown
/// token and another tenant's.
fn problem_shape(reply: &tokenvault::client::Reply) -> (u16, serde_json::Value) {
    let mut json = reply.json();
    json.as_object_mut().unwrap().remove("request_id");
    (reply.status, json)
}

#[tokio::test]
async fn another_tenants_token_is_indistinguishable_from_an_unknown_one() {
    let vault = TestVault::start_with(TWO_TENANTS, "");
    let mut eu = vault.client("checkout_eu").await;
    let mut us = vault.client("checkout_us").await;
    let mut gw_eu = vault.client("gateway_eu").await;
    let mut gw_us = vault.client("gateway_us").await;
    let created = post(&mut eu, "/v1/tokens", &customer_card("4111111111111111", "cus_1")).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.json()["tenant"], "eu");
    let token = token_of(&created);
    let unknown = "tok_AAAAAAAAAAAAAAAAAAAAAAAA";

    let theirs = detokenize(&mut gw_us, &token).await;
    let nobody = detokenize(&mut gw_us, unknown).await;
    assert_eq!(theirs.status, 404);
    assert_eq!(problem_shape(&theirs), problem_shape(&nobody));
    let theirs = get(&mut us, &format!("/v1/tokens/{token}")).await;
    assert_eq!(
        problem_shape(&theirs),
        problem_shape(&get(&mut us, &format!("/v1/tokens/{unknown}")).await)
    );
    let delete = us
        .request(Method::DELETE, &format!("/v1/tokens/{token}"), None)
        .await
        .unwrap();
    assert_eq!(delete.status, 404);
    let patch = us
        .request(
            Method::PATCH,
            &format!("/v1/tokens/{token}"),
            Some(br#"{"exp_year":2032}"#),
        )
        .await
        .unwrap();
    assert_eq!(patch.status, 404);
    let listing = get(&mut us, "/v1/customers/cus_1/tokens").await;
    assert_eq!(listing.json()["tokens"].as_array().map(Vec::len), Some(0));
    // Still there for its own tenant.
    assert_eq!(detokenize(&mut gw_eu, &token).await.status, 200);

    // Naming a tenant one does not belong to is 403; ambiguity is a 422.
    let body = r#"{"tenant":"us","card":{"number":"4111111111111111","exp_month":12,"exp_year":2031}}"#;
    assert_eq!(post(&mut eu, "/v1/tokens", body).await.status, 403);
    let mut both = vault.client("checkout_both").await;
    let ambiguous = post(&mut both, "/v1/tokens", &card_body("4111111111111111", None)).await;
    assert_eq!(
        (ambiguous.status, ambiguous.json()["field"].as_str()),
        (422, Some("tenant"))
    );
    let explicit = post(&mut both, "/v1/tokens", body).await;
    assert_eq!((explicit.status, explicit.json()["tenant"].as_str()), (201, Some("us")));
}

#[tokio::test]
async fn fingerprints_follow_the_number_within_a_tenant_only() {
    let vault = TestVault::start_with(TWO_TENANTS, "");
    let mut eu = vault.client("checkout_eu").await;
    let mut us = vault.client("checkout_us").await;
    let fp = |r: &tokenvault::client::Reply| r.json()["card"]["fingerprint"].as_str().unwrap().to_owned();
    let a = post(
        &mut eu,
        "/v1/tokens",
        r#"{"card":{"number":"4111111111111111","exp_month":3,"exp_year":2030,"holder_name":"Test Holder A"}}"#,
    )
    .await;
    let b = post(
        &mut eu,
        "/v1/tokens",
        r#"{"card":{"number":"4111 1111 1111 1111","exp_month":4,"exp_year":2031,"holder_name":"Test Holder B"}}"#,
    )
    .await;
    let other = post(&mut eu, "/v1/tokens", &card_body("4012888888881881", None)).await;
    let us_same = post(&mut us, "/v1/tokens", &card_body("4111111111111111", None)).await;
    assert_eq!(fp(&a), fp(&b));
    assert_ne!(fp(&a), fp(&other));
    assert_ne!(fp(&a), fp(&us_same));
    assert_ne!(token_of(&a), token_of(&b));
}

#[tokio::test]
async fn wallet_lists_newest_first_in_pages() {
    let vault = TestVault::start_with(TWO_TENANTS, "");
    let mut eu = vault.client("checkout_eu").await;
    let mut tokens = Vec::new();
    for number in [
        "4111111111111111",
        "5555555555554444",
        "378282246310005",
        "6011111111111117",
        "3530111333300000",
    ] {
        let reply = post(&mut eu, "/v1/tokens", &customer_card(number, "cus_42")).await;
        tokens.push(token_of(&reply));
    }
    post(&mut eu, "/v1/tokens", &customer_card("4242424242424242", "cus_other")).await;
    let deleted = tokens.remove(1);
    let reply = eu
        .request(Method::DELETE, &format!("/v1/tokens/{deleted}"), None)
        .await
        .unwrap();
    assert_eq!(reply.status, 204);
    tokens.reverse(); // newest first

    let mut seen = Vec::new();
    let mut path = "/v1/customers/cus_42/tokens?limit=2".to_owned();
    for _ in 0..5 {
        let page = get(&mut eu, &path).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let json = page.json();
        for item in json["tokens"].as_array().unwrap() {
            assert!(item["card"]["brand"].is_string() && item["card"]["last4"].is_string());
            assert!(item.get("number").is_none());
            seen.push(item["token"].as_str().unwrap().to_owned());
        }
        match json["next"].as_str() {
            Some(cursor) => path = format!("/v1/customers/cus_42/tokens?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, tokens);
    let bad = get(&mut eu, "/v1/customers/cus_42/tokens?cursor=!!").await;
    assert_eq!((bad.status, bad.json()["field"].as_str()), (422, Some("cursor")));
    let bad = get(&mut eu, "/v1/customers/cus_42/tokens?limit=0").await;
    assert_eq!(bad.status, 422);
}

#[tokio::test]
async fn reuse_existing_returns_the_same_token() {
    let vault = TestVault::start_with(TWO_TENANTS, "");
    let mut eu = vault.client("checkout_eu").await;
    let first = post(&mut eu, "/v1/tokens", &card_body("4111111111111111", None)).await;
    let body = r#"{"reuse_existing":true,"card":{"number":"4111-1111-1111-1111","exp_month":1,"exp_year":2032}}"#;
    let again = post(&mut eu, "/v1/tokens", body).await;
    assert_eq!(again.status, 200);
    assert_eq!(token_of(&again), token_of(&first));
    let fresh = post(
        &mut eu,
        "/v1/tokens",
        &body.replace("4111-1111-1111-1111", "4012888888881881"),
    )
    .await;
    assert_eq!(fresh.status, 201);
}

#[tokio::test]
async fn idempotency_keys_replay_conflict_and_survive_restart() {
    let mut vault = TestVault::start_with(TWO_TENANTS, "");
    let body = customer_card("4111111111111111", "cus_idem");
    let mut eu = vault.client("checkout_eu").await;
    let first = post_idempotent(&mut eu, &body, "order-1").await;
    let retry = post_idempotent(&mut eu, &body, "order-1").await;
    assert_eq!(first.status, 201);
    assert_eq!((retry.status, retry.json()), (201, first.json()));
    let other = customer_card("4012888888881881", "cus_idem");
    let conflict = post_idempotent(&mut eu, &other, "order-1").await;
    assert_eq!(
        (conflict.status, conflict.json()["type"].as_str()),
        (409, Some("idempotency_key_reused"))
    );

    // Fifty concurrent requests with one key: one record.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let tls = vault.pki.tls("checkout_eu");
        let addr = vault.addr;
        let body = customer_card("5555555555554444", "cus_many");
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr, tls.config().unwrap()).await.unwrap();
            post_idempotent(&mut c, &body, "order-50").await
        }));
    }
    let mut tokens = std::collections::HashSet::new();
    for t in tasks {
        let reply = t.await.unwrap();
        assert_eq!(reply.status, 201, "{}", reply.text());
        tokens.insert(token_of(&reply));
    }
    assert_eq!(tokens.len(), 1);
    let listing = get(&mut eu, "/v1/customers/cus_many/tokens").await;
    assert_eq!(listing.json()["tokens"].as_array().map(Vec::len), Some(1));

    // The same key from another tenant's identity is another key.
    let mut us = vault.client("checkout_us").await;
    let theirs = post_idempotent(&mut us, &body, "order-1").await;
    assert_eq!(theirs.status, 201);
    assert_ne!(token_of(&theirs), token_of(&first));

    vault.restart_after_kill();
    let mut eu = vault.client("checkout_eu").await;
    let after = post_idempotent(&mut eu, &body, "order-1").await;
    assert_eq!((after.status, after.json()), (201, first.json()));
}

#[tokio::test]
async fn numeric_tokens_keep_bin6_and_last4_and_fail_luhn() {
    let vault = TestVault::start_with(TWO_TENANTS, "");
    let mut eu = vault.client("checkout_eu").await;
    let mut gw = vault.client("gateway_eu").await;
    for row in fixture("cards.csv") {
        let number: String = row[0].chars().filter(char::is_ascii_digit).collect();
        let body = format!(r#"{{"format":"numeric","card":{{"number":"{number}","exp_month":12,"exp_year":2031}}}}"#);
        let reply = post(&mut eu, "/v1/tokens", &body).await;
        assert_eq!(reply.status, 201, "{number}: {}", reply.text());
        let token = token_of(&reply);
        assert_eq!(token.len(), number.len());
        assert_eq!(&token[..6], &number[..6]);
        assert_eq!(&token[token.len() - 4..], &number[number.len() - 4..]);
        assert!(!luhn_valid(token.as_bytes()), "{token} passes Luhn");
        assert_ne!(token, number);
        assert_eq!(
            detokenize(&mut gw, &token).await.json()["card"]["number"],
            number.as_str()
        );
        assert_eq!(get(&mut eu, &format!("/v1/tokens/{token}")).await.status, 200);
    }
    let iban = r#"{"format":"numeric","bank_account":{"iban":"DE89370400440532013000"}}"#;
    assert_eq!(post(&mut eu, "/v1/tokens", iban).await.status, 422);
}

#[tokio::test]
async fn batches_answer_per_item_in_order() {
    let vault = TestVault::start_with(TWO_TENANTS, "");
    let mut eu = vault.client("checkout_eu").await;
    let mut gw = vault.client("gateway_eu").await;
    let body = r#"{"items":[
        {"card":{"number":"4111111111111111","exp_month":12,"exp_year":2031,"cvc":"123"}},
        {"card":{"number":"4111111111111112","exp_month":12,"exp_year":2031}},
        {"card":{"number":4111111111111111,"exp_month":12,"exp_year":2031}},
        {"tenant":"us","card":{"number":"4111111111111111","exp_month":12,"exp_year":2031}},
        {"bank_account":{"iban":"GB82 WEST 1234 5698 7654 32"}}
    ]}"#;
    let reply = post(&mut eu, "/v1/tokens/batch", body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!reply.text().contains("411111111111"));
    let results = reply.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 5);
    assert!(results[0]["token"].is_string());
    assert_eq!(results[1]["error"]["type"], "invalid_card_number");
    assert_eq!(results[2]["error"]["field"], "card.number");
    assert_eq!(results[3]["error"]["type"], "forbidden");
    assert_eq!(results[4]["bank_account"]["country"], "GB");

    let t0 = results[0]["token"].as_str().unwrap();
    let t4 = results[4]["token"].as_str().unwrap();
    let body = format!(r#"{{"tokens":["{t0}","tok_AAAAAAAAAAAAAAAAAAAAAAAA","{t4}"]}}"#);
    let reply = post(&mut gw, "/v1/detokenize/batch", &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["cache-control"], "no-store");
    let results = reply.json()["results"].as_array().unwrap().clone();
    assert_eq!(results[0]["card"]["number"], "4111111111111111");
    assert_eq!(results[0]["card"]["cvc"], "123");
    assert_eq!(results[1]["error"]["type"], "not_found");
    assert_eq!(results[2]["bank_account"]["iban"], "GB82WEST12345698765432");

    let empty = post(&mut eu, "/v1/tokens/batch", r#"{"items":[]}"#).await;
    assert_eq!(empty.status, 422);
    let items = vec![r#"{"card":{"number":"4111111111111111","exp_month":12,"exp_year":2031}}"#; 1001].join(",");
    let too_many = post(&mut eu, "/v1/tokens/batch", &format!(r#"{{"items":[{items}]}}"#)).await;
    assert_eq!(
        (too_many.status, too_many.json()["field"].as_str()),
        (422, Some("items"))
    );
}

#[tokio::test]
async fn patch_changes_metadata_not_the_token_or_number() {
    let vault = TestVault::start_with(TWO_TENANTS, "");
    let mut eu = vault.client("checkout_eu").await;
    let mut gw = vault.client("gateway_eu").await;
    let token = token_of(&post(&mut eu, "/v1/tokens", &customer_card("4111111111111111", "cus_a")).await);
    let path = format!("/v1/tokens/{token}");
    let patch = br#"{"card":{"exp_month":7,"exp_year":2033,"holder_name":"New Name"},"customer":"cus_b"}"#;
    let reply = eu.request(Method::PATCH, &path, Some(patch)).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let meta = reply.json();
    assert_eq!(meta["token"], token.as_str());
    assert_eq!(
        (meta["card"]["exp_month"].as_u64(), meta["card"]["exp_year"].as_u64()),
        (Some(7), Some(2033))
    );
    assert_eq!(meta["customer"], "cus_b");
    let revealed = detokenize(&mut gw, &token).await.json();
    assert_eq!(revealed["card"]["number"], "4111111111111111");
    assert_eq!(revealed["card"]["holder_name"], "New Name");
    assert_eq!(revealed["card"]["exp_year"], 2033);
    let a = get(&mut eu, "/v1/customers/cus_a/tokens").await.json();
    let b = get(&mut eu, "/v1/customers/cus_b/tokens").await.json();
    assert_eq!(a["tokens"].as_array().map(Vec::len), Some(0));
    assert_eq!(b["tokens"][0]["token"], token.as_str());

    let number = eu
        .request(Method::PATCH, &path, Some(br#"{"card":{"number":"4012888888881881"}}"#))
        .await
        .unwrap();
    assert_eq!(
        (number.status, number.json()["field"].as_str()),
        (422, Some("card.number"))
    );
    let month = eu
        .request(Method::PATCH, &path, Some(br#"{"exp_month":13}"#))
        .await
        .unwrap();
    assert_eq!(month.json()["type"], "invalid_expiry_month");
    let flat = eu
        .request(Method::PATCH, &path, Some(br#"{"exp_year":2034}"#))
        .await
        .unwrap();
    assert_eq!(flat.json()["card"]["exp_year"], 2034);
}

#[tokio::test]
async fn ttl_expiry_with_a_manual_clock() {
    let daemon = InProcess::start(TWO_TENANTS, "purge_interval_ms = 20").await;
    let vault = &daemon.vault;
    let mut eu = vault.client("checkout_eu").await;
    let mut gw = vault.client("gateway_eu").await;
    let body = r#"{"customer":"cus_ttl","ttl_seconds":60,"card":{"number":"4111111111111111","exp_month":12,"exp_year":2031}}"#;
    let created = post(&mut eu, "/v1/tokens", body).await;
    assert_eq!(created.status, 201);
    assert!(created.json()["expires_at"].is_string());
    let token = token_of(&created);
    let keep = token_of(&post(&mut eu, "/v1/tokens", &customer_card("5555555555554444", "cus_ttl")).await);
    assert_eq!(detokenize(&mut gw, &token).await.status, 200);

    daemon.clock.advance(time::Duration::seconds(61));
    let gone = detokenize(&mut gw, &token).await;
    // Either the purge already removed it (404) or it is still there, expired (410).
    assert!(gone.status == 410 || gone.status == 404, "{}", gone.status);
    let mut purged = false;
    for _ in 0..200 {
        let listing = get(&mut eu, "/v1/customers/cus_ttl/tokens").await.json();
        let listed: Vec<String> = listing["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["token"].as_str().unwrap().to_owned())
            .collect();
        assert!(!listed.contains(&token), "an expired token is listed");
        assert!(listed.contains(&keep));
        if get(&mut eu, &format!("/v1/tokens/{token}")).await.status == 404 {
            purged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(purged, "the purge did not remove the expired token");
    assert_eq!(detokenize(&mut gw, &keep).await.status, 200);
}

/// An auditor of one tenant reads that tenant's entries and the daemon's own
/// (no tenant), never another tenant's; one of every tenant reads all of them.
/// Paging carries on past runs of skipped entries.
#[tokio::test]
async fn audit_pages_hold_only_the_callers_tenants() {
    const AUDITORS: &[(&str, &str, &str, &str)] = &[
        (
            "checkout_eu",
            "spiffe://test/checkout-eu",
            r#"["tokenize"]"#,
            r#"["eu"]"#,
        ),
        (
            "checkout_us",
            "spiffe://test/checkout-us",
            r#"["tokenize"]"#,
            r#"["us"]"#,
        ),
        ("audit_eu", "spiffe://test/audit-eu", r#"["audit"]"#, r#"["eu"]"#),
        (
            "audit_all",
            "spiffe://test/audit-all",
            r#"["audit"]"#,
            r#"["eu", "us"]"#,
        ),
    ];
    let vault = TestVault::start_with(AUDITORS, "");
    let mut eu = vault.client("checkout_eu").await;
    let mut us = vault.client("checkout_us").await;
    assert_eq!(
        post(&mut eu, "/v1/tokens", &customer_card("4111111111111111", "cus_eu"))
            .await
            .status,
        201
    );
    for _ in 0..30 {
        assert_eq!(
            post(&mut us, "/v1/tokens", &customer_card("4242424242424242", "cus_us"))
                .await
                .status,
            201
        );
    }
    assert_eq!(
        post(&mut eu, "/v1/tokens", &customer_card("5555555555554444", "cus_eu"))
            .await
            .status,
        201
    );
    // A probe by a client of one tenant is filed under that tenant.
    assert_eq!(
        get(&mut us, "/v1/tokens/tok_AAAAAAAAAAAAAAAAAAAAAAAA").await.status,
        404
    );

    let read_all = |name: &'static str| {
        let vault = &vault;
        async move {
            let mut client = vault.client(name).await;
            let (mut after, mut tenants) = (0u64, Vec::new());
            loop {
                let page = get(&mut client, &format!("/v1/audit?after={after}&limit=5")).await;
                assert_eq!(page.status, 200, "{}", page.text());
                let json = page.json();
                for entry in json["entries"].as_array().unwrap() {
                    tenants.push(entry["tenant"].as_str().map(str::to_owned));
                }
                match json["next"].as_u64() {
                    Some(next) => after = next,
                    None => break,
                }
            }
            tenants
        }
    };
    let seen_eu = read_all("audit_eu").await;
    assert!(seen_eu.iter().all(|t| t.as_deref() != Some("us")), "{seen_eu:?}");
    assert_eq!(seen_eu.iter().filter(|t| t.as_deref() == Some("eu")).count(), 2);
    assert!(
        seen_eu.iter().any(Option::is_none),
        "the daemon's own entries are shown"
    );
    let seen_all = read_all("audit_all").await;
    assert_eq!(seen_all.iter().filter(|t| t.as_deref() == Some("us")).count(), 31);
    assert_eq!(seen_all.iter().filter(|t| t.as_deref() == Some("eu")).count(), 2);
}
