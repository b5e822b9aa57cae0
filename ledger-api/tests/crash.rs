//! The crash test, on SQLite and on PostgreSQL: many concurrent clients with idempotency
//! keys while the server is killed with SIGKILL at random moments and restarted on the
//! same data; clients retry the same request with the same key until they get an answer.
//! Afterwards every command that got a 2xx has exactly one event (found by the reference
//! and request id the client sent), no event exists that no client sent, the chain
//! verifies, and the balances equal the replayed postings.

mod process;
mod stack;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ledger_core::event::REQUEST_ID_FIELD;
use ledger_core::verify::verify_export;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use stack::{event_lines, export, Backend, Stack};

const CLIENTS: usize = 12;
const OPS_PER_CLIENT: usize = 12;
const KILLS: usize = 4;
const DEPOSIT: &str = "10.00";

/// What the clients and the killer of one test share.
struct Traffic {
    client: reqwest::Client,
    /// The running server's base URL (each restart listens on a new port).
    base: std::sync::RwLock<String>,
    /// Requests that had to be sent again (dropped connection, 5xx, in progress).
    retries: AtomicUsize,
    /// Set when the last kill is done: clients keep sending until then.
    kills_done: AtomicBool,
}

impl Traffic {
    fn base(&self) -> String {
        match self.base.read() {
            Ok(base) => base.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_base(&self, base: &str) {
        match self.base.write() {
            Ok(mut current) => *current = base.to_owned(),
            Err(poisoned) => *poisoned.into_inner() = base.to_owned(),
        }
    }

    /// POSTs until an answer that is not 5xx, not a dropped connection, and not "in
    /// progress" (the same key still being processed, or held by a request that died).
    /// The idempotency key is the request id too, so the event names its request.
    async fn until_answered(
        &self,
        key: &str,
        idempotency: &str,
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        loop {
            let sent = self
                .client
                .post(format!("{}{path}", self.base()))
                .bearer_auth(key)
                .header("idempotency-key", idempotency)
                .header("x-request-id", idempotency)
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
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What a client sent: deposits and payout requests, each under its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Deposit,
    Payout,
}

fn decimal(value: &Value) -> Decimal {
    value
        .as_str()
        .unwrap_or_else(|| panic!("amount text: {value}"))
        .parse()
        .unwrap_or_else(|e| panic!("{value}: {e}"))
}

async fn sigkill_at_random_moments_loses_and_duplicates_nothing(backend: Backend) {
    let stack = Stack::new(backend).await;

    // The cast: an admin, a requester, a treasurer, an auditor; an account and a payee.
    let invite = stack.tenant("acme");
    let mut admin = stack.redeem(&invite, true).await;
    let mut people = BTreeMap::new();
    for name in ["ann", "eve", "aud"] {
        people.insert(name, stack.invite_user(&admin, name, true).await);
    }
    let code = admin.code();
    let grants = json!({"otp": code, "grants": [
        {"user": people["ann"].id, "role": "requester"},
        {"user": people["eve"].id, "role": "treasurer"},
        {"user": people["aud"].id, "role": "auditor"}]});
    let (status, body) = stack.post(&admin, "/v1/roles", grants).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let traffic = Arc::new(Traffic {
        client: stack.client.clone(),
        base: std::sync::RwLock::new(stack.base.clone()),
        retries: AtomicUsize::new(0),
        kills_done: AtomicBool::new(false),
    });
    let (ann, eve) = (people["ann"].key.clone(), people["eve"].key.clone());
    let (status, account) = traffic
        .until_answered(
            &eve,
            "acct",
            "/v1/accounts",
            &json!({"currency": "EUR", "name": "Ops"}),
        )
        .await;
    assert_eq!(status, 201, "{account}");
    let account = account["account"].as_str().expect("account").to_owned();
    let (status, payee) = traffic
        .until_answered(
            &admin.key,
            "payee",
            "/v1/payees",
            &json!({"name": "L", "iban": stack::IBAN}),
        )
        .await;
    assert_eq!(status, 201, "{payee}");
    let payee = payee["payee"].as_str().expect("payee").to_owned();

    // Clients: payout requests (ann) and deposits (eve), every one with its own key,
    // which is also its reference and its request id.
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let traffic = Arc::clone(&traffic);
        let (ann, eve) = (ann.clone(), eve.clone());
        let (account, payee) = (account.clone(), payee.clone());
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut i = 0;
            while i < OPS_PER_CLIENT || !traffic.kills_done.load(Ordering::Relaxed) {
                let key = format!("c{c}-{i}");
                let (sent, answer) = if i % 3 == 0 {
                    let body = json!({"amount": DEPOSIT, "reference": key});
                    let path = format!("/v1/accounts/{account}/deposits");
                    let answer = traffic.until_answered(&eve, &key, &path, &body).await;
                    (Sent::Deposit, answer)
                } else {
                    let body = json!({"account": account, "payee": payee, "amount": "1.00", "currency": "EUR", "reference": key});
                    let answer = traffic
                        .until_answered(&ann, &key, "/v1/payouts", &body)
                        .await;
                    (Sent::Payout, answer)
                };
                answers.push((key, sent, answer));
                i += 1;
            }
            answers
        }));
    }
    // The killer: SIGKILL (std's `Child::kill`), restart on the same storage.
    let stack = Arc::new(tokio::sync::Mutex::new(stack));
    let killer = {
        let (stack, traffic) = (Arc::clone(&stack), Arc::clone(&traffic));
        tokio::spawn(async move {
            for _round in 0..KILLS {
                let pause = 150 + u64::from(ledger_api::util::random_bytes::<1>()[0]) * 3;
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let mut stack = stack.lock().await;
                stack.stop();
                stack.start().await;
                traffic.set_base(&stack.base);
            }
            traffic.kills_done.store(true, Ordering::Relaxed);
        })
    };
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.expect("client"));
    }
    killer.await.expect("killer");
    let stack = stack.lock().await;
    // The kills hit traffic: some requests were cut off and sent again.
    assert!(
        traffic.retries.load(Ordering::Relaxed) > 0,
        "no request was interrupted"
    );

    // Every answer was a 2xx (the requests are all valid).
    for (key, _, (status, body)) in &answers {
        assert!((200..300).contains(status), "{key}: {status} {body}");
    }
    let sent: BTreeMap<&str, (Sent, &Value)> = answers
        .iter()
        .map(|(key, sent, (_, body))| (key.as_str(), (*sent, body)))
        .collect();

    // The chain, as the auditor exports it: intact.
    let (text, keys) = export(&stack, &people["aud"]).await;
    let report = verify_export(&text, Some(keys)).expect("usable");
    assert!(report.is_intact(), "{report:?}");
    let events: Vec<Value> = event_lines(&text)
        .into_iter()
        .map(|l| l["event"].clone())
        .collect();

    // Each deposit and payout request in the chain is one a client sent, of its kind,
    // under its key (reference and request id); each acknowledged one is there once.
    let mut found: BTreeMap<String, usize> = BTreeMap::new();
    for event in &events {
        let kind = match event["kind"].as_str() {
            Some("funds.deposited") => Sent::Deposit,
            Some("payout.requested") => Sent::Payout,
            _ => continue,
        };
        let data = &event["data"];
        let reference = data["reference"].as_str().unwrap_or_default();
        let Some((sent_kind, answer)) = sent.get(reference) else {
            panic!("an event no client sent: {event}");
        };
        assert_eq!(*sent_kind, kind, "{reference}: {event}");
        assert_eq!(
            data[REQUEST_ID_FIELD].as_str(),
            Some(reference),
            "the request id of {reference}: {event}"
        );
        match kind {
            Sent::Deposit => {
                assert_eq!(data["account"], account.as_str(), "{event}");
                assert_eq!(data["amount"], DEPOSIT, "{event}");
            }
            Sent::Payout => assert_eq!(
                data["payout"], answer["payout"],
                "{reference}: the answer names another payout than the chain"
            ),
        }
        *found.entry(reference.to_owned()).or_default() += 1;
    }
    for key in sent.keys() {
        assert_eq!(
            found.get(*key).copied().unwrap_or_default(),
            1,
            "{key}: acknowledged, so in the chain exactly once"
        );
    }
    let count = |kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!(count("account.opened"), 1, "the account opened once");
    assert_eq!(count("payee.added"), 1, "the payee added once");
    assert_eq!(count("command.rejected"), 0, "nothing denied");

    // The balances equal the replayed postings of the whole chain.
    let mut buckets: BTreeMap<String, Decimal> = BTreeMap::new();
    for event in &events {
        for posting in event["data"]["postings"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let bucket = posting["account"].as_str().expect("bucket").to_owned();
            *buckets.entry(bucket).or_default() += decimal(&posting["amount"]);
        }
    }
    let replayed = |bucket: &str| {
        buckets
            .get(&format!("{account}:{bucket}"))
            .copied()
            .unwrap_or_default()
    };
    let deposits = sent.values().filter(|(s, _)| *s == Sent::Deposit).count();
    assert_eq!(
        replayed("available"),
        Decimal::from(10 * deposits as i64),
        "{buckets:?}"
    );
    let eve_user = people["eve"].clone();
    let mut view = Value::Null;
    for _ in 0..50 {
        let (status, body) = stack
            .get(&eve_user, &format!("/v1/accounts/{account}"))
            .await;
        if status == StatusCode::OK {
            view = body;
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(decimal(&view["available"]), replayed("available"), "{view}");
    assert_eq!(decimal(&view["held"]), replayed("held"), "{view}");
}

on_both_backends!(sigkill_at_random_moments_loses_and_duplicates_nothing);
