//! CVC handling and delete.

use http::Method;

use crate::harness::{card_body, detokenize, get, post, TestVault};

#[tokio::test]
async fn cvc_is_returned_once() {
    let vault = TestVault::start();
    let mut checkout = vault.client("checkout").await;
    let mut gateway = vault.client("gateway").await;
    let created = post(&mut checkout, "/v1/tokens", &card_body("378282246310005", Some("1234"))).await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert!(!created.text().contains("1234\""));
    let token = created.json()["token"].as_str().unwrap().to_owned();
    let first = detokenize(&mut gateway, &token).await.json();
    assert_eq!(first["card"]["cvc"], "1234");
    let second = detokenize(&mut gateway, &token).await.json();
    assert_eq!(second["card"]["cvc"], serde_json::Value::Null);
    assert_eq!(second["card"]["number"], "378282246310005");

    let wrong = post(&mut checkout, "/v1/tokens", &card_body("378282246310005", Some("123"))).await;
    assert_eq!(
        (wrong.status, wrong.json()["type"].as_str()),
        (422, Some("invalid_cvc"))
    );
}

#[tokio::test]
async fn delete_then_not_found() {
    let vault = TestVault::start();
    let mut checkout = vault.client("checkout").await;
    let mut gateway = vault.client("gateway").await;
    let token = post(&mut checkout, "/v1/tokens", &card_body("5555555555554444", None))
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = checkout
        .request(Method::DELETE, &format!("/v1/tokens/{token}"), None)
        .await
        .unwrap();
    assert_eq!(deleted.status, 204);
    assert_eq!(detokenize(&mut gateway, &token).await.status, 404);
    assert_eq!(get(&mut checkout, &format!("/v1/tokens/{token}")).await.status, 404);
    let again = checkout
        .request(Method::DELETE, &format!("/v1/tokens/{token}"), None)
        .await
        .unwrap();
    assert_eq!(again.status, 404);
}
