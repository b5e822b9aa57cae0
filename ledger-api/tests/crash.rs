//! The crash test: many concurrent clients with idempotency keys while the server is
//! killed with SIGKILL at random moments and restarted on the same data; clients retry
//! the same request with the same key until they get an answer. Afterwards every
//! command that got a 2xx has its event, none is duplicated, the chain verifies, and the
//! balance equals the replayed postings.

mod process;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ledger_core::crypto::KeySet;
use ledger_core::verify::verify_export;
use process::{free_port, BIN, MASTER_KEY};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio::sync::Mutex;

/// Requests that had to be sent again (dropped connection, 5xx, in progress).
static RETRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Set when the last kill is done: clients keep sending until then.
static KILLS_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

const CLIENTS: usize = 12;
const OPS_PER_CLIENT: usize = 12;
const KILLS: usize = 4;

fn spawn(data: &str, listen: &str) -> Child {
    Command::new(BIN)
        .args(["--data-dir", data, "serve", "--listen", listen])
        .args(["--rate-sensitive-per-minute", "1000"])
        .env("LEDGER_MASTER_KEY", MASTER_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

async fn up(client: &reqwest::Client, base: &str) {
    for _ in 0..400 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server did not come back");
}

/// Sends until an answer that is not 5xx, not a dropped connection, and not "in
/// progress" (the same key still being processed, or held by a request that died).
async fn until_answered(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    idempotency: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    loop {
        let sent = client
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .header("idempotency-key", idempotency)
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(response) = sent {
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            let in_progress = answer["code"] == "idempotency_in_progress";
            if status < 500 && !in_progress {
                return (status, answer);
            }
        }
        RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Person {
    key: String,
    secret: Vec<u8>,
}

async fn redeem(client: &reqwest::Client, base: &str, invite: &str) -> (String, Person) {
    let body: Value = client
        .post(format!("{base}/v1/invites/redeem"))
        .json(&json!({ "invite": invite }))
        .send()
        .await
        .expect("redeem")
        .json()
        .await
        .expect("json");
    let secret = totp_rs::Secret::Encoded(body["totp_secret"].as_str().expect("s").to_owned())
        .to_bytes()
        .expect("base32");
    let person = Person {
        key: body["api_key"].as_str().expect("key").to_owned(),
        secret,
    };
    let step = ledger_api::util::now().unix_seconds().unsigned_abs() / 30;
    let code = ledger_api::totp::code_at_step(&person.secret, step - 1).expect("code");
    let confirmed = client
        .post(format!("{base}/v1/me/totp/confirm"))
        .bearer_auth(&person.key)
        .json(&json!({ "code": code }))
        .send()
        .await
        .expect("confirm");
    assert_eq!(confirmed.status(), 200);
    (body["user"].as_str().expect("user").to_owned(), person)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("path").to_owned();
    let created = Command::new(BIN)
        .args([
            "--data-dir",
            &data,
            "tenant",
            "create",
            "acme",
            "--name",
            "A",
            "--admin",
            "A",
        ])
        .env("LEDGER_MASTER_KEY", MASTER_KEY)
        .output()
        .expect("tenant create");
    assert!(created.status.success());
    let invite = serde_json::from_slice::<Value>(&created.stdout).expect("json")["invite"]
        .as_str()
        .expect("invite")
        .to_owned();
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let client = reqwest::Client::new();
    let server = Arc::new(Mutex::new(spawn(&data, &listen)));
    up(&client, &base).await;

    // The cast: an admin, a requester, a treasurer; an account and a payee.
    let (_, admin) = redeem(&client, &base, &invite).await;
    let mut ids = BTreeMap::new();
    let mut people = BTreeMap::new();
    for name in ["ann", "eve", "aud"] {
        let user: Value = client
            .post(format!("{base}/v1/users"))
            .bearer_auth(&admin.key)
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("user")
            .json()
            .await
            .expect("json");
        let (id, person) = redeem(&client, &base, user["invite"].as_str().expect("invite")).await;
        ids.insert(name, id);
        people.insert(name, person);
    }
    let step = ledger_api::util::now().unix_seconds().unsigned_abs() / 30;
    let code = ledger_api::totp::code_at_step(&admin.secret, step).expect("code");
    let grants = json!({"otp": code, "grants": [
        {"user": ids["ann"], "role": "requester"},
        {"user": ids["eve"], "role": "treasurer"},
        {"user": ids["aud"], "role": "auditor"}]});
    let granted = client
        .post(format!("{base}/v1/roles"))
        .bearer_auth(&admin.key)
        .json(&grants)
        .send()
        .await
        .expect("grant");
    assert_eq!(granted.status(), 200);
    let eve = people["eve"].key.clone();
    let (status, account) = until_answered(
        &client,
        &base,
        &eve,
        "acct",
        "/v1/accounts",
        &json!({"currency": "EUR", "name": "Ops"}),
    )
    .await;
    assert_eq!(status, 201, "{account}");
    let account = account["account"].as_str().expect("account").to_owned();
    let (status, payee) = until_answered(
        &client,
        &base,
        &admin.key,
        "payee",
        "/v1/payees",
        &json!({"name": "L", "iban": "DE89370400440532013000"}),
    )
    .await;
    assert_eq!(status, 201, "{payee}");
    let payee = payee["payee"].as_str().expect("payee").to_owned();

    // Clients: payout requests (ann) and deposits (eve), every one with its own key.
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, base) = (client.clone(), base.clone());
        let (ann, eve) = (people["ann"].key.clone(), eve.clone());
        let (account, payee) = (account.clone(), payee.clone());
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut i = 0;
            while i < OPS_PER_CLIENT || !KILLS_DONE.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("c{c}-{i}");
                let answer = if i % 3 == 0 {
                    let body = json!({"amount": "10.00", "reference": key});
                    let path = format!("/v1/accounts/{account}/deposits");
                    until_answered(&client, &base, &eve, &key, &path, &body).await
                } else {
                    let body = json!({"account": account, "payee": payee, "amount": "1.00", "currency": "EUR", "reference": key});
                    until_answered(&client, &base, &ann, &key, "/v1/payouts", &body).await
                };
                answers.push((key, answer));
                i += 1;
            }
            answers
        }));
    }
    // The killer.
    let killer = {
        let (server, data, listen, client, base) = (
            Arc::clone(&server),
            data.clone(),
            listen.clone(),
            client.clone(),
            base.clone(),
        );
        tokio::spawn(async move {
            for round in 0..KILLS {
                let pause = 150 + (ledger_api::util::random_bytes::<1>()[0] as u64) * 3;
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let mut child = server.lock().await;
                child.kill().expect("SIGKILL");
                child.wait().expect("reap");
                *child = spawn(&data, &listen);
                drop(child);
                up(&client, &base).await;
                let _ = round;
            }
            KILLS_DONE.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.expect("client"));
    }
    killer.await.expect("killer");
    // The kills hit traffic: some requests were cut off and sent again.
    assert!(
        RETRIES.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no request was interrupted"
    );

    // Every answer was a 2xx (the requests are all valid).
    for (key, (status, body)) in &answers {
        assert!((200..300).contains(status), "{key}: {status} {body}");
    }
    let payouts: Vec<String> = answers
        .iter()
        .filter_map(|(_, (_, body))| body["payout"].as_str().map(str::to_owned))
        .collect();
    let deposits = answers.len() - payouts.len();

    // The chain, as the auditor exports it.
    let aud = &people["aud"].key;
    let keys: Value = client
        .get(format!("{base}/v1/ledger/keys"))
        .bearer_auth(aud)
        .send()
        .await
        .expect("keys")
        .json()
        .await
        .expect("json");
    let mut set = KeySet::new();
    for record in keys["keys"].as_array().expect("keys") {
        set.insert(serde_json::from_value(record.clone()).expect("record"))
            .expect("insert");
    }
    let export = client
        .get(format!("{base}/v1/audit/export"))
        .bearer_auth(aud)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("text");
    let report = verify_export(&export, Some(set)).expect("usable");
    assert!(report.is_intact(), "{report:?}");
    let events: Vec<Value> = export
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["type"] == "event")
        .map(|l| l["event"].clone())
        .collect();
    let data_of = |e: &Value| {
        if let Value::String(text) = &e["data"] {
            serde_json::from_str(text).unwrap_or(Value::Null)
        } else {
            e["data"].clone()
        }
    };
    let requested: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] == "payout.requested")
        .map(|e| data_of(e)["payout"].as_str().expect("payout").to_owned())
        .collect();
    for payout in &payouts {
        assert_eq!(
            requested.iter().filter(|p| *p == payout).count(),
            1,
            "{payout} once"
        );
    }
    assert_eq!(
        requested.len(),
        payouts.len(),
        "no payout without its acknowledged request"
    );
    let deposited: Vec<Value> = events
        .iter()
        .filter(|e| e["kind"] == "funds.deposited")
        .map(data_of)
        .collect();
    assert_eq!(deposited.len(), deposits, "each acknowledged deposit once");

    // The balance equals the replayed postings.
    let available: Decimal = deposited
        .iter()
        .flat_map(|d| d["postings"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["account"] == format!("{account}:available"))
        .map(|p| {
            p["amount"]
                .as_str()
                .expect("amount")
                .parse::<Decimal>()
                .expect("decimal")
        })
        .sum();
    let view: Value = client
        .get(format!("{base}/v1/accounts/{account}"))
        .bearer_auth(&eve)
        .send()
        .await
        .expect("account")
        .json()
        .await
        .expect("json");
    assert_eq!(
        view["available"]
            .as_str()
            .expect("available")
            .parse::<Decimal>()
            .expect("decimal"),
        available
    );
    assert_eq!(available, Decimal::from(10 * deposits as i64));

    let mut child = server.lock().await;
    let _ = child.kill();
    let _ = child.wait();
}
