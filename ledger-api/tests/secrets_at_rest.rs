//! Answers that show a secret once (an invite, an API key) are kept for idempotent
//! replay encrypted: replaying gives the same secret, and the database never holds it in
//! the clear (API-key and invite secrets are stored only as SHA-256 hashes). On SQLite
//! (the files on disk) and PostgreSQL (every record).

mod process;
mod stack;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stack::{Backend, Stack};

async fn post_twice(stack: &Stack, key: &str, path: &str, body: Value, idem: &str) -> Value {
    let (status, first, _) = stack
        .call_on(
            &stack.base,
            Method::POST,
            Some(key),
            path,
            Some(body.clone()),
            Some(idem),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again, headers) = stack
        .call_on(
            &stack.base,
            Method::POST,
            Some(key),
            path,
            Some(body),
            Some(idem),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again, first, "the replay is the first answer");
    assert_eq!(
        headers.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    first
}

fn secret_part(token: &str) -> String {
    token.split_once('.').expect("<id>.<secret>").1.to_owned()
}

async fn replayed_secrets_are_not_stored_in_the_clear(backend: Backend) {
    let stack = Stack::with_serve_args(backend, &[]).await;
    let admin = stack.redemption(&stack.tenant("acme")).await;
    let key = admin["api_key"].as_str().expect("key").to_owned();
    let totp = totp_rs::Secret::Encoded(admin["totp_secret"].as_str().expect("totp").to_owned())
        .to_bytes()
        .expect("base32");
    let step = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 30;
    let code = |step| ledger_api::totp::code_at_step(&totp, step).expect("code");
    let (status, body) = stack
        .post_key(&key, "/v1/me/totp/confirm", json!({ "code": code(step) }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let user = post_twice(&stack, &key, "/v1/users", json!({"name": "Bob"}), "user-1").await;
    let invite = user["invite"].as_str().expect("invite").to_owned();
    let issued = post_twice(
        &stack,
        &key,
        "/v1/me/api-keys",
        json!({"scopes": ["ledger.read"], "otp": code(step + 1)}),
        "key-1",
    )
    .await;
    let api_key = issued["api_key"].as_str().expect("api key").to_owned();

    let stored = stack.stored_text();
    assert!(stored.contains("idem"), "the idempotency records are there");
    for secret in [secret_part(&invite), secret_part(&api_key)] {
        assert!(
            !stored.contains(&secret),
            "a secret shown once is stored in the clear"
        );
    }
    // Both still work: the invite redeems, the key reads.
    stack.redeem_key(&invite).await;
    let (status, _) = stack.get_key(&api_key, "/v1/events?after=0&limit=1").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replayed_secrets_are_not_stored_in_the_clear() {
    replayed_secrets_are_not_stored_in_the_clear(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replayed_secrets_are_not_stored_in_the_clear() {
    replayed_secrets_are_not_stored_in_the_clear(Backend::Postgres).await;
}
