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

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ledger_core::event::EventBody;
use ledger_core::policy::Permission;
use ledger_core::Rejection;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency, SecretAnswer};
use crate::http::extract::{Body, Path};
use crate::routes::context::caller_may;
use crate::routes::schema::{PrincipalId as PrincipalIdSchema, Time};
use crate::state::AppState;
use crate::util;
use crate::webhooks::signature::WebhookSecret;
use crate::webhooks::subscription::{new_id, valid_id, SECRET_FIELD};
use crate::webhooks::subscription::{
    WebhookRecord, ALL_KINDS, DESCRIPTION_BYTES_MAX, KIND, SUBSCRIPTIONS_MAX,
};

// The API
// ---------------------------------------------------------------------------------------

/// The webhook routes (merged into [`crate::routes::router`]).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, remove))
        .routes(routes!(redeliver))
}

/// The schema of the event a subscription is stuck on (`webhooks::subscription::Failing`).
#[derive(ToSchema)]
#[schema(as = WebhookFailing)]
#[allow(dead_code)] // a schema only: the record's view is serialized
pub(crate) struct FailingSchema {
    seq: u64,
    /// Failed attempts at it so far.
    attempts: u32,
    #[schema(value_type = Time)]
    first_failed_at: String,
    /// `status`, `redirect_not_followed`, `timeout`, `connect`, `address_refused`,
    /// `dns` or `request` (never the URL or a body).
    last_error: String,
    last_status: Option<u16>,
    /// Null once dead-lettered.
    #[schema(value_type = Option<Time>)]
    next_attempt_at: Option<String>,
}

/// The schema of a subscription as the API shows it (`WebhookRecord::view`): everything
/// but its secret.
#[derive(ToSchema)]
#[schema(as = Webhook)]
#[allow(dead_code)] // a schema only: the record's view is serialized
pub(crate) struct WebhookSchema {
    #[schema(pattern = "^wh_[a-z0-9]{20}$")]
    id: String,
    url: String,
    /// Event kinds delivered, or `["*"]`.
    events: Vec<String>,
    description: Option<String>,
    #[schema(pattern = "^(active|retrying|dead_letter)$")]
    status: String,
    #[schema(value_type = Time)]
    created_at: String,
    #[schema(value_type = PrincipalIdSchema)]
    created_by: String,
    /// Every event up to this seq is delivered.
    cursor: u64,
    delivered: u64,
    failing: Option<FailingSchema>,
    dead_letter: bool,
}

/// A new subscription: its view and its signing secret, shown this once.
#[derive(ToSchema)]
#[schema(as = WebhookCreated)]
#[allow(dead_code)] // a schema only: the record's view is serialized
pub(crate) struct CreatedSchema {
    #[serde(flatten)]
    webhook: WebhookSchema,
    /// `whsec_<base64>` (Standard Webhooks).
    #[schema(pattern = "^whsec_[A-Za-z0-9+/=]+$")]
    secret: String,
}

/// Every subscription of the tenant.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only
pub(crate) struct Webhooks {
    webhooks: Vec<WebhookSchema>,
}

/// The subscription is gone.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only
pub(crate) struct WebhookDeleted {
    #[schema(pattern = "^wh_[a-z0-9]{20}$")]
    id: String,
    deleted: bool,
}

const WEBHOOK: &str = "The subscription";

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

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhook {
    /// An http or https URL on a public address (the operator may allow private ones).
    #[schema(pattern = "^[Hh][Tt][Tt][Pp][Ss]?://", max_length = 2048)]
    url: String,
    /// Event kinds to deliver, or `["*"]` for all.
    #[schema(min_items = 1)]
    events: Vec<String>,
    /// Free text, at most 256 bytes.
    #[schema(max_length = 256)]
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

/// Subscribe a webhook; the answer holds its secret, once (webhook.manage, ledger.read).
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = NewWebhook,
    responses((status = 201, description = "The subscription and its secret", body = CreatedSchema)))]
async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<NewWebhook>,
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

/// List the webhook subscriptions, without secrets.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, description = "The subscriptions", body = Webhooks)))]
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

/// A webhook: status, cursor, the failing event and its attempts.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = WEBHOOK)),
    responses((status = 200, description = "The subscription", body = WebhookSchema)))]
async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, record) = find(&state, &caller, &id).await?;
    Ok(Json(record.view(&id)).into_response())
}

/// Delete a webhook subscription (a delivery in flight may still land).
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = WEBHOOK)),
    responses((status = 200, description = "Deleted", body = WebhookDeleted)))]
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

/// `POST /v1/webhooks/{id}/redeliver`: `{}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redeliver {}

/// Leave the dead-letter state and retry.
///
/// Leaves the dead-letter state (or skips the wait of a retry) and tries the failing
/// event again now, with a fresh attempt budget; the events after it follow in order.
#[utoipa::path(post, path = "/v1/webhooks/{id}/redeliver", tag = "webhooks", request_body = Redeliver,
    params(("id" = String, Path, description = WEBHOOK)),
    responses((status = 200, description = "The subscription", body = WebhookSchema)))]
async fn redeliver(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(Redeliver {}): Body<Redeliver>,
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
}
