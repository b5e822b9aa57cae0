//! The NATS JetStream relay (DESIGN section 8), run by `serve` when `NATS_URL` is set:
//! each committed event is published to `ledger.<tenant>.events` with
//! `Nats-Msg-Id: <tenant>:<seq>`, in seq order, and the tenant's cursor (the last seq the
//! stream acknowledged) is kept in the database. After a crash the relay resumes from
//! the cursor; an event published but not yet recorded in the cursor is published again
//! with the same id, and JetStream's duplicate window drops it, so the stream holds each
//! event exactly once, with no gap.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use ledger_core::ids::TenantId;
use ledger_store::Store;
use serde::{Deserialize, Serialize};

/// The stream the relay publishes to (created if absent).
pub const STREAM: &str = "LEDGER";
/// Subjects of the stream.
pub const SUBJECTS: &str = "ledger.*.events";
/// How long JetStream remembers message ids (a relay restart must fit in it).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);
/// How long events are kept in the stream.
pub const MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the relay looks for new events when idle.
const POLL: Duration = Duration::from_millis(200);
/// Events published per round and tenant.
const PAGE: u32 = 500;
/// The record kind and id of the cursor.
const CURSOR_KIND: &str = "cursor";
const CURSOR_ID: &str = "nats";

/// Why the relay stopped a round (it retries).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// NATS refused or timed out.
    #[error("nats: {0}")]
    Nats(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ledger_store::StoreError),
}

fn nats(error: impl std::fmt::Display) -> RelayError {
    RelayError::Nats(error.to_string())
}

#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    seq: u64,
}

/// The subject of a tenant's events.
pub fn subject(tenant: &TenantId) -> String {
    format!("ledger.{tenant}.events")
}

/// Creates the stream if it does not exist (one replica).
pub async fn ensure_stream(js: &jetstream::Context) -> Result<stream::Stream, RelayError> {
    ensure_stream_replicated(js, 1).await
}

/// Creates the stream if it does not exist, kept on `replicas` servers of the NATS
/// cluster (`--nats-replicas`; JetStream allows 1 to 5). An existing stream is used as
/// it is: its replica count is changed with the NATS tools, not here.
pub async fn ensure_stream_replicated(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<stream::Stream, RelayError> {
    js.get_or_create_stream(stream::Config {
        num_replicas: replicas,
        name: STREAM.to_owned(),
        subjects: vec![SUBJECTS.to_owned()],
        duplicate_window: DUPLICATE_WINDOW,
        max_age: MAX_AGE,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(nats)
}

async fn cursor(store: &Store, tenant: &TenantId) -> Result<(Option<i64>, u64), RelayError> {
    Ok(match store.record(tenant, CURSOR_KIND, CURSOR_ID).await? {
        None => (None, 0),
        Some(record) => {
            let cursor: Cursor = serde_json::from_str(&record.value).unwrap_or(Cursor { seq: 0 });
            (Some(record.version), cursor.seq)
        }
    })
}

async fn save_cursor(
    store: &Store,
    tenant: &TenantId,
    version: Option<i64>,
    seq: u64,
) -> Result<(), RelayError> {
    let value = serde_json::to_string(&Cursor { seq }).map_err(nats)?;
    let saved = match version {
        None => {
            store
                .insert_record(tenant, CURSOR_KIND, CURSOR_ID, &value)
                .await?
        }
        Some(version) => {
            store
                .update_record(tenant, CURSOR_KIND, CURSOR_ID, version, &value)
                .await?
        }
    };
    if !saved {
        // Another relay moved the cursor: harmless (ids deduplicate); reread next round.
        tracing::info!(tenant = %tenant, "relay cursor moved by another relay");
    }
    Ok(())
}

/// Publishes one tenant's events after its cursor; returns how many.
pub async fn relay_tenant(
    store: &Store,
    js: &jetstream::Context,
    tenant: &TenantId,
) -> Result<usize, RelayError> {
    let (version, after) = cursor(store, tenant).await?;
    let page = store.load(tenant, after, PAGE).await?;
    if page.is_empty() {
        return Ok(0);
    }
    let subject = subject(tenant);
    let mut acks = Vec::with_capacity(page.len());
    for (event, _) in &page {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{tenant}:{}", event.seq).as_str());
        let payload = event.to_json_bytes().map_err(nats)?;
        let ack = js
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .map_err(nats)?;
        acks.push(ack);
    }
    // Every publish acknowledged (stored, or recognised as a duplicate) before the
    // cursor moves: a crash before this point republishes the same ids.
    for ack in acks {
        ack.await.map_err(nats)?;
    }
    let last = page.last().map_or(after, |(e, _)| e.seq);
    save_cursor(store, tenant, version, last).await?;
    Ok(page.len())
}

/// Where the relay publishes: a `nats://` or `tls://` URL, and the CA file that a TLS
/// server's certificate must chain to (the system's roots otherwise).
#[derive(Debug, Clone)]
pub struct NatsTarget {
    /// `nats://host:port`, or `tls://host:port` for TLS only.
    pub url: String,
    /// PEM CA certificates to trust (`--nats-ca-file`).
    pub ca_file: Option<std::path::PathBuf>,
    /// Replicas of the stream when the relay creates it.
    pub replicas: usize,
}

impl NatsTarget {
    /// Connects: over TLS for `tls://` (or when the server demands it), trusting the CA
    /// file when there is one. The URL may name several servers of a cluster,
    /// comma-separated; the client also learns the others from the one it reaches, and
    /// fails over between them.
    pub async fn connect(&self) -> Result<async_nats::Client, RelayError> {
        let servers = self
            .url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(nats)?;
        let mut options = async_nats::ConnectOptions::new();
        if self.url.starts_with("tls://") {
            options = options.require_tls(true);
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        options.connect(servers).await.map_err(nats)
    }
}

/// Runs the relay until the process ends: every tenant, round after round, reconnecting
/// after a failure; the stream is created with the target's replicas if absent.
pub async fn run(store: Store, target: NatsTarget) {
    loop {
        match round_forever(&store, &target).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(error = %error, "relay: retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn round_forever(store: &Store, target: &NatsTarget) -> Result<(), RelayError> {
    let client = target.connect().await?;
    let js = jetstream::new(client);
    ensure_stream_replicated(&js, target.replicas).await?;
    loop {
        let mut published = 0;
        for tenant in store.indexed_tenants().await? {
            published += relay_tenant(store, &js, &tenant).await?;
        }
        if published == 0 {
            tokio::time::sleep(POLL).await;
        }
    }
}
