//! Webhooks over real HTTP (DESIGN section 8, Standard Webhooks): the real `ledger-api`
//! binary delivers to real receivers (small HTTP servers on 127.0.0.1:0 in the test), on
//! SQLite and on PostgreSQL. Signatures are checked against the Standard Webhooks
//! reference vector and by an independent implementation, the `standardwebhooks` Python
//! package (installed under target/ when it is not importable).

mod process;
mod stack;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::Mac;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stack::{Backend, Stack};
use tokio_rustls::rustls;

/// The worker's settings for tests: receivers on 127.0.0.1 allowed, fast retries.
const FAST: &[&str] = &[
    "--webhook-allow-cidrs",
    "127.0.0.1/32",
    "--webhook-retry-base-ms",
    "20",
    "--webhook-retry-max-ms",
    "200",
    "--webhook-poll-ms",
    "50",
];
/// How long a test waits for deliveries before it fails.
const PATIENCE: Duration = Duration::from_secs(60);
/// The independent implementation, pinned (as in .ci/run).
const PYTHON_PACKAGE: &str = "standardwebhooks";
const PYTHON_VERSION: &str = "1.1.0";

// ---------------------------------------------------------------------------------------
// A receiver
// ---------------------------------------------------------------------------------------

/// How a receiver answers.
#[derive(Debug, Clone)]
enum Plan {
    /// 200.
    Ok,
    /// 500 for the first n requests, then 200.
    FailFirst(usize),
    /// 500.
    FailAll,
    /// 302 to this URL.
    Redirect(String),
}

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    answered: u16,
}

#[derive(Debug)]
struct Inner {
    plan: Mutex<Plan>,
    hits: Mutex<Vec<Hit>>,
}

#[derive(Debug, Clone)]
struct Receiver {
    url: String,
    inner: Arc<Inner>,
}

async fn receive(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (status, location) = {
        let mut plan = inner.plan.lock().expect("plan");
        match &mut *plan {
            Plan::Ok => (200, None),
            Plan::FailFirst(left) if *left > 0 => {
                *left -= 1;
                (500, None)
            }
            Plan::FailFirst(_) => (200, None),
            Plan::FailAll => (500, None),
            Plan::Redirect(to) => (302, Some(to.clone())),
        }
    };
    inner.hits.lock().expect("hits").push(Hit {
        path: uri.path().to_owned(),
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        answered: status,
    });
    let status = AxumStatus::from_u16(status).expect("status");
    match location {
        Some(to) => (status, [("location", to)]).into_response(),
        None => status.into_response(),
    }
}

impl Receiver {
    async fn start(plan: Plan) -> Receiver {
        let inner = Arc::new(Inner {
            plan: Mutex::new(plan),
            hits: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&inner));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, inner }
    }

    fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    fn set_plan(&self, plan: Plan) {
        *self.inner.plan.lock().expect("plan") = plan;
    }

    fn hits(&self) -> Vec<Hit> {
        self.inner.hits.lock().expect("hits").clone()
    }

    /// The requests answered with a 2xx.
    fn delivered(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| (200..300).contains(&h.answered))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// A receiver over HTTPS, under a private CA
// ---------------------------------------------------------------------------------------

/// A private CA, as an internal receiver's operator has one.
struct PrivateCa {
    certificate: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl PrivateCa {
    fn new(name: &str) -> PrivateCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let certificate = params.self_signed(&key).expect("CA certificate");
        PrivateCa { certificate, key }
    }

    /// The CA's certificate, what `--webhook-ca-file` names.
    fn pem(&self) -> String {
        self.certificate.pem()
    }

    /// The TLS settings of a server whose certificate this CA signed for 127.0.0.1 and
    /// localhost.
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().expect("server key");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("server certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .expect("server TLS settings");
        Arc::new(config)
    }
}

/// What an HTTPS receiver's TLS layer saw.
#[derive(Debug, Default)]
struct Handshakes {
    completed: AtomicUsize,
    /// The errors of the handshakes that failed (a client's alert, when it refused the
    /// certificate).
    failed: Mutex<Vec<String>>,
}

/// A TCP listener that speaks TLS only; axum serves the receiver behind it.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: Arc<Handshakes>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, address)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                Ok(Ok(tls)) => {
                    self.handshakes.completed.fetch_add(1, Ordering::SeqCst);
                    return (tls, address);
                }
                Ok(Err(error)) => self
                    .handshakes
                    .failed
                    .lock()
                    .expect("handshakes")
                    .push(error.to_string()),
                Err(_) => self
                    .handshakes
                    .failed
                    .lock()
                    .expect("handshakes")
                    .push("handshake timed out".to_owned()),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl Receiver {
    /// A receiver at `https://127.0.0.1:port` with these TLS settings; its handshakes.
    async fn start_tls(plan: Plan, tls: Arc<rustls::ServerConfig>) -> (Receiver, Arc<Handshakes>) {
        let inner = Arc::new(Inner {
            plan: Mutex::new(plan),
            hits: Mutex::new(Vec::new()),
        });
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("https://{}", tcp.local_addr().expect("address"));
        let handshakes = Arc::new(Handshakes::default());
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(tls),
            handshakes: Arc::clone(&handshakes),
        };
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&inner));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (Receiver { url, inner }, handshakes)
    }
}

/// The seqs of the delivered events, in arrival order, from their bodies.
fn seqs(hits: &[Hit]) -> Vec<u64> {
    hits.iter()
        .map(|h| {
            let event: Value = serde_json::from_slice(&h.body).expect("event JSON");
            event["seq"].as_u64().expect("seq")
        })
        .collect()
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until subscription `id` shows `status`; its view.
async fn status_becomes(stack: &Stack, key: &str, id: &str, status: &str) -> Value {
    let started = Instant::now();
    loop {
        let (code, view) = stack.get_key(key, &format!("/v1/webhooks/{id}")).await;
        assert_eq!(code, StatusCode::OK, "{view}");
        if view["status"] == status {
            return view;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "timed out waiting for {status}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Signatures: our own check (against the reference vector) and Python's
// ---------------------------------------------------------------------------------------

/// Standard Webhooks verification, written here from the spec (not the server's code).
fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
    else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    header.split(' ').any(|signature| signature == expected)
}

/// Our check accepts the reference vector, and refuses it changed.
fn check_the_reference_vector() {
    let path = test_support::vectors_dir()
        .join("crypto")
        .join("standard_webhooks_sign.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing"))
            .to_owned()
    };
    let (secret, id, timestamp, body, signature) = (
        field("secret"),
        field("webhook-id"),
        field("webhook-timestamp"),
        field("body"),
        field("webhook-signature"),
    );
    assert!(verify(
        &secret,
        &id,
        &timestamp,
        body.as_bytes(),
        &signature
    ));
    assert!(!verify(
        &secret,
        &id,
        &timestamp,
        b"{\"test\": 1}",
        &signature
    ));
    assert!(!verify(
        &secret,
        &id,
        "1614265331",
        body.as_bytes(),
        &signature
    ));
}

/// A Python whose `standardwebhooks` is the pinned version: the PYTHONPATH to use.
/// Installs it under target/ when it is missing; fails the test if it cannot.
fn python_path() -> String {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("python")
        .join(format!("{PYTHON_PACKAGE}-{PYTHON_VERSION}"));
    let probe = format!(
        "import importlib.metadata as m, standardwebhooks.webhooks; \
         assert m.version('{PYTHON_PACKAGE}') == '{PYTHON_VERSION}'"
    );
    let importable = |path: &str| {
        std::process::Command::new("python3")
            .args(["-c", &probe])
            .env("PYTHONPATH", path)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let path = dir.display().to_string();
    if importable(&path) {
        return path;
    }
    let installed = std::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--target", &path])
        .arg(format!("{PYTHON_PACKAGE}=={PYTHON_VERSION}"))
        .output()
        .expect(
            "python3 must be installed: the signatures are checked by the standardwebhooks package",
        );
    assert!(
        installed.status.success(),
        "cannot install {PYTHON_PACKAGE}=={PYTHON_VERSION} into {path}: {}",
        String::from_utf8_lossy(&installed.stderr)
    );
    assert!(
        importable(&path),
        "{PYTHON_PACKAGE} installed but not importable"
    );
    path
}

const PYTHON_CHECK: &str = r#"
import base64, json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

cases = json.load(open(sys.argv[1]))
verified = 0
for case in cases:
    hook = Webhook(case["secret"])
    body = base64.b64decode(case["body"])
    headers = {"webhook-id": case["id"], "webhook-timestamp": case["timestamp"],
               "webhook-signature": case["signature"]}
    event = hook.verify(body, headers)
    assert event["seq"] == case["seq"], "the verified body is another event"
    for name, tampered in [("body", body + b" "), ("id", None)]:
        changed = dict(headers)
        if tampered is None:
            changed["webhook-id"] = case["id"] + "x"
            tampered = body
        try:
            hook.verify(tampered, changed)
        except WebhookVerificationError:
            continue
        sys.exit("a delivery with a changed %s verified" % name)
    verified += 1
print("verified %d" % verified)
"#;

/// Every hit verified by the `standardwebhooks` package (and a changed copy refused).
fn python_verifies(deliveries: &[(&str, &Hit)]) {
    let cases: Vec<Value> = deliveries
        .iter()
        .map(|(secret, hit)| {
            json!({
                "secret": secret,
                "id": hit.id,
                "timestamp": hit.timestamp,
                "signature": hit.signature,
                "body": STANDARD.encode(&hit.body),
                "seq": seqs(std::slice::from_ref(*hit))[0],
            })
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let cases_file = dir.path().join("cases.json");
    let script = dir.path().join("check.py");
    std::fs::write(&cases_file, serde_json::to_vec(&cases).expect("json")).expect("write");
    std::fs::write(&script, PYTHON_CHECK).expect("write");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .arg(&cases_file)
        .env("PYTHONPATH", python_path())
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "standardwebhooks refused a delivery: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), format!("verified {}", deliveries.len()));
}

// ---------------------------------------------------------------------------------------
// Helpers over the API
// ---------------------------------------------------------------------------------------

async fn subscribe(stack: &Stack, key: &str, url: &str, events: Value) -> Value {
    let (status, body) = stack
        .post_key(key, "/v1/webhooks", json!({"url": url, "events": events}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn add_user(stack: &Stack, key: &str, name: &str) -> Value {
    let (status, body) = stack
        .post_key(key, "/v1/users", json!({ "name": name }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// The events after `after`, from the feed.
async fn events_after(stack: &Stack, key: &str, after: u64) -> Vec<Value> {
    let (status, feed) = stack
        .get_key(key, &format!("/v1/events?after={after}&limit=1000"))
        .await;
    assert_eq!(status, StatusCode::OK, "{feed}");
    feed["events"].as_array().expect("events").clone()
}

fn seq_of(event: &Value) -> u64 {
    event["seq"].as_u64().expect("seq")
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// A receiver that fails its first attempts still gets every event it subscribed to,
/// exactly in seq order, each once; the id is stable across retries; the bodies are the
/// events as the feed shows them; every signature verifies (ours, against the reference
/// vector, and Python's); the secret is shown once, never again, never logged, never
/// stored in the clear; creation is idempotent.
async fn deliveries_retried_in_order_and_signed(backend: Backend) {
    check_the_reference_vector();
    let flaky = Receiver::start(Plan::FailFirst(3)).await;
    let steady = Receiver::start(Plan::Ok).await;
    let stack = Stack::with_serve_args(backend, FAST).await;
    let admin = stack.admin("acme").await;

    let request = json!({"url": format!("{}/users", flaky.url), "events": ["user.added"], "description": "users"});
    let (status, users_hook, _) = stack
        .call_on(
            &stack.base,
            Method::POST,
            Some(&admin),
            "/v1/webhooks",
            Some(request.clone()),
            Some("hook-1"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{users_hook}");
    let users_secret = users_hook["secret"].as_str().expect("secret").to_owned();
    assert!(users_secret.starts_with("whsec_"));
    assert_eq!(users_hook["status"], "active");
    assert_eq!(users_hook["events"], json!(["user.added"]));
    let start = users_hook["cursor"].as_u64().expect("cursor");
    let users_id = users_hook["id"].as_str().expect("id").to_owned();
    // The same key and body replay the first answer; another body is refused.
    let (status, replay, headers) = stack
        .call_on(
            &stack.base,
            Method::POST,
            Some(&admin),
            "/v1/webhooks",
            Some(request),
            Some("hook-1"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(replay, users_hook);
    assert_eq!(
        headers.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let (status, conflict, _) = stack
        .call_on(
            &stack.base,
            Method::POST,
            Some(&admin),
            "/v1/webhooks",
            Some(json!({"url": format!("{}/other", flaky.url), "events": ["*"]})),
            Some("hook-1"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(conflict["code"], "idempotency_conflict");

    let all_hook = subscribe(&stack, &admin, &format!("{}/all", steady.url), json!(["*"])).await;
    let all_secret = all_hook["secret"].as_str().expect("secret").to_owned();
    assert_eq!(
        all_hook["cursor"].as_u64(),
        Some(start),
        "no event in between"
    );

    for n in 0..4 {
        add_user(&stack, &admin, &format!("user {n}")).await;
        if n % 2 == 0 {
            let (status, body) = stack
                .post_key(
                    &admin,
                    "/v1/accounts",
                    json!({"currency": "EUR", "name": "Ops"}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }
    let events = events_after(&stack, &admin, start).await;
    let user_events: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "user.added")
        .collect();
    assert_eq!(user_events.len(), 4);
    assert!(events.iter().any(|e| e["kind"] == "account.opened"));
    let user_seqs: Vec<u64> = user_events.iter().map(|e| seq_of(e)).collect();
    let all_seqs: Vec<u64> = events.iter().map(seq_of).collect();

    eventually("every delivery", || {
        flaky.delivered().len() >= user_seqs.len() && steady.delivered().len() >= all_seqs.len()
    })
    .await;
    // Room for a duplicate or a stray event to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(
        seqs(&flaky.delivered()),
        user_seqs,
        "the user events, in order, once"
    );
    assert_eq!(
        seqs(&steady.delivered()),
        all_seqs,
        "every event, in order, once"
    );
    let failed: Vec<Hit> = flaky
        .hits()
        .into_iter()
        .filter(|h| h.answered == 500)
        .collect();
    assert_eq!(failed.len(), 3);
    for hit in &failed {
        assert_eq!(
            hit.id,
            format!("acme:{}", user_seqs[0]),
            "the id is stable across retries"
        );
        assert_eq!(hit.body, flaky.delivered()[0].body);
    }
    for (hit, event) in flaky.delivered().iter().zip(&user_events) {
        assert_eq!(hit.path, "/users");
        assert_eq!(hit.id, format!("acme:{}", seq_of(event)));
        let body: Value = serde_json::from_slice(&hit.body).expect("json");
        assert_eq!(&body, *event, "the body is the event as the feed shows it");
    }
    for (hit, event) in steady.delivered().iter().zip(&events) {
        let body: Value = serde_json::from_slice(&hit.body).expect("json");
        assert_eq!(&body, event);
    }

    // Signatures: every request, failed ones too, verifies under its own secret only.
    for hit in flaky.hits() {
        assert!(verify(
            &users_secret,
            &hit.id,
            &hit.timestamp,
            &hit.body,
            &hit.signature
        ));
        assert!(!verify(
            &all_secret,
            &hit.id,
            &hit.timestamp,
            &hit.body,
            &hit.signature
        ));
        let age = util_now_seconds() - hit.timestamp.parse::<i64>().expect("unix seconds");
        assert!(
            (0..300).contains(&age),
            "the timestamp is the attempt's: {age} s old"
        );
    }
    for hit in steady.hits() {
        assert!(verify(
            &all_secret,
            &hit.id,
            &hit.timestamp,
            &hit.body,
            &hit.signature
        ));
    }
    let mut for_python: Vec<(&str, &Hit)> = Vec::new();
    let (flaky_hits, steady_hits) = (flaky.delivered(), steady.delivered());
    for_python.extend(flaky_hits.iter().map(|h| (users_secret.as_str(), h)));
    for_python.extend(steady_hits.iter().map(|h| (all_secret.as_str(), h)));
    python_verifies(&for_python);

    // The state: caught up, nothing failing; the secret never shown again.
    let head = all_seqs.last().copied().expect("events");
    let (status, view) = stack
        .get_key(&admin, &format!("/v1/webhooks/{users_id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["status"], "active");
    assert_eq!(view["cursor"].as_u64(), Some(head));
    assert_eq!(view["delivered"].as_u64(), Some(4));
    assert_eq!(view["failing"], Value::Null);
    assert!(view.get("secret").is_none());
    let (status, list) = stack.get_key(&admin, "/v1/webhooks").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["webhooks"].as_array().map(Vec::len), Some(2));
    let list_text = list.to_string();
    let secret_bodies: Vec<String> = [&users_secret, &all_secret]
        .iter()
        .map(|s| s.trim_start_matches("whsec_").to_owned())
        .collect();
    for secret in &secret_bodies {
        assert!(!list_text.contains(secret.as_str()), "a secret is listed");
        assert!(
            !stack.log_text().contains(secret.as_str()),
            "a secret is in the log"
        );
        assert!(
            !stack.stored_text().contains(secret.as_str()),
            "a secret is stored in the clear"
        );
    }
    assert!(
        stack.log_text().contains("webhook delivered"),
        "the log is captured"
    );
}

fn util_now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .expect("clock")
}

/// After N failed attempts at one event a subscription is dead-lettered and stops;
/// redelivery resumes at that event, in order. A redirect is never followed.
async fn dead_letter_then_redelivery(backend: Backend) {
    let down = Receiver::start(Plan::FailAll).await;
    let moved_to = Receiver::start(Plan::Ok).await;
    let redirecting = Receiver::start(Plan::Redirect(format!("{}/moved", moved_to.url))).await;
    let mut args = FAST.to_vec();
    args.extend(["--webhook-attempts-max", "3"]);
    let stack = Stack::with_serve_args(backend, &args).await;
    let admin = stack.admin("acme").await;
    let dead = subscribe(&stack, &admin, &format!("{}/in", down.url), json!(["*"])).await;
    let dead_id = dead["id"].as_str().expect("id").to_owned();
    let start = dead["cursor"].as_u64().expect("cursor");
    let redirect = subscribe(&stack, &admin, &redirecting.url, json!(["user.added"])).await;
    let redirect_id = redirect["id"].as_str().expect("id").to_owned();
    let (status, body) = stack
        .post_key(
            &admin,
            &format!("/v1/webhooks/{dead_id}/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "nothing to redeliver yet: {body}"
    );
    assert_eq!(body["code"], "invalid_state");

    for n in 0..3 {
        add_user(&stack, &admin, &format!("user {n}")).await;
    }
    let events = events_after(&stack, &admin, start).await;
    let all_seqs: Vec<u64> = events.iter().map(seq_of).collect();
    assert_eq!(all_seqs.len(), 3);

    let view = status_becomes(&stack, &admin, &dead_id, "dead_letter").await;
    assert_eq!(view["dead_letter"], true);
    assert_eq!(view["failing"]["seq"].as_u64(), Some(all_seqs[0]));
    assert_eq!(view["failing"]["attempts"].as_u64(), Some(3));
    assert_eq!(view["failing"]["last_error"], "status");
    assert_eq!(view["failing"]["last_status"].as_u64(), Some(500));
    assert_eq!(view["failing"]["next_attempt_at"], Value::Null);
    assert_eq!(view["cursor"].as_u64(), Some(start));

    let view = status_becomes(&stack, &admin, &redirect_id, "dead_letter").await;
    assert_eq!(view["failing"]["last_error"], "redirect_not_followed");
    assert_eq!(view["failing"]["last_status"].as_u64(), Some(302));

    // Stopped: no further attempt while dead-lettered.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let attempts = down.hits();
    assert_eq!(attempts.len(), 3, "exactly N attempts, then nothing");
    assert!(attempts
        .iter()
        .all(|h| h.id == format!("acme:{}", all_seqs[0])));
    assert_eq!(redirecting.hits().len(), 3);
    assert!(moved_to.hits().is_empty(), "a redirect was followed");

    // Redelivery: the failing event first, then the rest, in order, once.
    down.set_plan(Plan::Ok);
    let (status, view) = stack
        .post_key(
            &admin,
            &format!("/v1/webhooks/{dead_id}/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["dead_letter"], false);
    eventually("the redelivery", || {
        down.delivered().len() >= all_seqs.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seqs(&down.delivered()), all_seqs);
    let view = status_becomes(&stack, &admin, &dead_id, "active").await;
    assert_eq!(view["cursor"].as_u64(), all_seqs.last().copied());
    assert_eq!(view["delivered"].as_u64(), Some(3));
    let (status, _) = stack
        .post_key(
            &admin,
            &format!("/v1/webhooks/{dead_id}/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // The redirecting one stays dead until asked, and still never reaches the target.
    let (_, view) = stack
        .get_key(&admin, &format!("/v1/webhooks/{redirect_id}"))
        .await;
    assert_eq!(view["status"], "dead_letter");
    assert!(moved_to.hits().is_empty());
}

/// Targets outside the rules are refused: IP literals and malformed URLs when the
/// subscription is created (422), host names when they resolve at delivery (the
/// receiver on localhost is never reached without an allow-list). Only `webhook.manage`
/// may subscribe; another tenant's subscription is 404; unknown fields are refused.
async fn targets_permissions_and_tenants(backend: Backend) {
    let receiver = Receiver::start(Plan::Ok).await;
    let args = [
        "--webhook-retry-base-ms",
        "20",
        "--webhook-retry-max-ms",
        "100",
        "--webhook-poll-ms",
        "50",
        "--webhook-attempts-max",
        "2",
    ];
    let stack = Stack::with_serve_args(backend, &args).await;
    let admin = stack.admin("acme").await;
    let other = stack.admin("globex").await;

    // Bad settings stop start-up, naming the setting.
    for (flag, value) in [
        ("--webhook-attempts-max", "0"),
        ("--webhook-allow-cidrs", "10.0.0.0/99"),
        ("--webhook-timeout-ms", "abc"),
    ] {
        let refused = stack.refused_start(&[flag, value]);
        assert!(refused.contains(flag), "{flag} {value}: {refused}");
    }

    let long = format!("https://hooks.example.com/{}", "a".repeat(2100));
    let refused = [
        json!({"url": receiver.url, "events": ["*"]}),
        json!({"url": "http://10.0.0.1/in", "events": ["*"]}),
        json!({"url": "http://169.254.169.254/latest/meta-data", "events": ["*"]}),
        json!({"url": "http://[::1]:8080/", "events": ["*"]}),
        json!({"url": "http://[::ffff:127.0.0.1]/", "events": ["*"]}),
        json!({"url": "http://2130706433/", "events": ["*"]}),
        json!({"url": "http://192.168.1.1/", "events": ["*"]}),
        json!({"url": "ftp://hooks.example.com/", "events": ["*"]}),
        json!({"url": "https://user:pw@hooks.example.com/", "events": ["*"]}),
        json!({"url": "not a url", "events": ["*"]}),
        json!({"url": long, "events": ["*"]}),
        json!({"url": "https://hooks.example.com/", "events": []}),
        json!({"url": "https://hooks.example.com/", "events": ["payout.vanished"]}),
        json!({"url": "https://hooks.example.com/", "events": ["*", "user.added"]}),
        json!({"url": "https://hooks.example.com/", "events": ["*"], "description": "x".repeat(300)}),
        json!({"url": "https://hooks.example.com/", "events": ["*"], "secret": "whsec_mine"}),
    ];
    for body in refused {
        let (status, problem) = stack.post_key(&admin, "/v1/webhooks", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        assert_eq!(problem["code"], "validation");
    }
    let (status, _, _) = stack
        .call_on(
            &stack.base,
            Method::POST,
            Some(&admin),
            "/v1/webhooks",
            Some(json!("[")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // A name is accepted, and checked when it resolves: localhost is loopback.
    let local = format!("http://localhost:{}/in", receiver.port());
    let hook = subscribe(&stack, &admin, &local, json!(["*"])).await;
    let id = hook["id"].as_str().expect("id").to_owned();
    add_user(&stack, &admin, "someone").await;
    let view = status_becomes(&stack, &admin, &id, "dead_letter").await;
    assert_eq!(view["failing"]["last_error"], "address_refused");
    assert_eq!(view["failing"]["last_status"], Value::Null);
    assert!(receiver.hits().is_empty(), "a refused address was reached");

    // Permissions: a user without a role may not subscribe nor look.
    let invited = add_user(&stack, &admin, "nobody").await;
    let nobody = stack
        .redeem_key(invited["invite"].as_str().expect("invite"))
        .await;
    let (status, problem) = stack
        .post_key(
            &nobody,
            "/v1/webhooks",
            json!({"url": local, "events": ["*"]}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["code"], "forbidden");
    let (status, _) = stack.get_key(&nobody, "/v1/webhooks").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = stack.get_key(&nobody, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Another tenant's subscription does not exist for it.
    let path = format!("/v1/webhooks/{id}");
    assert_eq!(stack.get_key(&other, &path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        stack.delete_key(&other, &path).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = stack
        .post_key(&other, &format!("{path}/redeliver"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, list) = stack.get_key(&other, "/v1/webhooks").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["webhooks"], json!([]));
    let (status, _) = stack
        .get_key(&admin, "/v1/webhooks/wh_aaaaaaaaaaaaaaaaaaaa")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = stack.get_key(&admin, &path).await;
    assert_eq!(status, StatusCode::OK, "still there for its own tenant");

    // Unsubscribed.
    let (status, body) = stack.delete_key(&admin, &path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(stack.get_key(&admin, &path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        stack.delete_key(&admin, &path).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, list) = stack.get_key(&admin, "/v1/webhooks").await;
    assert_eq!(list["webhooks"], json!([]));
}

/// HTTPS to an internal receiver under a private CA. A server with the public roots only
/// refuses its certificate (verification is never off): nothing reaches the receiver,
/// the cursor stays, the event is retried until dead-lettered. Started again with the
/// CA in `--webhook-ca-file`, it delivers that event on redelivery and the next one,
/// over TLS, in order, signed (ours and Python's check); a receiver under another CA is
/// still refused.
async fn https_receiver_under_a_private_ca(backend: Backend) {
    let ca = PrivateCa::new("ledger webhook test CA");
    let (receiver, handshakes) = Receiver::start_tls(Plan::Ok, ca.server_config()).await;
    let mut args = FAST.to_vec();
    args.extend(["--webhook-attempts-max", "3"]);
    let mut stack = Stack::with_serve_args(backend, &args).await;
    let admin = stack.admin("acme").await;
    let hook = subscribe(
        &stack,
        &admin,
        &format!("{}/in", receiver.url),
        json!(["*"]),
    )
    .await;
    let id = hook["id"].as_str().expect("id").to_owned();
    let secret = hook["secret"].as_str().expect("secret").to_owned();
    let start = hook["cursor"].as_u64().expect("cursor");

    // Without the CA: the certificate is refused, attempt after attempt.
    add_user(&stack, &admin, "first").await;
    let first = events_after(&stack, &admin, start).await;
    assert_eq!(first.len(), 1);
    let first_seq = seq_of(&first[0]);
    let view = status_becomes(&stack, &admin, &id, "dead_letter").await;
    assert_eq!(view["failing"]["seq"].as_u64(), Some(first_seq));
    assert_eq!(view["failing"]["attempts"].as_u64(), Some(3));
    assert_eq!(view["failing"]["last_error"], "connect");
    assert_eq!(view["failing"]["last_status"], Value::Null);
    assert_eq!(
        view["cursor"].as_u64(),
        Some(start),
        "the cursor did not move"
    );
    assert_eq!(view["delivered"].as_u64(), Some(0));
    assert!(
        receiver.hits().is_empty(),
        "delivered past a refused certificate"
    );
    assert_eq!(handshakes.completed.load(Ordering::SeqCst), 0);
    let failed = handshakes.failed.lock().expect("handshakes").clone();
    assert!(failed.len() >= 3, "one handshake per attempt: {failed:?}");
    assert!(
        failed.iter().all(|e| e.contains("UnknownCA")),
        "the worker refused the certificate as of an unknown CA: {failed:?}"
    );

    // With the CA: the same server, started again with --webhook-ca-file.
    let ca_file = stack.dir.path().join("internal-ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write the CA file");
    stack.stop();
    stack.serve_args.extend([
        "--webhook-ca-file".to_owned(),
        ca_file.display().to_string(),
    ]);
    stack.start().await;
    let stranger_ca = PrivateCa::new("another CA");
    let (stranger, stranger_handshakes) =
        Receiver::start_tls(Plan::Ok, stranger_ca.server_config()).await;
    let stranger_hook = subscribe(&stack, &admin, &stranger.url, json!(["*"])).await;
    let stranger_id = stranger_hook["id"].as_str().expect("id").to_owned();
    let (status, body) = stack
        .post_key(&admin, &format!("/v1/webhooks/{id}/redeliver"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    add_user(&stack, &admin, "second").await;
    let events = events_after(&stack, &admin, start).await;
    let all_seqs: Vec<u64> = events.iter().map(seq_of).collect();
    assert_eq!(all_seqs.len(), 2);
    eventually("the deliveries over TLS", || {
        receiver.delivered().len() >= all_seqs.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered = receiver.delivered();
    assert_eq!(seqs(&delivered), all_seqs, "in order, once");
    for (hit, event) in delivered.iter().zip(&events) {
        assert_eq!(hit.path, "/in");
        assert_eq!(hit.id, format!("acme:{}", seq_of(event)));
        let body: Value = serde_json::from_slice(&hit.body).expect("json");
        assert_eq!(&body, event, "the body is the event as the feed shows it");
        assert!(
            verify(&secret, &hit.id, &hit.timestamp, &hit.body, &hit.signature),
            "a delivery over TLS does not verify"
        );
    }
    let for_python: Vec<(&str, &Hit)> = delivered.iter().map(|h| (secret.as_str(), h)).collect();
    python_verifies(&for_python);
    let view = status_becomes(&stack, &admin, &id, "active").await;
    assert_eq!(view["cursor"].as_u64(), all_seqs.last().copied());
    assert_eq!(view["delivered"].as_u64(), Some(2));

    // The extra root adds trust; it does not switch verification off.
    let view = status_becomes(&stack, &admin, &stranger_id, "dead_letter").await;
    assert_eq!(view["failing"]["last_error"], "connect");
    assert_eq!(view["delivered"].as_u64(), Some(0));
    assert!(stranger.hits().is_empty(), "delivered under an unknown CA");
    assert_eq!(stranger_handshakes.completed.load(Ordering::SeqCst), 0);
    assert!(!stack
        .log_text()
        .contains(secret.trim_start_matches("whsec_")));
}

/// Two server processes on one PostgreSQL database, both running the worker: every
/// event reaches the receiver once, in order, and the cursor ends at the head.
async fn two_processes_share_one_cursor(backend: Backend) {
    let receiver = Receiver::start(Plan::Ok).await;
    let mut stack = Stack::with_serve_args(backend, FAST).await;
    let second = stack.start_another().await;
    let admin = stack.admin("acme").await;
    let hook = subscribe(
        &stack,
        &admin,
        &format!("{}/in", receiver.url),
        json!(["*"]),
    )
    .await;
    let id = hook["id"].as_str().expect("id").to_owned();
    let start = hook["cursor"].as_u64().expect("cursor");
    for n in 0..30 {
        let server = if n % 2 == 0 { &stack.base } else { &second };
        let (status, body, _) = stack
            .call_on(
                server,
                Method::POST,
                Some(&admin),
                "/v1/users",
                Some(json!({ "name": format!("u{n}") })),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        if n % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
    }
    let all_seqs: Vec<u64> = events_after(&stack, &admin, start)
        .await
        .iter()
        .map(seq_of)
        .collect();
    assert_eq!(all_seqs.len(), 30);
    eventually("every delivery", || {
        receiver.delivered().len() >= all_seqs.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(seqs(&receiver.delivered()), all_seqs, "in order, each once");
    for server in [&stack.base, &second] {
        let (status, view, _) = stack
            .call_on(
                server,
                Method::GET,
                Some(&admin),
                &format!("/v1/webhooks/{id}"),
                None,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(view["cursor"].as_u64(), all_seqs.last().copied());
        assert_eq!(view["delivered"].as_u64(), Some(30));
    }
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
    deliveries_retried_in_order_and_signed,
    dead_letter_then_redelivery,
    targets_permissions_and_tenants,
    https_receiver_under_a_private_ca,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes_share_one_cursor() {
    two_processes_share_one_cursor(Backend::Postgres).await;
}
