//! Black-box tests of the HTTP contract (DESIGN section 7): the real `ledger-api`
//! binary, driven over HTTP, on SQLite and on PostgreSQL. Every test runs on both
//! backends (`sqlite::…` and `postgres::…`).

mod process;
mod stack;

use std::time::Duration;

use ledger_core::verify::verify_export;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stack::{act, export, kinds, org, request, Backend, Stack, IBAN};

// ---------------------------------------------------------------------------------------

async fn lifecycle_export_and_logs(backend: Backend) {
    let stack = Stack::new(backend).await;
    let mut org = org(&stack, "acme").await;
    let po = request(&stack, &org, "1250.5").await;
    for (who, action, status) in [
        ("bob", "approve", "approved"),
        ("cat", "authorize", "authorized"),
        ("dan", "execute", "executed"),
        ("rex", "release", "released"),
    ] {
        let (code, body) = act(&stack, &mut org, who, &po, action).await;
        assert_eq!(code, StatusCode::OK, "{action}: {body}");
        assert_eq!(body["status"], status);
    }
    let (_, account) = stack
        .get(&org.people["eve"], &format!("/v1/accounts/{}", org.account))
        .await;
    assert_eq!(
        (account["available"].as_str(), account["held"].as_str()),
        (Some("48749.50"), Some("0.00"))
    );

    // Batch: two payouts approved together, authorized under one code.
    let a = request(&stack, &org, "10.00").await;
    let b = request(&stack, &org, "20.00").await;
    let bob = org.people["bob"].clone();
    let (status, body) = stack
        .post(&bob, "/v1/payouts/approve", json!({"payouts": [a, b]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let code = org.user("cat").code();
    let cat = org.people["cat"].clone();
    let (status, body) = stack
        .post(
            &cat,
            "/v1/payouts/authorize",
            json!({"payouts": [a, b], "otp": code}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["payouts"]
        .as_array()
        .expect("list")
        .iter()
        .all(|p| p["status"] == "authorized"));
    let (_, listed) = stack
        .get(&org.people["aud"], "/v1/payouts?status=authorized")
        .await;
    assert_eq!(listed["payouts"].as_array().expect("list").len(), 2);

    // Checkpoint, export, verify with the published keys pinned.
    let auditor = org.people["aud"].clone();
    let (status, _) = stack.post(&auditor, "/v1/checkpoints", json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (text, keys) = export(&stack, &auditor).await;
    let report = verify_export(&text, Some(keys)).expect("usable");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.summary.checkpoints_verified, 1);
    assert_eq!(report.summary.money_movements_without_two_factor, 0);
    let batch_proofs = kinds(&text, "payout.authorized");
    assert_eq!(batch_proofs.len(), 3);

    // The log: one JSON line per request, and none of the secrets.
    let log = stack.log_text();
    let requests = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "request")
        .count();
    assert!(requests > 20, "{requests} request lines");
    let mut secrets = org.secrets.clone();
    secrets.push(IBAN.to_owned());
    secrets.extend(
        org.people
            .values()
            .map(|u| u.key.split('.').nth(1).expect("secret").to_owned()),
    );
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the log contains a secret ({} chars)",
            secret.len()
        );
    }
}

async fn four_eyes_matrix(backend: Backend) {
    let stack = Stack::new(backend).await;
    let mut org = org(&stack, "acme").await;
    // Give earlier actors the later gates' roles, so only four-eyes can stop them.
    let extra = [
        (
            "ann",
            ["approver", "authorizer", "executor", "releaser"].as_slice(),
        ),
        ("bob", ["authorizer", "executor", "releaser"].as_slice()),
        ("cat", ["executor", "releaser"].as_slice()),
        ("dan", ["releaser"].as_slice()),
    ];
    let grants: Vec<Value> = extra
        .iter()
        .flat_map(|(who, roles)| {
            roles
                .iter()
                .map(|r| json!({"user": org.people[who].id, "role": r}))
                .collect::<Vec<_>>()
        })
        .collect();
    let code = org.admin.code();
    let admin = org.admin.clone();
    let (status, body) = stack
        .post(&admin, "/v1/roles", json!({"grants": grants, "otp": code}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let po = request(&stack, &org, "100.00").await;
    let mut denied = 0;
    for (gate, earlier, allowed) in [
        ("approve", ["ann"].as_slice(), "bob"),
        ("authorize", ["ann", "bob"].as_slice(), "cat"),
        ("execute", ["ann", "bob", "cat"].as_slice(), "dan"),
        ("release", ["dan"].as_slice(), "rex"),
    ] {
        for who in earlier {
            let (status, body) = act(&stack, &mut org, who, &po, gate).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{who} {gate}: {body}");
            assert_eq!(body["code"], "four_eyes", "{who} {gate}");
            denied += 1;
        }
        let (status, body) = act(&stack, &mut org, allowed, &po, gate).await;
        assert_eq!(status, StatusCode::OK, "{allowed} {gate}: {body}");
    }
    let auditor = org.people["aud"].clone();
    let (text, keys) = export(&stack, &auditor).await;
    let rejected = kinds(&text, "command.rejected");
    assert_eq!(
        rejected
            .iter()
            .filter(|e| e["data"].to_string().contains("four_eyes"))
            .count(),
        denied
    );
    assert!(verify_export(&text, Some(keys))
        .expect("usable")
        .is_intact());
}

async fn two_factor_failures_and_lockout(backend: Backend) {
    let mut stack = Stack::new(backend).await;
    let mut org = org(&stack, "acme").await;
    let po = request(&stack, &org, "100.00").await;
    let (status, _) = act(&stack, &mut org, "bob", &po, "approve").await;
    assert_eq!(status, StatusCode::OK);
    let cat = org.people["cat"].clone();
    let path = format!("/v1/payouts/{po}/authorize");
    // Missing.
    let (status, body) = stack.post(&cat, &path, json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("two_factor_required"))
    );
    // Wrong.
    let (status, body) = stack
        .post(&cat, &path, json!({"otp": cat.wrong_code()}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("two_factor_invalid"))
    );
    // Replayed: the step cat used to confirm her enrolment.
    let replay = ledger_api::totp::code_at_step(&cat.secret, cat.last_step).expect("code");
    let (status, body) = stack.post(&cat, &path, json!({"otp": replay})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("two_factor_invalid"))
    );
    // An enrolment never confirmed.
    let mut admin = org.admin.clone();
    let mut newcomer = stack.invite_user(&admin, "new", false).await;
    let code = admin.code();
    let (status, body) = stack
        .post(
            &admin,
            &format!("/v1/users/{}/roles", newcomer.id),
            json!({"role": "authorizer", "otp": code}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = stack
        .post(&newcomer.clone(), &path, json!({"otp": newcomer.code()}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("two_factor_required"))
    );
    // Lockout after five wrong codes (one already), persisted across a restart.
    let mut last = (StatusCode::OK, Value::Null);
    for _ in 0..4 {
        last = stack
            .post(&cat, &path, json!({"otp": cat.wrong_code()}))
            .await;
    }
    assert_eq!(last.0, StatusCode::FORBIDDEN);
    let mut cat = org.people["cat"].clone();
    let response = stack
        .client
        .post(format!("{}{path}", stack.base))
        .bearer_auth(&cat.key)
        .json(&json!({"otp": cat.code()}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry_after > 800 && retry_after <= 900, "{retry_after}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "two_factor_locked");
    stack.stop();
    stack.start().await;
    let (status, body) = stack
        .post(&cat.clone(), &path, json!({"otp": cat.code()}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("two_factor_locked"))
    );
    // Every denial is evidence in the chain, and the chain verifies.
    let auditor = org.people["aud"].clone();
    let (text, keys) = export(&stack, &auditor).await;
    assert!(kinds(&text, "command.rejected").len() >= 9);
    assert!(verify_export(&text, Some(keys))
        .expect("usable")
        .is_intact());
}

async fn cross_tenant_objects_are_404(backend: Backend) {
    let stack = Stack::new(backend).await;
    let mut acme = org(&stack, "acme").await;
    let globex = org(&stack, "globex").await;
    let po = request(&stack, &acme, "10.00").await;
    let (status, _) = act(&stack, &mut acme, "bob", &po, "approve").await;
    assert_eq!(status, StatusCode::OK);
    let account = acme.account.clone();
    let payee = acme.payee.clone();
    let target = acme.people["ann"].id.clone();
    for (who, method, path, body) in [
        ("eve", "GET", format!("/v1/accounts/{account}"), None),
        (
            "eve",
            "POST",
            format!("/v1/accounts/{account}/deposits"),
            Some(json!({"amount": "1.00"})),
        ),
        ("ann", "GET", format!("/v1/payees/{payee}"), None),
        ("aud", "GET", format!("/v1/payouts/{po}"), None),
        (
            "bob",
            "POST",
            format!("/v1/payouts/{po}/approve"),
            Some(json!({})),
        ),
        (
            "bob",
            "POST",
            format!("/v1/payouts/{po}/reject"),
            Some(json!({"reason": "x"})),
        ),
        (
            "cat",
            "POST",
            format!("/v1/payouts/{po}/authorize"),
            Some(json!({})),
        ),
        (
            "dan",
            "POST",
            format!("/v1/payouts/{po}/execute"),
            Some(json!({})),
        ),
        (
            "rex",
            "POST",
            format!("/v1/payouts/{po}/release"),
            Some(json!({})),
        ),
        (
            "rex",
            "POST",
            format!("/v1/payouts/{po}/fail"),
            Some(json!({"reason": "x"})),
        ),
        (
            "ann",
            "POST",
            format!("/v1/payouts/{po}/cancel"),
            Some(json!({"reason": "x"})),
        ),
        (
            "ann",
            "POST",
            "/v1/payouts".to_owned(),
            Some(
                json!({"account": account, "payee": globex.payee, "amount": "1.00", "currency": "EUR", "reference": "x"}),
            ),
        ),
    ] {
        let key = globex.people[who].key.clone();
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let (status, answer) = stack.call(method, Some(&key), &path, body).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "globex {who} {path}: {answer}"
        );
    }
    let mut admin = globex.admin.clone();
    let code = admin.code();
    let (status, _) = stack
        .post(
            &admin,
            &format!("/v1/users/{target}/roles"),
            json!({"role": "approver", "otp": code}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Acme's payout is untouched.
    let (_, view) = stack
        .get(&acme.people["aud"], &format!("/v1/payouts/{po}"))
        .await;
    assert_eq!(view["status"], "approved");
}

async fn keys_scopes_expiry_ips_and_hmac(backend: Backend) {
    let stack = Stack::new(backend).await;
    let mut org = org(&stack, "acme").await;
    let mut issue = |body: Value| {
        let mut ann = org.people["ann"].clone();
        let code = ann.code();
        org.people.insert("ann", ann.clone());
        let mut body = body;
        body["otp"] = json!(code);
        (ann, body)
    };
    let (ann, body) = issue(json!({"scopes": ["ledger.read"]}));
    let (status, narrow) = stack.post(&ann, "/v1/me/api-keys", body).await;
    assert_eq!(status, StatusCode::CREATED, "{narrow}");
    let narrow_key = narrow["api_key"].as_str().expect("key").to_owned();
    let pay = json!({"account": org.account, "payee": org.payee, "amount": "1.00", "currency": "EUR", "reference": "x"});
    let (status, body) = stack
        .call(
            reqwest::Method::POST,
            Some(&narrow_key),
            "/v1/payouts",
            Some(pay.clone()),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, _) = stack
        .call(
            reqwest::Method::GET,
            Some(&narrow_key),
            &format!("/v1/accounts/{}", org.account),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Revoked: refused at once, though it was used (and its record read) just now.
    let narrow_id = narrow["id"].as_str().expect("id");
    let (status, revoked) = stack
        .call(
            reqwest::Method::DELETE,
            Some(&ann.key),
            &format!("/v1/me/api-keys/{narrow_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    let (status, _) = stack
        .call(
            reqwest::Method::GET,
            Some(&narrow_key),
            &format!("/v1/accounts/{}", org.account),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a revoked key still works"
    );

    // A key that expires in two seconds: it works, then it does not.
    let soon = ledger_core::time::Timestamp::from_unix_micros(
        ledger_api::util::now().unix_micros() + 2_000_000,
    );
    let (ann, body) =
        issue(json!({"scopes": ["ledger.read", "payout.request"], "expires_at": soon}));
    let (status, expired) = stack.post(&ann, "/v1/me/api-keys", body).await;
    assert_eq!(status, StatusCode::CREATED, "{expired}");
    let expiring = expired["api_key"].as_str().expect("key").to_owned();
    let account_path = format!("/v1/accounts/{}", org.account);
    let (status, _) = stack
        .call(reqwest::Method::GET, Some(&expiring), &account_path, None)
        .await;
    assert_eq!(status, StatusCode::OK, "before expiry");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, _) = stack
        .call(
            reqwest::Method::POST,
            Some(expired["api_key"].as_str().expect("key")),
            "/v1/payouts",
            Some(pay.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (ann, body) = issue(json!({"scopes": ["payout.request"], "allowed_ips": ["10.0.0.0/8"]}));
    let (status, fenced) = stack.post(&ann, "/v1/me/api-keys", body).await;
    assert_eq!(status, StatusCode::CREATED, "{fenced}");
    let (status, _) = stack
        .call(
            reqwest::Method::POST,
            Some(fenced["api_key"].as_str().expect("key")),
            "/v1/payouts",
            Some(pay.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (ann, body) = issue(json!({"scopes": ["payout.request"], "hmac": true}));
    let (status, signed) = stack.post(&ann, "/v1/me/api-keys", body).await;
    assert_eq!(status, StatusCode::CREATED, "{signed}");
    let token = signed["api_key"].as_str().expect("key").to_owned();
    let secret = token.split('.').nth(1).expect("secret").to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let send = |timestamp: u64, nonce: &str, signature: Option<String>| {
        let body = serde_json::to_vec(&pay).expect("json");
        let mut request = stack
            .client
            .post(format!("{}/v1/payouts", stack.base))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("x-ledger-timestamp", timestamp.to_string())
            .header("x-ledger-nonce", nonce);
        if let Some(signature) = signature {
            request = request.header("x-ledger-signature", signature);
        }
        request.body(body).send()
    };
    let sign = |timestamp: u64, nonce: &str| {
        use hmac::Mac;
        let body = serde_json::to_vec(&pay).expect("json");
        let message = ledger_api::http::signing_string(
            &timestamp.to_string(),
            nonce,
            "POST",
            "/v1/payouts",
            &body,
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(message.as_bytes());
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    };
    let missing = send(now, "n1", None).await.expect("send");
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let wrong = send(now, "n2", Some(sign(now, "other")))
        .await
        .expect("send");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let stale = send(now - 301, "n3", Some(sign(now - 301, "n3")))
        .await
        .expect("send");
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);
    let good = send(now, "n4", Some(sign(now, "n4"))).await.expect("send");
    assert_eq!(
        good.status(),
        StatusCode::CREATED,
        "{}",
        good.text().await.unwrap_or_default()
    );
    let replayed = send(now, "n4", Some(sign(now, "n4"))).await.expect("send");
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    let log = stack.log_text();
    assert!(!log.contains(&secret), "the HMAC secret is in the log");
}

async fn idempotency_and_bad_input(backend: Backend) {
    let stack = Stack::new(backend).await;
    let org = org(&stack, "acme").await;
    let ann = org.people["ann"].clone();
    let body = json!({"account": org.account, "payee": org.payee, "amount": "5.00", "currency": "EUR", "reference": "idem"});
    let send = |key: &'static str, body: Value| {
        stack
            .client
            .post(format!("{}/v1/payouts", stack.base))
            .bearer_auth(&ann.key)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = send("k-1", body.clone()).await.expect("send");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    let again = send("k-1", body.clone()).await.expect("send");
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.json::<Value>().await.expect("json"), first);
    let mut other = body.clone();
    other["amount"] = json!("6.00");
    let conflict = send("k-1", other).await.expect("send");
    assert_eq!(conflict.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        conflict.json::<Value>().await.expect("json")["code"],
        "idempotency_conflict"
    );
    let (text, _) = export(&stack, &org.people["aud"]).await;
    let requested = kinds(&text, "payout.requested");
    assert_eq!(
        requested
            .iter()
            .filter(|e| e["data"].to_string().contains("idem"))
            .count(),
        1
    );

    let raw = |bytes: Vec<u8>| {
        stack
            .client
            .post(format!("{}/v1/payouts", stack.base))
            .bearer_auth(&ann.key)
            .header("content-type", "application/json")
            .body(bytes)
            .send()
    };
    let with = |field: &str, value: Value| {
        let mut b = body.clone();
        b[field] = value;
        serde_json::to_vec(&b).expect("json")
    };
    let mut cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("malformed", b"{\"account\":".to_vec(), 400),
        ("unknown field", with("colour", json!("red")), 422),
        ("float amount", with("amount", json!(12.5)), 422),
        ("too many decimals", with("amount", json!("1.234")), 422),
        ("negative", with("amount", json!("-5.00")), 422),
        ("zero", with("amount", json!("0.00")), 422),
        (
            "huge",
            with("amount", json!("1000000000000000000000000.00")),
            422,
        ),
        ("unknown currency", with("currency", json!("XXX")), 422),
        ("exponent", with("amount", json!("1e3")), 422),
    ];
    let mut jpy = body.clone();
    jpy["currency"] = json!("JPY");
    jpy["amount"] = json!("10.5");
    cases.push(("JPY decimals", serde_json::to_vec(&jpy).expect("json"), 422));
    let mut big = body.clone();
    big["reference"] = json!("x".repeat(70 * 1024));
    cases.push(("oversized", serde_json::to_vec(&big).expect("json"), 413));
    for (what, bytes, expected) in cases {
        let response = raw(bytes).await.expect("send");
        let status = response.status().as_u16();
        assert_eq!(
            status,
            expected,
            "{what}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    let (status, _) = stack
        .call(
            reqwest::Method::POST,
            None,
            "/v1/payouts",
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = stack
        .call(
            reqwest::Method::POST,
            Some("key_nope.secret"),
            "/v1/payouts",
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn openapi_matches_the_routes(backend: Backend) {
    let stack = Stack::new(backend).await;
    let (status, doc) = stack
        .call(reqwest::Method::GET, None, "/openapi.json", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for (method, path, _) in ledger_api::routes::ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from /openapi.json"
        );
        let concrete = path
            .replace("{id}", "x")
            .replace("{action}", "approve")
            .replace("{role}", "approver");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let (status, _) = stack.call(method, None, &concrete, None).await;
        let public = matches!(
            *path,
            "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/v1/invites/redeem"
        );
        if public {
            assert_ne!(status, StatusCode::NOT_FOUND, "{path}");
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} is not served");
        }
    }
    let (status, metrics) = stack
        .call(reqwest::Method::GET, None, "/metrics", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics
        .as_str()
        .is_some_and(|m| m.contains("ledger_http_requests_total")));
}

on_both_backends!(
    lifecycle_export_and_logs,
    four_eyes_matrix,
    two_factor_failures_and_lockout,
    cross_tenant_objects_are_404,
    keys_scopes_expiry_ips_and_hmac,
    idempotency_and_bad_input,
    openapi_matches_the_routes,
);
