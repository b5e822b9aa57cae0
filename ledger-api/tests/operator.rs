//! The operator CLI as a process: configuration validated at start-up (a bad setting
//! stops it with a message naming the setting), first-run key generation, key rotation,
//! `tenant create`, and two server processes writing one tenant on one PostgreSQL
//! database without ever forking its chain.

mod process;
mod stack;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ledger_core::verify::verify_export;
use process::{master_key, output_within, start};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stack::{event_lines, export, export_from, kinds, org, psql, Backend, Stack, User};

const BIN: &str = env!("CARGO_BIN_EXE_ledger-api");

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("LEDGER_DATABASE_URL")
        .env_remove("LEDGER_MASTER_KEY")
        .env_remove("LEDGER_MASTER_KEY_FILE");
    for (key, value) in envs {
        command.env(key, value);
    }
    // A `serve` whose bad setting went unnoticed would run on: fail instead.
    output_within(&mut command, stack::REFUSAL_LIMIT)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Arguments, environment, and the setting the error must name.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn bad_settings_stop_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("path");
    let cases: [Case; 10] = [
        (
            &["--data-dir", data, "serve", "--listen", "localhost:http"],
            &[],
            "--listen",
        ),
        (
            &["--database-url", "mysql://x", "serve"],
            &[("LEDGER_MASTER_KEY", master_key())],
            "--database-url",
        ),
        (
            &["--data-dir", data, "serve"],
            &[("LEDGER_MASTER_KEY", "not-hex")],
            "LEDGER_MASTER_KEY",
        ),
        (
            &["--data-dir", data, "serve"],
            &[("LEDGER_MASTER_KEY_FILE", "/nonexistent/master.key")],
            "LEDGER_MASTER_KEY_FILE",
        ),
        (
            &["--data-dir", data, "serve", "--wal-reset-frames", "0"],
            &[],
            "--wal-reset-frames",
        ),
        (
            &["--data-dir", data, "serve", "--rate-per-key", "0"],
            &[],
            "--rate-per-key",
        ),
        (
            &["--data-dir", data, "serve"],
            &[("LEDGER_RATE_PER_IP", "0")],
            "--rate-per-ip",
        ),
        (
            &[
                "--data-dir",
                data,
                "serve",
                "--rate-sensitive-per-minute",
                "0",
            ],
            &[],
            "--rate-sensitive-per-minute",
        ),
        (
            &["--data-dir", data, "serve"],
            &[("LEDGER_WEBHOOK_CA_FILE", "/nonexistent/ca.pem")],
            "LEDGER_WEBHOOK_CA_FILE",
        ),
        (
            &[
                "--data-dir",
                data,
                "serve",
                "--webhook-ca-file",
                "/dev/null",
            ],
            &[],
            "--webhook-ca-file",
        ),
    ];
    for (args, envs, names) in cases {
        let output = run(args, envs);
        assert!(!output.status.success(), "{args:?} started");
        let err = stderr(&output);
        assert!(
            err.contains(names),
            "{args:?}: {err:?} does not name {names}"
        );
        assert!(!err.contains("not-hex"), "the bad value is echoed: {err}");
    }
}

#[test]
fn first_run_creates_private_keys_and_rotation_keeps_the_old_key_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("path");
    let created = run(
        &[
            "--data-dir",
            data,
            "tenant",
            "create",
            "acme",
            "--name",
            "Acme",
            "--admin",
            "Alice",
        ],
        &[],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let answer: serde_json::Value =
        serde_json::from_slice(&created.stdout).expect("one JSON object");
    assert_eq!(answer["tenant"], "acme");
    assert!(
        answer["admin"]
            .as_str()
            .is_some_and(|a| a.starts_with("usr_")),
        "{answer}"
    );
    assert!(
        answer["invite"]
            .as_str()
            .is_some_and(|i| i.starts_with("inv_")),
        "{answer}"
    );
    #[cfg(unix)]
    for file in ["master.key", "keys/2fa-1.seed", "keys/ckpt-1.seed"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(Path::new(data).join(file))
            .expect(file)
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is readable by others: {mode:o}");
    }
    let again = run(
        &[
            "--data-dir",
            data,
            "tenant",
            "create",
            "acme",
            "--name",
            "Acme",
            "--admin",
            "Bob",
        ],
        &[],
    );
    assert!(!again.status.success(), "a tenant created twice");

    let rotated = run(
        &["--data-dir", data, "keys", "rotate", "--purpose", "2fa"],
        &[],
    );
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert_eq!(String::from_utf8_lossy(&rotated.stdout).trim(), "2fa-2");
    let list: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(data).join("keys/keys.json")).expect("keys.json"),
    )
    .expect("json");
    let ids: Vec<&str> = list["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["key_id"].as_str())
        .collect();
    assert_eq!(ids, ["ckpt-1", "2fa-1", "2fa-2"]);
    let bad = run(
        &["--data-dir", data, "keys", "rotate", "--purpose", "signing"],
        &[],
    );
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--purpose"), "{}", stderr(&bad));
}

/// A tenant's admin (TOTP confirmed) and an auditor.
async fn admin_and_auditor(stack: &Stack, slug: &str) -> (User, User) {
    let mut admin = stack.redeem(&stack.tenant(slug), true).await;
    let auditor = stack.invite_user(&admin, "aud", true).await;
    let code = admin.code();
    let (status, body) = stack
        .post(
            &admin,
            &format!("/v1/users/{}/roles", auditor.id),
            json!({"role": "auditor", "otp": code}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (admin, auditor)
}

/// Two processes, one PostgreSQL database, two tenants, concurrent writes through both:
/// every acknowledged command is in one contiguous chain per tenant, and each tenant's
/// export (read through either process) verifies intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_database_never_fork_a_chain() {
    let mut stack = Stack::new(Backend::Postgres).await;
    let first = stack.base.clone();
    let second = stack.start_another().await;
    let tenants = ["acme", "beta"];
    let mut people = Vec::new();
    for slug in tenants {
        people.push(admin_and_auditor(&stack, slug).await);
    }

    // Each admin adds users through both processes at once: each answer is a commit.
    let mut tasks = Vec::new();
    for (tenant, (admin, _)) in people.iter().enumerate() {
        for n in 0..40 {
            let base = if n % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let (client, key) = (stack.client.clone(), admin.key.clone());
            tasks.push(tokio::spawn(async move {
                let response = client
                    .post(format!("{base}/v1/users"))
                    .bearer_auth(&key)
                    .json(&json!({ "name": format!("user {n}") }))
                    .send()
                    .await
                    .expect("send");
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                assert_eq!(status, StatusCode::CREATED, "{text}");
                let body: Value = serde_json::from_str(&text).expect("json");
                (tenant, body["user"].as_str().expect("user").to_owned())
            }));
        }
    }
    let mut users = vec![Vec::new(); tenants.len()];
    for task in tasks {
        let (tenant, user) = task.await.expect("task");
        users[tenant].push(user);
    }

    let url = stack.storage[1].clone();
    let store = ledger_store::Store::connect(&url).await.expect("store");
    for ((slug, (_, auditor)), users) in tenants.iter().zip(&people).zip(&users) {
        // The chain as stored: contiguous, every acknowledged user in it once.
        let tenant: ledger_core::ids::TenantId = slug.parse().expect("tenant");
        let events = store.load(&tenant, 0, 10_000).await.expect("load");
        for (index, (event, _)) in events.iter().enumerate() {
            assert_eq!(event.seq, index as u64 + 1, "{slug}: contiguous");
        }
        for user in users {
            let added = events
                .iter()
                .filter(|(e, _)| {
                    matches!(&e.body, ledger_core::event::EventBody::UserAdded(d) if d.user.as_str() == user)
                })
                .count();
            assert_eq!(added, 1, "{slug}: {user} added once");
        }
        // And intact: the auditor's export verifies, read through either process, and
        // both processes export the same chain.
        let mut chains = Vec::new();
        for base in [&first, &second] {
            let (text, keys) = export_from(&stack, base, auditor).await;
            let report = verify_export(&text, Some(keys)).expect("usable");
            assert!(report.is_intact(), "{slug} via {base}: {report:?}");
            assert_eq!(report.summary.events, events.len() as u64, "{slug}");
            chains.push(event_lines(&text));
        }
        assert_eq!(chains[0], chains[1], "{slug}: the two processes disagree");
    }
    store.close().await;
}

/// `serve` on a fresh data dir (no master key in the environment) creates the master key
/// and both signing keys readable by the owner only, in directories others cannot read.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_fresh_data_dir_creates_private_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_text = data.to_str().expect("path");
    let listen = format!("127.0.0.1:{}", process::free_port());
    let child = Command::new(BIN)
        .args(["--data-dir", data_text, "serve", "--listen", &listen])
        .env_remove("LEDGER_DATABASE_URL")
        .env_remove("LEDGER_KEYS_DIR")
        .env_remove("LEDGER_MASTER_KEY")
        .env_remove("LEDGER_MASTER_KEY_FILE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let server = process::Server {
        child,
        base: format!("http://{listen}"),
    };
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(response) = client.get(format!("{}/readyz", server.base)).send().await {
            assert_eq!(response.status(), StatusCode::OK, "a fresh store is ready");
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "serve did not start on a fresh data dir");
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
    };
    let list: Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("keys/keys.json")).expect("keys.json"),
    )
    .expect("json");
    let ids: Vec<&str> = list["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["key_id"].as_str())
        .collect();
    assert_eq!(ids, ["ckpt-1", "2fa-1"], "serve generated both keys");
    for file in [
        "master.key",
        "keys/keys.json",
        "keys/ckpt-1.seed",
        "keys/2fa-1.seed",
    ] {
        let mode = mode(&data.join(file));
        assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
    }
    assert_eq!(mode(&data) & 0o077, 0, "the data dir: {:o}", mode(&data));
    // The directory `serve` made for the keys (keys.rs `add_key`) must not be open to
    // others either.
    let keys_dir = mode(&data.join("keys"));
    assert_eq!(
        keys_dir & 0o007,
        0,
        "the keys directory serve created is open to others: {keys_dir:o}"
    );
    drop(server);
}

/// Rotating the checkpoint key: the old key stays published, checkpoints after the
/// restart are signed with the new key, and an export holding checkpoints under both
/// verifies.
async fn checkpoint_key_rotation_keeps_old_checkpoints_verifiable(backend: Backend) {
    let mut stack = Stack::new(backend).await;
    let org = org(&stack, "acme").await;
    let auditor = org.people["aud"].clone();
    let eve = org.people["eve"].clone();
    let (status, before) = stack.post(&auditor, "/v1/checkpoints", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{before}");
    assert_eq!(before["key_id"], "ckpt-1", "{before}");

    let rotated = stack.cli(&["keys", "rotate", "--purpose", "checkpoint"]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert_eq!(String::from_utf8_lossy(&rotated.stdout).trim(), "ckpt-2");
    // The keys are loaded at start-up: the rotation takes effect on restart.
    stack.stop();
    stack.start().await;

    let (status, body) = stack
        .post(
            &eve,
            &format!("/v1/accounts/{}/deposits", org.account),
            json!({"amount": "5.00", "reference": "after rotation"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, after) = stack.post(&auditor, "/v1/checkpoints", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{after}");
    assert_eq!(after["key_id"], "ckpt-2", "{after}");
    assert!(
        after["seq"].as_u64() > before["seq"].as_u64(),
        "{before} {after}"
    );
    let (status, latest) = stack.get(&auditor, "/v1/checkpoints/latest").await;
    assert_eq!(status, StatusCode::OK, "{latest}");
    assert_eq!(latest, after);

    // Both checkpoint keys are listed, the old one retired, the new one in force.
    let (status, keys) = stack.get(&auditor, "/v1/ledger/keys").await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let record = |id: &str| {
        keys["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|k| k["key_id"] == id)
            .unwrap_or_else(|| panic!("{id} is not listed: {keys}"))
            .clone()
    };
    let (old, new) = (record("ckpt-1"), record("ckpt-2"));
    for key in [&old, &new] {
        assert_eq!(key["purpose"], "checkpoint", "{key}");
        assert_eq!(key["algorithm"], "ed25519", "{key}");
        assert_eq!(key["public_key"].as_str().map(str::len), Some(64), "{key}");
    }
    assert_ne!(old["public_key"], new["public_key"]);
    assert!(
        old["not_after"].is_string(),
        "the old key is retired: {old}"
    );
    assert!(new["not_after"].is_null(), "the new key is in force: {new}");
    record("2fa-1");

    // The export holds checkpoints under both keys, and verifies with them pinned.
    let (text, pinned) = export(&stack, &auditor).await;
    let signers: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["type"] == "checkpoint")
        .map(|l| l["checkpoint"]["key_id"].clone())
        .collect();
    assert!(signers.contains(&json!("ckpt-1")), "{signers:?}");
    assert!(signers.contains(&json!("ckpt-2")), "{signers:?}");
    let report = verify_export(&text, Some(pinned)).expect("usable");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.summary.checkpoints_verified, signers.len() as u64);
    for id in ["ckpt-1", "ckpt-2"] {
        assert!(
            report.summary.keys_used.iter().any(|k| k.to_string() == id),
            "{id} not used: {:?}",
            report.summary.keys_used
        );
    }
}

/// `/readyz` answers 200 while the store answers.
async fn readyz_answers_200_while_the_store_is_up(backend: Backend) {
    let stack = Stack::new(backend).await;
    let (status, headers, body) = stack
        .send(reqwest::Method::GET, None, "/readyz", None, &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(headers.get("retry-after").is_none());
}

on_both_backends!(
    checkpoint_key_rotation_keeps_old_checkpoints_verifiable,
    readyz_answers_200_while_the_store_is_up,
);

/// Cuts the server off its PostgreSQL database: no new connection is allowed, and the
/// ones it holds are terminated.
fn cut_off(admin: &str, name: &str) {
    psql(
        admin,
        &format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"),
    );
    psql(
        admin,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ),
    );
}

fn reconnect(admin: &str, name: &str) {
    psql(
        admin,
        &format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"),
    );
}

/// Asserts a 503 store-unavailable problem with Retry-After.
fn assert_unavailable(what: &str, status: StatusCode, headers: &HeaderMap, body: &Value) {
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what} while the store is down: {body}"
    );
    let retry_after: u64 = headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: 503 without Retry-After"))
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1, "{what}: Retry-After {retry_after}");
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{what}"
    );
    assert_eq!(body["status"], 503, "{what}: {body}");
    assert!(body["code"].is_string(), "{what}: {body}");
}

/// PostgreSQL unreachable for the running server: `/readyz` and a deposit answer 503
/// with Retry-After (never a 500); once it is back, the same deposit with the same
/// Idempotency-Key commits, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_answers_503_and_the_retry_commits_once() {
    let stack = Stack::new(Backend::Postgres).await;
    let org = org(&stack, "acme").await;
    let (admin, name) = stack.pg.clone().expect("postgres");
    let eve = org.people["eve"].clone();
    let path = format!("/v1/accounts/{}/deposits", org.account);
    let deposit = json!({"amount": "7.00", "reference": "during the outage"});
    let idempotency = [("idempotency-key", "outage-deposit")];
    let (status, _, body) = stack
        .send(reqwest::Method::GET, None, "/readyz", None, &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    cut_off(&admin, &name);
    let (status, headers, body) = stack
        .send(reqwest::Method::GET, None, "/readyz", None, &[])
        .await;
    assert_unavailable("/readyz", status, &headers, &body);
    let (status, headers, body) = stack
        .send(
            reqwest::Method::POST,
            Some(&eve.key),
            &path,
            Some(deposit.clone()),
            &idempotency,
        )
        .await;
    assert_unavailable("a deposit", status, &headers, &body);
    // Without an Idempotency-Key the deposit reaches the writer, whose commit fails.
    let unkeyed = json!({"amount": "3.00", "reference": "unkeyed during the outage"});
    let (status, headers, body) = stack
        .send(
            reqwest::Method::POST,
            Some(&eve.key),
            &path,
            Some(unkeyed),
            &[],
        )
        .await;
    assert_unavailable("a deposit without a key", status, &headers, &body);
    let (status, headers, body) = stack
        .send(
            reqwest::Method::GET,
            Some(&eve.key),
            &format!("/v1/accounts/{}", org.account),
            None,
            &[],
        )
        .await;
    assert_unavailable("a read", status, &headers, &body);
    // Once the API key's cached record is stale, its lookup fails too: still 503 (the
    // store is down), not 401 (the key is good).
    tokio::time::sleep(ledger_api::credentials::API_KEY_CACHE_TTL + Duration::from_millis(200))
        .await;
    let (status, headers, body) = stack
        .send(
            reqwest::Method::POST,
            Some(&eve.key),
            &path,
            Some(deposit.clone()),
            &idempotency,
        )
        .await;
    assert_unavailable("the retried deposit", status, &headers, &body);
    reconnect(&admin, &name);

    // Back: the same request, same key, until answered (a key left "in progress" by
    // the outage is taken over after a while): one commit.
    let mut answer = None;
    for _ in 0..300 {
        let (status, headers, body) = stack
            .send(
                reqwest::Method::POST,
                Some(&eve.key),
                &path,
                Some(deposit.clone()),
                &idempotency,
            )
            .await;
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "a 500 after the store came back: {body}"
        );
        if status == StatusCode::SERVICE_UNAVAILABLE || body["code"] == "idempotency_in_progress" {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        answer = Some((status, headers, body));
        break;
    }
    let (status, _, body) = answer.expect("the deposit never went through after the outage");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, headers, replay) = stack
        .send(
            reqwest::Method::POST,
            Some(&eve.key),
            &path,
            Some(deposit.clone()),
            &idempotency,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{replay}");
    assert_eq!(
        headers.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(&b"true"[..]),
        "the second answer is a replay"
    );
    assert_eq!(replay, body);
    let (status, _, ready) = stack
        .send(reqwest::Method::GET, None, "/readyz", None, &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{ready}");

    let (text, keys) = export(&stack, &org.people["aud"]).await;
    assert!(verify_export(&text, Some(keys))
        .expect("usable")
        .is_intact());
    let deposits = kinds(&text, "funds.deposited");
    let outage: Vec<&Value> = deposits
        .iter()
        .filter(|e| e["data"]["reference"] == "during the outage")
        .collect();
    assert_eq!(outage.len(), 1, "committed exactly once: {outage:?}");
    assert!(
        deposits
            .iter()
            .all(|e| e["data"]["reference"] != "unkeyed during the outage"),
        "a deposit answered 503 while the database refused connections was committed"
    );
    assert!(
        !stack.log_text().contains("\"status\":500"),
        "a 500 in the log"
    );
}

/// Rate limits with the defaults: invite redemption is limited per client IP (20 a
/// minute), answered 429 with Retry-After; every answer carries an X-Request-Id, the
/// client's own when it sends a well-formed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redemption_is_rate_limited_and_every_answer_has_a_request_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("path");
    let server = start(&["--data-dir", data]).await;
    let client = reqwest::Client::new();
    let mut limited = None;
    for n in 0..40 {
        let response = client
            .post(format!("{}/v1/invites/redeem", server.base))
            .header("x-request-id", format!("req-{n}"))
            .json(&serde_json::json!({ "invite": format!("inv_guess{n}.nope") }))
            .send()
            .await
            .expect("send");
        assert_eq!(
            response.headers()["x-request-id"].to_str().expect("ascii"),
            format!("req-{n}")
        );
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 401, "a guessed invite");
    }
    let limited = limited.expect("no 429 within 40 guesses");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
    let body: serde_json::Value = limited.json().await.expect("json");
    assert_eq!(body["code"], "rate_limited");
    // A request id the server made up when the client sent none (or a bad one).
    let response = client
        .get(format!("{}/healthz", server.base))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .expect("send");
    let id = response.headers()["x-request-id"].to_str().expect("ascii");
    assert!(!id.is_empty() && !id.contains(' '), "{id}");
}

/// The storage flags are taken before or after the subcommand's name (DESIGN section 7),
/// and either way name the store the subcommand works on.
#[test]
fn storage_flags_are_taken_before_or_after_the_subcommand() {
    let before = tempfile::tempdir().expect("temp dir");
    let after = tempfile::tempdir().expect("temp dir");
    let before_dir = before.path().join("data");
    let after_dir = after.path().join("data");
    let before_text = before_dir.to_str().expect("utf-8 path");
    let after_text = after_dir.to_str().expect("utf-8 path");
    for args in [
        &["--data-dir", before_text, "migrate"][..],
        &["migrate", "--data-dir", after_text][..],
    ] {
        let output = run(args, &[]);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    }
    for dir in [&before_dir, &after_dir] {
        assert!(
            dir.join("ledger.db").is_file(),
            "{} has no ledger.db",
            dir.display()
        );
    }
}
