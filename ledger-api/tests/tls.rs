//! The API over TLS, with real clients: curl over TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by
//! ALPN, HSTS over TLS and not over plain HTTP, `openssl s_client` refused at TLS 1.1 and
//! 1.0 and with a legacy suite, a renewed certificate served to new connections after
//! SIGHUP while an open connection stays up, and start-up refusing bad certificate
//! settings by name. Certificates are made at test time (`test_support::ca`).

mod process;

use std::io::Write as _;
use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use process::{free_port, master_key, output_within, Server, BIN};
use test_support::ca::{Issued, TestCa};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;

const HSTS: &str = "strict-transport-security: max-age=63072000; includeSubDomains";

/// The files of one server's TLS settings.
struct TlsDir {
    dir: tempfile::TempDir,
}

impl TlsDir {
    fn new(ca: &TestCa, issued: &Issued) -> TlsDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("ca");
        let tls = TlsDir { dir };
        tls.install(issued);
        tls
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a certificate and key as an operator renewing them would (write a new
    /// file, rename it over the old).
    fn install(&self, issued: &Issued) {
        for (name, text) in [("cert.pem", &issued.certificate), ("key.pem", &issued.key)] {
            let staged = self.path(&format!("{name}.new"));
            std::fs::write(&staged, text).expect("write");
            std::fs::rename(&staged, self.path(name)).expect("rename");
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".to_owned(),
            self.path("cert.pem").display().to_string(),
            "--tls-key".to_owned(),
            self.path("key.pem").display().to_string(),
        ]
    }
}

/// `ledger-api serve` on a fresh embedded store with `extra` arguments, once its port
/// accepts connections.
fn serve(data: &Path, extra: &[String]) -> (Server, u16) {
    let port = free_port();
    let child = Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("LEDGER_MASTER_KEY", master_key())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    while StdTcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("https://localhost:{port}");
    (Server { child, base }, port)
}

/// curl's answer headers (status line first) for `/healthz`, or its error.
fn curl(port: u16, tls: &TlsDir, flags: &[&str]) -> Result<String, String> {
    let output = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "--max-time", "20"])
        .arg("--cacert")
        .arg(tls.path("ca.pem"))
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(flags)
        .arg(format!("https://localhost:{port}/healthz"))
        .output()
        .expect("curl (Debian package curl)");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn curl_speaks_tls_1_2_and_1_3_http_2_and_1_1_and_gets_hsts() {
    let ca = TestCa::new();
    let tls = TlsDir::new(&ca, &ca.current("first"));
    let data = tempfile::tempdir().expect("tempdir");
    let (_server, port) = serve(data.path(), &tls.args());
    for (flags, status) in [
        (
            &["--tlsv1.2", "--tls-max", "1.2", "--http1.1"][..],
            "HTTP/1.1 200",
        ),
        (&["--tlsv1.3", "--http1.1"][..], "HTTP/1.1 200"),
        (&["--tlsv1.3", "--http2"][..], "HTTP/2 200"),
        (
            &["--tlsv1.2", "--tls-max", "1.2", "--http2"][..],
            "HTTP/2 200",
        ),
    ] {
        let headers = curl(port, &tls, flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
        assert!(headers.starts_with(status), "{flags:?}: {headers}");
        assert!(
            headers
                .to_ascii_lowercase()
                .contains(&HSTS.to_ascii_lowercase()),
            "{flags:?}: no HSTS in {headers}"
        );
    }
    // The plain-HTTP client of the same port gets no answer: TLS only.
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}/healthz"))
        .output()
        .expect("curl");
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("ok"),
        "plain HTTP answered over the TLS port"
    );
}

#[test]
fn hsts_is_absent_over_plain_http() {
    let data = tempfile::tempdir().expect("tempdir");
    let (_server, port) = serve(data.path(), &[]);
    let output = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "--max-time", "20"])
        .arg(format!("http://127.0.0.1:{port}/healthz"))
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    assert!(!headers.contains("strict-transport-security"), "{headers}");
}

/// `openssl s_client` with `flags` (a protocol version, a cipher list); whether the
/// handshake completed, and what it printed.
fn s_client(port: u16, flags: &[&str]) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl (Debian package openssl)");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"Q\n");
    }
    let output = child.wait_with_output().expect("openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let connected =
        output.status.success() && text.contains("Cipher is") && !text.contains("Cipher is (NONE)");
    (connected, text)
}

#[test]
fn tls_1_3_is_preferred_and_1_1_1_0_and_legacy_suites_are_refused() {
    let ca = TestCa::new();
    let tls = TlsDir::new(&ca, &ca.current("first"));
    let data = tempfile::tempdir().expect("tempdir");
    let (_server, port) = serve(data.path(), &tls.args());
    let (connected, text) = s_client(port, &["-tls1_2"]);
    assert!(connected, "TLS 1.2 should connect: {text}");
    // Without a version asked for, TLS 1.3 is what is spoken.
    let (connected, text) = s_client(port, &[]);
    assert!(connected && text.contains("New, TLSv1.3,"), "{text}");
    let refused: [&[&str]; 3] = [
        &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
        &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"],
        // A legacy suite (no forward secrecy, no AEAD) at TLS 1.2.
        &["-tls1_2", "-cipher", "AES128-SHA:@SECLEVEL=0"],
    ];
    for flags in refused {
        let (connected, text) = s_client(port, flags);
        assert!(!connected, "{flags:?} connected: {text}");
        assert!(
            text.contains("alert protocol version") || text.contains("alert handshake failure"),
            "{flags:?}: refused by the client itself, not the server? {text}"
        );
    }
}

/// A TLS connection to the server trusting only `ca`.
async fn connect(port: u16, ca: &TestCa) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().into()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().expect("name"), stream)
        .await
        .expect("handshake")
}

fn served_certificate(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("certificates")[0]
        .to_vec()
}

/// One keep-alive `GET /healthz` on an open connection; the status line.
async fn healthz(stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return head.lines().next().unwrap_or_default().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no answer: {text}");
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buffer))
            .await
            .expect("read in time")
            .expect("read");
        assert!(read > 0, "connection closed: {text}");
        answer.extend_from_slice(&buffer[..read]);
    }
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_connections_while_an_open_one_stays_up() {
    let ca = TestCa::new();
    let first = ca.current("first");
    let tls = TlsDir::new(&ca, &first);
    let data = tempfile::tempdir().expect("tempdir");
    let (server, port) = serve(data.path(), &tls.args());

    let mut open = connect(port, &ca).await;
    assert_eq!(served_certificate(&open), first.der);
    assert_eq!(healthz(&mut open).await, "HTTP/1.1 200 OK");

    let second = ca.current("second");
    tls.install(&second);
    let hangup = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(hangup.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fresh = connect(port, &ca).await;
        if served_certificate(&fresh) == second.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection opened before the renewal is still up, on its first certificate.
    assert_eq!(healthz(&mut open).await, "HTTP/1.1 200 OK");
    assert_eq!(served_certificate(&open), first.der);

    // A renewal that does not load (a key of another certificate) keeps the one in
    // service rather than stopping the server.
    let third = ca.current("third");
    std::fs::write(tls.path("key.pem"), &third.key).expect("write");
    Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .expect("kill");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = connect(port, &ca).await;
    assert_eq!(served_certificate(&fresh), second.der);
}

#[test]
fn bad_tls_settings_stop_start_up_naming_the_setting() {
    let ca = TestCa::new();
    let good = ca.current("good");
    let tls = TlsDir::new(&ca, &good);
    let other = ca.current("other");
    let expired = ca.issue("expired", 2020, 2021);
    let future = ca.issue("future", 2190, 2200);
    std::fs::write(tls.path("other-key.pem"), &other.key).expect("write");
    std::fs::write(tls.path("expired.pem"), &expired.certificate).expect("write");
    std::fs::write(tls.path("expired-key.pem"), &expired.key).expect("write");
    std::fs::write(tls.path("future.pem"), &future.certificate).expect("write");
    std::fs::write(tls.path("future-key.pem"), &future.key).expect("write");
    std::fs::write(tls.path("garbage.pem"), "not a pem file\n").expect("write");
    std::fs::create_dir(tls.path("a-directory")).expect("mkdir");
    let path = |name: &str| tls.path(name).display().to_string();
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec![
                "--tls-cert".into(),
                path("missing.pem"),
                "--tls-key".into(),
                path("key.pem"),
            ],
            "--tls-cert",
            "cannot read",
        ),
        (
            vec![
                "--tls-cert".into(),
                path("a-directory"),
                "--tls-key".into(),
                path("key.pem"),
            ],
            "--tls-cert",
            "cannot read",
        ),
        (
            vec![
                "--tls-cert".into(),
                path("garbage.pem"),
                "--tls-key".into(),
                path("key.pem"),
            ],
            "--tls-cert",
            "no certificate",
        ),
        (
            vec![
                "--tls-cert".into(),
                path("cert.pem"),
                "--tls-key".into(),
                path("missing.pem"),
            ],
            "--tls-key",
            "cannot read",
        ),
        (
            vec![
                "--tls-cert".into(),
                path("cert.pem"),
                "--tls-key".into(),
                path("garbage.pem"),
            ],
            "--tls-key",
            "no private key",
        ),
        (
            vec![
                "--tls-cert".into(),
                path("cert.pem"),
                "--tls-key".into(),
                path("other-key.pem"),
            ],
            "--tls-key",
            "is not the key of",
        ),
        (
            vec![
                "--tls-cert".into(),
                path("expired.pem"),
                "--tls-key".into(),
                path("expired-key.pem"),
            ],
            "--tls-cert",
            "expired",
        ),
        (
            vec![
                "--tls-cert".into(),
                path("future.pem"),
                "--tls-key".into(),
                path("future-key.pem"),
            ],
            "--tls-cert",
            "valid only from",
        ),
        (vec!["--tls-cert".into(), path("cert.pem")], "--tls-key", ""),
    ];
    for (args, setting, words) in cases {
        let data = tempfile::tempdir().expect("tempdir");
        let output = output_within(
            Command::new(BIN)
                .arg("--data-dir")
                .arg(data.path())
                .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
                .args(&args)
                .env("LEDGER_MASTER_KEY", master_key()),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} started");
        assert!(stderr.contains(setting), "{args:?}: {stderr}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
