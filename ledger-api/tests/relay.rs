//! The NATS JetStream relay against a real server (`NATS_URL`, or one started for this
//! test binary): the relay is killed (SIGKILL) while it publishes and restarted, and the
//! stream ends up holding every event of the tenant exactly once, ids `<tenant>:<seq>`.

mod process;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;
use process::{master_key, BIN};
use serde_json::Value;

use test_support::nats_url;

/// Every message of `subject` in the stream, by `Nats-Msg-Id` (with its count).
async fn messages(js: &jetstream::Context, subject: &str) -> BTreeMap<String, usize> {
    let stream = ledger_api::relay::ensure_stream(js).await.expect("stream");
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: subject.to_owned(),
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut seen = BTreeMap::new();
    let mut batch = consumer
        .fetch()
        .max_messages(10_000)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .expect("fetch");
    while let Some(message) = batch.next().await {
        let message = message.expect("message");
        // The event itself names its tenant and seq; JetStream deduplicated on
        // `Nats-Msg-Id: <tenant>:<seq>` when it was published.
        let event: Value = serde_json::from_slice(&message.payload).expect("event JSON");
        let id = format!(
            "{}:{}",
            event["tenant"].as_str().expect("tenant"),
            event["seq"].as_u64().expect("seq")
        );
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_leaves_every_event_exactly_once() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let tenant = format!("relay-{}-{nanos}", std::process::id());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("path");
    let invite = process::create_tenant(data, &tenant);

    // Events first, without the relay.
    let server = process::start(&["--data-dir", data]).await;
    let client = reqwest::Client::new();
    let redeemed = process::redeem(&client, &server.base, &invite).await;
    let key = redeemed["api_key"].as_str().expect("key").to_owned();
    let mut adds = Vec::new();
    for n in 0..400 {
        let client = client.clone();
        let (base, key) = (server.base.clone(), key.clone());
        adds.push(tokio::spawn(async move {
            let response = client
                .post(format!("{base}/v1/users"))
                .bearer_auth(&key)
                .json(&serde_json::json!({ "name": format!("u{n}") }))
                .send()
                .await
                .expect("send");
            assert_eq!(response.status(), 201);
        }));
    }
    for add in adds {
        add.await.expect("task");
    }
    let head: Value = client
        .get(format!("{}/v1/events?after=0&limit=1", server.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("feed")
        .json()
        .await
        .expect("json");
    let head = head["head"].as_u64().expect("head");
    assert!(head > 400);
    drop(server);

    let js = jetstream::new(
        async_nats::connect(nats_url())
            .await
            .expect("NATS at NATS_URL"),
    );
    let subject = format!("ledger.{tenant}.events");
    let with_relay = ["--data-dir", data];
    let start_relay = || {
        Command::new(BIN)
            .args(with_relay)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", process::free_port()),
            ])
            .env("LEDGER_MASTER_KEY", master_key())
            .env("NATS_URL", nats_url())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn")
    };

    // Kill the relay as soon as the stream holds something of this tenant.
    let mut relay = start_relay();
    let mut before_kill = 0;
    for _ in 0..400 {
        before_kill = messages(&js, &subject).await.len();
        if before_kill > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.kill().expect("SIGKILL");
    relay.wait().expect("wait");
    assert!(before_kill > 0, "the relay published nothing");

    // Restarted, it finishes the job.
    let mut relay = start_relay();
    let mut seen = BTreeMap::new();
    for _ in 0..200 {
        seen = messages(&js, &subject).await;
        if seen.len() as u64 >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.kill().expect("kill");
    relay.wait().expect("wait");
    let expected: Vec<String> = (1..=head).map(|seq| format!("{tenant}:{seq}")).collect();
    let mut got: Vec<String> = seen.keys().cloned().collect();
    got.sort_by_key(|id| id.rsplit(':').next().and_then(|s| s.parse::<u64>().ok()));
    assert_eq!(
        got, expected,
        "every event, no gap (killed after {before_kill})"
    );
    assert!(seen.values().all(|&n| n == 1), "no event twice");

    // The ids are what deduplicates: forget the cursor and publish a page again, and
    // the stream still holds each event once.
    let store = ledger_store::Store::Sqlite(
        ledger_store::SqliteStore::open(&dir.path().join("ledger.db"))
            .await
            .expect("open"),
    );
    let tenant_id: ledger_core::ids::TenantId = tenant.parse().expect("tenant");
    // (The restarted relay may have been killed before it recorded its cursor.)
    store
        .delete_record(&tenant_id, "cursor", "nats")
        .await
        .expect("delete");
    let republished = ledger_api::relay::relay_tenant(&store, &js, &tenant_id)
        .await
        .expect("relay");
    assert!(republished > 0);
    let again = messages(&js, &subject).await;
    assert_eq!(again.len() as u64, head);
    assert!(
        again.values().all(|&n| n == 1),
        "a republished event was stored twice"
    );
}

/// A test CA's certificate (PEM) and a certificate it signed for localhost and
/// 127.0.0.1, with its key, written into `dir`; nats-server's TLS arguments.
fn nats_tls_files(dir: &std::path::Path) -> Vec<String> {
    let ca = test_support::ca::TestCa::new();
    let server = ca.current("localhost");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca");
    std::fs::write(dir.join("server.crt"), &server.certificate).expect("crt");
    std::fs::write(dir.join("server.key"), &server.key).expect("key");
    vec![
        "--tls".to_owned(),
        "--tlscert".to_owned(),
        dir.join("server.crt").display().to_string(),
        "--tlskey".to_owned(),
        dir.join("server.key").display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_over_tls_to_a_server_of_a_private_ca() {
    let nats = test_support::start_nats_with(nats_tls_files);
    let url = format!("tls://localhost:{}", nats.port);
    let ca = nats.dir.join("ca.pem");

    // Without the CA the server's certificate is not trusted; a plain client is refused.
    let untrusted = ledger_api::relay::NatsTarget {
        url: url.clone(),
        ca_file: None,
        replicas: 1,
    };
    assert!(
        untrusted.connect().await.is_err(),
        "an unknown CA was trusted"
    );
    let trusted = ledger_api::relay::NatsTarget {
        url: url.clone(),
        ca_file: Some(ca.clone()),
        replicas: 1,
    };
    let js = jetstream::new(trusted.connect().await.expect("TLS with the CA"));

    let tenant = format!("relay-tls-{}", std::process::id());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("path");
    process::create_tenant(data, &tenant);
    let mut relay = Command::new(BIN)
        .args(["--data-dir", data, "serve", "--listen"])
        .arg(format!("127.0.0.1:{}", process::free_port()))
        .env("LEDGER_MASTER_KEY", master_key())
        .env("NATS_URL", &url)
        .env("NATS_CA_FILE", &ca)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let store = ledger_store::Store::Sqlite(
        ledger_store::SqliteStore::open(&dir.path().join("ledger.db"))
            .await
            .expect("open"),
    );
    let tenant_id: ledger_core::ids::TenantId = tenant.parse().expect("tenant");
    let head = store.head(&tenant_id).await.expect("head").seq;
    assert!(head > 0, "tenant create appended nothing");
    let subject = format!("ledger.{tenant}.events");
    let mut seen = BTreeMap::new();
    for _ in 0..200 {
        seen = messages(&js, &subject).await;
        if seen.len() as u64 >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.kill().expect("kill");
    relay.wait().expect("wait");
    let expected: Vec<String> = (1..=head).map(|seq| format!("{tenant}:{seq}")).collect();
    let mut got: Vec<String> = seen.keys().cloned().collect();
    got.sort_by_key(|id| id.rsplit(':').next().and_then(|s| s.parse::<u64>().ok()));
    assert_eq!(got, expected, "every event over TLS");
}
