//! Webhooks (DESIGN section 8) per the Standard Webhooks spec: subscriptions managed over
//! HTTP (`/v1/webhooks`), each with its own secret and its own cursor, and the delivery
//! worker `serve` runs ([`delivery::run`]).
//!
//! A subscription is a record beside the chain (kind [`KIND`], id `wh_…`), written with
//! compare-and-set: the API creates, deletes and redelivers it; the worker moves its
//! cursor. Its signing secret is stored only encrypted (field encryption, AAD bound to
//! the tenant, the subscription id and the field `secret`) and shown once, in the answer
//! to its creation (whose idempotent replay copy is stored encrypted too). A new
//! subscription starts at the tenant's head: it receives the events committed after it.
//!
//! Permission: `webhook.manage` (admin) for every route; creating one also needs
//! `ledger.read`, since a subscription carries every event a reader could see.

pub mod delivery;
pub mod signature;
pub mod target;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use ledger_core::event::EventBody;
use ledger_core::ids::{PrincipalId, TenantId};
use ledger_core::policy::Permission;
use ledger_core::time::Timestamp;
use ledger_core::Rejection;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::ConfigError;
use crate::error::ApiError;
use crate::http::{Caller, Idempotency, SecretAnswer};
use crate::routes::Path;
use crate::routes::{caller_may, Body};
use crate::state::AppState;
use crate::util;
use signature::WebhookSecret;
use target::TargetPolicy;

/// The record kind of subscriptions.
pub const KIND: &str = "webhook";
/// The encrypted field of a subscription record.
const SECRET_FIELD: &str = "secret";
/// Most subscriptions per tenant.
pub const SUBSCRIPTIONS_MAX: usize = 50;
/// The longest description, in bytes.
pub const DESCRIPTION_BYTES_MAX: usize = 256;
/// The event filter that matches every kind.
pub const ALL_KINDS: &str = "*";
/// Characters of a subscription id after `wh_`.
const ID_CHARS: usize = 20;

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
            delivery::client(&config).map_err(|error| ConfigError::Invalid {
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

// ---------------------------------------------------------------------------------------
// The record
// ---------------------------------------------------------------------------------------

/// The event a subscription is stuck on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failing {
    /// The event's seq.
    pub seq: u64,
    /// Failed attempts at it so far.
    pub attempts: u32,
    /// When the first of them failed.
    pub first_failed_at: Timestamp,
    /// What the last one met: `status`, `redirect_not_followed`, `timeout`, `connect`,
    /// `address_refused`, `dns`, `request` (never the URL or a body).
    pub last_error: String,
    /// The HTTP status of the last answer, if there was one.
    pub last_status: Option<u16>,
    /// When the next attempt is due (`None` once dead-lettered).
    pub next_attempt_at: Option<Timestamp>,
}

/// Which process is delivering a subscription, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// The worker's random id.
    pub owner: String,
    /// The lease lapses then (another worker may take over).
    pub until: Timestamp,
}

/// A subscription as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRecord {
    /// The target, normalised.
    pub url: String,
    /// Event kinds delivered (`["*"]`: all).
    pub events: Vec<String>,
    /// Free text.
    pub description: Option<String>,
    /// The signing secret's bytes, as an encryption envelope.
    pub secret: String,
    /// Created then.
    pub created_at: Timestamp,
    /// Created by.
    pub created_by: PrincipalId,
    /// Every event up to this seq was delivered (or is of a kind not subscribed to).
    pub cursor: u64,
    /// Events delivered so far.
    pub delivered: u64,
    /// The event it is stuck on, if any.
    pub failing: Option<Failing>,
    /// Stopped after too many failed attempts at `failing`, until redelivery.
    pub dead_letter: bool,
    /// The worker delivering it now.
    pub lease: Option<Lease>,
}

impl WebhookRecord {
    /// Whether an event of `kind` is delivered.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|k| k == ALL_KINDS || k == kind)
    }

    fn status(&self) -> &'static str {
        match (&self.failing, self.dead_letter) {
            (_, true) => "dead_letter",
            (Some(_), false) => "retrying",
            (None, false) => "active",
        }
    }

    /// The view the API shows: everything but the secret and the lease.
    pub fn view(&self, id: &str) -> Value {
        json!({
            "id": id,
            "url": self.url,
            "events": self.events,
            "description": self.description,
            "status": self.status(),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "cursor": self.cursor,
            "delivered": self.delivered,
            "failing": self.failing,
            "dead_letter": self.dead_letter,
        })
    }

    /// The signing secret.
    pub fn open_secret(
        &self,
        ring: &ledger_store::crypto::KeyRing,
        tenant: &TenantId,
        id: &str,
    ) -> Result<WebhookSecret, ledger_store::crypto::FieldCryptoError> {
        ring.decrypt(
            ledger_store::crypto::FieldScope {
                tenant,
                record: id,
                field: SECRET_FIELD,
            },
            &self.secret,
        )
        .map(|bytes| WebhookSecret::from_bytes(bytes.to_vec()))
    }
}

/// Whether `id` can be a subscription id (anything else is simply not found).
fn valid_id(id: &str) -> bool {
    id.strip_prefix("wh_").is_some_and(|body| {
        body.len() == ID_CHARS
            && body
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// A new id: derived from the idempotency key when there is one (a retried creation
/// names the same subscription), random otherwise.
fn new_id(idempotency: Option<&Idempotency>) -> String {
    match idempotency {
        None => util::random_id("wh_", ID_CHARS),
        Some(idempotency) => {
            const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
            let digest = Sha256::new()
                .chain_update(idempotency.seed)
                .chain_update(b"webhook")
                .finalize();
            let body: String = digest
                .iter()
                .take(ID_CHARS)
                .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
                .collect();
            format!("wh_{body}")
        }
    }
}

// ---------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------

/// The webhook routes (merged into [`crate::routes::router`]; listed in its `ROUTES`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks", post(create).get(list))
        .route("/v1/webhooks/{id}", get(show).delete(remove))
        .route("/v1/webhooks/{id}/redeliver", post(redeliver))
}

async fn require(
    state: &AppState,
    caller: &Caller,
    permission: Permission,
) -> Result<(), ApiError> {
    if caller_may(state, caller, permission).await? {
        Ok(())
    } else {
        Err(ApiError::Rejected(Rejection::Forbidden { permission }))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    url: String,
    events: Vec<String>,
    description: Option<String>,
}

fn validate_events(events: &[String]) -> Result<Vec<String>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::Validation(
            "events: at least one event kind, or [\"*\"]".into(),
        ));
    }
    if events.len() > EventBody::KINDS.len() {
        return Err(ApiError::Validation("events: too many entries".into()));
    }
    if events.iter().any(|k| k == ALL_KINDS) {
        if events.len() != 1 {
            return Err(ApiError::Validation("events: \"*\" stands alone".into()));
        }
        return Ok(vec![ALL_KINDS.to_owned()]);
    }
    let mut kinds = BTreeSet::new();
    for kind in events {
        if !EventBody::KINDS.contains(&kind.as_str()) {
            return Err(ApiError::Validation("events: unknown event kind".into()));
        }
        if !kinds.insert(kind.clone()) {
            return Err(ApiError::Validation(
                "events: a kind is listed twice".into(),
            ));
        }
    }
    Ok(kinds.into_iter().collect())
}

fn validate_description(description: Option<String>) -> Result<Option<String>, ApiError> {
    match description {
        None => Ok(None),
        Some(text) if text.len() > DESCRIPTION_BYTES_MAX => Err(ApiError::Validation(
            "description: at most 256 bytes".into(),
        )),
        Some(text) if text.chars().any(char::is_control) => Err(ApiError::Validation(
            "description: no control characters".into(),
        )),
        Some(text) => Ok(Some(text)),
    }
}

/// `POST /v1/webhooks`: subscribe; the answer holds the secret, shown this once.
async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<CreateBody>,
) -> Result<Response, ApiError> {
    require(&state, &caller, Permission::WebhookManage).await?;
    require(&state, &caller, Permission::LedgerRead).await?;
    let url = state
        .webhooks
        .policy
        .check_url(&body.url)
        .map_err(|e| ApiError::Validation(e.to_string()))?;
    let events = validate_events(&body.events)?;
    let description = validate_description(body.description)?;
    let tenant = &caller.tenant;
    let id = new_id(idempotency.as_ref().map(|Extension(i)| i));
    if let Some((_, existing)) = state.get::<WebhookRecord>(tenant, KIND, &id).await? {
        // A retry (after a crash) of the creation that made it: the same answer.
        let secret = existing
            .open_secret(&state.ring, tenant, &id)
            .map_err(|e| ApiError::Internal(format!("webhook secret: {e}")))?;
        return Ok(created_answer(&existing, &id, &secret));
    }
    let existing = state
        .store
        .records_of_kind(
            tenant,
            KIND,
            "",
            u32::try_from(SUBSCRIPTIONS_MAX).unwrap_or(50),
        )
        .await?;
    if existing.len() >= SUBSCRIPTIONS_MAX {
        return Err(ApiError::Validation(format!(
            "at most {SUBSCRIPTIONS_MAX} webhook subscriptions per tenant"
        )));
    }
    let secret = WebhookSecret::generate();
    let head = state.store.head(tenant).await?;
    let record = WebhookRecord {
        url: url.to_string(),
        events,
        description,
        secret: state.seal(tenant, &id, SECRET_FIELD, secret.bytes())?,
        created_at: util::now(),
        created_by: caller.principal.clone(),
        cursor: head.seq,
        delivered: 0,
        failing: None,
        dead_letter: false,
        lease: None,
    };
    // Index first: an index entry without its record costs a look, never a delivery.
    state.store.index_webhook(tenant, &id).await?;
    if !state.insert(tenant, KIND, &id, &record).await? {
        return Err(ApiError::Internal("webhook id collision".into()));
    }
    tracing::info!(tenant = %tenant, webhook = %id, cursor = head.seq, "webhook created");
    Ok(created_answer(&record, &id, &secret))
}

fn created_answer(record: &WebhookRecord, id: &str, secret: &WebhookSecret) -> Response {
    let mut view = record.view(id);
    view["secret"] = Value::String(secret.reveal().to_string());
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    response.extensions_mut().insert(SecretAnswer);
    response
}

/// `GET /v1/webhooks`: every subscription of the tenant, without secrets.
async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    require(&state, &caller, Permission::WebhookManage).await?;
    let records = state
        .store
        .records_of_kind(&caller.tenant, KIND, "", ledger_store::RECORDS_PAGE_MAX)
        .await?;
    let mut views = Vec::with_capacity(records.len());
    for (id, record) in records {
        let record: WebhookRecord = serde_json::from_str(&record.value)
            .map_err(|e| ApiError::Internal(format!("stored webhook does not parse: {e}")))?;
        views.push(record.view(&id));
    }
    Ok(Json(json!({ "webhooks": views })).into_response())
}

async fn find(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(i64, WebhookRecord), ApiError> {
    require(state, caller, Permission::WebhookManage).await?;
    if !valid_id(id) {
        return Err(ApiError::NotFound);
    }
    state
        .get::<WebhookRecord>(&caller.tenant, KIND, id)
        .await?
        .ok_or(ApiError::NotFound)
}

/// `GET /v1/webhooks/{id}`: status, cursor, the failing event and its attempts.
async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, record) = find(&state, &caller, &id).await?;
    Ok(Json(record.view(&id)).into_response())
}

/// `DELETE /v1/webhooks/{id}`: unsubscribe (a delivery in flight may still land).
async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    find(&state, &caller, &id).await?;
    if !state.store.delete_record(&caller.tenant, KIND, &id).await? {
        return Err(ApiError::NotFound);
    }
    state.store.unindex_webhook(&caller.tenant, &id).await?;
    tracing::info!(tenant = %caller.tenant, webhook = %id, "webhook deleted");
    Ok(Json(json!({"id": id, "deleted": true})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeliverBody {}

/// `POST /v1/webhooks/{id}/redeliver`: leave the dead-letter state (or skip the wait of
/// a retry) and try the failing event again now, with a fresh attempt budget; the
/// events after it follow in order.
async fn redeliver(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(RedeliverBody {}): Body<RedeliverBody>,
) -> Result<Response, ApiError> {
    for _attempt in 0..8 {
        let (version, mut record) = find(&state, &caller, &id).await?;
        if record.failing.is_none() && !record.dead_letter {
            return Err(ApiError::Rejected(Rejection::InvalidState {
                detail: "the webhook has no failing event to redeliver".into(),
            }));
        }
        record.failing = None;
        record.dead_letter = false;
        record.lease = None;
        if state
            .update(&caller.tenant, KIND, &id, version, &record)
            .await?
        {
            tracing::info!(tenant = %caller.tenant, webhook = %id, cursor = record.cursor, "webhook redelivery requested");
            return Ok(Json(record.view(&id)).into_response());
        }
    }
    Err(ApiError::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_filters() {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(validate_events(&owned(&["*"])).ok(), Some(owned(&["*"])));
        assert_eq!(
            validate_events(&owned(&["user.added", "account.opened"])).ok(),
            Some(owned(&["account.opened", "user.added"]))
        );
        assert!(validate_events(&[]).is_err());
        assert!(validate_events(&owned(&["*", "user.added"])).is_err());
        assert!(validate_events(&owned(&["user.added", "user.added"])).is_err());
        assert!(validate_events(&owned(&["user.deleted"])).is_err());
    }

    #[test]
    fn ids() {
        let id = new_id(None);
        assert!(valid_id(&id), "{id}");
        let seed = Idempotency {
            seed: [7; 32],
            recheck: false,
        };
        assert_eq!(new_id(Some(&seed)), new_id(Some(&seed)));
        assert!(valid_id(&new_id(Some(&seed))));
        assert!(!valid_id("wh_short"));
        assert!(!valid_id("xx_abcdefghijkmnpqrstu"));
        assert!(!valid_id("wh_ABCDEFGHIJKMNPQRSTUV"));
    }

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
