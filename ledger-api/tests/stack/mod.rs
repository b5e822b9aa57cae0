//! One deployment for a black-box test: storage on SQLite or on a fresh PostgreSQL
//! database, one or more `ledger-api serve` processes on it with extra flags, and their
//! captured log (stdout and stderr, `RUST_LOG=debug`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::process::{free_port, BIN, MASTER_KEY};

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Stack {
    dir: tempfile::TempDir,
    storage: Vec<String>,
    serve_args: Vec<String>,
    servers: Vec<Child>,
    /// The servers' base URLs, in start order.
    pub bases: Vec<String>,
    log: PathBuf,
    pg: Option<(String, String)>,
    pub client: reqwest::Client,
}

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

impl Stack {
    /// Storage on `backend` and one server started with `serve_args`.
    pub async fn new(backend: Backend, serve_args: &[&str]) -> Stack {
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
                let name = format!("ledger_hook_{}_{nanos}", std::process::id());
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
            serve_args: serve_args.iter().map(|s| (*s).to_owned()).collect(),
            servers: Vec::new(),
            bases: Vec::new(),
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

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(&self.storage)
            .args(args)
            .env("LEDGER_MASTER_KEY", MASTER_KEY)
            .output()
            .expect("ledger-api")
    }

    /// Starts one more server on the same storage; its index in `bases`.
    pub async fn start(&mut self) -> usize {
        let listen = format!("127.0.0.1:{}", free_port());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(BIN)
            .args(&self.storage)
            .args(["serve", "--listen", &listen])
            .args(&self.serve_args)
            .env("LEDGER_MASTER_KEY", MASTER_KEY)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn");
        self.servers.push(child);
        let base = format!("http://{listen}");
        for _ in 0..200 {
            if self
                .client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok()
            {
                self.bases.push(base);
                return self.bases.len() - 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not start: {}", self.log_text());
    }

    /// `serve` with `args` on this storage must stop by itself, with a failure: its
    /// stderr. (A server that starts anyway is killed after 30 s and fails the test.)
    pub fn refused_start(&self, args: &[&str]) -> String {
        let mut child = Command::new(BIN)
            .args(&self.storage)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
            .args(args)
            .env("LEDGER_MASTER_KEY", MASTER_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve {args:?} started instead of refusing its settings");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "serve {args:?} exited 0");
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut stderr);
        }
        stderr
    }

    /// `tenant create`, then the admin's redemption: the admin's API key.
    pub async fn admin(&self, slug: &str) -> String {
        self.redeem(&self.invite(slug)).await
    }

    /// `tenant create`: the admin's invite.
    pub fn invite(&self, slug: &str) -> String {
        let output = self.cli(&["tenant", "create", slug, "--name", slug, "--admin", "Admin"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: Value = serde_json::from_slice(&output.stdout).expect("json");
        answer["invite"].as_str().expect("invite").to_owned()
    }

    /// Redeems an invite: the API key.
    pub async fn redeem(&self, invite: &str) -> String {
        self.redemption(invite).await["api_key"]
            .as_str()
            .expect("key")
            .to_owned()
    }

    /// Redeems an invite: the whole answer (user, API key, TOTP secret).
    pub async fn redemption(&self, invite: &str) -> Value {
        let (status, body, _) = self
            .call(
                0,
                Method::POST,
                None,
                "/v1/invites/redeem",
                Some(json!({ "invite": invite })),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// A request to server `server`; the body parsed as JSON when it is.
    pub async fn call(
        &self,
        server: usize,
        method: Method,
        key: Option<&str>,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value, HeaderMap) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.bases[server]));
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
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }

    pub async fn post(&self, key: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, body, _) = self
            .call(0, Method::POST, Some(key), path, Some(body), None)
            .await;
        (status, body)
    }

    pub async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let (status, body, _) = self.call(0, Method::GET, Some(key), path, None, None).await;
        (status, body)
    }

    pub async fn delete(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let (status, body, _) = self
            .call(0, Method::DELETE, Some(key), path, None, None)
            .await;
        (status, body)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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

impl Drop for Stack {
    fn drop(&mut self) {
        for child in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some((admin, name)) = &self.pg {
            psql(
                admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}
