//! Black-box tests of the parts of the HTTP contract (DESIGN section 7) that http.rs does
//! not drive: the approval policy, checkpoints, role revocation, the masked payee, batch
//! execute and release (and all-or-nothing failures), the 409 answers, invites, the TOTP
//! enrolment URI and the exact lockout threshold. The real `ledger-api` binary, over
//! HTTP, on SQLite and on PostgreSQL (`sqlite::…` and `postgres::…`).

mod process;
mod stack;

use ledger_core::checkpoint::Checkpoint;
use ledger_core::crypto::KeyPurpose;
use ledger_core::time::Timestamp;
use ledger_core::verify::verify_export;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stack::{act, export, kinds, org, request, Backend, Org, Stack, User};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Asserts a problem answer: its status and stable `code`.
#[track_caller]
fn assert_problem(answer: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(
        (answer.0, answer.1["code"].as_str()),
        (status, Some(code)),
        "{}",
        answer.1
    );
}

/// A payout as the read model shows it (read by the auditor).
async fn payout(stack: &Stack, org: &Org, id: &str) -> Value {
    let (status, body) = stack
        .get(&org.people["aud"], &format!("/v1/payouts/{id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The payout's status and its approvers.
async fn status_and_approvers(stack: &Stack, org: &Org, id: &str) -> (String, Vec<String>) {
    let view = payout(stack, org, id).await;
    let approvers = view["approvers"]
        .as_array()
        .expect("approvers")
        .iter()
        .map(|a| a.as_str().expect("id").to_owned())
        .collect();
    (
        view["status"].as_str().expect("status").to_owned(),
        approvers,
    )
}

/// The org account's `(available, held)`.
async fn balances(stack: &Stack, org: &Org) -> (String, String) {
    let (status, account) = stack
        .get(&org.people["eve"], &format!("/v1/accounts/{}", org.account))
        .await;
    assert_eq!(status, StatusCode::OK, "{account}");
    (
        account["available"].as_str().expect("available").to_owned(),
        account["held"].as_str().expect("held").to_owned(),
    )
}

/// Every `command.rejected` of an export as `(actor, action, subject, reason)`.
fn rejections(text: &str) -> Vec<(String, String, String, String)> {
    kinds(text, "command.rejected")
        .iter()
        .map(|e| {
            let field = |v: &Value| v.as_str().expect("text").to_owned();
            (
                field(&e["actor"]),
                field(&e["data"]["action"]),
                field(&e["data"]["subject"]),
                field(&e["data"]["reason"]),
            )
        })
        .collect()
}

fn rejection(
    actor: &str,
    action: &str,
    subject: &str,
    reason: &str,
) -> (String, String, String, String) {
    (
        actor.to_owned(),
        action.to_owned(),
        subject.to_owned(),
        reason.to_owned(),
    )
}

/// A batch action by `who` on `payouts`, with a fresh code for the 2FA actions.
async fn batch(
    stack: &Stack,
    org: &mut Org,
    who: &str,
    action: &str,
    payouts: &[&str],
) -> (StatusCode, Value) {
    let mut body = json!({ "payouts": payouts });
    if action != "approve" {
        body["otp"] = json!(org.user(who).code());
    }
    let user = org.people[who].clone();
    stack
        .post(&user, &format!("/v1/payouts/{action}"), body)
        .await
}

/// The statuses of a batch answer, in order.
fn batch_statuses(body: &Value) -> Vec<&str> {
    body["payouts"]
        .as_array()
        .expect("payouts")
        .iter()
        .map(|p| p["status"].as_str().expect("status"))
        .collect()
}

/// `POST /v1/users`: the new user's id and invite.
async fn invite(stack: &Stack, admin: &User, name: &str) -> (String, String) {
    let (status, body) = stack
        .post(admin, "/v1/users", json!({ "name": name }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["user"].as_str().expect("user").to_owned(),
        body["invite"].as_str().expect("invite").to_owned(),
    )
}

async fn redeem_answer(stack: &Stack, invite: &str) -> (StatusCode, Value) {
    stack
        .call(
            Method::POST,
            None,
            "/v1/invites/redeem",
            Some(json!({ "invite": invite })),
        )
        .await
}

/// The stored invite record's `expires_at` text.
async fn invite_expiry(stack: &Stack, invite: &str) -> String {
    let id = invite.split_once('.').expect("id.secret").0;
    let values = stack
        .owner_strings(&format!(
            "SELECT value FROM records WHERE kind = 'invite' AND id = '{id}'"
        ))
        .await;
    assert_eq!(values.len(), 1, "{values:?}");
    let record: Value = serde_json::from_str(&values[0]).expect("json record");
    record["expires_at"]
        .as_str()
        .expect("expires_at")
        .to_owned()
}

/// Rewrites the stored invite's expiry to `at` (the same SQL on both backends).
async fn set_invite_expiry(stack: &Stack, invite: &str, at: Timestamp) {
    let id = invite.split_once('.').expect("id.secret").0;
    let old = invite_expiry(stack, invite).await;
    stack
        .owner_sql(&format!(
            "UPDATE records SET value = replace(value, '\"expires_at\":\"{old}\"', \
             '\"expires_at\":\"{at}\"') WHERE kind = 'invite' AND id = '{id}'"
        ))
        .await;
    assert_eq!(invite_expiry(stack, invite).await, at.to_string());
}

fn now_micros() -> i64 {
    ledger_api::util::now().unix_micros()
}

// ---------------------------------------------------------------------------------------
// 1. The approval policy
// ---------------------------------------------------------------------------------------

async fn approval_policy_counts_distinct_approvers(backend: Backend) {
    let stack = Stack::new(backend).await;
    let mut org = org(&stack, "acme").await;
    let mut admin = org.admin.clone();
    let rules = json!([{"currency": "EUR", "min_amount": "10000.00", "approvals": 2}]);

    // Without a code: refused, recorded, and the policy is unchanged.
    let answer = stack
        .call(
            Method::PUT,
            Some(&admin.key),
            "/v1/policy/approvals",
            Some(json!({ "rules": rules })),
        )
        .await;
    assert_problem(&answer, StatusCode::FORBIDDEN, "two_factor_required");
    let before = request(&stack, &org, "10000.00").await;
    assert_eq!(payout(&stack, &org, &before).await["approvals_required"], 1);

    let otp = admin.code();
    let (status, body) = stack
        .call(
            Method::PUT,
            Some(&admin.key),
            "/v1/policy/approvals",
            Some(json!({ "rules": rules, "otp": otp })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rules"], rules);

    // At the threshold: two distinct approvals.
    let big = request(&stack, &org, "10000.00").await;
    assert_eq!(payout(&stack, &org, &big).await["approvals_required"], 2);
    let bob = org.people["bob"].id.clone();
    let bea = org.people["bea"].id.clone();
    let (status, body) = act(&stack, &mut org, "bob", &big, "approve").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "requested");
    assert_eq!(
        status_and_approvers(&stack, &org, &big).await,
        ("requested".to_owned(), vec![bob.clone()])
    );
    // The same approver again does not count twice.
    let answer = act(&stack, &mut org, "bob", &big, "approve").await;
    assert_problem(&answer, StatusCode::FORBIDDEN, "four_eyes");
    assert_eq!(
        status_and_approvers(&stack, &org, &big).await,
        ("requested".to_owned(), vec![bob.clone()])
    );
    let (status, body) = act(&stack, &mut org, "bea", &big, "approve").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved");
    let (status, mut approvers) = status_and_approvers(&stack, &org, &big).await;
    approvers.sort();
    let mut expected = vec![bob.clone(), bea];
    expected.sort();
    assert_eq!((status.as_str(), approvers), ("approved", expected));

    // Under the threshold: one approval.
    let small = request(&stack, &org, "9999.99").await;
    assert_eq!(payout(&stack, &org, &small).await["approvals_required"], 1);
    let (status, body) = act(&stack, &mut org, "bob", &small, "approve").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved");
    assert_eq!(
        status_and_approvers(&stack, &org, &small).await,
        ("approved".to_owned(), vec![bob.clone()])
    );

    let (text, keys) = export(&stack, &org.people["aud"]).await;
    let updated = kinds(&text, "policy.updated");
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0]["data"]["rules"], rules);
    let denied = rejections(&text);
    assert!(denied.contains(&rejection(
        &admin.id,
        "policy.update",
        "policy:approvals",
        "two_factor_required"
    )));
    assert!(denied.contains(&rejection(&bob, "payout.approve", &big, "four_eyes")));
    assert!(verify_export(&text, Some(keys))
        .expect("usable")
        .is_intact());
}

// ---------------------------------------------------------------------------------------
// 2. Checkpoints
// ---------------------------------------------------------------------------------------

async fn checkpoints_sign_the_exported_head(backend: Backend) {
    let stack = Stack::new(backend).await;
    let org = org(&stack, "acme").await;
    let auditor = org.people["aud"].clone();

    let answer = stack.get(&auditor, "/v1/checkpoints/latest").await;
    assert_problem(&answer, StatusCode::NOT_FOUND, "not_found");
    let answer = stack
        .post(&org.people["ann"], "/v1/checkpoints", json!({}))
        .await;
    assert_problem(&answer, StatusCode::FORBIDDEN, "forbidden");

    let (status, posted) = stack.post(&auditor, "/v1/checkpoints", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{posted}");
    let (status, latest) = stack.get(&auditor, "/v1/checkpoints/latest").await;
    assert_eq!(status, StatusCode::OK, "{latest}");
    assert_eq!(latest, posted);
    let checkpoint: Checkpoint = serde_json::from_value(latest.clone()).expect("a checkpoint");
    assert_eq!(checkpoint.tenant.as_str(), "acme");

    // It signs the head the export ends with.
    let (text, keys) = export(&stack, &auditor).await;
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
        .filter(|l| l["type"] == "event")
        .map(|l| l["event"].clone())
        .collect();
    let last = events.last().expect("events");
    assert_eq!(last["seq"], checkpoint.seq);
    assert_eq!(events.len() as u64, checkpoint.seq);
    assert_eq!(
        last["hash"].as_str(),
        Some(checkpoint.head.to_hex().as_str())
    );
    let exported: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
        .filter(|l| l["type"] == "checkpoint")
        .map(|l| l["checkpoint"].clone())
        .collect();
    assert_eq!(exported, vec![latest.clone()]);

    // Its signature verifies with the published checkpoint key, and only as signed.
    assert_eq!(
        keys.get(&checkpoint.key_id).expect("published key").purpose,
        KeyPurpose::Checkpoint
    );
    checkpoint.verify_signature(&keys).expect("signature");
    let mut forged = checkpoint.clone();
    forged.seq -= 1;
    assert!(forged.verify_signature(&keys).is_err());
    let report = verify_export(&text, Some(keys)).expect("usable");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.summary.checkpoints_verified, 1);

    // New events do not move the latest checkpoint; a new checkpoint does.
    request(&stack, &org, "10.00").await;
    let (status, still) = stack.get(&auditor, "/v1/checkpoints/latest").await;
    assert_eq!((status, &still), (StatusCode::OK, &latest));
    let (status, newer) = stack.post(&auditor, "/v1/checkpoints", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{newer}");
    assert_eq!(newer["seq"], checkpoint.seq + 1);
    let (status, now_latest) = stack.get(&auditor, "/v1/checkpoints/latest").await;
    assert_eq!((status, &now_latest), (StatusCode::OK, &newer));
    let (_, keys) = export(&stack, &auditor).await;
    let newer: Checkpoint = serde_json::from_value(newer).expect("a checkpoint");
    newer.verify_signature(&keys).expect("signature");
}

// ---------------------------------------------------------------------------------------
// 3. Revoking roles
// ---------------------------------------------------------------------------------------

async fn revoked_role_is_refused_and_nobody_revokes_their_own(backend: Backend) {
    let stack = Stack::new(backend).await;
    let mut org = org(&stack, "acme").await;
    let admin = org.admin.clone();
    let bob = org.people["bob"].id.clone();
    let bea = org.people["bea"].clone();
    let po = request(&stack, &org, "100.00").await;

    let answer = stack
        .delete_key(&admin.key, &format!("/v1/users/{}/roles/admin", admin.id))
        .await;
    assert_problem(&answer, StatusCode::FORBIDDEN, "four_eyes");
    let answer = stack
        .delete_key(&bea.key, &format!("/v1/users/{bob}/roles/approver"))
        .await;
    assert_problem(&answer, StatusCode::FORBIDDEN, "forbidden");

    // The admin kept the role: the revocation goes through.
    let (status, body) = stack
        .delete_key(&admin.key, &format!("/v1/users/{bob}/roles/approver"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"user": bob, "roles": []}));

    let answer = act(&stack, &mut org, "bob", &po, "approve").await;
    assert_problem(&answer, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(
        status_and_approvers(&stack, &org, &po).await,
        ("requested".to_owned(), Vec::new())
    );
    // Once revoked, there is nothing left to revoke.
    let answer = stack
        .delete_key(&admin.key, &format!("/v1/users/{bob}/roles/approver"))
        .await;
    assert_problem(&answer, StatusCode::CONFLICT, "invalid_state");
    let (status, body) = act(&stack, &mut org, "bea", &po, "approve").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("approved"))
    );

    let (text, keys) = export(&stack, &org.people["aud"]).await;
    let revoked = kinds(&text, "role.revoked");
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        (
            &revoked[0]["actor"],
            &revoked[0]["data"]["user"],
            &revoked[0]["data"]["role"]
        ),
        (&json!(admin.id), &json!(bob), &json!("approver"))
    );
    let denied = rejections(&text);
    for expected in [
        rejection(
            &admin.id,
            "role.revoke",
            &format!("{}:admin", admin.id),
            "four_eyes",
        ),
        rejection(
            &bea.id,
            "role.revoke",
            &format!("{bob}:approver"),
            "forbidden",
        ),
        rejection(&bob, "payout.approve", &po, "forbidden"),
        rejection(
            &admin.id,
            "role.revoke",
            &format!("{bob}:approver"),
            "invalid_state",
        ),
    ] {
        assert!(denied.contains(&expected), "{expected:?} not in {denied:?}");
    }
    assert!(verify_export(&text, Some(keys))
        .expect("usable")
        .is_intact());
}

// ---------------------------------------------------------------------------------------
// 4. Payees
// ---------------------------------------------------------------------------------------

async fn payee_shows_the_iban_masked(backend: Backend) {
    let stack = Stack::new(backend).await;
    let org = org(&stack, "acme").await;
    let path = format!("/v1/payees/{}", org.payee);
    let expected = json!({"payee": org.payee, "name": "Lark", "iban": "DE**********3000"});
    for reader in [&org.people["ann"], &org.admin] {
        let (status, body) = stack.get(reader, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, expected);
    }
    // Written with spaces: masked all the same.
    let spaced = "GB82 WEST 1234 5698 7654 32";
    let (status, body) = stack
        .post(
            &org.admin,
            "/v1/payees",
            json!({"name": "Wren", "iban": spaced}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["payee"].as_str().expect("payee").to_owned();
    let (status, body) = stack
        .get(&org.people["ann"], &format!("/v1/payees/{id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"payee": id, "name": "Wren", "iban": "GB**********5432"})
    );

    let answer = stack.get(&org.people["bob"], &path).await;
    assert_problem(&answer, StatusCode::FORBIDDEN, "forbidden");
    let answer = stack
        .get(&org.people["ann"], "/v1/payees/pay_doesnotexist0000")
        .await;
    assert_problem(&answer, StatusCode::NOT_FOUND, "not_found");
}

// ---------------------------------------------------------------------------------------
// 5. Batches: execute, release, and all or nothing
// ---------------------------------------------------------------------------------------

async fn batch_execute_release_and_all_or_nothing(backend: Backend) {
    let stack = Stack::new(backend).await;
    let mut org = org(&stack, "acme").await;
    let a = request(&stack, &org, "100.00").await;
    let b = request(&stack, &org, "250.50").await;
    let g = request(&stack, &org, "40.00").await;

    let (status, body) = batch(&stack, &mut org, "bob", "approve", &[&a, &b, &g]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(batch_statuses(&body), ["approved"; 3]);
    let (status, body) = batch(&stack, &mut org, "cat", "authorize", &[&a, &b, &g]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(batch_statuses(&body), ["authorized"; 3]);
    assert_eq!(
        balances(&stack, &org).await,
        ("49609.50".to_owned(), "390.50".to_owned())
    );

    let (status, body) = batch(&stack, &mut org, "dan", "execute", &[&a, &b]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(batch_statuses(&body), ["executed"; 2]);
    assert_eq!(
        balances(&stack, &org).await,
        ("49609.50".to_owned(), "390.50".to_owned())
    );
    let (status, body) = batch(&stack, &mut org, "rex", "release", &[&a, &b]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(batch_statuses(&body), ["released"; 2]);
    for id in [&a, &b] {
        assert_eq!(payout(&stack, &org, id).await["status"], "released");
    }
    assert_eq!(payout(&stack, &org, &g).await["status"], "authorized");
    assert_eq!(
        balances(&stack, &org).await,
        ("49609.50".to_owned(), "40.00".to_owned())
    );

    // A failing approval batch: the valid payout first, then one already approved.
    let c = request(&stack, &org, "5.00").await;
    let d = request(&stack, &org, "6.00").await;
    let (status, _) = act(&stack, &mut org, "bob", &d, "approve").await;
    assert_eq!(status, StatusCode::OK);
    let answer = batch(&stack, &mut org, "bob", "approve", &[&c, &d]).await;
    assert_problem(&answer, StatusCode::CONFLICT, "invalid_state");
    assert_eq!(
        status_and_approvers(&stack, &org, &c).await,
        ("requested".to_owned(), Vec::new())
    );

    // ... and one of an approver who requested it himself: bea may request now, ann
    // may approve, and ann's batch holds bea's payout first and her own second.
    let mut admin = org.admin.clone();
    let otp = admin.code();
    let grants = json!([
        {"user": org.people["ann"].id, "role": "approver"},
        {"user": org.people["bea"].id, "role": "requester"},
    ]);
    let (status, body) = stack
        .post(&admin, "/v1/roles", json!({"grants": grants, "otp": otp}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = stack
        .post(
            &org.people["bea"],
            "/v1/payouts",
            json!({"account": org.account, "payee": org.payee, "amount": "7.00", "currency": "EUR", "reference": "r"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let f = body["payout"].as_str().expect("payout").to_owned();
    let answer = batch(&stack, &mut org, "ann", "approve", &[&f, &c]).await;
    assert_problem(&answer, StatusCode::FORBIDDEN, "four_eyes");
    for id in [&f, &c] {
        assert_eq!(
            status_and_approvers(&stack, &org, id).await,
            ("requested".to_owned(), Vec::new())
        );
    }

    // A failing execute batch (2FA): the authorized payout first, then one only approved.
    let answer = batch(&stack, &mut org, "dan", "execute", &[&g, &d]).await;
    assert_problem(&answer, StatusCode::CONFLICT, "invalid_state");
    assert_eq!(payout(&stack, &org, &g).await["status"], "authorized");
    assert_eq!(payout(&stack, &org, &d).await["status"], "approved");
    assert_eq!(
        balances(&stack, &org).await,
        ("49609.50".to_owned(), "40.00".to_owned())
    );

    // One proof per batch, carried by each of its events with the list.
    let (text, keys) = export(&stack, &org.people["aud"]).await;
    for (kind, actor) in [("payout.executed", "dan"), ("payout.released", "rex")] {
        let events = kinds(&text, kind);
        assert_eq!(events.len(), 2, "{kind}");
        for event in &events {
            let data = &event["data"];
            assert_eq!(data["batch"], json!([a, b]), "{kind}");
            assert_eq!(
                data["two_factor"], events[0]["data"]["two_factor"],
                "{kind}"
            );
            assert_eq!(
                data["two_factor"]["subject"],
                ledger_core::proof::batch_subject(&[&a, &b]),
                "{kind}"
            );
            assert_eq!(data["two_factor"]["actor"], org.people[actor].id, "{kind}");
        }
    }
    assert_eq!(kinds(&text, "payout.approved").len(), 4);
    let denied = rejections(&text);
    let bob = org.people["bob"].id.clone();
    let ann = org.people["ann"].id.clone();
    let dan = org.people["dan"].id.clone();
    for expected in [
        rejection(&bob, "payout.approve", &d, "invalid_state"),
        rejection(&ann, "payout.approve", &c, "four_eyes"),
        rejection(&dan, "payout.execute", &d, "invalid_state"),
    ] {
        assert!(denied.contains(&expected), "{expected:?} not in {denied:?}");
    }
    let report = verify_export(&text, Some(keys)).expect("usable");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.summary.money_movements_without_two_factor, 0);
}

// ---------------------------------------------------------------------------------------
// 6. 409s
// ---------------------------------------------------------------------------------------

async fn insufficient_funds_and_invalid_state_are_409_and_evidence(backend: Backend) {
    let stack = Stack::new(backend).await;
    let mut org = org(&stack, "acme").await;

    let big = request(&stack, &org, "50000.01").await;
    let (status, _) = act(&stack, &mut org, "bob", &big, "approve").await;
    assert_eq!(status, StatusCode::OK);
    let answer = act(&stack, &mut org, "cat", &big, "authorize").await;
    assert_problem(&answer, StatusCode::CONFLICT, "insufficient_funds");
    assert_eq!(payout(&stack, &org, &big).await["status"], "approved");
    assert_eq!(
        balances(&stack, &org).await,
        ("50000.00".to_owned(), "0.00".to_owned())
    );
    // Executing a payout that is only approved.
    let answer = act(&stack, &mut org, "dan", &big, "execute").await;
    assert_problem(&answer, StatusCode::CONFLICT, "invalid_state");
    assert_eq!(payout(&stack, &org, &big).await["status"], "approved");

    // Approving a released payout.
    let small = request(&stack, &org, "10.00").await;
    for (who, action) in [
        ("bob", "approve"),
        ("cat", "authorize"),
        ("dan", "execute"),
        ("rex", "release"),
    ] {
        let (status, body) = act(&stack, &mut org, who, &small, action).await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
    }
    let answer = act(&stack, &mut org, "bea", &small, "approve").await;
    assert_problem(&answer, StatusCode::CONFLICT, "invalid_state");
    assert_eq!(payout(&stack, &org, &small).await["status"], "released");
    assert_eq!(
        balances(&stack, &org).await,
        ("49990.00".to_owned(), "0.00".to_owned())
    );

    let (text, keys) = export(&stack, &org.people["aud"]).await;
    let denied = rejections(&text);
    let id = |who: &str| org.people[who].id.clone();
    for expected in [
        rejection(&id("cat"), "payout.authorize", &big, "insufficient_funds"),
        rejection(&id("dan"), "payout.execute", &big, "invalid_state"),
        rejection(&id("bea"), "payout.approve", &small, "invalid_state"),
    ] {
        assert!(denied.contains(&expected), "{expected:?} not in {denied:?}");
    }
    assert_eq!(denied.len(), 3, "{denied:?}");
    assert!(verify_export(&text, Some(keys))
        .expect("usable")
        .is_intact());
}

// ---------------------------------------------------------------------------------------
// 7. Invites
// ---------------------------------------------------------------------------------------

async fn invites_are_one_time_and_expire(backend: Backend) {
    let stack = Stack::new(backend).await;
    let org = org(&stack, "acme").await;
    let (zed, invite_text) = invite(&stack, &org.admin, "zed").await;
    let (invite_id, _) = invite_text.split_once('.').expect("id.secret");

    // Garbage and a wrong secret are refused, and do not use the invite up.
    for garbage in [
        "garbage".to_owned(),
        "inv_doesnotexist.0123456789abcdef".to_owned(),
        format!("{invite_id}.{}", "0".repeat(48)),
        format!("key_{}", &invite_text[4..]),
    ] {
        let answer = redeem_answer(&stack, &garbage).await;
        assert_problem(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let first = stack.redemption(&invite_text).await;
    assert_eq!(first["user"], zed);
    let answer = redeem_answer(&stack, &invite_text).await;
    assert_problem(&answer, StatusCode::UNAUTHORIZED, "unauthorized");

    // One key: the first still works, and no second was issued.
    let key = first["api_key"].as_str().expect("key");
    let (status, _) = stack.get_key(key, "/v1/ledger/keys").await;
    assert_eq!(status, StatusCode::OK);
    let (text, _) = export(&stack, &org.people["aud"]).await;
    let issued = kinds(&text, "apikey.issued")
        .into_iter()
        .filter(|e| e["actor"] == zed)
        .count();
    assert_eq!(issued, 1);
    let stored = stack
        .owner_strings(&format!(
            "SELECT id FROM records WHERE kind = 'apikey' AND value LIKE '%\"{zed}\"%'"
        ))
        .await;
    assert_eq!(stored.len(), 1, "{stored:?}");

    // Invites expire 24 h after they are made; an expired one is refused.
    let (old_user, old) = invite(&stack, &org.admin, "old").await;
    let (_, fresh) = invite(&stack, &org.admin, "fresh").await;
    let expires: Timestamp =
        serde_json::from_value(json!(invite_expiry(&stack, &old).await)).expect("timestamp");
    let ahead = expires.unix_micros() - now_micros();
    let day = 24 * 3600 * 1_000_000_i64;
    assert!(
        (day - 300_000_000..=day).contains(&ahead),
        "expires {ahead} µs ahead"
    );
    set_invite_expiry(
        &stack,
        &old,
        Timestamp::from_unix_micros(now_micros() - 1_000_000),
    )
    .await;
    set_invite_expiry(
        &stack,
        &fresh,
        Timestamp::from_unix_micros(now_micros() + 60_000_000),
    )
    .await;
    let answer = redeem_answer(&stack, &old).await;
    assert_problem(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = redeem_answer(&stack, &fresh).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (text, _) = export(&stack, &org.people["aud"]).await;
    assert!(!kinds(&text, "apikey.issued")
        .iter()
        .any(|e| e["actor"] == old_user));
}

// ---------------------------------------------------------------------------------------
// 8. The TOTP enrolment URI
// ---------------------------------------------------------------------------------------

async fn totp_uri_parses_and_its_codes_confirm(backend: Backend) {
    let stack = Stack::new(backend).await;
    let org = org(&stack, "acme").await;
    let (user, invite_text) = invite(&stack, &org.admin, "zed").await;
    let answer = stack.redemption(&invite_text).await;
    let uri = answer["totp_uri"].as_str().expect("totp_uri");
    let secret = answer["totp_secret"].as_str().expect("totp_secret");
    let key = answer["api_key"].as_str().expect("api_key");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");

    let parsed = totp_rs::TOTP::from_url(uri).expect("an otpauth URI totp-rs accepts");
    assert_eq!(parsed.algorithm, totp_rs::Algorithm::SHA1);
    assert_eq!(parsed.digits, 6);
    assert_eq!(parsed.step, 30);
    assert_eq!(parsed.get_secret_base32(), secret);
    assert_eq!(
        parsed.secret,
        totp_rs::Secret::Encoded(secret.to_owned())
            .to_bytes()
            .expect("base32")
    );
    assert_eq!(parsed.secret.len(), 20);
    assert_eq!(parsed.issuer.as_deref(), Some("payout-ledger"));
    assert_eq!(parsed.account_name, format!("{user}@acme"));

    // A wrong code is refused; a code from the parsed TOTP confirms the enrolment.
    let now = u64::try_from(now_micros() / 1_000_000).expect("after 1970");
    let near: Vec<String> = (now - 60..=now + 60)
        .step_by(30)
        .map(|t| parsed.generate(t))
        .collect();
    let wrong = (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .expect("a wrong code");
    let answer = stack
        .post_key(key, "/v1/me/totp/confirm", json!({ "code": wrong }))
        .await;
    assert_problem(&answer, StatusCode::FORBIDDEN, "two_factor_invalid");
    let code = parsed.generate_current().expect("clock");
    let (status, body) = stack
        .post_key(key, "/v1/me/totp/confirm", json!({ "code": code }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"user": user, "totp": "confirmed"}));
}

// ---------------------------------------------------------------------------------------
// 9. The lockout threshold
// ---------------------------------------------------------------------------------------

async fn lockout_after_exactly_five_wrong_codes(backend: Backend) {
    let stack = Stack::new(backend).await;
    let mut org = org(&stack, "acme").await;
    let first = request(&stack, &org, "100.00").await;
    let second = request(&stack, &org, "200.00").await;
    for po in [&first, &second] {
        let (status, _) = act(&stack, &mut org, "bob", po, "approve").await;
        assert_eq!(status, StatusCode::OK);
    }
    let cat = org.people["cat"].clone();

    // Four wrong codes: the next good code still works (and resets the count).
    let path = format!("/v1/payouts/{first}/authorize");
    for _ in 0..4 {
        let answer = stack
            .post(&cat, &path, json!({ "otp": cat.wrong_code() }))
            .await;
        assert_problem(&answer, StatusCode::FORBIDDEN, "two_factor_invalid");
    }
    let (status, body) = act(&stack, &mut org, "cat", &first, "authorize").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "authorized");

    // Five in a row: the next good code is locked out.
    let path = format!("/v1/payouts/{second}/authorize");
    for _ in 0..5 {
        let answer = stack
            .post(&cat, &path, json!({ "otp": cat.wrong_code() }))
            .await;
        assert_problem(&answer, StatusCode::FORBIDDEN, "two_factor_invalid");
    }
    let otp = org.user("cat").code();
    let (status, headers, body) = stack
        .send(
            Method::POST,
            Some(&cat.key),
            &path,
            Some(json!({ "otp": otp })),
            &[],
        )
        .await;
    assert_problem(&(status, body), StatusCode::FORBIDDEN, "two_factor_locked");
    let retry_after: u64 = headers
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    assert_eq!(payout(&stack, &org, &second).await["status"], "approved");
    assert_eq!(
        balances(&stack, &org).await,
        ("49900.00".to_owned(), "100.00".to_owned())
    );

    let (text, _) = export(&stack, &org.people["aud"]).await;
    let denied = rejections(&text);
    let count = |subject: &str, reason: &str| {
        denied
            .iter()
            .filter(|(actor, action, s, r)| {
                actor == &cat.id && action == "payout.authorize" && s == subject && r == reason
            })
            .count()
    };
    assert_eq!(count(&first, "two_factor_invalid"), 4);
    assert_eq!(count(&second, "two_factor_invalid"), 5);
    assert_eq!(count(&second, "two_factor_locked"), 1);
    assert_eq!(denied.len(), 10, "{denied:?}");
}

/// A payout has one shape in every answer: the action that closes it (release, reject,
/// cancel, fail) answers the whole payout as the other actions do, with the terms and
/// the actors it had, and every field it shares with `GET /v1/payouts/{id}` agrees.
async fn closing_actions_answer_the_whole_payout(backend: Backend) {
    let stack = Stack::new(backend).await;
    let mut org = org(&stack, "acme").await;
    let terms = [
        "payout",
        "account",
        "amount",
        "currency",
        "requester",
        "approvers",
        "approvals_required",
        "authorizer",
        "executor",
    ];
    let released = request(&stack, &org, "120.00").await;
    let mut last = Value::Null;
    for (who, action) in [
        ("bob", "approve"),
        ("cat", "authorize"),
        ("dan", "execute"),
        ("rex", "release"),
    ] {
        let (status, body) = act(&stack, &mut org, who, &released, action).await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
        if action != "release" {
            last = body;
            continue;
        }
        assert_eq!(body["status"], "released");
        for field in terms {
            assert_eq!(body[field], last[field], "{field} after release: {body}");
        }
        assert_eq!(body["executor"], json!(org.people["dan"].id));
        let read = payout(&stack, &org, &released).await;
        for field in terms {
            assert_eq!(body[field], read[field], "{field}: {body} vs {read}");
        }
    }
    let rejected = request(&stack, &org, "7.00").await;
    let user = org.people["bob"].clone();
    let (status, body) = stack
        .post(
            &user,
            &format!("/v1/payouts/{rejected}/reject"),
            json!({"reason": "duplicate"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["status"].as_str(),
            body["amount"].as_str(),
            body["requester"].as_str()
        ),
        (
            Some("rejected"),
            Some("7.00"),
            Some(org.people["ann"].id.as_str())
        ),
        "{body}"
    );
    let read = payout(&stack, &org, &rejected).await;
    for field in terms {
        assert_eq!(body[field], read[field], "{field}: {body} vs {read}");
    }
}

on_both_backends!(
    closing_actions_answer_the_whole_payout,
    approval_policy_counts_distinct_approvers,
    checkpoints_sign_the_exported_head,
    revoked_role_is_refused_and_nobody_revokes_their_own,
    payee_shows_the_iban_masked,
    batch_execute_release_and_all_or_nothing,
    insufficient_funds_and_invalid_state_are_409_and_evidence,
    invites_are_one_time_and_expire,
    totp_uri_parses_and_its_codes_confirm,
    lockout_after_exactly_five_wrong_codes,
);

/// The answer checks every black-box test runs (`stack::conformance`) can fail: a
/// wrong type, an unknown problem code, an undocumented status, a missing field and a
/// field a request body may not carry each break the document.
#[test]
fn the_answer_checks_notice_answers_the_document_does_not_allow() {
    use stack::conformance::{check, template_of};
    let json = "application/json";
    let account =
        json!({"account": "acct_a", "currency": "EUR", "available": "1.00", "held": "0.00"});
    check(
        "GET",
        "/v1/accounts/acct_a?min_seq=1",
        StatusCode::OK,
        json,
        &account,
    );
    assert_eq!(
        template_of("/v1/checkpoints/latest"),
        Some("/v1/checkpoints/latest")
    );
    assert_eq!(template_of("/v1/payouts/approve"), Some("/v1/payouts/{id}"));
    assert_eq!(template_of("/v1/nope"), None);
    let fails = |method: &'static str,
                 path: &'static str,
                 status: StatusCode,
                 media: &'static str,
                 body: Value| {
        let outcome = std::panic::catch_unwind(|| check(method, path, status, media, &body));
        assert!(
            outcome.is_err(),
            "{method} {path} {status} {body} passed the check"
        );
    };
    let mut number = account.clone();
    number["available"] = json!(1.0);
    fails("GET", "/v1/accounts/acct_a", StatusCode::OK, json, number);
    let mut missing = account.clone();
    missing.as_object_mut().map(|m| m.remove("held"));
    fails("GET", "/v1/accounts/acct_a", StatusCode::OK, json, missing);
    fails(
        "GET",
        "/v1/accounts/acct_a",
        StatusCode::CREATED,
        json,
        account.clone(),
    );
    fails("GET", "/v1/nope", StatusCode::OK, json, json!({}));
    let problem = |code: &str| {
        json!({"type": format!("https://payout-ledger.example/problems/{code}"),
               "title": "Forbidden", "status": 403, "code": code, "detail": "x"})
    };
    let problem_type = "application/problem+json";
    check(
        "POST",
        "/v1/payouts/po_a/approve",
        StatusCode::FORBIDDEN,
        problem_type,
        &problem("four_eyes"),
    );
    fails(
        "POST",
        "/v1/payouts/po_a/approve",
        StatusCode::FORBIDDEN,
        problem_type,
        problem("no_such_code"),
    );
    let mut extra = problem("four_eyes");
    extra["stack"] = json!("at main.rs:1");
    fails(
        "POST",
        "/v1/payouts/po_a/approve",
        StatusCode::FORBIDDEN,
        problem_type,
        extra,
    );
}
