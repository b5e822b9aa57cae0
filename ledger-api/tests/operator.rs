//! The operator CLI as a process: configuration validated at start-up (a bad setting
//! stops it with a message naming the setting), first-run key generation, key rotation,
//! `tenant create`, and two server processes writing one tenant on one PostgreSQL
//! database without ever forking its chain.

mod process;

use std::path::Path;
use std::process::{Command, Output};

use process::{start, MASTER_KEY};

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
    command.output().expect("run ledger-api")
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
    let cases: [Case; 5] = [
        (
            &["--data-dir", data, "serve", "--listen", "localhost:http"],
            &[],
            "--listen",
        ),
        (
            &["--database-url", "mysql://x", "serve"],
            &[("LEDGER_MASTER_KEY", MASTER_KEY)],
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

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Two processes, one PostgreSQL database, one tenant, concurrent writes through both:
/// every acknowledged command is in one contiguous chain that verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_database_never_fork_a_chain() {
    use sqlx::Connection;
    let admin_url = database_url();
    let name = format!("ledger_two_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create");
    let url = match admin_url.rfind('/') {
        Some(i) => format!("{}/{name}", &admin_url[..i]),
        None => panic!("DATABASE_URL without a database"),
    };
    let keys = tempfile::tempdir().expect("tempdir");
    let keys_dir = keys.path().to_str().expect("path");
    let storage = ["--database-url", url.as_str(), "--keys-dir", keys_dir];
    let env = [("LEDGER_MASTER_KEY", MASTER_KEY)];
    for step in [&["migrate"][..], &["keys", "generate"][..]] {
        let args: Vec<&str> = storage.iter().chain(step).copied().collect();
        let output = run(&args, &env);
        assert!(output.status.success(), "{step:?}: {}", stderr(&output));
    }
    let args: Vec<&str> = storage
        .iter()
        .copied()
        .chain([
            "tenant", "create", "acme", "--name", "Acme", "--admin", "Alice",
        ])
        .collect();
    let created = run(&args, &env);
    assert!(created.status.success(), "{}", stderr(&created));
    let invite = serde_json::from_slice::<serde_json::Value>(&created.stdout).expect("json")
        ["invite"]
        .as_str()
        .expect("invite")
        .to_owned();

    let first = start(&storage).await;
    let second = start(&storage).await;
    let client = reqwest::Client::new();
    let redeemed: serde_json::Value = client
        .post(format!("{}/v1/invites/redeem", first.base))
        .json(&serde_json::json!({ "invite": invite }))
        .send()
        .await
        .expect("redeem")
        .json()
        .await
        .expect("json");
    let key = redeemed["api_key"].as_str().expect("api_key").to_owned();

    // The admin adds users through both processes at once: each answer is a commit.
    let mut tasks = Vec::new();
    for n in 0..40 {
        let base = if n % 2 == 0 {
            first.base.clone()
        } else {
            second.base.clone()
        };
        let client = client.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(format!("{base}/v1/users"))
                .bearer_auth(&key)
                .json(&serde_json::json!({ "name": format!("user {n}") }))
                .send()
                .await
                .expect("send");
            assert_eq!(
                response.status(),
                201,
                "{}",
                response.text().await.unwrap_or_default()
            );
            let body: serde_json::Value = response.json().await.expect("json");
            body["user"].as_str().expect("user").to_owned()
        }));
    }
    let mut users = Vec::new();
    for task in tasks {
        users.push(task.await.expect("task"));
    }

    // The chain as stored: contiguous, every acknowledged user in it once, and intact.
    let store = ledger_store::Store::connect(&url).await.expect("store");
    let tenant: ledger_core::ids::TenantId = "acme".parse().expect("tenant");
    let events = store.load(&tenant, 0, 10_000).await.expect("load");
    for (index, (event, _)) in events.iter().enumerate() {
        assert_eq!(event.seq, index as u64 + 1, "contiguous");
    }
    for user in &users {
        let added = events
            .iter()
            .filter(|(e, _)| {
                matches!(&e.body, ledger_core::event::EventBody::UserAdded(d) if d.user.as_str() == user)
            })
            .count();
        assert_eq!(added, 1, "{user} added once");
    }
    store.close().await;
    drop(first);
    drop(second);
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop");
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
