//! The reads served from the persisted projections, over real HTTP on SQLite and
//! PostgreSQL: balances, payouts with who acted at each gate, lists filtered and paged
//! without a gap or a repeat, the audit view with every decided command and the request
//! id of the POST that caused it, `min_seq` waiting (and 503 when not reached), another
//! tenant's objects 404, and `projections rebuild` giving the same answers.

mod process;
mod stack;

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stack::{act, org, request, Backend, Org, Stack, User};

fn reflects(headers: &reqwest::header::HeaderMap, body: &Value) -> u64 {
    let header: u64 = headers
        .get("ledger-reflects-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Ledger-Reflects-Seq header");
    assert_eq!(body["reflects_seq"].as_u64(), Some(header), "{body}");
    header
}

fn committed(headers: &reqwest::header::HeaderMap) -> u64 {
    headers
        .get("ledger-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Ledger-Seq header on a committed write")
}

/// Deposits 1.00 through `path` as `user`; the seq it committed.
async fn deposit_one(stack: &Stack, user: &User, path: &str) -> u64 {
    let (status, headers, _) = stack
        .send(
            Method::POST,
            Some(&user.key),
            path,
            Some(json!({"amount": "1.00"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    committed(&headers)
}

async fn get_full(stack: &Stack, user: &User, path: &str) -> (StatusCode, u64, Value) {
    let (status, headers, body) = stack
        .send(Method::GET, Some(&user.key), path, None, &[])
        .await;
    assert!(
        status == StatusCode::OK || status.is_client_error() || status.is_server_error(),
        "{status}"
    );
    let seq = if status == StatusCode::OK {
        reflects(&headers, &body)
    } else {
        0
    };
    (status, seq, body)
}

/// Every page of a list, following `next` until it is null.
async fn all_pages(stack: &Stack, user: &User, path: &str, items: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    let separator = if path.contains('?') { '&' } else { '?' };
    for _ in 0..1000 {
        let url = match &after {
            None => path.to_owned(),
            Some(cursor) => format!("{path}{separator}after={cursor}"),
        };
        let (status, _, page) = get_full(stack, user, &url).await;
        assert_eq!(status, StatusCode::OK, "{url}: {page}");
        out.extend(page[items].as_array().expect("items").iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => {
                assert!(page["next"].is_null(), "{page}");
                return out;
            }
        }
    }
    panic!("no last page");
}

fn ids(items: &[Value], field: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| i[field].as_str().expect("id").to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------

async fn balances_and_gates_from_the_read_model(backend: Backend) {
    let stack = Stack::new(backend).await;
    let mut org = org(&stack, "acme").await;
    let po = request(&stack, &org, "1250.50").await;
    let mut last_seq = 0;
    for (who, action) in [
        ("bob", "approve"),
        ("cat", "authorize"),
        ("dan", "execute"),
        ("rex", "release"),
    ] {
        let body = if action == "approve" {
            json!({})
        } else {
            let code = org.user(who).code();
            json!({ "otp": code })
        };
        let user = org.people[who].clone();
        let (status, headers, answer) = stack
            .send(
                Method::POST,
                Some(&user.key),
                &format!("/v1/payouts/{po}/{action}"),
                Some(body),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{action}: {answer}");
        let seq = committed(&headers);
        assert!(seq > last_seq);
        last_seq = seq;
        // Read-your-writes: a GET right after the POST sees it.
        let (status, reflected, view) =
            get_full(&stack, &org.people["aud"], &format!("/v1/payouts/{po}")).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert!(reflected >= seq, "{reflected} < {seq}");
        assert_eq!(view["status"], answer["status"]);
    }
    let (_, _, view) = get_full(&stack, &org.people["aud"], &format!("/v1/payouts/{po}")).await;
    assert_eq!(view["status"], "released");
    assert_eq!(view["amount"], "1250.50");
    assert_eq!(view["currency"], "EUR");
    assert_eq!(view["reference"], "r");
    assert_eq!(view["payee"], org.payee.as_str());
    assert_eq!(view["account"], org.account.as_str());
    for (gate, who) in [
        ("requested", "ann"),
        ("authorized", "cat"),
        ("executed", "dan"),
        ("released", "rex"),
    ] {
        assert_eq!(
            view[gate]["by"],
            org.people[who].id.as_str(),
            "{gate}: {view}"
        );
        assert!(view[gate]["at"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(view[gate]["seq"].as_u64().is_some());
    }
    assert_eq!(view["approvals"][0]["by"], org.people["bob"].id.as_str());
    assert_eq!(view["approvers"], json!([org.people["bob"].id]));
    assert_eq!(view["requester"], org.people["ann"].id.as_str());
    assert!(view["ended"].is_null());
    assert_eq!(view["released"]["seq"].as_u64(), Some(last_seq));

    let (status, reflected, account) = get_full(
        &stack,
        &org.people["eve"],
        &format!("/v1/accounts/{}", org.account),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(reflected >= last_seq);
    assert_eq!(
        account,
        json!({
            "account": org.account, "currency": "EUR", "available": "48749.50",
            "held": "0.00", "released": "1250.50", "deposited": "50000.00",
            "reflects_seq": reflected,
        })
    );
    // A payout that failed after execution: the hold is back, the reason recorded.
    let failed = request(&stack, &org, "10.00").await;
    for (who, action) in [("bob", "approve"), ("cat", "authorize"), ("dan", "execute")] {
        let (status, body) = act(&stack, &mut org, who, &failed, action).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let rex = org.people["rex"].clone();
    let (status, body) = stack
        .post(
            &rex,
            &format!("/v1/payouts/{failed}/fail"),
            json!({"reason": "bounced"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, _, view) = get_full(&stack, &org.people["aud"], &format!("/v1/payouts/{failed}")).await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["ended"]["reason"], "bounced");
    assert_eq!(view["ended"]["by"], org.people["rex"].id.as_str());
    let (_, _, account) = get_full(
        &stack,
        &org.people["eve"],
        &format!("/v1/accounts/{}", org.account),
    )
    .await;
    assert_eq!(
        (account["available"].as_str(), account["held"].as_str()),
        (Some("48749.50"), Some("0.00"))
    );

    // Reads need ledger.read; unknown parameters and ids are refused.
    let nobody = stack.invite_user(&org.admin, "nobody", false).await;
    for path in [
        format!("/v1/accounts/{}", org.account),
        format!("/v1/payouts/{po}"),
        "/v1/payouts".to_owned(),
    ] {
        let (status, body) = stack
            .call(Method::GET, Some(&nobody.key), &path, None)
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{path}"
        );
    }
    let eve = org.people["eve"].clone();
    for (path, expected) in [
        (
            format!("/v1/accounts/{}?color=red", org.account),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("/v1/accounts/{}?min_seq=-1", org.account),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/accounts/acct_nothere".to_owned(),
            StatusCode::NOT_FOUND,
        ),
        ("/v1/accounts/not-an-id".to_owned(), StatusCode::NOT_FOUND),
        ("/v1/payouts/po_nothere".to_owned(), StatusCode::NOT_FOUND),
    ] {
        let (status, headers, body) = stack
            .send(Method::GET, Some(&eve.key), &path, None, &[])
            .await;
        assert_eq!(status, expected, "{path}: {body}");
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{path}"
        );
    }
}

async fn lists_filter_and_page_without_gaps_or_repeats(backend: Backend) {
    let stack = Stack::new(backend).await;
    let org = org(&stack, "acme").await;
    let mut payouts = Vec::new();
    for n in 0..7 {
        payouts.push(request(&stack, &org, &format!("{}.00", n + 1)).await);
    }
    let bob = org.people["bob"].clone();
    for po in &payouts[2..5] {
        let (status, body) = stack
            .post(&bob, &format!("/v1/payouts/{po}/approve"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // A second account with one payout from it.
    let eve = org.people["eve"].clone();
    let (status, body) = stack
        .post(
            &eve,
            "/v1/accounts",
            json!({"currency": "EUR", "name": "Two"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let second = body["account"].as_str().expect("account").to_owned();
    let ann = org.people["ann"].clone();
    let (status, body) = stack
        .post(&ann, "/v1/payouts", json!({"account": second, "payee": org.payee, "amount": "3.00", "currency": "EUR", "reference": "two"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let from_second = body["payout"].as_str().expect("payout").to_owned();
    let mut everything = payouts.clone();
    everything.push(from_second.clone());

    let aud = org.people["aud"].clone();
    for limit in [1, 2, 3, 100] {
        let listed = all_pages(
            &stack,
            &aud,
            &format!("/v1/payouts?limit={limit}"),
            "payouts",
        )
        .await;
        assert_eq!(
            ids(&listed, "payout"),
            everything,
            "limit {limit}: in request order, once each"
        );
    }
    let approved = all_pages(
        &stack,
        &aud,
        "/v1/payouts?status=approved&limit=2",
        "payouts",
    )
    .await;
    assert_eq!(ids(&approved, "payout"), payouts[2..5].to_vec());
    let requested = all_pages(
        &stack,
        &aud,
        "/v1/payouts?status=requested&limit=2",
        "payouts",
    )
    .await;
    assert_eq!(requested.len(), 5);
    let by_account = all_pages(
        &stack,
        &aud,
        &format!("/v1/payouts?account={second}"),
        "payouts",
    )
    .await;
    assert_eq!(ids(&by_account, "payout"), vec![from_second.clone()]);
    let both = all_pages(
        &stack,
        &aud,
        &format!(
            "/v1/payouts?account={}&status=approved&limit=1",
            org.account
        ),
        "payouts",
    )
    .await;
    assert_eq!(ids(&both, "payout"), payouts[2..5].to_vec());
    // limit is bounded: 0 is one, a huge one is the maximum.
    let (_, _, page) = get_full(&stack, &aud, "/v1/payouts?limit=0").await;
    assert_eq!(page["payouts"].as_array().map(Vec::len), Some(1));
    let (_, _, page) = get_full(&stack, &aud, "/v1/payouts?limit=4000000000").await;
    assert_eq!(page["payouts"].as_array().map(Vec::len), Some(8));
    assert!(page["next"].is_null());
    for bad in [
        "/v1/payouts?status=lost",
        "/v1/payouts?account=nope!",
        "/v1/payouts?after=po_x",
        "/v1/payouts?limit=-3",
        "/v1/payouts?sort=amount",
    ] {
        let (status, body) = stack.call(Method::GET, Some(&aud.key), bad, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["code"], "validation");
    }
}

async fn audit_view_with_request_ids(backend: Backend) {
    let stack = Stack::new(backend).await;
    let org = org(&stack, "acme").await;
    let ann = org.people["ann"].clone();
    let aud = org.people["aud"].clone();
    // A request with the client's id; the id is in the audit row of its event.
    let (status, headers, body) = stack
        .send(
            Method::POST,
            Some(&ann.key),
            "/v1/payouts",
            Some(json!({"account": org.account, "payee": org.payee, "amount": "5.00", "currency": "EUR", "reference": "a"})),
            &[("x-request-id", "client-req-1")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(headers["x-request-id"], "client-req-1");
    let po = body["payout"].as_str().expect("payout").to_owned();
    let seq = committed(&headers);
    // A denied attempt (the requester approving her own payout) is a row too, with its id.
    let (status, headers, body) = stack
        .send(
            Method::POST,
            Some(&ann.key),
            &format!("/v1/payouts/{po}/approve"),
            Some(json!({})),
            &[("x-request-id", "client-req-2")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Recorded as command.rejected, but not a write of the client's: no Ledger-Seq.
    assert!(!headers.contains_key("ledger-seq"));
    let denied_seq = seq + 1;
    // An unacceptable id is replaced, and the replacement is what the chain records.
    let (status, headers, _) = stack
        .send(
            Method::POST,
            Some(&org.people["bob"].key),
            &format!("/v1/payouts/{po}/approve"),
            Some(json!({})),
            &[("x-request-id", "no spaces; or \"quotes\" please")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let replaced = headers["x-request-id"].to_str().expect("ascii").to_owned();
    assert!(!replaced.contains(' ') && !replaced.is_empty());
    // Without any id, the server's own.
    let (status, headers, _) = stack
        .send(
            Method::POST,
            Some(&ann.key),
            &format!("/v1/payouts/{po}/cancel"),
            Some(json!({"reason": "changed my mind"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let generated = headers["x-request-id"].to_str().expect("ascii").to_owned();

    let entries = all_pages(&stack, &aud, "/v1/audit?limit=3", "entries").await;
    let seqs: Vec<u64> = entries
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "every event once, in order"
    );
    let at = |seq: u64| {
        entries
            .iter()
            .find(|e| e["seq"] == seq)
            .expect("entry")
            .clone()
    };
    let requested = at(seq);
    assert_eq!(
        (
            requested["action"].as_str(),
            requested["subject"].as_str(),
            requested["result"].as_str(),
            requested["request_id"].as_str()
        ),
        (
            Some("payout.request"),
            Some(po.as_str()),
            Some("accepted"),
            Some("client-req-1")
        )
    );
    assert_eq!(requested["actor"], ann.id.as_str());
    assert!(requested["reason"].is_null());
    let denied = at(denied_seq);
    assert_eq!(
        (
            denied["action"].as_str(),
            denied["result"].as_str(),
            denied["reason"].as_str(),
            denied["request_id"].as_str()
        ),
        (
            Some("payout.approve"),
            Some("denied"),
            Some("forbidden"),
            Some("client-req-2")
        )
    );
    assert_eq!(
        at(denied_seq + 1)["request_id"].as_str(),
        Some(replaced.as_str())
    );
    assert_eq!(
        at(denied_seq + 2)["request_id"].as_str(),
        Some(generated.as_str())
    );
    // One row per decided command: the export has exactly as many events.
    let (text, _) = stack::export(&stack, &aud).await;
    let events = text
        .lines()
        .filter(|l| l.contains("\"type\":\"event\""))
        .count();
    assert_eq!(entries.len(), events);
    assert!(
        text.contains("\"request_id\":\"client-req-1\""),
        "the id is in the chain"
    );

    // Filters.
    let denied_only = all_pages(&stack, &aud, "/v1/audit?result=denied", "entries").await;
    assert_eq!(
        denied_only
            .iter()
            .map(|e| e["seq"].as_u64())
            .collect::<Vec<_>>(),
        vec![Some(denied_seq)]
    );
    let by_ann = all_pages(
        &stack,
        &aud,
        &format!("/v1/audit?actor={}&limit=1", ann.id),
        "entries",
    )
    .await;
    assert!(by_ann.len() >= 3 && by_ann.iter().all(|e| e["actor"] == ann.id.as_str()));
    let approvals = all_pages(
        &stack,
        &aud,
        "/v1/audit?action=payout.approve&result=accepted",
        "entries",
    )
    .await;
    assert_eq!(approvals.len(), 1);
    let from = requested["at"].as_str().expect("at");
    let to = at(denied_seq + 2)["at"].as_str().expect("at").to_owned();
    let window = all_pages(
        &stack,
        &aud,
        &format!("/v1/audit?from={from}&to={to}"),
        "entries",
    )
    .await;
    assert!(window
        .iter()
        .all(|e| e["at"].as_str() >= Some(from) && e["at"].as_str() < Some(to.as_str())));
    assert!(window.iter().any(|e| e["seq"] == seq));
    let offset = all_pages(
        &stack,
        &aud,
        "/v1/audit?from=2000-01-01T01:00:00%2B01:00&to=2999-01-01T00:00:00Z&limit=50",
        "entries",
    )
    .await;
    assert_eq!(offset.len(), entries.len());

    // audit.read: the auditor and the admin, not the requester.
    let (status, body) = stack
        .call(Method::GET, Some(&ann.key), "/v1/audit", None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, _) = stack
        .call(Method::GET, Some(&org.admin.key), "/v1/audit?limit=1", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = stack.call(Method::GET, None, "/v1/audit", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for bad in [
        "/v1/audit?result=maybe",
        "/v1/audit?from=yesterday",
        "/v1/audit?to=2026-11-22",
        "/v1/audit?from=2026-11-23T00:00:00Z&to=2026-11-22T00:00:00Z",
        "/v1/audit?actor=alice",
        "/v1/audit?action=DROP%20TABLE",
        "/v1/audit?after=x",
        "/v1/audit?tenant=beta",
    ] {
        let (status, body) = stack.call(Method::GET, Some(&aud.key), bad, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
}

async fn min_seq_waits_or_answers_503(backend: Backend) {
    let stack = Stack::with_serve_args(backend, &["--read-wait-ms", "1500"]).await;
    let org = org(&stack, "acme").await;
    let eve = org.people["eve"].clone();
    let deposit = format!("/v1/accounts/{}/deposits", org.account);
    let seq = deposit_one(&stack, &eve, &deposit).await;
    let account = format!("/v1/accounts/{}", org.account);
    let (status, reflected, body) =
        get_full(&stack, &eve, &format!("{account}?min_seq={seq}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(reflected >= seq);
    assert_eq!(body["available"], "50001.00");

    // Waiting for a seq not yet written: the read returns once a deposit commits it.
    let waiting = {
        let (client, base, key, path) = (
            stack.client.clone(),
            stack.base.clone(),
            eve.key.clone(),
            format!("{account}?min_seq={}", seq + 1),
        );
        tokio::spawn(async move {
            let response = client
                .get(format!("{base}{path}"))
                .bearer_auth(key)
                .send()
                .await
                .expect("send");
            let status = response.status();
            (status, response.json::<Value>().await.expect("json"))
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, _, _) = stack
        .send(
            Method::POST,
            Some(&eve.key),
            &deposit,
            Some(json!({"amount": "2.00"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = waiting.await.expect("waiting read");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["reflects_seq"].as_u64() >= Some(seq + 1));
    assert_eq!(body["available"], "50003.00");

    // A seq that does not come within the wait: 503 with Retry-After, no stale data.
    for path in [
        format!("{account}?min_seq={}", seq + 1000),
        format!("/v1/payouts?min_seq={}", seq + 1000),
        format!("/v1/audit?min_seq={}", seq + 1000),
    ] {
        let who = if path.starts_with("/v1/audit") {
            &org.people["aud"]
        } else {
            &eve
        };
        let (status, headers, body) = stack
            .send(Method::GET, Some(&who.key), &path, None, &[])
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert_eq!(body["code"], "projection_behind");
        assert!(headers.contains_key("retry-after"));
        assert!(body.get("available").is_none() && body.get("payouts").is_none());
    }
}

async fn another_tenants_objects_are_404(backend: Backend) {
    let stack = Stack::new(backend).await;
    let acme = org(&stack, "acme").await;
    let beta = org(&stack, "beta").await;
    let po = request(&stack, &acme, "9.00").await;
    let beta_po = request(&stack, &beta, "8.00").await;
    for who in ["eve", "aud"] {
        let user = &beta.people[who];
        for path in [
            format!("/v1/accounts/{}", acme.account),
            format!("/v1/payouts/{po}"),
        ] {
            let (status, body) = stack.call(Method::GET, Some(&user.key), &path, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{who} {path}: {body}");
        }
    }
    let listed = all_pages(&stack, &beta.people["aud"], "/v1/payouts", "payouts").await;
    assert_eq!(ids(&listed, "payout"), vec![beta_po.clone()]);
    let listed = all_pages(
        &stack,
        &beta.people["aud"],
        &format!("/v1/payouts?account={}", acme.account),
        "payouts",
    )
    .await;
    assert!(listed.is_empty());
    let audit = all_pages(&stack, &beta.people["aud"], "/v1/audit", "entries").await;
    let subjects: BTreeSet<&str> = audit.iter().filter_map(|e| e["subject"].as_str()).collect();
    assert!(!subjects.contains(po.as_str()) && subjects.contains(beta_po.as_str()));
    assert!(audit
        .iter()
        .all(|e| e["actor"] != acme.people["ann"].id.as_str()));
}

/// The answers of the reads, for comparing before and after a rebuild.
async fn answers(stack: &Stack, org: &Org, po: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (who, path) in [
        ("eve", format!("/v1/accounts/{}", org.account)),
        ("aud", format!("/v1/payouts/{po}")),
        ("aud", "/v1/payouts?limit=500".to_owned()),
        ("aud", "/v1/audit?limit=1000".to_owned()),
    ] {
        let (status, _, body) = get_full(stack, &org.people[who], &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        out.push(body);
    }
    out
}

async fn rebuild_gives_the_same_answers(backend: Backend) {
    let stack = Stack::new(backend).await;
    let mut org = org(&stack, "acme").await;
    let po = request(&stack, &org, "70.00").await;
    for (who, action) in [("bob", "approve"), ("cat", "authorize")] {
        let (status, body) = act(&stack, &mut org, who, &po, action).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let _other = request(&stack, &org, "1.00").await;
    let before = answers(&stack, &org, &po).await;

    // The rows are lost behind the service's back: the reads say so (they read the rows).
    stack.owner_sql("DELETE FROM projection_payouts").await;
    let (status, _) = stack
        .call(
            Method::GET,
            Some(&org.people["aud"].key),
            &format!("/v1/payouts/{po}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Rebuilt from the chain alone, every answer is what it was.
    for args in [
        &["projections", "rebuild", "--tenant", "acme"][..],
        &["projections", "rebuild"][..],
    ] {
        let output = stack.cli(args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed: Vec<Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert!(
            printed
                .iter()
                .any(|p| p["tenant"] == "acme" && p["seq"] == before[0]["reflects_seq"]),
            "{printed:?}"
        );
        assert_eq!(answers(&stack, &org, &po).await, before);
    }
    let output = stack.cli(&["projections", "rebuild", "--tenant", "Not A Slug"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--tenant"));

    // And the rows keep up after the rebuild.
    let (status, body) = act(&stack, &mut org, "dan", &po, "execute").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, _, view) = get_full(&stack, &org.people["aud"], &format!("/v1/payouts/{po}")).await;
    assert_eq!(view["status"], "executed");
}

on_both_backends!(
    balances_and_gates_from_the_read_model,
    lists_filter_and_page_without_gaps_or_repeats,
    audit_view_with_request_ids,
    min_seq_waits_or_answers_503,
    another_tenants_objects_are_404,
    rebuild_gives_the_same_answers,
    documented_query_parameters_are_accepted,
);

/// Two API processes on one PostgreSQL database, each with its own projector: writes
/// through both, reads through both (the second waits, by `min_seq`, for what the first
/// committed), and the rows stay exactly those of the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes_share_the_projections() {
    let mut stack = Stack::new(Backend::Postgres).await;
    let org = org(&stack, "acme").await;
    let first = stack.base.clone();
    let first_server = stack.server.take();
    stack.start().await;
    let second = stack.base.clone();
    let eve = org.people["eve"].clone();
    let deposit = format!("/v1/accounts/{}/deposits", org.account);
    let account = format!("/v1/accounts/{}", org.account);
    let mut total = 50_000;
    for n in 0..12 {
        let (writer, reader) = if n % 2 == 0 {
            (&first, &second)
        } else {
            (&second, &first)
        };
        let response = stack
            .client
            .post(format!("{writer}{deposit}"))
            .bearer_auth(&eve.key)
            .json(&json!({"amount": format!("{}.00", n + 1)}))
            .send()
            .await
            .expect("deposit");
        assert_eq!(response.status(), StatusCode::CREATED);
        total += n + 1;
        let seq = committed(response.headers());
        let response = stack
            .client
            .get(format!("{reader}{account}?min_seq={seq}"))
            .bearer_auth(&eve.key)
            .send()
            .await
            .expect("read");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        assert!(body["reflects_seq"].as_u64() >= Some(seq));
        assert_eq!(
            body["available"],
            format!("{total}.00"),
            "read on the other process"
        );
    }
    // Every event once in the audit view, whichever process projected it.
    let entries = all_pages(&stack, &org.people["aud"], "/v1/audit?limit=7", "entries").await;
    let (text, _) = stack::export(&stack, &org.people["aud"]).await;
    let events = text
        .lines()
        .filter(|l| l.contains("\"type\":\"event\""))
        .count();
    assert_eq!(entries.len(), events);
    let seqs: Vec<u64> = entries
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=events as u64).collect::<Vec<_>>());
    if let Some(mut child) = first_server {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Every query parameter `/openapi.json` lists for a read is accepted by its route, with
/// a typical value; and the document lists the read routes.
async fn documented_query_parameters_are_accepted(backend: Backend) {
    let stack = Stack::new(backend).await;
    let org = org(&stack, "acme").await;
    let po = request(&stack, &org, "2.00").await;
    let (_, doc) = stack.call(Method::GET, None, "/openapi.json", None).await;
    let aud = org.people["aud"].clone();
    let sample = |name: &str| -> String {
        match name {
            "min_seq" | "after" => "1".into(),
            "limit" => "5".into(),
            "status" => "requested".into(),
            "account" => org.account.clone(),
            "actor" => org.people["ann"].id.clone(),
            "action" => "payout.request".into(),
            "result" => "accepted".into(),
            "from" => "2000-01-01T00:00:00Z".into(),
            "to" => "2999-01-01T00:00:00Z".into(),
            other => panic!("no sample value for {other}"),
        }
    };
    let mut checked = 0;
    for (method, path, names) in ledger_api::routes::QUERY_PARAMETERS.iter() {
        assert_eq!(*method, "get");
        let listed: Vec<&str> = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(&listed, names, "{path} in /openapi.json");
        if *path == "/v1/events/stream" {
            continue; // an endless stream; its `after` is the feed's
        }
        let concrete = path
            .replace(
                "/v1/accounts/{id}",
                &format!("/v1/accounts/{}", org.account),
            )
            .replace("{id}", &po);
        for name in *names {
            let url = format!("{concrete}?{name}={}", sample(name).replace('+', "%2B"));
            let (status, body) = stack.call(Method::GET, Some(&aud.key), &url, None).await;
            assert_eq!(status, StatusCode::OK, "{url}: {body}");
            checked += 1;
        }
        let (status, _) = stack
            .call(
                Method::GET,
                Some(&aud.key),
                &format!("{concrete}?undocumented=1"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{concrete}");
    }
    assert!(checked >= 16);
}

/// The embedded store's WAL is copied back by the server's own task (not by the commits):
/// with a low reset bound it finishes checkpoints while deposits commit, and every
/// deposit is there afterwards, also after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_is_checkpointed_in_the_background() {
    let mut stack = Stack::with_serve_args(Backend::Sqlite, &["--wal-reset-frames", "1"]).await;
    let org = org(&stack, "acme").await;
    let eve = org.people["eve"].clone();
    let deposit = format!("/v1/accounts/{}/deposits", org.account);
    let checkpoints = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("ledger_wal_checkpoints_total "))
            .and_then(|n| n.trim().parse().ok())
            .expect("ledger_wal_checkpoints_total in /metrics")
    };
    let (mut finished, mut made) = (0, 0);
    for _ in 0..40 {
        let (status, body) = stack.post(&eve, &deposit, json!({"amount": "1.00"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        made += 1;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (status, metrics) = stack.call(Method::GET, None, "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        finished = checkpoints(metrics.as_str().expect("text"));
        if finished >= 2 {
            break;
        }
    }
    assert!(finished >= 2, "{finished} background checkpoints finished");
    let seq = deposit_one(&stack, &eve, &deposit).await;
    made += 1;
    stack.stop();
    stack.start().await;
    let account = format!("/v1/accounts/{}?min_seq={seq}", org.account);
    let (status, body) = stack.get(&eve, &account).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["available"], format!("{}.00", 50_000 + made), "{body}");
}
