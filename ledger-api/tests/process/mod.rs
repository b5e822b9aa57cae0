//! Starting the real `ledger-api` binary for a test: a server process on a free port,
//! killed when dropped.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ledger-api");
/// The master key for field encryption in this test process: generated once, at test
/// time, and the same for every server the process starts (a restart reads its data).
pub fn master_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| format!("k1:{}", hex::encode(ledger_api::util::random_bytes::<32>())))
}

/// A server process on `url`, listening on a free port.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to its end, its output captured; a process still running after
/// `limit` (a `serve` that should have refused its settings, say) is killed and the test
/// fails, rather than hanging.
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Read while it runs, so that a full pipe cannot stall it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub async fn start(storage: &[&str]) -> Server {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args: Vec<&str> = storage.to_vec();
    args.extend(["serve", "--listen", &listen]);
    let child = Command::new(BIN)
        .args(&args)
        .env("LEDGER_MASTER_KEY", master_key())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let server = Server {
        child,
        base: format!("http://{listen}"),
    };
    for _ in 0..200 {
        if reqwest::get(format!("{}/healthz", server.base))
            .await
            .is_ok()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server on {listen} did not start");
}

/// `ledger-api tenant create SLUG` on `data` (a data dir); the admin's invite.
pub fn create_tenant(data: &str, slug: &str) -> String {
    let created = Command::new(BIN)
        .args(["--data-dir", data, "tenant", "create", slug])
        .args(["--name", slug, "--admin", "Admin"])
        .env("LEDGER_MASTER_KEY", master_key())
        .output()
        .expect("tenant create");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&created.stdout).expect("json");
    answer["invite"].as_str().expect("invite").to_owned()
}

/// Redeems an invite: the answer of `POST /v1/invites/redeem`.
pub async fn redeem(client: &reqwest::Client, base: &str, invite: &str) -> serde_json::Value {
    let response = client
        .post(format!("{base}/v1/invites/redeem"))
        .json(&serde_json::json!({ "invite": invite }))
        .send()
        .await
        .expect("redeem");
    assert_eq!(response.status(), 201);
    response.json().await.expect("json")
}
