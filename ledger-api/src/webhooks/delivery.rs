//! The delivery worker `serve` runs: every subscription's events after its cursor, in
//! seq order, filtered by kind, at least once.
//!
//! - One message per event: the body is the event's canonical envelope JSON, byte for
//!   byte as exported; `webhook-id` is `<tenant>:<seq>` (the same on every retry of the
//!   event, and the same as the NATS relay's message id); `webhook-timestamp` is the
//!   attempt's time in unix seconds; `webhook-signature` is `v1,<base64 HMAC-SHA256>`.
//! - The cursor moves only after a 2xx. Anything else (a 3xx is not followed, a 4xx or
//!   5xx, a timeout, a refused address) is a failed attempt: the next one is due after
//!   an exponential backoff with full jitter (uniform in 0 to min(max, base * 2^(n-1)));
//!   after `attempts_max` failed attempts at one event the subscription is
//!   dead-lettered and stops until `POST /v1/webhooks/{id}/redeliver`.
//! - Several processes may share a database: a process first takes a lease on the
//!   subscription by compare-and-set, renews it with every cursor move (also
//!   compare-and-set), and gives it up when it has caught up or failed. A process that
//!   loses a compare-and-set stops delivering that subscription, so a cursor is never
//!   moved twice for one event nor moved back, and only one process delivers a
//!   subscription at a time (unless a lease lapses mid-delivery: then an event may be
//!   delivered twice, which at-least-once allows).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_core::ids::TenantId;
use ledger_core::time::Timestamp;
use ledger_store::Store;
use tokio::sync::Semaphore;

use super::settings::{client, ClientError, WebhookConfig};
use super::signature::WebhookSecret;
use super::subscription::{Failing, Lease, WebhookRecord, KIND};
use super::target::{AddressRefused, NoAddress, TargetPolicy};
use crate::state::AppState;
use crate::util;

/// Events read per page.
const PAGE_EVENTS: u32 = 100;
/// Events one lease delivers before it is given up for others' turn.
const EVENTS_PER_LEASE_MAX: usize = 1000;

/// Why a round or a subscription's delivery stopped early (it is tried again later).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ledger_store::StoreError),
    /// A stored subscription does not parse or its secret does not decrypt.
    #[error("webhook {id}: {reason}")]
    Corrupt {
        /// The subscription.
        id: String,
        /// What is wrong (never the secret).
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// What a failed attempt met.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AttemptFailure {
    error: &'static str,
    status: Option<u16>,
}

/// The worker's shared parts.
struct Worker {
    store: Store,
    ring: Arc<ledger_store::crypto::KeyRing>,
    config: WebhookConfig,
    client: reqwest::Client,
    /// This process's lease owner id.
    owner: String,
    /// Subscriptions this process is delivering now.
    busy: Mutex<HashSet<(TenantId, String)>>,
    permits: Arc<Semaphore>,
}

/// The shortest time between two rounds when commits keep waking the worker.
const ROUND_INTERVAL_MIN: std::time::Duration = std::time::Duration::from_millis(50);

/// Runs the worker until the process ends.
pub async fn run(state: AppState) {
    let config = (*state.webhooks).clone();
    let client = match client(&config) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(error = %error, "webhook worker not started");
            return;
        }
    };
    let worker = Arc::new(Worker {
        store: state.store.clone(),
        ring: Arc::clone(&state.ring),
        permits: Arc::new(Semaphore::new(config.concurrency)),
        config,
        client,
        owner: util::random_id("wrk_", 16),
        busy: Mutex::new(HashSet::new()),
    });
    // Woken by this process's commits; polling finds other processes' and the retries
    // that fall due.
    // At most one round per ROUND_INTERVAL_MIN under a stream of commits.
    let mut commits = state.writers.watch_all();
    loop {
        let started = tokio::time::Instant::now();
        if let Err(error) = round(&worker).await {
            tracing::warn!(error = %error, "webhook round failed; retrying");
        }
        let _ = tokio::time::timeout(worker.config.poll, commits.changed()).await;
        tokio::time::sleep_until(started + ROUND_INTERVAL_MIN.min(worker.config.poll)).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn parse(id: &str, value: &str) -> Result<WebhookRecord, DeliveryError> {
    serde_json::from_str(value).map_err(|e| DeliveryError::Corrupt {
        id: id.to_owned(),
        reason: format!("does not parse: {e}"),
    })
}

/// Whether the process `owner` should try `record` now: not dead-lettered, behind the
/// head, its retry due, and no other process's lease in force.
fn due(record: &WebhookRecord, head: u64, now: Timestamp, owner: &str) -> bool {
    !record.dead_letter
        && record.cursor < head
        && record
            .failing
            .as_ref()
            .is_none_or(|f| f.next_attempt_at.is_none_or(|at| at <= now))
        && record
            .lease
            .as_ref()
            .is_none_or(|lease| lease.until <= now || lease.owner == owner)
}

/// One look at every subscription: starts a delivery task for each one that is due and
/// not already being delivered here, as far as the concurrency allows.
async fn round(worker: &Arc<Worker>) -> Result<(), DeliveryError> {
    for tenant in worker.store.webhook_tenants().await? {
        let head = worker.store.head(&tenant).await?.seq;
        let subscriptions = worker
            .store
            .records_of_kind(&tenant, KIND, "", ledger_store::RECORDS_PAGE_MAX)
            .await?;
        for (id, stored) in subscriptions {
            let record = match parse(&id, &stored.value) {
                Ok(record) => record,
                Err(error) => {
                    // One bad record must not stop the others' deliveries.
                    tracing::error!(tenant = %tenant, error = %error, "webhook skipped");
                    continue;
                }
            };
            if !due(&record, head, util::now(), &worker.owner) {
                continue;
            }
            let key = (tenant.clone(), id.clone());
            if !lock(&worker.busy).insert(key.clone()) {
                continue;
            }
            let Ok(permit) = Arc::clone(&worker.permits).try_acquire_owned() else {
                lock(&worker.busy).remove(&key);
                return Ok(());
            };
            let worker = Arc::clone(worker);
            tokio::spawn(async move {
                if let Err(error) = deliver_subscription(&worker, &key.0, &key.1).await {
                    tracing::warn!(tenant = %key.0, webhook = %key.1, error = %error, "webhook delivery stopped");
                }
                lock(&worker.busy).remove(&key);
                drop(permit);
            });
        }
    }
    Ok(())
}

impl Worker {
    fn lease(&self) -> Lease {
        // Long enough for one delivery and the writes around it; renewed at each one.
        let micros = i64::try_from(self.config.timeout.as_micros() * 2)
            .unwrap_or(i64::MAX / 4)
            .saturating_add(10_000_000);
        Lease {
            owner: self.owner.clone(),
            until: Timestamp::from_unix_micros(util::now().unix_micros().saturating_add(micros)),
        }
    }

    /// Writes `record` if the stored one is still at `version`; the new version, or
    /// `None` if another writer (the API, another process) got there first.
    async fn save(
        &self,
        tenant: &TenantId,
        id: &str,
        version: i64,
        record: &WebhookRecord,
    ) -> Result<Option<i64>, DeliveryError> {
        let text = serde_json::to_string(record).map_err(|e| DeliveryError::Corrupt {
            id: id.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(self
            .store
            .update_record(tenant, KIND, id, version, &text)
            .await?
            .then_some(version + 1))
    }

    /// The delay before attempt `attempts + 1`: full jitter over an exponential ceiling.
    fn backoff(&self, attempts: u32) -> Duration {
        backoff(
            self.config.retry_base,
            self.config.retry_max,
            attempts,
            u64::from_le_bytes(util::random_bytes::<8>()),
        )
    }
}

/// Full jitter: uniform in 0 to min(max, base * 2^(attempts-1)), drawn from `random`.
fn backoff(base: Duration, max: Duration, attempts: u32, random: u64) -> Duration {
    let exponent = attempts.saturating_sub(1).min(40);
    let ceiling_ms = u64::try_from(base.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_mul(1u64 << exponent)
        .min(u64::try_from(max.as_millis()).unwrap_or(u64::MAX));
    Duration::from_millis(random % ceiling_ms.saturating_add(1))
}

/// Takes the lease on one subscription and delivers its due events in order until it
/// has caught up, an attempt fails, or it loses a compare-and-set.
async fn deliver_subscription(
    worker: &Worker,
    tenant: &TenantId,
    id: &str,
) -> Result<(), DeliveryError> {
    let Some(stored) = worker.store.record(tenant, KIND, id).await? else {
        return Ok(());
    };
    let mut record = parse(id, &stored.value)?;
    let head = worker.store.head(tenant).await?.seq;
    if !due(&record, head, util::now(), &worker.owner) {
        return Ok(());
    }
    record.lease = Some(worker.lease());
    let Some(mut version) = worker.save(tenant, id, stored.version, &record).await? else {
        return Ok(());
    };
    let secret =
        record
            .open_secret(&worker.ring, tenant, id)
            .map_err(|e| DeliveryError::Corrupt {
                id: id.to_owned(),
                reason: format!("secret: {e}"),
            })?;
    let url = record.url.clone();
    let mut delivered_now = 0;
    loop {
        let page = worker
            .store
            .load(tenant, record.cursor, PAGE_EVENTS)
            .await?;
        if page.is_empty() || delivered_now >= EVENTS_PER_LEASE_MAX {
            record.lease = None;
            worker.save(tenant, id, version, &record).await?;
            return Ok(());
        }
        let mut skipped_to = record.cursor;
        for (event, _) in &page {
            if !record.wants(event.body.kind()) {
                skipped_to = event.seq;
                continue;
            }
            let body = event.to_json_bytes().map_err(|e| DeliveryError::Corrupt {
                id: id.to_owned(),
                reason: format!("event {}: {e}", event.seq),
            })?;
            let message_id = format!("{tenant}:{}", event.seq);
            let outcome = attempt(worker, &url, &secret, &message_id, body).await;
            record.cursor = record.cursor.max(skipped_to);
            match outcome {
                Ok(status) => {
                    record.cursor = event.seq;
                    record.delivered += 1;
                    record.failing = None;
                    record.lease = Some(worker.lease());
                    delivered_now += 1;
                    tracing::info!(tenant = %tenant, webhook = %id, seq = event.seq, status, "webhook delivered");
                    match worker.save(tenant, id, version, &record).await? {
                        Some(next) => version = next,
                        None => return Ok(()),
                    }
                }
                Err(failure) => {
                    let now = util::now();
                    let previous = record.failing.take().filter(|f| f.seq == event.seq);
                    let attempts = previous.as_ref().map_or(0, |f| f.attempts) + 1;
                    let dead = attempts >= worker.config.attempts_max;
                    let delay = worker.backoff(attempts);
                    let next_attempt_at = (!dead).then(|| {
                        Timestamp::from_unix_micros(now.unix_micros().saturating_add(
                            i64::try_from(delay.as_micros()).unwrap_or(i64::MAX / 4),
                        ))
                    });
                    record.failing = Some(Failing {
                        seq: event.seq,
                        attempts,
                        first_failed_at: previous.map_or(now, |f| f.first_failed_at),
                        last_error: failure.error.to_owned(),
                        last_status: failure.status,
                        next_attempt_at,
                    });
                    record.dead_letter = dead;
                    record.lease = None;
                    if dead {
                        tracing::warn!(tenant = %tenant, webhook = %id, seq = event.seq, attempts, error = failure.error, status = failure.status, "webhook dead-lettered");
                    } else {
                        tracing::info!(tenant = %tenant, webhook = %id, seq = event.seq, attempts, error = failure.error, status = failure.status, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "webhook attempt failed");
                    }
                    worker.save(tenant, id, version, &record).await?;
                    return Ok(());
                }
            }
        }
        if skipped_to > record.cursor {
            record.cursor = skipped_to;
            record.lease = Some(worker.lease());
            match worker.save(tenant, id, version, &record).await? {
                Some(next) => version = next,
                None => return Ok(()),
            }
        }
    }
}

/// One signed POST; `Ok(status)` for a 2xx.
async fn attempt(
    worker: &Worker,
    url: &str,
    secret: &WebhookSecret,
    message_id: &str,
    body: Vec<u8>,
) -> Result<u16, AttemptFailure> {
    let failure = |error: &'static str, status: Option<u16>| AttemptFailure { error, status };
    // An IP literal is never resolved, so the resolver cannot check it: check it here.
    let parsed = url::Url::parse(url).map_err(|_| failure("request", None))?;
    if let Err(reason) = check_literal(&worker.config.policy, &parsed) {
        tracing::debug!(reason, "webhook target address refused");
        return Err(failure("address_refused", None));
    }
    let timestamp = util::now().unix_seconds();
    let signature = secret.sign(message_id, timestamp, &body);
    let sent = worker
        .client
        .post(parsed)
        .header("content-type", "application/json")
        .header("webhook-id", message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                Ok(status.as_u16())
            } else if status.is_redirection() {
                Err(failure("redirect_not_followed", Some(status.as_u16())))
            } else {
                Err(failure("status", Some(status.as_u16())))
            }
        }
        Err(error) => Err(failure(classify(&error), None)),
    }
}

fn check_literal(policy: &TargetPolicy, url: &url::Url) -> Result<(), &'static str> {
    match url.host() {
        None => Err("no host"),
        Some(url::Host::Domain(_)) => Ok(()),
        Some(url::Host::Ipv4(v4)) => policy.check_ip(std::net::IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => policy.check_ip(std::net::IpAddr::V6(v6)),
    }
}

/// A short, URL-free name for what went wrong.
fn classify(error: &reqwest::Error) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.downcast_ref::<AddressRefused>().is_some() {
            return "address_refused";
        }
        if current.downcast_ref::<NoAddress>().is_some() {
            return "dns";
        }
        source = current.source();
    }
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "request"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_an_exponential_ceiling() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let ms = Duration::from_millis;
        // Ceilings: base, 2 base, 4 base, ..., then max; the draw picks 0 to the ceiling.
        for (attempts, ceiling) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            assert_eq!(backoff(base, max, attempts, 0), Duration::ZERO);
            assert_eq!(backoff(base, max, attempts, ceiling), ms(ceiling));
            assert_eq!(backoff(base, max, attempts, ceiling + 1), Duration::ZERO);
            assert_eq!(backoff(base, max, attempts, ceiling / 2), ms(ceiling / 2));
            for random in [u64::MAX, u64::MAX / 3, 12_345_678_901] {
                assert!(backoff(base, max, attempts, random) <= ms(ceiling));
            }
        }
    }

    fn record(cursor: u64) -> WebhookRecord {
        WebhookRecord {
            url: "http://127.0.0.1:1/".into(),
            events: vec!["*".into()],
            description: None,
            secret: String::new(),
            created_at: Timestamp::from_unix_micros(0),
            created_by: "usr_admin".parse().expect("principal"),
            cursor,
            delivered: 0,
            failing: None,
            dead_letter: false,
            lease: None,
        }
    }

    #[test]
    fn what_is_due() {
        let now = Timestamp::from_unix_micros(1_000_000);
        let later = Timestamp::from_unix_micros(2_000_000);
        let me = "wrk_me";
        assert!(due(&record(1), 2, now, me));
        assert!(!due(&record(2), 2, now, me), "caught up");
        let mut dead = record(1);
        dead.dead_letter = true;
        assert!(!due(&dead, 2, now, me));
        let mut waiting = record(1);
        waiting.failing = Some(Failing {
            seq: 2,
            attempts: 1,
            first_failed_at: now,
            last_error: "status".into(),
            last_status: Some(500),
            next_attempt_at: Some(later),
        });
        assert!(!due(&waiting, 2, now, me));
        assert!(due(&waiting, 2, later, me));
        let mut leased = record(1);
        leased.lease = Some(Lease {
            owner: "wrk_other".into(),
            until: later,
        });
        assert!(!due(&leased, 2, now, me));
        assert!(due(&leased, 2, later, me), "a lapsed lease");
        assert!(due(&leased, 2, now, "wrk_other"), "its own lease");
    }
}
