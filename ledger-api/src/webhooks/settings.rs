//! The delivery worker's settings (`serve` flags), validated at start-up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ConfigError;
use crate::webhooks::target::{CheckedResolver, TargetPolicy};

// ---------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------

const ATTEMPTS_MAX_DEFAULT: u32 = 10;
const RETRY_BASE_MS_DEFAULT: u64 = 2_000;
const RETRY_MAX_MS_DEFAULT: u64 = 3_600_000;
const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
const TIMEOUT_MS_DEFAULT: u64 = 15_000;
const POLL_MS_DEFAULT: u64 = 1_000;
const CONCURRENCY_DEFAULT: usize = 16;

/// The `serve` flags of the delivery worker.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Failed attempts at one event before the subscription is dead-lettered (1-100).
    #[arg(long, env = "LEDGER_WEBHOOK_ATTEMPTS_MAX", default_value_t = ATTEMPTS_MAX_DEFAULT)]
    pub webhook_attempts_max: u32,
    /// Base delay of the exponential backoff between attempts, in ms (full jitter).
    #[arg(long, env = "LEDGER_WEBHOOK_RETRY_BASE_MS", default_value_t = RETRY_BASE_MS_DEFAULT)]
    pub webhook_retry_base_ms: u64,
    /// Longest delay between two attempts, in ms.
    #[arg(long, env = "LEDGER_WEBHOOK_RETRY_MAX_MS", default_value_t = RETRY_MAX_MS_DEFAULT)]
    pub webhook_retry_max_ms: u64,
    /// Connect timeout of a delivery, in ms.
    #[arg(long, env = "LEDGER_WEBHOOK_CONNECT_TIMEOUT_MS", default_value_t = CONNECT_TIMEOUT_MS_DEFAULT)]
    pub webhook_connect_timeout_ms: u64,
    /// Total timeout of a delivery (connect, send, answer), in ms.
    #[arg(long, env = "LEDGER_WEBHOOK_TIMEOUT_MS", default_value_t = TIMEOUT_MS_DEFAULT)]
    pub webhook_timeout_ms: u64,
    /// How often the worker looks for new events and due retries, in ms.
    #[arg(long, env = "LEDGER_WEBHOOK_POLL_MS", default_value_t = POLL_MS_DEFAULT)]
    pub webhook_poll_ms: u64,
    /// Subscriptions delivered to at once by this process.
    #[arg(long, env = "LEDGER_WEBHOOK_CONCURRENCY", default_value_t = CONCURRENCY_DEFAULT)]
    pub webhook_concurrency: usize,
    /// Networks (CIDRs, comma-separated) webhooks may reach although they are not
    /// public, e.g. an internal receiver's. Metadata addresses stay refused.
    #[arg(long, env = "LEDGER_WEBHOOK_ALLOW_CIDRS", value_delimiter = ',')]
    pub webhook_allow_cidrs: Vec<String>,
    /// When set, the only host names webhooks may target (comma-separated;
    /// `*.example.com` for subdomains).
    #[arg(long, env = "LEDGER_WEBHOOK_ALLOW_HOSTS", value_delimiter = ',')]
    pub webhook_allow_hosts: Vec<String>,
    /// A PEM file of root certificates deliveries trust besides the public (webpki)
    /// roots, e.g. an internal receiver's private CA. Verification is never turned off.
    #[arg(long, env = "LEDGER_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
}

impl Default for WebhookArgs {
    fn default() -> Self {
        Self {
            webhook_attempts_max: ATTEMPTS_MAX_DEFAULT,
            webhook_retry_base_ms: RETRY_BASE_MS_DEFAULT,
            webhook_retry_max_ms: RETRY_MAX_MS_DEFAULT,
            webhook_connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            webhook_timeout_ms: TIMEOUT_MS_DEFAULT,
            webhook_poll_ms: POLL_MS_DEFAULT,
            webhook_concurrency: CONCURRENCY_DEFAULT,
            webhook_allow_cidrs: Vec::new(),
            webhook_allow_hosts: Vec::new(),
            webhook_ca_file: None,
        }
    }
}

/// The validated settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Failed attempts at one event before dead-lettering.
    pub attempts_max: u32,
    /// Backoff base.
    pub retry_base: Duration,
    /// Backoff ceiling.
    pub retry_max: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Total timeout.
    pub timeout: Duration,
    /// Poll interval.
    pub poll: Duration,
    /// Concurrent subscriptions.
    pub concurrency: usize,
    /// Where deliveries may go.
    pub policy: Arc<TargetPolicy>,
    /// Root certificates trusted besides the public ones (`--webhook-ca-file`).
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        match WebhookArgs::default().validate() {
            Ok(config) => config,
            Err(error) => unreachable!("the default webhook settings are valid: {error}"),
        }
    }
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    setting: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            setting,
            message: format!("{value} is outside {min} to {max}"),
        });
    }
    Ok(value)
}

impl WebhookArgs {
    /// Checks every setting; the error names the one at fault.
    pub fn validate(&self) -> Result<WebhookConfig, ConfigError> {
        let attempts_max = range(
            "--webhook-attempts-max / LEDGER_WEBHOOK_ATTEMPTS_MAX",
            self.webhook_attempts_max,
            1,
            100,
        )?;
        let retry_base = range(
            "--webhook-retry-base-ms / LEDGER_WEBHOOK_RETRY_BASE_MS",
            self.webhook_retry_base_ms,
            1,
            86_400_000,
        )?;
        let retry_max = range(
            "--webhook-retry-max-ms / LEDGER_WEBHOOK_RETRY_MAX_MS",
            self.webhook_retry_max_ms,
            retry_base,
            7 * 86_400_000,
        )?;
        let connect = range(
            "--webhook-connect-timeout-ms / LEDGER_WEBHOOK_CONNECT_TIMEOUT_MS",
            self.webhook_connect_timeout_ms,
            1,
            60_000,
        )?;
        let timeout = range(
            "--webhook-timeout-ms / LEDGER_WEBHOOK_TIMEOUT_MS",
            self.webhook_timeout_ms,
            connect,
            300_000,
        )?;
        let poll = range(
            "--webhook-poll-ms / LEDGER_WEBHOOK_POLL_MS",
            self.webhook_poll_ms,
            10,
            60_000,
        )?;
        let concurrency = range(
            "--webhook-concurrency / LEDGER_WEBHOOK_CONCURRENCY",
            self.webhook_concurrency,
            1,
            1024,
        )?;
        let policy = TargetPolicy::new(&self.webhook_allow_cidrs, &self.webhook_allow_hosts)
            .map_err(|message| ConfigError::Invalid {
                setting: "--webhook-allow-cidrs / --webhook-allow-hosts",
                message,
            })?;
        let extra_roots = match &self.webhook_ca_file {
            None => Vec::new(),
            Some(path) => extra_roots(path).map_err(|message| ConfigError::Invalid {
                setting: CA_FILE_SETTING,
                message,
            })?,
        };
        let config = WebhookConfig {
            attempts_max,
            retry_base: Duration::from_millis(retry_base),
            retry_max: Duration::from_millis(retry_max),
            connect_timeout: Duration::from_millis(connect),
            timeout: Duration::from_millis(timeout),
            poll: Duration::from_millis(poll),
            concurrency,
            policy: Arc::new(policy),
            extra_roots,
        };
        if !config.extra_roots.is_empty() {
            // The client takes each certificate as a trust anchor, or refuses it: now,
            // not when the worker starts.
            client(&config).map_err(|error| ConfigError::Invalid {
                setting: CA_FILE_SETTING,
                message: format!("a certificate is not usable as a root: {error}"),
            })?;
        }
        Ok(config)
    }
}

const CA_FILE_SETTING: &str = "--webhook-ca-file / LEDGER_WEBHOOK_CA_FILE";

/// The certificates of a PEM file (other sections, such as a key, are ignored); at
/// least one.
fn extra_roots(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|_| format!("{}: a certificate's PEM does not parse", path.display()))?;
    if roots.is_empty() {
        return Err(format!(
            "no certificate (-----BEGIN CERTIFICATE-----) in {}",
            path.display()
        ));
    }
    Ok(roots)
}

/// The HTTP client of deliveries could not be built.
#[derive(Debug, thiserror::Error)]
#[error("http client: {0}")]
pub struct ClientError(String);

/// The HTTP client of deliveries: no redirects, no proxy, timeouts, the resolver that
/// checks every address against the policy, and the public (webpki) roots plus the
/// operator's extra ones (`--webhook-ca-file`); certificates are always verified.
pub fn client(config: &WebhookConfig) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(config.connect_timeout)
        .timeout(config.timeout)
        .dns_resolver(Arc::new(CheckedResolver::new(Arc::clone(&config.policy))))
        .user_agent(concat!(
            "payout-ledger-webhooks/",
            env!("CARGO_PKG_VERSION")
        ));
    for root in &config.extra_roots {
        builder = builder.add_root_certificate(root.clone());
    }
    builder.build().map_err(|e| {
        // reqwest's own text is only "builder error": the cause is in the sources.
        let e = e.without_url();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        ClientError(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated() {
        assert!(WebhookArgs::default().validate().is_ok());
        let bad = |change: fn(&mut WebhookArgs)| {
            let mut args = WebhookArgs::default();
            change(&mut args);
            args.validate().err().map(|e| e.to_string())
        };
        let message = bad(|a| a.webhook_attempts_max = 0).expect("refused");
        assert!(message.contains("--webhook-attempts-max"), "{message}");
        let message = bad(|a| {
            a.webhook_retry_base_ms = 10_000;
            a.webhook_retry_max_ms = 1_000;
        })
        .expect("refused");
        assert!(message.contains("--webhook-retry-max-ms"), "{message}");
        let message = bad(|a| a.webhook_timeout_ms = 1).expect("refused");
        assert!(message.contains("--webhook-timeout-ms"), "{message}");
        let message = bad(|a| a.webhook_allow_cidrs = vec!["10.0.0.0/40".into()]).expect("refused");
        assert!(message.contains("--webhook-allow-cidrs"), "{message}");
        let message = bad(|a| a.webhook_concurrency = 0).expect("refused");
        assert!(message.contains("--webhook-concurrency"), "{message}");
        let message =
            bad(|a| a.webhook_ca_file = Some("/nonexistent/ca.pem".into())).expect("refused");
        assert!(message.contains("--webhook-ca-file"), "{message}");
    }

    #[test]
    fn a_ca_file_needs_a_usable_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let with = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            WebhookArgs {
                webhook_ca_file: Some(path),
                ..WebhookArgs::default()
            }
            .validate()
            .map(|config| config.extra_roots.len())
            .map_err(|e| e.to_string())
        };
        // A private key alone is no CA: generated here, never a committed key.
        let key_only = rcgen::KeyPair::generate().expect("key").serialize_pem();
        for (name, text) in [
            ("empty.pem", ""),
            ("key.pem", key_only.as_str()),
            (
                "junk.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
            ("broken.pem", "-----BEGIN CERTIFICATE-----\n!!\n"),
        ] {
            let message = with(name, text).expect_err(name);
            assert!(message.contains("--webhook-ca-file"), "{name}: {message}");
        }
        let ca = |name: &str| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.self_signed(&key).expect("certificate").pem()
        };
        assert_eq!(with("one.pem", &ca("one")), Ok(1));
        let bundle = format!("{}{}", ca("one"), ca("two"));
        assert_eq!(with("two.pem", &bundle), Ok(2));
    }
}
