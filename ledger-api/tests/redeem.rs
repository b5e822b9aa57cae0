//! Invite redemption under an `Idempotency-Key` (DESIGN 7: every POST), and the rate
//! limits per API key: the general one and the tighter one on a person's requests that
//! carry a TOTP code. The real binary over HTTP, on SQLite and PostgreSQL.
//!
//! A redemption's answer shows the new API key and TOTP secret once; a client that lost
//! it retries with the same key and body and gets it again, for an hour. The record is
//! scoped to the invite (its tenant, an id hashed from the invite and the key), its copy
//! of the answer is sealed, and the invite stays single-use.

mod process;
mod stack;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stack::{Backend, Stack};

const REDEEM: &str = "/v1/invites/redeem";

/// Redeems `invite`, with `idempotency_key` if any: status, headers, body.
async fn redeem(
    stack: &Stack,
    invite: &str,
    idempotency_key: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let (status, body, headers) = stack
        .call_on(
            &stack.base,
            Method::POST,
            None,
            REDEEM,
            Some(json!({ "invite": invite })),
            idempotency_key,
        )
        .await;
    (status, headers, body)
}

fn replayed(headers: &HeaderMap) -> bool {
    headers
        .get("idempotent-replayed")
        .is_some_and(|v| v.as_bytes() == b"true")
}

fn secret_part(token: &str) -> String {
    token.split_once('.').expect("<id>.<secret>").1.to_owned()
}

/// The current code of a base32 TOTP secret.
fn code(totp_secret: &str) -> String {
    let secret = totp_rs::Secret::Encoded(totp_secret.to_owned())
        .to_bytes()
        .expect("base32");
    let step = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 30;
    ledger_api::totp::code_at_step(&secret, step).expect("code")
}

fn assert_rate_limited(status: StatusCode, headers: &HeaderMap, body: &Value) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], "rate_limited");
    let retry_after: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
}

// ---------------------------------------------------------------------------------------

/// The same key and body replay the first answer, which works (the key authenticates,
/// the TOTP secret confirms); the invite is still single-use for anyone else.
async fn a_retried_redemption_replays_the_first_answer(backend: Backend) {
    let stack = Stack::new(backend).await;
    let invite = stack.tenant("acme");
    let (status, headers, first) = redeem(&stack, &invite, Some("redeem-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(!replayed(&headers), "the first answer is no replay");

    let (status, headers, again) = redeem(&stack, &invite, Some("redeem-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert!(replayed(&headers), "Idempotent-Replayed: true");
    assert_eq!(again, first, "the replay is the first answer");

    // The replayed credentials are the real ones.
    let key = again["api_key"].as_str().expect("api key");
    let totp_secret = again["totp_secret"].as_str().expect("totp secret");
    let (status, body) = stack
        .post_key(
            key,
            "/v1/me/totp/confirm",
            json!({ "code": code(totp_secret) }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = stack
        .post_key(key, "/v1/users", json!({ "name": "Bob" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Single use: without the key, or with another, the invite is spent.
    let (status, _, body) = redeem(&stack, &invite, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, body) = redeem(&stack, &invite, Some("redeem-2")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.to_string().contains(&secret_part(key)));
    // And the first key still replays.
    let (status, headers, third) = redeem(&stack, &invite, Some("redeem-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{third}");
    assert!(replayed(&headers));
    assert_eq!(third, first);
}

/// The same key with another body is 422 `idempotency_conflict`, and shows nothing of the
/// first answer; a wrong invite with the same key reaches no record (401).
async fn the_same_key_with_another_body_conflicts(backend: Backend) {
    let stack = Stack::new(backend).await;
    let invite = stack.tenant("acme");
    let (status, _, first) = redeem(&stack, &invite, Some("k-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let api_key = first["api_key"].as_str().expect("api key").to_owned();

    // The same invite, written otherwise: another body.
    let response = stack
        .client
        .post(format!("{}{REDEEM}", stack.base))
        .header("idempotency-key", "k-1")
        .header("content-type", "application/json")
        .body(format!("{{ \"invite\" : \"{invite}\" }}"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = response.text().await.expect("text");
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["code"], "idempotency_conflict");
    assert!(!text.contains(&secret_part(&api_key)));

    // A wrong secret for the same invite id, under the same key: no record, no hint.
    let (invite_id, _) = invite.split_once('.').expect("invite");
    let forged = format!("{invite_id}.{}", "0".repeat(48));
    let (status, _, body) = redeem(&stack, &forged, Some("k-1")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // The first body still replays.
    let (status, headers, again) = redeem(&stack, &invite, Some("k-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert!(replayed(&headers));
    assert_eq!(again, first);
}

/// The kept answer is sealed: neither the API key's secret nor the TOTP secret (nor the
/// invite's) is in the database in the clear, or in the log.
async fn the_kept_answer_is_sealed(backend: Backend) {
    let stack = Stack::new(backend).await;
    let invite = stack.tenant("acme");
    let (status, _, first) = redeem(&stack, &invite, Some("sealed-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, headers, again) = redeem(&stack, &invite, Some("sealed-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert!(replayed(&headers));
    assert_eq!(again, first);

    let stored = stack.stored_text();
    assert!(
        stored.contains("redeem:"),
        "the redemption's idempotency record is there"
    );
    assert!(stored.contains("body_sealed"), "its answer is kept sealed");
    let secrets = [
        secret_part(first["api_key"].as_str().expect("api key")),
        first["totp_secret"]
            .as_str()
            .expect("totp secret")
            .to_owned(),
        secret_part(&invite),
    ];
    let log = stack.log_text();
    for secret in &secrets {
        assert!(
            !stored.contains(secret.as_str()),
            "a secret stored in the clear"
        );
        assert!(!log.contains(secret.as_str()), "a secret in the log");
    }
}

/// A double submit (the client's retry while the first is still running): one
/// redemption; each other answer is its replay or 409 `idempotency_in_progress`.
async fn a_double_submit_redeems_once(backend: Backend) {
    let stack = Stack::new(backend).await;
    let invite = stack.tenant("acme");
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let client = stack.client.clone();
            let url = format!("{}{REDEEM}", stack.base);
            let invite = invite.clone();
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .header("idempotency-key", "double")
                    .json(&json!({ "invite": invite }))
                    .send()
                    .await
                    .expect("send");
                let status = response.status();
                let was_replayed = replayed(response.headers());
                let body: Value = response.json().await.expect("json");
                (status, was_replayed, body)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    let mut firsts = Vec::new();
    let mut created = Vec::new();
    for (status, was_replayed, body) in answers {
        match status {
            StatusCode::CREATED => {
                if !was_replayed {
                    firsts.push(body.clone());
                }
                created.push(body);
            }
            StatusCode::CONFLICT => assert_eq!(body["code"], "idempotency_in_progress"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(firsts.len(), 1, "one redemption: {created:?}");
    assert!(created.iter().all(|b| *b == firsts[0]), "{created:?}");
    let (status, headers, again) = redeem(&stack, &invite, Some("double")).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert!(replayed(&headers));
    assert_eq!(again, firsts[0]);
}

/// Past the replay window the spent invite is worth nothing again: 401, and the sealed
/// copy is gone.
async fn the_replay_window_closes(backend: Backend) {
    let stack = Stack::new(backend).await;
    let invite = stack.tenant("acme");
    let (status, _, first) = redeem(&stack, &invite, Some("late")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let long_ago = "2000-01-01T00:00:00.000000Z";
    let sql = match backend {
        Backend::Sqlite => format!(
            "UPDATE records SET value = json_set(value, '$.started_at', '{long_ago}') \
             WHERE kind = 'idem' AND id LIKE 'redeem:%'"
        ),
        Backend::Postgres => format!(
            "UPDATE records SET value = \
             jsonb_set(value::jsonb, '{{started_at}}', '\"{long_ago}\"')::text \
             WHERE kind = 'idem' AND id LIKE 'redeem:%'"
        ),
    };
    assert_eq!(redemption_records(&stack).await, 1);
    stack.owner_sql(&sql).await;
    let (status, _, body) = redeem(&stack, &invite, Some("late")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        redemption_records(&stack).await,
        0,
        "the expired answer is deleted"
    );
}

/// How many redemption idempotency records the database holds.
async fn redemption_records(stack: &Stack) -> i64 {
    let sql =
        "SELECT CAST(count(*) AS TEXT) FROM records WHERE kind = 'idem' AND id LIKE 'redeem:%'";
    stack.owner_strings(sql).await[0].parse().expect("count")
}

/// `--rate-per-key`: a key over it gets 429 with Retry-After; another key from the same
/// client IP does not.
async fn the_general_limit_is_per_key(backend: Backend) {
    let stack = Stack::with_serve_args(backend, &["--rate-per-key", "1"]).await;
    let admin = stack.admin("acme").await;
    let (status, body) = stack
        .post_key(&admin, "/v1/users", json!({ "name": "Bob" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let bob = stack
        .redeem_key(body["invite"].as_str().expect("invite"))
        .await;
    let mut limited = None;
    for _ in 0..20 {
        let answer = stack
            .send(Method::GET, Some(&admin), "/v1/ledger/keys", None, &[])
            .await;
        if answer.0 == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(answer);
            break;
        }
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.2);
    }
    let (status, headers, body) = limited.expect("no 429 within 20 requests a second");
    assert_rate_limited(status, &headers, &body);
    let (status, _, body) = stack
        .send(Method::GET, Some(&bob), "/v1/ledger/keys", None, &[])
        .await;
    assert_eq!(status, StatusCode::OK, "another key is not limited: {body}");
}

/// `--rate-sensitive-per-minute` per key, on a person's requests that carry a TOTP code
/// (here a policy update and a payout authorization, percent-escaped or not): over it,
/// 429 with Retry-After; the key's other requests, and another person's key from the
/// same IP, go on.
async fn requests_with_a_code_are_limited_per_key(backend: Backend) {
    let mut stack = Stack::new(backend).await;
    let invite = stack.tenant("acme");
    let admin = stack.redeem(&invite, true).await;
    let bob = stack.invite_user(&admin, "bob", true).await;
    stack.stop();
    stack.serve_args = vec!["--rate-sensitive-per-minute".into(), "3".into()];
    stack.start().await;

    let policy = json!({ "rules": [] });
    for _ in 0..3 {
        let (status, body) = stack
            .call(
                Method::PUT,
                Some(&admin.key),
                "/v1/policy/approvals",
                Some(policy.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["code"], "two_factor_required");
    }
    for path in ["/v1/policy/approvals", "/v1/payouts/po_x/%61uthorize"] {
        let method = if path.contains("policy") {
            Method::PUT
        } else {
            Method::POST
        };
        let (status, headers, body) = stack
            .send(method, Some(&admin.key), path, Some(policy.clone()), &[])
            .await;
        assert_rate_limited(status, &headers, &body);
    }
    // The same key's other requests are not held back.
    let (status, body) = stack
        .post_key(&admin.key, "/v1/users", json!({ "name": "Cy" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Nor another key from the same IP.
    let (status, body) = stack
        .call(
            Method::PUT,
            Some(&bob.key),
            "/v1/policy/approvals",
            Some(policy),
        )
        .await;
    assert_ne!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

on_both_backends!(
    a_retried_redemption_replays_the_first_answer,
    the_same_key_with_another_body_conflicts,
    the_kept_answer_is_sealed,
    a_double_submit_redeems_once,
    the_replay_window_closes,
    the_general_limit_is_per_key,
    requests_with_a_code_are_limited_per_key,
);
