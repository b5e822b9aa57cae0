//! Black-box tests of the HTTP contract (DESIGN section 7): the real `ledger-api`
//! binary, driven over HTTP, on SQLite and on PostgreSQL. Every test runs on both
//! backends (`sqlite::…` and `postgres::…`).

mod process;
mod stack;

use std::time::Duration;

use ledger_core::verify::verify_export;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stack::{act, event_lines, export, kinds, org, request, Backend, Stack, IBAN};

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
    org.secrets.push(code.clone());
    let cat = org.people["cat"].clone();
    let (status, headers, body) = stack
        .send(
            reqwest::Method::POST,
            Some(&cat.key),
            "/v1/payouts/authorize",
            Some(json!({"payouts": [a, b], "otp": code})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let batch_request_id = request_id_of(&headers);
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
    let report = verify_export(&text, Some(keys.clone())).expect("usable");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.summary.checkpoints_verified, 1);
    assert_eq!(report.summary.money_movements_without_two_factor, 0);
    // And through what `ledger-audit verify FILE --keys` runs: the file read in chunks,
    // parsed and signature-checked in parallel, the same verdict.
    let file = stack.dir.path().join("acme.jsonl");
    std::fs::write(&file, &text).expect("write the export");
    let options = ledger_audit::Options {
        pinned: Some(keys),
        ..ledger_audit::Options::default()
    };
    let audited = ledger_audit::verify_file(&file, options).expect("usable");
    assert!(audited.is_intact(), "{audited:?}");
    assert_eq!(audited.summary, report.summary);
    let batch_proofs = kinds(&text, "payout.authorized");
    assert_eq!(batch_proofs.len(), 3);

    // Requests whose access-log lines are known, each found by the X-Request-Id of its
    // answer: an accepted money movement, a refused request, an unauthenticated one.
    let rex = org.people["rex"].clone();
    let (status, headers, refused) = stack
        .send(
            reqwest::Method::POST,
            Some(&rex.key),
            "/v1/payouts",
            Some(json!({"account": org.account, "payee": org.payee, "amount": "1.00", "currency": "EUR", "reference": "r"})),
            &[],
        )
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let refused_request_id = request_id_of(&headers);
    let account_path = format!("/v1/accounts/{}", org.account);
    let (status, headers, _) = stack
        .send(reqwest::Method::GET, None, &account_path, None, &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let anonymous_request_id = request_id_of(&headers);
    for (request_id, tenant, actor, method, action, path, status, result) in [
        (
            &batch_request_id,
            "acme",
            cat.id.as_str(),
            "POST",
            "/v1/payouts/{id}",
            "/v1/payouts/authorize",
            200,
            "ok",
        ),
        (
            &refused_request_id,
            "acme",
            rex.id.as_str(),
            "POST",
            "/v1/payouts",
            "/v1/payouts",
            403,
            "forbidden",
        ),
        (
            &anonymous_request_id,
            "-",
            "-",
            "GET",
            "/v1/accounts/{id}",
            account_path.as_str(),
            401,
            "unauthorized",
        ),
    ] {
        let line = stack.request_line(request_id);
        assert_eq!(
            (
                line["tenant"].as_str(),
                line["actor"].as_str(),
                line["method"].as_str(),
                line["action"].as_str(),
                line["path"].as_str(),
                line["status"].as_u64(),
                line["result"].as_str(),
            ),
            (
                Some(tenant),
                Some(actor),
                Some(method),
                Some(action),
                Some(path),
                Some(status),
                Some(result),
            ),
            "{line}"
        );
    }

    // The log: one JSON line per request, each naming its request id, tenant, actor,
    // action and result.
    let lines = stack.request_lines();
    assert!(lines.len() > 20, "{} request lines", lines.len());
    let actors: Vec<&str> = std::iter::once(&org.admin)
        .chain(org.people.values())
        .map(|u| u.id.as_str())
        .collect();
    let mut request_ids = std::collections::BTreeSet::new();
    for line in &lines {
        for field in ["request_id", "tenant", "actor", "action", "result"] {
            assert!(
                line[field].as_str().is_some_and(|v| !v.is_empty()),
                "no {field}: {line}"
            );
        }
        assert!(
            request_ids.insert(line["request_id"].as_str().unwrap_or_default()),
            "a request id logged twice: {line}"
        );
        let (tenant, actor) = (line["tenant"].as_str(), line["actor"].as_str());
        assert!(
            (tenant, actor) == (Some("-"), Some("-"))
                || (tenant == Some("acme") && actors.contains(&actor.unwrap_or_default())),
            "tenant and actor: {line}"
        );
        let status = line["status"].as_u64().expect("status");
        assert_eq!(
            line["result"] == "ok",
            status < 400,
            "result and status: {line}"
        );
    }

    // And none of the secrets: invites, keys, TOTP secrets, every code used, the IBAN.
    let log = stack.log_text();
    let mut secrets = org.secrets.clone();
    secrets.push(IBAN.to_owned());
    secrets.extend(
        std::iter::once(&org.admin)
            .chain(org.people.values())
            .map(|u| u.key.split('.').nth(1).expect("secret").to_owned()),
    );
    let codes = secrets.iter().filter(|s| is_code(s)).count();
    assert!(codes >= 14, "{codes} one-time codes checked");
    for secret in &secrets {
        assert!(
            !shows(&log, secret),
            "the log contains a secret ({} chars)",
            secret.len()
        );
    }
}

#[test]
fn the_secret_search_finds_codes_and_ignores_chance_digits() {
    let line = |fields: &str| {
        format!(r#"{{"timestamp":"2026-01-01T00:00:00.123456Z","level":"INFO","fields":{fields}}}"#)
    };
    for leak in [
        r#"{"message":"body {\"otp\":\"123456\"}"}"#,
        r#"{"message":"confirm","code":"123456"}"#,
        r#"{"message":"otp=123456 refused"}"#,
    ] {
        assert!(shows(&line(leak), "123456"), "{leak}");
    }
    for chance in [
        r#"{"message":"request","micros":123456}"#,
        r#"{"message":"query","elapsed":"1.123456ms","rows":"91234567"}"#,
        r#"{"message":"request","request_id":"1234567-0123456"}"#,
    ] {
        assert!(!shows(&line(chance), "123456"), "{chance}");
    }
    assert!(shows("plain key_abc.s3cr3t text", "s3cr3t"));
}

/// The `X-Request-Id` of an answer.
fn request_id_of(headers: &reqwest::header::HeaderMap) -> String {
    headers["x-request-id"]
        .to_str()
        .expect("ascii request id")
        .to_owned()
}

/// Whether `secret` is a one-time code (six digits).
fn is_code(secret: &str) -> bool {
    secret.len() == 6 && secret.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `secret` shows in `log`. A long secret is searched as it is. A one-time code
/// is searched as a whole word (letters, digits and inner dots) of any text the log
/// lines hold, their timestamps aside: a code logged in any form (`"otp":"123456"`,
/// `code=123456`) is found, while six digits that happen to occur inside a timestamp,
/// a duration ("1.123456ms") or a longer number are not a leak.
fn shows(log: &str, secret: &str) -> bool {
    if !is_code(secret) {
        return log.contains(secret);
    }
    fn texts(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(text) => out.push(text.clone()),
            Value::Array(items) => items.iter().for_each(|v| texts(v, out)),
            Value::Object(fields) => {
                for (name, v) in fields {
                    out.push(name.clone());
                    texts(v, out);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    log.lines().any(|line| {
        let mut found = Vec::new();
        match serde_json::from_str::<Value>(line) {
            Ok(mut value) => {
                if let Some(fields) = value.as_object_mut() {
                    fields.remove("timestamp");
                }
                texts(&value, &mut found);
            }
            Err(_) => found.push(line.to_owned()),
        }
        found.iter().any(|text| {
            text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
                .any(|word| word.trim_matches('.') == secret)
        })
    })
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
    let mut globex = org(&stack, "globex").await;
    let po = request(&stack, &acme, "10.00").await;
    let (status, _) = act(&stack, &mut acme, "bob", &po, "approve").await;
    assert_eq!(status, StatusCode::OK);
    // A payout of globex's own, to mix into a batch with acme's.
    let own = request(&stack, &globex, "10.00").await;
    let account = acme.account.clone();
    let payee = acme.payee.clone();
    let target = acme.people["ann"].id.clone();
    let target_key = acme.people["ann"]
        .key
        .split('.')
        .next()
        .expect("key id")
        .to_owned();
    let acme_auditor = acme.people["aud"].clone();
    let (before, _) = export(&stack, &acme_auditor).await;
    let account_path = format!("/v1/accounts/{account}");
    let (status, balances) = stack.get(&acme.people["eve"], &account_path).await;
    assert_eq!(status, StatusCode::OK, "{balances}");

    // Globex's people, each with the permission the request needs and, where it needs
    // one, a valid fresh code of their own, name acme's objects: each is 404.
    let pay = |account: &str, payee: &str| json!({"account": account, "payee": payee, "amount": "1.00", "currency": "EUR", "reference": "x"});
    let batch = |payouts: &[&str]| json!({ "payouts": payouts });
    let cases: Vec<(&str, &str, String, Option<Value>, bool)> = vec![
        ("eve", "GET", account_path.clone(), None, false),
        (
            "eve",
            "POST",
            format!("/v1/accounts/{account}/deposits"),
            Some(json!({"amount": "1.00", "reference": "x"})),
            false,
        ),
        ("ann", "GET", format!("/v1/payees/{payee}"), None, false),
        ("aud", "GET", format!("/v1/payouts/{po}"), None, false),
        (
            "bob",
            "POST",
            format!("/v1/payouts/{po}/approve"),
            Some(json!({})),
            false,
        ),
        (
            "bob",
            "POST",
            format!("/v1/payouts/{po}/reject"),
            Some(json!({"reason": "x"})),
            false,
        ),
        (
            "cat",
            "POST",
            format!("/v1/payouts/{po}/authorize"),
            Some(json!({})),
            true,
        ),
        (
            "dan",
            "POST",
            format!("/v1/payouts/{po}/execute"),
            Some(json!({})),
            true,
        ),
        (
            "rex",
            "POST",
            format!("/v1/payouts/{po}/release"),
            Some(json!({})),
            true,
        ),
        (
            "rex",
            "POST",
            format!("/v1/payouts/{po}/fail"),
            Some(json!({"reason": "x"})),
            false,
        ),
        (
            "ann",
            "POST",
            format!("/v1/payouts/{po}/cancel"),
            Some(json!({"reason": "x"})),
            false,
        ),
        (
            "ann",
            "POST",
            "/v1/payouts".to_owned(),
            Some(pay(&account, &globex.payee)),
            false,
        ),
        (
            "ann",
            "POST",
            "/v1/payouts".to_owned(),
            Some(pay(&globex.account, &payee)),
            false,
        ),
        (
            "bob",
            "POST",
            "/v1/payouts/approve".to_owned(),
            Some(batch(&[&po])),
            false,
        ),
        (
            "bob",
            "POST",
            "/v1/payouts/approve".to_owned(),
            Some(batch(&[&own, &po])),
            false,
        ),
        (
            "cat",
            "POST",
            "/v1/payouts/authorize".to_owned(),
            Some(batch(&[&po])),
            true,
        ),
        (
            "dan",
            "POST",
            "/v1/payouts/execute".to_owned(),
            Some(batch(&[&po])),
            true,
        ),
        (
            "rex",
            "POST",
            "/v1/payouts/release".to_owned(),
            Some(batch(&[&po])),
            true,
        ),
        (
            "admin",
            "POST",
            format!("/v1/users/{target}/roles"),
            Some(json!({"role": "approver"})),
            true,
        ),
        (
            "admin",
            "POST",
            "/v1/roles".to_owned(),
            Some(json!({"grants": [{"user": target, "role": "approver"}]})),
            true,
        ),
        (
            "admin",
            "DELETE",
            format!("/v1/users/{target}/roles/requester"),
            None,
            false,
        ),
        (
            "ann",
            "DELETE",
            format!("/v1/me/api-keys/{target_key}"),
            None,
            false,
        ),
    ];
    // Every case is tried; the answers other than 404 are listed at the end.
    let mut deviations = Vec::new();
    for (who, method, path, body, with_code) in cases {
        let user = if who == "admin" {
            &mut globex.admin
        } else {
            globex.user(who)
        };
        let body = match (body, with_code) {
            (Some(mut body), true) => {
                body["otp"] = json!(user.code());
                Some(body)
            }
            (body, _) => body,
        };
        let key = user.key.clone();
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let (status, answer) = stack.call(method.clone(), Some(&key), &path, body).await;
        if (status, answer["code"].as_str()) != (StatusCode::NOT_FOUND, Some("not_found")) {
            deviations.push(format!("globex {who} {method} {path}: {status} {answer}"));
        }
    }

    // Acme is untouched: not one event in its chain, the same balances, the same
    // payout, and ann keeps her key and her role.
    let (after, _) = export(&stack, &acme_auditor).await;
    assert!(!event_lines(&before).is_empty());
    assert_eq!(event_lines(&after), event_lines(&before));
    let (_, now) = stack.get(&acme.people["eve"], &account_path).await;
    assert_eq!(
        (&now["available"], &now["held"]),
        (&balances["available"], &balances["held"])
    );
    let (_, view) = stack
        .get(&acme.people["aud"], &format!("/v1/payouts/{po}"))
        .await;
    assert_eq!(view["status"], "approved");
    request(&stack, &acme, "1.00").await;
    // And globex's own payout, batched with acme's, was not approved either.
    let (_, view) = stack
        .get(&globex.people["aud"], &format!("/v1/payouts/{own}"))
        .await;
    assert_eq!(view["status"], "requested");
    assert!(
        deviations.is_empty(),
        "another tenant's objects must be 404:\n{}",
        deviations.join("\n")
    );
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

    // A key that expires in two seconds: it works, then it does not. (The code first:
    // getting a fresh one may wait for the next step.)
    let (ann, mut body) = issue(json!({"scopes": ["ledger.read", "payout.request"]}));
    body["expires_at"] = json!(ledger_core::time::Timestamp::from_unix_micros(
        ledger_api::util::now().unix_micros() + 2_000_000,
    ));
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
    let send_body = |body: &Value, timestamp: u64, nonce: &str, signature: Option<String>| {
        let body = serde_json::to_vec(body).expect("json");
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
    let send = |timestamp: u64, nonce: &str, signature: Option<String>| {
        send_body(&pay, timestamp, nonce, signature)
    };
    let sign = |timestamp: u64, nonce: &str| {
        use hmac::Mac;
        let body = serde_json::to_vec(&pay).expect("json");
        let message = ledger_api::http::auth::signing_string(
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
    // Signed right, then the body changed on the way: the amount is not what was signed.
    let mut tampered = pay.clone();
    tampered["amount"] = json!("9000.00");
    let changed = send_body(&tampered, now, "n5", Some(sign(now, "n5")))
        .await
        .expect("send");
    assert_eq!(changed.status(), StatusCode::UNAUTHORIZED);
    let good = send(now, "n4", Some(sign(now, "n4"))).await.expect("send");
    assert_eq!(
        good.status(),
        StatusCode::CREATED,
        "{}",
        good.text().await.unwrap_or_default()
    );
    let replayed = send(now, "n4", Some(sign(now, "n4"))).await.expect("send");
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    // Nothing was requested but the one good signed request.
    let (_, listed) = stack
        .get(&org.people["aud"], "/v1/payouts?status=requested")
        .await;
    assert_eq!(
        listed["payouts"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    // The allow-list lets in what it lists: a key fenced to this machine (127.0.0.1,
    // among others) works from here.
    let mut bob = org.people["bob"].clone();
    let code = bob.code();
    let (status, local) = stack
        .post(
            &bob,
            "/v1/me/api-keys",
            json!({"scopes": ["ledger.read"], "allowed_ips": ["10.0.0.0/8", "127.0.0.1"], "otp": code}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{local}");
    let (status, body) = stack
        .get_key(local["api_key"].as_str().expect("key"), &account_path)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["account"], org.account.as_str());

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
    cases.push(("IBAN as amount", with("amount", json!(IBAN)), 422));
    cases.push(("IBAN as amount type", with("amount", json!([IBAN])), 422));
    cases.push(("IBAN as field name", with(IBAN, json!(1)), 422));
    for (what, bytes, expected) in cases {
        let response = raw(bytes).await.expect("send");
        let status = response.status().as_u16();
        let problem_json =
            response.headers()[reqwest::header::CONTENT_TYPE] == "application/problem+json";
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, expected, "{what}: {text}");
        assert!(problem_json, "{what}: {text}");
        assert!(!text.contains("DE89"), "{what} echoed the request: {text}");
    }
    // A string where a list belongs: serde quotes it, the answer must not.
    let response = stack
        .client
        .post(format!("{}/v1/payouts/approve", stack.base))
        .bearer_auth(&ann.key)
        .json(&json!({"payouts": IBAN, "otp": IBAN}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = response.text().await.expect("text");
    assert!(text.contains("expected a sequence"), "{text}");
    assert!(!text.contains("DE89"), "batch echoed the request: {text}");
    // A path segment that is not UTF-8 once decoded names nothing: 404 problem+json.
    for (method, path) in [
        (reqwest::Method::GET, "/v1/payouts/%FF"),
        (reqwest::Method::POST, "/v1/payouts/%FF/approve"),
        (reqwest::Method::DELETE, "/v1/users/%C3%28/roles/%FF"),
    ] {
        let response = stack
            .client
            .request(method, format!("{}{path}", stack.base))
            .bearer_auth(&ann.key)
            .header("idempotency-key", "bad-path")
            .json(&json!({}))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            response.headers()[reqwest::header::CONTENT_TYPE],
            "application/problem+json",
            "{path}"
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
    let key = stack.admin("acme").await;
    let (status, doc) = stack
        .call(reqwest::Method::GET, None, "/openapi.json", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut methods_of: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (n, (method, path, _)) in ledger_api::routes::ROUTES.iter().enumerate() {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from /openapi.json"
        );
        methods_of
            .entry(path)
            .or_default()
            .push(method.to_uppercase());
        let concrete = concrete(path);
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        // With a valid key, the router's own route for this method and path answers:
        // the access log names the route (the fallback logs `unmatched`), and the answer
        // is not the wrong-method fallback's (which lists the methods in `Allow`).
        let seen = probe(&stack, method.clone(), Some(&key), &concrete, n).await;
        assert_eq!(
            seen.line["action"].as_str(),
            Some(*path),
            "{method} {path} is not routed: {}",
            seen.line
        );
        assert_eq!(
            seen.allow, None,
            "{method} {path}: the router has no {method} here"
        );
        assert!(
            !matches!(seen.status.as_u16(), 401 | 429 | 500..=599),
            "{method} {path} with a valid key: {}",
            seen.line
        );
        // Without a key, only the public routes answer.
        let seen = probe(&stack, method.clone(), None, &concrete, n + 1000).await;
        assert_eq!(seen.line["action"].as_str(), Some(*path));
        let public = matches!(
            *path,
            "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/v1/invites/redeem"
        );
        assert_eq!(
            seen.status == StatusCode::UNAUTHORIZED,
            !public,
            "{method} {path} without a key: {}",
            seen.status
        );
    }
    // The router has no other method on these paths: a method none of them uses is
    // the wrong-method fallback's, and its `Allow` lists exactly the table's methods.
    for (n, (path, methods)) in methods_of.iter().enumerate() {
        let seen = probe(
            &stack,
            reqwest::Method::PATCH,
            Some(&key),
            &concrete(path),
            n + 2000,
        )
        .await;
        assert_eq!(
            (seen.status, seen.line["action"].as_str()),
            (StatusCode::BAD_REQUEST, Some(*path)),
            "PATCH {path}: {}",
            seen.line
        );
        let mut allowed: Vec<String> = seen
            .allow
            .unwrap_or_default()
            .split(',')
            .map(|m| m.trim().to_owned())
            .filter(|m| m != "HEAD")
            .collect();
        allowed.sort();
        let mut expected = methods.clone();
        expected.sort();
        assert_eq!(allowed, expected, "the methods the router serves on {path}");
    }
    // With a valid key, a path no route has is the fallback: 404, logged `unmatched`...
    for (n, (method, path)) in [
        (reqwest::Method::GET, "/v1/nope"),
        (reqwest::Method::POST, "/v1/payouts/x/approve/more"),
        (reqwest::Method::GET, "/v1"),
        (reqwest::Method::GET, "/v1/checkpoints/x"),
    ]
    .into_iter()
    .enumerate()
    {
        let seen = probe(&stack, method.clone(), Some(&key), path, n + 3000).await;
        assert_eq!(
            (
                seen.status,
                seen.line["action"].as_str(),
                seen.line["result"].as_str()
            ),
            (StatusCode::NOT_FOUND, Some("unmatched"), Some("not_found")),
            "{method} {path}"
        );
    }
    // ... while a handler's own 404 names its route.
    let seen = probe(
        &stack,
        reqwest::Method::GET,
        Some(&key),
        "/v1/accounts/acct_nope",
        4000,
    )
    .await;
    assert_eq!(
        (
            seen.status,
            seen.line["action"].as_str(),
            seen.line["result"].as_str()
        ),
        (
            StatusCode::NOT_FOUND,
            Some("/v1/accounts/{id}"),
            Some("not_found")
        )
    );

    let (status, metrics) = stack
        .call(reqwest::Method::GET, None, "/metrics", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics
        .as_str()
        .is_some_and(|m| m.contains("ledger_http_requests_total")));
}

/// A route's path with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{id}", "x")
        .replace("{action}", "approve")
        .replace("{role}", "approver")
}

/// What the server did with one request: its status, its `Allow` header, its access-log
/// line.
struct Seen {
    status: StatusCode,
    allow: Option<String>,
    line: Value,
}

/// Sends one request without a body, with the request id `probe-<n>`; the body of the
/// answer is not read (a stream does not end).
async fn probe(
    stack: &Stack,
    method: reqwest::Method,
    key: Option<&str>,
    path: &str,
    n: usize,
) -> Seen {
    let request_id = format!("probe-{n}");
    let mut request = stack
        .client
        .request(method, format!("{}{path}", stack.base))
        .header("x-request-id", &request_id);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("send");
    assert_eq!(request_id_of(response.headers()), request_id);
    let seen = Seen {
        status: response.status(),
        allow: response
            .headers()
            .get("allow")
            .map(|v| v.to_str().expect("ascii").to_owned()),
        line: stack.request_line(&request_id),
    };
    drop(response);
    seen
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
