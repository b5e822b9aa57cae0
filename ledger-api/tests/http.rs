//! Black-box tests of the HTTP contract (DESIGN section 7): the real `ledger-api`
//! binary, driven over HTTP, on SQLite and on PostgreSQL. Every test runs on both
//! backends (`sqlite::…` and `postgres::…`).

mod process;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use ledger_core::crypto::KeySet;
use ledger_core::verify::verify_export;
use process::{free_port, BIN, MASTER_KEY};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One deployment: storage, a running server, its captured log.
struct Stack {
    dir: tempfile::TempDir,
    storage: Vec<String>,
    server: Option<Child>,
    base: String,
    log: PathBuf,
    pg: Option<(String, String)>,
    client: reqwest::Client,
}

impl Stack {
    async fn new(backend: Backend) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let (storage, pg) = match backend {
            Backend::Sqlite => (
                vec!["--data-dir".to_owned(), dir.path().display().to_string()],
                None,
            ),
            Backend::Postgres => {
                let admin = std::env::var("DATABASE_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or_default();
                let name = format!("ledger_http_{}_{nanos}", std::process::id());
                let url = format!("{}/{name}", &admin[..admin.rfind('/').expect("db in url")]);
                psql(&admin, &format!("CREATE DATABASE {name}"));
                let keys = dir.path().join("keys").display().to_string();
                (
                    vec![
                        "--database-url".to_owned(),
                        url,
                        "--keys-dir".to_owned(),
                        keys,
                    ],
                    Some((admin, name)),
                )
            }
        };
        let log = dir.path().join("server.log");
        let mut stack = Stack {
            dir,
            storage,
            server: None,
            base: String::new(),
            log,
            pg,
            client: reqwest::Client::new(),
        };
        if stack.pg.is_some() {
            for step in [&["migrate"][..], &["keys", "generate"][..]] {
                let output = stack.cli(step);
                assert!(
                    output.status.success(),
                    "{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        stack.start().await;
        stack
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(&self.storage)
            .args(args)
            .env("LEDGER_MASTER_KEY", MASTER_KEY)
            .output()
            .expect("ledger-api")
    }

    async fn start(&mut self) {
        let listen = format!("127.0.0.1:{}", free_port());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(BIN)
            .args(&self.storage)
            .args([
                "serve",
                "--listen",
                &listen,
                "--rate-sensitive-per-minute",
                "1000",
            ])
            .env("LEDGER_MASTER_KEY", MASTER_KEY)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn");
        self.server = Some(child);
        self.base = format!("http://{listen}");
        for _ in 0..200 {
            if self
                .client
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not start");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `tenant create`: the admin's invite.
    fn tenant(&self, slug: &str) -> String {
        let output = self.cli(&["tenant", "create", slug, "--name", slug, "--admin", "Admin"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: Value = serde_json::from_slice(&output.stdout).expect("json");
        answer["invite"].as_str().expect("invite").to_owned()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
        if let Some((admin, name)) = &self.pg {
            psql(
                admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
        let _ = &self.dir;
    }
}

fn psql(url: &str, sql: &str) {
    let output = Command::new("psql")
        .args([url, "-q", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A person with their own credentials.
#[derive(Debug, Clone)]
struct User {
    id: String,
    key: String,
    secret: Vec<u8>,
    secret_b32: String,
    last_step: u64,
}

impl User {
    /// A code for a step the server has not seen for this user, within ±1 step.
    fn code(&mut self) -> String {
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs()
                / 30;
            let step = (self.last_step + 1).max(now - 1);
            if step <= now + 1 {
                self.last_step = step;
                return ledger_api::totp::code_at_step(&self.secret, step).expect("code");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// A wrong code (not the code of any step near now).
    fn wrong_code(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            / 30;
        let near: Vec<String> = (now - 2..=now + 2)
            .map(|s| ledger_api::totp::code_at_step(&self.secret, s).expect("code"))
            .collect();
        (0..1_000_000)
            .map(|n| format!("{n:06}"))
            .find(|c| !near.contains(c))
            .expect("a wrong code")
    }
}

impl Stack {
    async fn call(
        &self,
        method: reqwest::Method,
        key: Option<&str>,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, user: &User, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, Some(&user.key), path, Some(body))
            .await
    }

    async fn get(&self, user: &User, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, Some(&user.key), path, None)
            .await
    }

    async fn redeem(&self, invite: &str, confirm: bool) -> User {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                None,
                "/v1/invites/redeem",
                Some(json!({ "invite": invite })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let secret_b32 = body["totp_secret"].as_str().expect("secret").to_owned();
        let secret = totp_rs::Secret::Encoded(secret_b32.clone())
            .to_bytes()
            .expect("base32");
        let mut user = User {
            id: body["user"].as_str().expect("user").to_owned(),
            key: body["api_key"].as_str().expect("key").to_owned(),
            secret,
            secret_b32,
            last_step: 0,
        };
        if confirm {
            let code = user.code();
            let (status, body) = self
                .post(
                    &user.clone(),
                    "/v1/me/totp/confirm",
                    json!({ "code": code }),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        user
    }

    async fn invite_user(&self, admin: &User, name: &str, confirm: bool) -> User {
        let (status, body) = self.post(admin, "/v1/users", json!({ "name": name })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        self.redeem(body["invite"].as_str().expect("invite"), confirm)
            .await
    }
}

/// A tenant with one person per role, a funded EUR account and a payee.
struct Org {
    admin: User,
    people: std::collections::BTreeMap<&'static str, User>,
    account: String,
    payee: String,
    secrets: Vec<String>,
}

impl Org {
    fn user(&mut self, name: &str) -> &mut User {
        self.people.get_mut(name).expect("person")
    }
}

const CAST: [(&str, &str); 8] = [
    ("ann", "requester"),
    ("bob", "approver"),
    ("bea", "approver"),
    ("cat", "authorizer"),
    ("dan", "executor"),
    ("rex", "releaser"),
    ("eve", "treasurer"),
    ("aud", "auditor"),
];
const IBAN: &str = "DE89370400440532013000";

async fn org(stack: &Stack, slug: &str) -> Org {
    let invite = stack.tenant(slug);
    let mut admin = stack.redeem(&invite, true).await;
    let mut secrets = vec![invite, admin.key.clone(), admin.secret_b32.clone()];
    let mut people = std::collections::BTreeMap::new();
    for (name, _) in CAST {
        let user = stack.invite_user(&admin, name, true).await;
        secrets.extend([user.key.clone(), user.secret_b32.clone()]);
        people.insert(name, user);
    }
    let grants: Vec<Value> = CAST
        .iter()
        .map(|(name, role)| json!({"user": people[name].id, "role": role}))
        .collect();
    let code = admin.code();
    secrets.push(code.clone());
    let (status, body) = stack
        .post(&admin, "/v1/roles", json!({"grants": grants, "otp": code}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let eve = &people["eve"];
    let (status, body) = stack
        .post(
            eve,
            "/v1/accounts",
            json!({"currency": "EUR", "name": "Ops"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let account = body["account"].as_str().expect("account").to_owned();
    let (status, body) = stack
        .post(
            eve,
            &format!("/v1/accounts/{account}/deposits"),
            json!({"amount": "50000.00", "reference": "f"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = stack
        .post(&admin, "/v1/payees", json!({"name": "Lark", "iban": IBAN}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["iban"], "DE**********3000");
    let payee = body["payee"].as_str().expect("payee").to_owned();
    Org {
        admin,
        people,
        account,
        payee,
        secrets,
    }
}

async fn request(stack: &Stack, org: &Org, amount: &str) -> String {
    let (status, body) = stack
        .post(
            &org.people["ann"],
            "/v1/payouts",
            json!({"account": org.account, "payee": org.payee, "amount": amount, "currency": "EUR", "reference": "r"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "requested");
    body["payout"].as_str().expect("payout").to_owned()
}

async fn act(
    stack: &Stack,
    org: &mut Org,
    who: &str,
    payout: &str,
    action: &str,
) -> (StatusCode, Value) {
    let body = if matches!(action, "authorize" | "execute" | "release") {
        let code = org.user(who).code();
        org.secrets.push(code.clone());
        json!({ "otp": code })
    } else {
        json!({})
    };
    let user = org.people[who].clone();
    stack
        .post(&user, &format!("/v1/payouts/{payout}/{action}"), body)
        .await
}

async fn export(stack: &Stack, auditor: &User) -> (String, KeySet) {
    let (status, keys) = stack.get(auditor, "/v1/ledger/keys").await;
    assert_eq!(status, StatusCode::OK);
    let mut set = KeySet::new();
    for record in keys["keys"].as_array().expect("keys") {
        set.insert(serde_json::from_value(record.clone()).expect("key record"))
            .expect("insert");
    }
    let response = stack
        .client
        .get(format!("{}/v1/audit/export", stack.base))
        .bearer_auth(&auditor.key)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), StatusCode::OK);
    (response.text().await.expect("text"), set)
}

fn kinds(export: &str, kind: &str) -> Vec<Value> {
    export
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["type"] == "event" && l["event"]["kind"] == kind)
        .map(|l| l["event"].clone())
        .collect()
}

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

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Postgres).await;
                }
            )*
        }
    };
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
