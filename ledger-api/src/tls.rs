//! The API over TLS (rustls, ring): TLS 1.3 and 1.2 only (rustls negotiates the highest
//! both sides speak, so 1.3 is preferred), AEAD cipher suites with forward secrecy only
//! (rustls has no legacy suite to turn off), HTTP/2 and HTTP/1.1 by ALPN, HSTS on every
//! answer. The certificate and key are read again on SIGHUP: new connections get the new
//! certificate, open ones keep theirs; a renewal that does not load is logged and the
//! old certificate stays in service. With a client CA, a connection may present a client
//! certificate; [`PeerCertificate`] tells the request whether it chained to that CA.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::config::ConfigError;

/// HSTS on every answer over TLS: two years, subdomains too.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=63072000; includeSubDomains";
/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

const CERT_SETTING: &str = "--tls-cert / LEDGER_TLS_CERT";
const KEY_SETTING: &str = "--tls-key / LEDGER_TLS_KEY";
const CLIENT_CA_SETTING: &str = "--tls-client-ca / LEDGER_TLS_CLIENT_CA";

/// The TLS settings of `serve`. Without `--tls-cert` and `--tls-key` the API speaks plain
/// HTTP (the embedded default on 127.0.0.1).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first); with --tls-key the API speaks HTTPS only.
    #[arg(long, env = "LEDGER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "LEDGER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: a service principal's key is accepted only over a
    /// connection whose client certificate chains to one of them.
    #[arg(long, env = "LEDGER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// Whether the request's connection presented a client certificate that chained to the
/// configured client CA (always `false` over plain HTTP or without a client CA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The client certificate was verified against `--tls-client-ca`.
    pub verified: bool,
}

/// The files TLS is loaded from, kept to load them again on SIGHUP.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The files, when TLS is on (clap makes the certificate and key come together).
    pub fn files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        }
    }
}

fn invalid(setting: &'static str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.to_string(),
    }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| invalid(setting, format!("cannot read {}: {e}", path.display())))
}

/// The PEM certificates of a file; at least one, or an error naming `setting`.
pub fn read_certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read(setting, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            invalid(
                setting,
                format!("{}: not PEM certificates: {e}", path.display()),
            )
        })?;
    if certificates.is_empty() {
        return Err(invalid(
            setting,
            format!("{}: no certificate in it", path.display()),
        ));
    }
    Ok(certificates)
}

/// Seconds since the epoch, for the validity check.
fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Refuses a leaf certificate outside its validity at `now`.
fn check_validity(
    path: &Path,
    leaf: &CertificateDer<'_>,
    now: SystemTime,
) -> Result<(), ConfigError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        invalid(
            CERT_SETTING,
            format!("{}: not an X.509 certificate: {e}", path.display()),
        )
    })?;
    let validity = parsed.validity();
    let now = unix_seconds(now);
    if now > validity.not_after.timestamp() {
        return Err(invalid(
            CERT_SETTING,
            format!(
                "{}: the certificate expired at {}",
                path.display(),
                validity.not_after
            ),
        ));
    }
    if now < validity.not_before.timestamp() {
        return Err(invalid(
            CERT_SETTING,
            format!(
                "{}: the certificate is valid only from {}",
                path.display(),
                validity.not_before
            ),
        ));
    }
    Ok(())
}

impl TlsFiles {
    /// Loads and checks everything: readable PEM, a key that matches the certificate, a
    /// certificate valid at `now`, a usable client CA. Each error names its setting.
    pub fn server_config(&self, now: SystemTime) -> Result<Arc<ServerConfig>, ConfigError> {
        let chain = read_certificates(CERT_SETTING, &self.cert)?;
        check_validity(&self.cert, &chain[0], now)?;
        let key_pem = read(KEY_SETTING, &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            invalid(
                KEY_SETTING,
                format!("{}: no private key: {e}", self.key.display()),
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| invalid(CERT_SETTING, e))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for certificate in read_certificates(CLIENT_CA_SETTING, path)? {
                    roots.add(certificate).map_err(|e| {
                        invalid(CLIENT_CA_SETTING, format!("{}: {e}", path.display()))
                    })?;
                }
                // Optional: people sign in with keys alone; services need the certificate.
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| invalid(CLIENT_CA_SETTING, e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        // The key must be the certificate's (checked here, with its own message).
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
            |e| {
                let (key, cert) = (self.key.display(), self.cert.display());
                invalid(KEY_SETTING, format!("{key} is not the key of {cert}: {e}"))
            },
        )?;
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| invalid(KEY_SETTING, e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The configuration in service, replaced on SIGHUP.
#[derive(Debug)]
pub struct ReloadingConfig {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl ReloadingConfig {
    /// Loads the files once (start-up: an error stops the process).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, ConfigError> {
        let config = files.server_config(SystemTime::now())?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(config),
        }))
    }

    fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Loads the files again; on error the configuration in service stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let config = self.files.server_config(SystemTime::now())?;
        match self.current.write() {
            Ok(mut guard) => *guard = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// Reloads on every SIGHUP, for as long as the process runs.
    pub fn reload_on_hangup(self: Arc<Self>) -> std::io::Result<()> {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match self.reload() {
                    Ok(()) => tracing::info!("tls certificate reloaded"),
                    Err(error) => {
                        tracing::error!(%error, "tls certificate not reloaded; the old one stays")
                    }
                }
            }
        });
        Ok(())
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` completes, then lets open
/// connections finish (bounded).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: Arc<ReloadingConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, say: wait a moment rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = TlsAcceptor::from(config.current());
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, %peer, "tls handshake refused");
                        return;
                    }
                    Err(_) => return,
                };
            let peer_certificate = PeerCertificate {
                verified: stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty()),
            };
            let service = app.map_request(
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.extensions_mut().insert(peer_certificate);
                    request
                },
            );
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%error, %peer, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at shutdown were closed");
    }
    Ok(())
}
