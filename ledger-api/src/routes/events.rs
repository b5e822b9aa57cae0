//! The event stream for downstream systems (DESIGN section 8): a cursor feed
//! (`GET /v1/events?after=&limit=`) and Server-Sent Events (`GET /v1/events/stream`),
//! resumable with `Last-Event-ID` (the seq of the last event the client has). Events
//! are sent as their canonical envelopes, exactly as hashed and exported, in seq order;
//! the SSE id is the seq, so a client that reconnects misses nothing and sees nothing
//! twice.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::Stream;
use ledger_core::event::Event;
use ledger_core::ids::TenantId;
use ledger_core::policy::Permission;
use ledger_core::Rejection;
use ledger_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::http::context::Caller;
use crate::routes::context::caller_may;
use crate::routes::schema::{PrincipalId as PrincipalIdSchema, Time};
use crate::state::AppState;

/// The schema of an event: its canonical envelope, exactly as hashed and exported
/// (DESIGN section 4).
#[derive(ToSchema)]
#[schema(as = Event)]
#[allow(dead_code)] // a schema only: the event's canonical bytes are sent
pub(crate) struct EventSchema {
    #[schema(minimum = 1, maximum = 1)]
    v: u32,
    tenant: String,
    #[schema(minimum = 1)]
    seq: u64,
    #[schema(pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    id: String,
    #[schema(value_type = Time)]
    at: String,
    #[schema(value_type = PrincipalIdSchema)]
    actor: String,
    /// `payout.approved`, `role.granted`, …
    kind: String,
    /// The kind's fields (DESIGN section 4, Field names).
    #[schema(value_type = Object)]
    data: Value,
    /// The previous event's hash (64 zeros for seq 1).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    prev: String,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    hash: String,
}

/// A page of the feed.
#[derive(Serialize, ToSchema)]
pub(crate) struct EventPage {
    #[schema(value_type = Vec<EventSchema>)]
    events: Vec<Value>,
    /// The seq to pass as `after` for the next page.
    next: u64,
    /// The tenant's head now.
    head: u64,
}

/// Most events per feed page or SSE batch.
pub const FEED_PAGE_MAX: u32 = 1000;
/// How long an idle stream waits before looking again (a commit wakes it sooner).
const IDLE_POLL: Duration = Duration::from_secs(5);

fn envelope(event: &Event) -> Result<Value, ApiError> {
    let bytes = event
        .to_json_bytes()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::Internal(e.to_string()))
}

/// `?after=&limit=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// The seq after which to start (0: from the first event).
    after: Option<u64>,
    /// Events per page, 1 to 1000 (default 100).
    #[param(minimum = 1)]
    limit: Option<u32>,
}

/// `?after=` of the stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// The seq after which to start, unless `Last-Event-ID` says.
    after: Option<u64>,
}

async fn require_read(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    if caller_may(state, caller, Permission::LedgerRead).await? {
        Ok(())
    } else {
        Err(ApiError::Rejected(Rejection::Forbidden {
            permission: Permission::LedgerRead,
        }))
    }
}

/// The event feed: the next page of events after a seq (ledger.read).
#[utoipa::path(get, path = "/v1/events", tag = "events", params(FeedQuery),
    responses((status = 200, description = "A page", body = EventPage)))]
pub async fn feed(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::Validation("query parameters".into()))?;
    require_read(&state, &caller).await?;
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(100).clamp(1, FEED_PAGE_MAX);
    let page = state.store.load(&caller.tenant, after, limit).await?;
    let next = page.last().map_or(after, |(e, _)| e.seq);
    let events = page
        .iter()
        .map(|(event, _)| envelope(event))
        .collect::<Result<Vec<Value>, ApiError>>()?;
    let head = state.store.head(&caller.tenant).await?;
    Ok(Json(EventPage {
        events,
        next,
        head: head.seq,
    })
    .into_response())
}

fn last_event_id(headers: &HeaderMap, after: Option<u64>) -> Result<u64, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(after.unwrap_or(0)),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| ApiError::Validation("Last-Event-ID must be a seq".into())),
    }
}

struct Cursor {
    store: Store,
    tenant: TenantId,
    after: u64,
    pending: std::collections::VecDeque<(u64, String, String)>,
    commits: tokio::sync::watch::Receiver<u64>,
}

async fn next_event(mut cursor: Cursor) -> Option<(Result<SseEvent, Infallible>, Cursor)> {
    loop {
        if let Some((seq, kind, data)) = cursor.pending.pop_front() {
            cursor.after = seq;
            let event = SseEvent::default()
                .id(seq.to_string())
                .event(kind)
                .data(data);
            return Some((Ok(event), cursor));
        }
        match cursor
            .store
            .load(&cursor.tenant, cursor.after, FEED_PAGE_MAX)
            .await
        {
            Ok(page) if !page.is_empty() => {
                for (event, _) in page {
                    let Ok(bytes) = event.to_json_bytes() else {
                        return None;
                    };
                    cursor.pending.push_back((
                        event.seq,
                        event.body.kind().to_owned(),
                        String::from_utf8_lossy(&bytes).into_owned(),
                    ));
                }
            }
            Ok(_) => {
                // Nothing new: wait for a commit in this process, or look again later
                // (another process may be writing the same tenant).
                let _ = tokio::time::timeout(IDLE_POLL, cursor.commits.changed()).await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "event stream ends: store error");
                return None;
            }
        }
    }
}

/// Server-Sent Events, resumable with Last-Event-ID (ledger.read).
///
/// Every event after `Last-Event-ID` (or `?after=`), then new ones as they are
/// committed; each SSE `id` is the seq, `event` the kind, `data` the envelope.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events",
    params(StreamQuery, ("Last-Event-ID" = Option<u64>, Header, description = "The seq of the last event the client has")),
    responses((status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String)))]
pub async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::Validation("query parameters".into()))?;
    require_read(&state, &caller).await?;
    let after = last_event_id(&headers, query.after)?;
    let cursor = Cursor {
        store: state.store.clone(),
        tenant: caller.tenant.clone(),
        after,
        pending: std::collections::VecDeque::new(),
        commits: state.writers.watch(&caller.tenant),
    };
    let events = futures_util::stream::unfold(cursor, next_event);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The event feed and stream routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(feed))
        .routes(routes!(stream))
}
