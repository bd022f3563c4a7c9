//! Regression tests for what an adversarial review found, named after the fault.

use std::time::{Duration, Instant};

use http::Method;
use tokenvault::client::Client;

use crate::harness::{card_body, contains, detokenize, get, post, post_idempotent, read_tree, TestVault, IDENTITIES};

#[tokio::test]
async fn stalled_request_body_is_cut_off_and_frees_its_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let vault = TestVault::start_with(IDENTITIES, "body_timeout_ms = 500\nmax_connections = 2");
    let mut stream = crate::harness::raw_http1(&vault, "checkout").await;
    let head = "POST /v1/tokens HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"card\":";
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stalled body held the connection"
    );
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The slot is free again: two more clients are served.
    for _ in 0..2 {
        let mut c = vault.client("checkout").await;
        assert_eq!(get(&mut c, "/healthz").await.status, 200);
    }
}

/// Caller text that the vault keeps in clear (tenant names, customer references)
/// or as a key (Idempotency-Key) must never carry a card number to the audit
/// trail or the disk, whether written in one run of digits or in groups.
#[tokio::test]
async fn caller_text_in_tenant_customer_or_idempotency_key_never_reaches_the_audit_trail_or_disk() {
    let mut vault = TestVault::start();
    let mut checkout = vault.client("checkout").await;
    let body = r#"{"tenant":"4111111111111111","card":{"number":"4242424242424242","exp_month":12,"exp_year":2031}}"#;
    assert_eq!(post(&mut checkout, "/v1/tokens", body).await.status, 403);
    for customer in [
        "cus-4111111111111111",
        "4111-1111-1111-1111",
        "cus_4111.1111.1111.1111",
        "4111/1111/1111/1111",
        "4111|1111|1111|1111",
        "(411)111-111-111-111-1",
    ] {
        let body = format!(
            r#"{{"customer":"{customer}","card":{{"number":"4242424242424242","exp_month":12,"exp_year":2031}}}}"#
        );
        let reply = post(&mut checkout, "/v1/tokens", &body).await;
        assert_eq!(
            (reply.status, reply.json()["reason"].as_str()),
            (422, Some("pan_like")),
            "{customer}"
        );
        assert!(!reply.text().contains("1111"), "{}", reply.text());
    }
    let reply = get(&mut checkout, "/v1/customers/4111111111111111/tokens").await;
    assert_eq!(reply.status, 422);
    // A lookup stores nothing; only unbroken runs are refused there, so that
    // references stored before the stored-reference checks grew stay readable.
    let reply = get(&mut checkout, "/v1/customers/4111-1111-1111-1111/tokens").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // An Idempotency-Key is any visible text; it works as a key and is stored only
    // as a keyed MAC.
    let card = r#"{"card":{"number":"5555555555554444","exp_month":12,"exp_year":2031}}"#;
    let first = post_idempotent(&mut checkout, card, "4111111111111111").await;
    assert_eq!(first.status, 201, "{}", first.text());
    let again = post_idempotent(&mut checkout, card, "4111111111111111").await;
    assert_eq!(again.json()["token"], first.json()["token"]);
    let other = r#"{"card":{"number":"4012888888881881","exp_month":12,"exp_year":2031}}"#;
    assert_eq!(
        post_idempotent(&mut checkout, other, "4111111111111111").await.status,
        409
    );
    let batch = r#"{"items":[{"card":{"number":"5555555555554444","exp_month":12,"exp_year":2031}}]}"#;
    let reply = checkout
        .request_with(
            Method::POST,
            "/v1/tokens/batch",
            Some(batch.as_bytes()),
            &[("idempotency-key", "4111-1111-1111-1111")],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut security = vault.client("security").await;
    let audit = get(&mut security, "/v1/audit?limit=1000").await;
    assert!(!audit.text().contains("4111111111111111"));
    assert!(!audit.text().contains("4111-1111"));
    assert!(audit.text().contains("denied"));
    vault.kill9();
    for (path, bytes) in read_tree(&vault.data_dir()) {
        for text in [
            &b"4111111111111111"[..],
            b"4111-1111-1111-1111",
            b"4111.1111.1111.1111",
            b"4111/1111/1111/1111",
        ] {
            assert!(!contains(&bytes, text), "{} holds caller text", path.display());
        }
    }
}

#[tokio::test]
async fn concurrent_reuse_existing_requests_share_one_token() {
    let vault = TestVault::start();
    let body = r#"{"reuse_existing":true,"card":{"number":"6011981111111113","exp_month":12,"exp_year":2031}}"#;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let tls = vault.pki.tls("checkout");
        let addr = vault.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr, tls.config().unwrap()).await.unwrap();
            post(&mut c, "/v1/tokens", body).await
        }));
    }
    let mut tokens = std::collections::HashSet::new();
    let mut created = 0;
    for t in tasks {
        let reply = t.await.unwrap();
        assert!(reply.status == 200 || reply.status == 201, "{}", reply.text());
        created += usize::from(reply.status == 201);
        tokens.insert(reply.json()["token"].as_str().unwrap().to_owned());
    }
    assert_eq!((tokens.len(), created), (1, 1));
}

/// Numeric tokens keep BIN6 and last 4, so two cards (or two tenants) share one
/// space of middle digits. A number is issued once across all tenants: a client
/// serving two tenants must never be answered with the other tenant's card, nor
/// delete it. Exhaustion of a small space is a clean 422.
#[tokio::test]
async fn numeric_tokens_are_unique_across_tenants_and_exhaustion_is_a_clean_422() {
    const TWO: &[(&str, &str, &str, &str)] = &[
        ("t1", "spiffe://test/t1", r#"["tokenize"]"#, r#"["t1"]"#),
        ("t2", "spiffe://test/t2", r#"["tokenize"]"#, r#"["t2"]"#),
        ("both", "spiffe://test/both", r#"["detokenize"]"#, r#"["t1", "t2"]"#),
    ];
    let vault = TestVault::start_with(TWO, "");
    let mut t1 = vault.client("t1").await;
    let mut t2 = vault.client("t2").await;
    let numeric =
        |pan: &str| format!(r#"{{"format":"numeric","card":{{"number":"{pan}","exp_month":12,"exp_year":2031}}}}"#);
    // Two 13-digit cards with one BIN6 and last 4 share 900 middle numbers: 60
    // tokens in each tenant, never one number twice.
    let mut issued = std::collections::HashMap::new();
    for (client, pan, tenant) in [(&mut t1, "5018000080009", "t1"), (&mut t2, "5018000160009", "t2")] {
        for _ in 0..60 {
            let reply = post(client, "/v1/tokens", &numeric(pan)).await;
            assert_eq!(reply.status, 201, "{}", reply.text());
            let token = reply.json()["token"].as_str().unwrap().to_owned();
            assert!(
                issued.insert(token.clone(), (pan, tenant)).is_none(),
                "{token} issued twice"
            );
        }
    }
    assert_eq!(issued.len(), 120);
    // The client of both tenants gets each token's own card.
    let mut both = vault.client("both").await;
    for (token, (pan, tenant)) in &issued {
        let revealed = detokenize(&mut both, token).await;
        assert_eq!(revealed.status, 200, "{}", revealed.text());
        assert_eq!(revealed.json()["card"]["number"], *pan, "{token}");
        assert_eq!(revealed.json()["tenant"], *tenant);
    }
    // A 12-digit PAN leaves two free digits: at most 90 numeric tokens, then a
    // clean 422.
    let mut last = None;
    for _ in 0..100 {
        let reply = post(&mut t1, "/v1/tokens", &numeric("501800000009")).await;
        if reply.status != 201 {
            last = Some(reply);
            break;
        }
    }
    let exhausted = last.expect("the numeric space of a 12-digit PAN ran out");
    assert_eq!(exhausted.status, 422);
    assert_eq!(exhausted.json()["type"], "invalid_request");
    assert_eq!(exhausted.json()["field"], "format");
    assert_eq!(
        post(&mut t2, "/v1/tokens", &numeric("4111111111111111")).await.status,
        201
    );
}

#[tokio::test]
async fn head_requests_get_headers_only_over_http2() {
    let vault = TestVault::start();
    let mut c = vault.client("checkout").await;
    assert_eq!(c.alpn(), Some(&b"h2"[..]));
    let reply = c.request(Method::HEAD, "/healthz", None).await.unwrap();
    assert_eq!(reply.status, 405);
    assert!(reply.body.is_empty());
    // The connection is still usable.
    assert_eq!(get(&mut c, "/healthz").await.status, 200);
}

#[tokio::test]
async fn json_shapes_that_serde_would_accept_by_position_are_refused() {
    let vault = TestVault::start();
    let mut c = vault.client("checkout").await;
    let array = r#"["dev",null,{"number":"4111111111111111","exp_month":1,"exp_year":2030},null,"numeric",60,false]"#;
    assert_eq!(post(&mut c, "/v1/tokens", array).await.status, 400);
    let nested = r#"{"card":["4111111111111111",1,2030]}"#;
    assert_eq!(post(&mut c, "/v1/tokens", nested).await.status, 400);
    for body in ["null", "123", "\"x\""] {
        let reply = post(&mut c, "/v1/tokens", body).await;
        assert_eq!(reply.status, 400, "{body}");
    }
    let deep = format!("{}{}", "{\"a\":".repeat(40), "1".to_owned() + &"}".repeat(40));
    assert_eq!(post(&mut c, "/v1/tokens", &deep).await.status, 400);
    let duplicate =
        r#"{"card":{"number":"4111111111111111","number":"4242424242424242","exp_month":1,"exp_year":2030}}"#;
    let reply = post(&mut c, "/v1/tokens", duplicate).await;
    assert_eq!(
        (reply.status, reply.json()["field"].as_str()),
        (400, Some("card.number"))
    );
    assert!(!reply.text().contains("4242"));
    // A string that merely contains brackets is fine.
    let ok = r#"{"card":{"number":"4111111111111111","exp_month":1,"exp_year":2030,"holder_name":"A [B] {C}"}}"#;
    assert_eq!(post(&mut c, "/v1/tokens", ok).await.status, 201);
    let _ = card_body;
}

#[tokio::test]
async fn short_ach_account_numbers_show_two_digits() {
    let vault = TestVault::start();
    let mut c = vault.client("checkout").await;
    let body = r#"{"bank_account":{"routing_number":"021000021","account_number":"98761","account_type":"checking"}}"#;
    let reply = post(&mut c, "/v1/tokens", body).await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.json()["bank_account"]["last4"], "61");
}

#[tokio::test]
async fn early_errors_reach_http2_clients_that_are_still_sending() {
    let vault = TestVault::start();
    let mut c = vault.client("checkout").await;
    assert_eq!(c.alpn(), Some(&b"h2"[..]));
    let big = vec![b'x'; 100 * 1024];
    for _ in 0..5 {
        let reply = c
            .request_with(
                Method::POST,
                "/v1/tokens",
                Some(&big),
                &[("content-type", "text/plain")],
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 415);
        let reply = c.request(Method::POST, "/v1/tokens", Some(&big)).await.unwrap();
        assert_eq!(reply.status, 413);
        assert_eq!(reply.json()["type"], "payload_too_large");
    }
}

#[tokio::test]
async fn sigterm_with_an_idle_http2_client_exits_cleanly_within_the_grace_period() {
    let mut vault = TestVault::start_with(IDENTITIES, "shutdown_grace_ms = 500");
    let mut idle = vault.client("checkout").await;
    assert_eq!(get(&mut idle, "/healthz").await.status, 200);
    let started = Instant::now();
    let status = vault
        .terminate(Duration::from_secs(8))
        .expect("the daemon did not exit");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    let output = String::from_utf8_lossy(&vault.output()).into_owned();
    assert!(!output.contains("pthread"), "unclean exit: {output}");
    assert!(output.contains("stopping"));
}

#[tokio::test]
async fn an_identity_over_its_rate_gets_429_and_enumeration_is_audited() {
    let vault = TestVault::start_with(IDENTITIES, "rate_per_second = 5.0\nrate_burst = 5.0");
    let mut checkout = vault.client("checkout").await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let reply = post(&mut checkout, "/v1/tokens", &card_body("4111111111111111", None)).await;
        if reply.status == 429 {
            assert_eq!(reply.json()["type"], "rate_limited");
            assert!(reply.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        }
        statuses.push(reply.status);
    }
    assert!(statuses.contains(&201) && statuses.contains(&429), "{statuses:?}");
    // Another identity has its own bucket.
    let mut gateway = vault.client("gateway").await;
    assert_eq!(
        crate::harness::detokenize(&mut gateway, "tok_AAAAAAAAAAAAAAAAAAAAAAAA")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn a_burst_of_detokenize_misses_is_audited_as_possible_enumeration() {
    let vault = TestVault::start();
    let mut gateway = vault.client("gateway").await;
    for i in 0..25 {
        let token = format!("tok_{:0>24}", i);
        assert_eq!(crate::harness::detokenize(&mut gateway, &token).await.status, 404);
    }
    let mut security = vault.client("security").await;
    let audit = get(&mut security, "/v1/audit?limit=1000").await.text();
    assert_eq!(audit.matches("possible_enumeration").count(), 1, "{audit}");
}

#[tokio::test]
async fn slowloris_headers_are_cut_off_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let vault = TestVault::start_with(IDENTITIES, "header_timeout_ms = 700");
    let mut slow = crate::harness::raw_http1(&vault, "checkout").await;
    let started = Instant::now();
    let mut closed = false;
    // One header byte every 200 ms: never a complete header.
    for b in b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-slow: "
        .iter()
        .cycle()
        .take(40)
    {
        if slow.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        let mut other = vault.client("checkout").await;
        assert_eq!(
            get(&mut other, "/healthz").await.status,
            200,
            "normal clients keep being served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut probe = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await {
            closed = true;
            break;
        }
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    assert!(closed, "the slow connection was not dropped");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "dropped too late: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn too_many_or_too_large_headers_get_a_problem_document() {
    let vault = TestVault::start();
    let mut tls = vault.pki.tls("checkout");
    for alpn in [b"h2".to_vec(), b"http/1.1".to_vec()] {
        tls.alpn = vec![alpn];
        let mut c = Client::connect(vault.addr, tls.config().unwrap()).await.unwrap();
        let names: Vec<String> = (0..100).map(|i| format!("x-extra-{i}")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
        let reply = c
            .request_with(Method::GET, "/v1/tokens/tok_AAAAAAAAAAAAAAAAAAAAAAAA", None, &many)
            .await
            .unwrap();
        assert_eq!(reply.status, 431);
        assert_eq!(reply.headers["content-type"], "application/problem+json");
        let big = "y".repeat(20_000);
        let reply = c
            .request_with(
                Method::GET,
                "/v1/tokens/tok_AAAAAAAAAAAAAAAAAAAAAAAA",
                None,
                &[("x-big", big.as_str())],
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 431);
        assert_eq!(reply.json()["reason"], "headers");
    }
}

/// A token that matches nothing is caller text: it may be a card number wrapped
/// in `tok_…`. The audit trail names only a keyed MAC of it (`probe_…`), the same
/// for the same text, on every endpoint that takes a token.
#[tokio::test]
async fn unknown_tokens_reach_the_audit_trail_only_as_a_keyed_mac() {
    let mut vault = TestVault::start();
    let mut checkout = vault.client("checkout").await;
    let mut gateway = vault.client("gateway").await;
    let asked = [
        "tok_4111111111111111AAAAAAAA",
        "tok_5555-5555-5555-4444-XXXX",
        "tok_378282246310005_________",
    ];
    assert_eq!(
        get(&mut checkout, &format!("/v1/tokens/{}", asked[0])).await.status,
        404
    );
    assert_eq!(
        get(&mut checkout, &format!("/v1/tokens/{}", asked[0])).await.status,
        404
    );
    assert_eq!(detokenize(&mut gateway, asked[1]).await.status, 404);
    let deleted = checkout
        .request(Method::DELETE, &format!("/v1/tokens/{}", asked[2]), None)
        .await
        .unwrap();
    assert_eq!(deleted.status, 404);
    let body = format!(r#"{{"tokens":["{}","tok_6011111111111117ABCDEFGH"]}}"#, asked[0]);
    let batch = post(&mut gateway, "/v1/detokenize/batch", &body).await;
    assert_eq!(batch.status, 200, "{}", batch.text());

    let mut security = vault.client("security").await;
    let audit = get(&mut security, "/v1/audit?limit=1000").await;
    let entries = audit.json()["entries"].as_array().unwrap().clone();
    let probes: Vec<&str> = entries
        .iter()
        .filter(|e| e["outcome"] == "not_found")
        .map(|e| e["token"].as_str().unwrap())
        .collect();
    assert_eq!(probes.len(), 6, "{}", audit.text());
    assert!(probes.iter().all(|p| p.starts_with("probe_")), "{probes:?}");
    // The same text, the same label: the two GETs and the batch's first item.
    assert_eq!(probes[0], probes[1]);
    assert_eq!(probes[0], probes[4]);
    assert_ne!(probes[0], probes[2]);
    for digits in [
        "4111111111111111",
        "5555-5555-5555-4444",
        "378282246310005",
        "6011111111111117",
    ] {
        assert!(!audit.text().contains(digits), "{digits} in the audit trail");
    }
    vault.kill9();
    for (path, bytes) in read_tree(&vault.data_dir()) {
        for digits in [
            "4111111111111111",
            "5555-5555-5555-4444",
            "378282246310005",
            "6011111111111117",
        ] {
            assert!(
                !contains(&bytes, digits.as_bytes()),
                "{} holds caller text",
                path.display()
            );
        }
    }
}

/// Unknown tokens asked for in batches count towards the enumeration alarm as
/// single ones do.
#[tokio::test]
async fn batch_detokenize_misses_raise_the_enumeration_alarm() {
    let vault = TestVault::start();
    let mut gateway = vault.client("gateway").await;
    let tokens: Vec<String> = (0..25)
        .map(|i| format!("\"tok_unknownunknownunknown{i:03}\""))
        .collect();
    let body = format!(r#"{{"tokens":[{}]}}"#, tokens.join(","));
    assert_eq!(post(&mut gateway, "/v1/detokenize/batch", &body).await.status, 200);
    let mut security = vault.client("security").await;
    let audit = get(&mut security, "/v1/audit?limit=1000").await;
    let alarms = audit.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "possible_enumeration")
        .count();
    assert_eq!(alarms, 1, "{}", audit.text());
}
