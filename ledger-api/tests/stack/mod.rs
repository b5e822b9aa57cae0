//! The deployment the black-box HTTP tests drive: the real `ledger-api` binary on
//! SQLite (a temp dir) or PostgreSQL (a fresh database), people with their own
//! credentials, a tenant with one person per role, and the helpers to act as them.
#![allow(dead_code)] // Each test binary uses part of this.

pub mod conformance;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use ledger_core::crypto::KeySet;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::process::{free_port, master_key, output_within, BIN};

/// How long a command that should refuse its settings may run before the test fails:
/// past it, it started instead.
pub const REFUSAL_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One deployment: storage, a running server, its captured log.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub storage: Vec<String>,
    pub server: Option<Child>,
    pub base: String,
    pub log: PathBuf,
    pub pg: Option<(String, String)>,
    pub client: reqwest::Client,
    /// Extra `serve` arguments.
    pub serve_args: Vec<String>,
    /// More servers on the same storage ([`Stack::start_another`]).
    pub others: Vec<Child>,
}

impl Stack {
    pub async fn new(backend: Backend) -> Stack {
        Self::with_serve_args(backend, &[]).await
    }

    /// A deployment whose server runs with `serve_args` too.
    pub async fn with_serve_args(backend: Backend, serve_args: &[&str]) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let (storage, pg) = match backend {
            Backend::Sqlite => (
                vec!["--data-dir".to_owned(), dir.path().display().to_string()],
                None,
            ),
            Backend::Postgres => {
                let admin = test_support::database_url();
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
            serve_args: serve_args.iter().map(|a| (*a).to_owned()).collect(),
            others: Vec::new(),
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

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(&self.storage)
            .args(args)
            .env("LEDGER_MASTER_KEY", master_key())
            .output()
            .expect("ledger-api")
    }

    /// Starts the server (again, after [`Stack::stop`]): the main one, at `base`.
    pub async fn start(&mut self) {
        let (child, base) = self.spawn().await;
        self.server = Some(child);
        self.base = base;
    }

    /// Starts one more server on the same storage; its base URL.
    pub async fn start_another(&mut self) -> String {
        let (child, base) = self.spawn().await;
        self.others.push(child);
        base
    }

    async fn spawn(&self) -> (Child, String) {
        let listen = format!("127.0.0.1:{}", free_port());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        // Tests take more one-time codes a minute than people do, unless a test sets
        // that limit itself.
        let sensitive = "--rate-sensitive-per-minute";
        let default_limit: &[&str] = if self.serve_args.iter().any(|a| a.starts_with(sensitive)) {
            &[]
        } else {
            &[sensitive, "1000"]
        };
        let mut child = Command::new(BIN)
            .args(&self.storage)
            .args(["serve", "--listen", &listen])
            .args(default_limit)
            .args(&self.serve_args)
            .env("LEDGER_MASTER_KEY", master_key())
            .env("RUST_LOG", "debug")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn");
        let base = format!("http://{listen}");
        for _ in 0..200 {
            if self
                .client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok()
            {
                return (child, base);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server did not start: {}", self.log_text());
    }

    /// `serve` with `args` on this storage must stop by itself, with a failure: its
    /// stderr. (A server that starts anyway is killed after 30 s and fails the test.)
    pub fn refused_start(&self, args: &[&str]) -> String {
        let output = output_within(
            Command::new(BIN)
                .args(&self.storage)
                .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
                .args(args)
                .env("LEDGER_MASTER_KEY", master_key()),
            REFUSAL_LIMIT,
        );
        assert!(!output.status.success(), "serve {args:?} exited 0");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `tenant create`: the admin's invite.
    pub fn tenant(&self, slug: &str) -> String {
        let output = self.cli(&["tenant", "create", slug, "--name", slug, "--admin", "Admin"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: Value = serde_json::from_slice(&output.stdout).expect("json");
        answer["invite"].as_str().expect("invite").to_owned()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The access log so far: the `fields` of every `request` line, in order.
    pub fn request_lines(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["fields"]["message"] == "request")
            .map(|l| l["fields"].clone())
            .collect()
    }

    /// The `fields` of the access-log line of the request whose id is `request_id`
    /// (the `X-Request-Id` of its answer); it must be the only one.
    pub fn request_line(&self, request_id: &str) -> Value {
        let lines: Vec<Value> = self
            .request_lines()
            .into_iter()
            .filter(|l| l["request_id"] == request_id)
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "access-log lines for request {request_id}: {lines:?}"
        );
        lines.into_iter().next().expect("one line")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
        for child in &mut self.others {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some((admin, name)) = &self.pg {
            psql(
                admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
        let _ = &self.dir;
    }
}

/// Runs `sql` with psql; its unaligned, tuples-only output.
pub fn psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([url, "-q", "-At", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A person with their own credentials.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub key: String,
    pub secret: Vec<u8>,
    secret_b32: String,
    pub last_step: u64,
}

impl User {
    /// A code for a step the server has not seen for this user: the current step or the
    /// next, never the previous one, which a step boundary passing while the request is
    /// in flight would take out of the server's ±1 window. Waits for the next step when
    /// both are used.
    pub fn code(&mut self) -> String {
        loop {
            let seconds = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs();
            let now = seconds / 30;
            let step = (self.last_step + 1).max(now);
            if step <= now + 1 {
                self.last_step = step;
                return ledger_api::totp::code_at_step(&self.secret, step).expect("code");
            }
            std::thread::sleep(Duration::from_secs(30 - seconds % 30));
        }
    }

    /// A wrong code (not the code of any step near now).
    pub fn wrong_code(&self) -> String {
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

fn content_type(headers: &reqwest::header::HeaderMap) -> &str {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

impl Stack {
    pub async fn call(
        &self,
        method: reqwest::Method,
        key: Option<&str>,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, body) = self.send(method, key, path, body, &[]).await;
        (status, body)
    }

    /// A request with extra headers; the answer's status, headers and body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        key: Option<&str>,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let verb = method.to_string();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        conformance::check(&verb, path, status, content_type(&headers), &body);
        (status, headers, body)
    }

    /// Runs a query on the deployment's database as its owner, behind the service's back:
    /// the first column of every row, as text.
    pub async fn owner_strings(&self, sql: &str) -> Vec<String> {
        use sqlx::Connection;
        match &self.pg {
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(self.dir.path().join("ledger.db"));
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .expect("open sqlite");
                let rows: Vec<String> = sqlx::query_scalar(sql)
                    .fetch_all(&mut conn)
                    .await
                    .expect("sql");
                conn.close().await.expect("close");
                rows
            }
            Some((admin, name)) => {
                let url = format!("{}/{name}", &admin[..admin.rfind('/').expect("db in url")]);
                let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
                let rows: Vec<String> = sqlx::query_scalar(sql)
                    .fetch_all(&mut conn)
                    .await
                    .expect("sql");
                conn.close().await.expect("close");
                rows
            }
        }
    }

    /// Runs `sql` on the deployment's database as its owner, behind the service's back.
    pub async fn owner_sql(&self, sql: &str) {
        use sqlx::{Connection, Executor};
        match &self.pg {
            None => {
                let path = self.dir.path().join("ledger.db");
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .expect("open sqlite");
                conn.execute(sql).await.expect("sql");
                conn.close().await.expect("close");
            }
            Some((admin, name)) => {
                let url = format!("{}/{name}", &admin[..admin.rfind('/').expect("db in url")]);
                let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
                conn.execute(sql).await.expect("sql");
                conn.close().await.expect("close");
            }
        }
    }

    pub async fn post(&self, user: &User, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, Some(&user.key), path, Some(body))
            .await
    }

    pub async fn get(&self, user: &User, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, Some(&user.key), path, None)
            .await
    }

    pub async fn redeem(&self, invite: &str, confirm: bool) -> User {
        self.enrol(invite, confirm).await.0
    }

    /// Redeems an invite and, if `confirm`, confirms the TOTP enrolment: the person and
    /// the code they confirmed with (a secret the log must never show).
    pub async fn enrol(&self, invite: &str, confirm: bool) -> (User, Option<String>) {
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
        if !confirm {
            return (user, None);
        }
        let code = user.code();
        let (status, body) = self
            .post(
                &user.clone(),
                "/v1/me/totp/confirm",
                json!({ "code": code }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (user, Some(code))
    }

    pub async fn invite_user(&self, admin: &User, name: &str, confirm: bool) -> User {
        self.invite_user_with_secrets(admin, name, confirm).await.0
    }

    /// [`Stack::invite_user`], with the secrets it saw on the way: the invite and, if
    /// `confirm`, the code the person confirmed their enrolment with.
    pub async fn invite_user_with_secrets(
        &self,
        admin: &User,
        name: &str,
        confirm: bool,
    ) -> (User, Vec<String>) {
        let (status, body) = self.post(admin, "/v1/users", json!({ "name": name })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let invite = body["invite"].as_str().expect("invite").to_owned();
        let (user, code) = self.enrol(&invite, confirm).await;
        (user, std::iter::once(invite).chain(code).collect())
    }
}

/// Helpers that act with a bare API key (and on any of the servers).
impl Stack {
    /// `tenant create`, then the admin's redemption: the admin's API key.
    pub async fn admin(&self, slug: &str) -> String {
        self.redeem_key(&self.tenant(slug)).await
    }

    /// Redeems an invite: the API key.
    pub async fn redeem_key(&self, invite: &str) -> String {
        self.redemption(invite).await["api_key"]
            .as_str()
            .expect("key")
            .to_owned()
    }

    /// Redeems an invite: the whole answer (user, API key, TOTP secret).
    pub async fn redemption(&self, invite: &str) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                None,
                "/v1/invites/redeem",
                Some(json!({ "invite": invite })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// A request to the server at `base`, with an optional `Idempotency-Key`; the body
    /// parsed as JSON when it is.
    pub async fn call_on(
        &self,
        base: &str,
        method: reqwest::Method,
        key: Option<&str>,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let verb = method.to_string();
        let mut request = self.client.request(method, format!("{base}{path}"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("idempotency-key", idempotency_key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        conformance::check(&verb, path, status, content_type(&headers), &body);
        (status, body, headers)
    }

    pub async fn post_key(&self, key: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, Some(key), path, Some(body))
            .await
    }

    pub async fn get_key(&self, key: &str, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, Some(key), path, None).await
    }

    pub async fn delete_key(&self, key: &str, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, Some(key), path, None)
            .await
    }

    /// Everything the database holds beside the chain, as text (the SQLite files as
    /// they are on disk; on PostgreSQL every record value).
    pub fn stored_text(&self) -> String {
        match &self.pg {
            None => ["ledger.db", "ledger.db-wal"]
                .iter()
                .map(|file| {
                    String::from_utf8_lossy(
                        &std::fs::read(self.dir.path().join(file)).unwrap_or_default(),
                    )
                    .into_owned()
                })
                .collect(),
            Some((admin, name)) => {
                let url = format!("{}/{name}", &admin[..admin.rfind('/').expect("db in url")]);
                psql(&url, "SELECT tenant_id, kind, id, value FROM records")
            }
        }
    }
}

/// A tenant with one person per role, a funded EUR account and a payee.
pub struct Org {
    pub admin: User,
    pub people: std::collections::BTreeMap<&'static str, User>,
    pub account: String,
    pub payee: String,
    /// Every secret the tests handled for this tenant (invites, API keys, TOTP secrets,
    /// the codes used to confirm enrolments and to act): none may reach the log.
    pub secrets: Vec<String>,
}

impl Org {
    pub fn user(&mut self, name: &str) -> &mut User {
        self.people.get_mut(name).expect("person")
    }
}

pub const CAST: [(&str, &str); 8] = [
    ("ann", "requester"),
    ("bob", "approver"),
    ("bea", "approver"),
    ("cat", "authorizer"),
    ("dan", "executor"),
    ("rex", "releaser"),
    ("eve", "treasurer"),
    ("aud", "auditor"),
];
pub const IBAN: &str = "DE89370400440532013000";

pub async fn org(stack: &Stack, slug: &str) -> Org {
    let invite = stack.tenant(slug);
    let (mut admin, confirmed_with) = stack.enrol(&invite, true).await;
    let mut secrets = vec![invite, admin.key.clone(), admin.secret_b32.clone()];
    secrets.extend(confirmed_with);
    let mut people = std::collections::BTreeMap::new();
    for (name, _) in CAST {
        let (user, seen) = stack.invite_user_with_secrets(&admin, name, true).await;
        secrets.extend(seen);
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

pub async fn request(stack: &Stack, org: &Org, amount: &str) -> String {
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

pub async fn act(
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

pub async fn export(stack: &Stack, auditor: &User) -> (String, KeySet) {
    export_from(stack, &stack.base, auditor).await
}

/// An auditor's export of its tenant, read from the server at `base` (one of several on
/// the same storage), with the keys that server publishes.
pub async fn export_from(stack: &Stack, base: &str, auditor: &User) -> (String, KeySet) {
    let (status, keys, _) = stack
        .call_on(
            base,
            reqwest::Method::GET,
            Some(&auditor.key),
            "/v1/ledger/keys",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let mut set = KeySet::new();
    for record in keys["keys"].as_array().expect("keys") {
        set.insert(serde_json::from_value(record.clone()).expect("key record"))
            .expect("insert");
    }
    let response = stack
        .client
        .get(format!("{base}/v1/audit/export"))
        .bearer_auth(&auditor.key)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), StatusCode::OK);
    (response.text().await.expect("text"), set)
}

pub fn kinds(export: &str, kind: &str) -> Vec<Value> {
    event_lines(export)
        .into_iter()
        .filter(|l| l["event"]["kind"] == kind)
        .map(|l| l["event"].clone())
        .collect()
}

/// The event lines of an export, in order.
pub fn event_lines(export: &str) -> Vec<Value> {
    export
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["type"] == "event")
        .collect()
}

/// Generates `sqlite::NAME` and `postgres::NAME` tests from `async fn NAME(Backend)`.
#[macro_export]
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
