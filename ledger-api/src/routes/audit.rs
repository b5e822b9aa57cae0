//! Audit: the public keys, the audit view (`GET /v1/audit`, the read model), the
//! export (JSON Lines) and checkpoints.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ledger_core::checkpoint::Checkpoint;
use ledger_core::ids::PrincipalId;
use ledger_core::policy::Permission;
use ledger_core::time::Timestamp;
use ledger_core::verify::{lines, Header, EXPORT_FORMAT};
use ledger_core::Rejection;
use ledger_store::AuditQuery;
use projections::{AuditRow, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::http::context::Caller;
use crate::routes::context::{created, ok, Ctx};
use crate::routes::read_model::{
    answer, cursor, limit, permitted, query, reflected, QueryResult, AUDIT_PAGE_MAX,
};
use crate::routes::schema::{PrincipalId as PrincipalIdSchema, Time};
use crate::state::AppState;
use crate::util;

/// The schema of a public key (DESIGN section 4, Keys).
#[derive(ToSchema)]
#[schema(as = PublicKey)]
#[allow(dead_code)] // a schema only: the core's `KeyRecord` is serialized
pub(crate) struct KeyRecordSchema {
    key_id: String,
    #[schema(pattern = "^(checkpoint|2fa)$")]
    purpose: String,
    #[schema(pattern = "^ed25519$")]
    algorithm: String,
    /// Lowercase hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    public_key: String,
    #[schema(value_type = Time)]
    not_before: String,
    #[schema(value_type = Option<Time>)]
    not_after: Option<String>,
}

/// The public keys: every key that ever signed, old ones too.
#[derive(Serialize, ToSchema)]
pub(crate) struct PublicKeys {
    #[schema(value_type = Vec<KeyRecordSchema>)]
    keys: Vec<ledger_core::crypto::KeyRecord>,
}

/// The schema of a signed checkpoint (DESIGN section 4, Checkpoints).
#[derive(ToSchema)]
#[schema(as = Checkpoint)]
#[allow(dead_code)] // a schema only: the core's `Checkpoint` is serialized
pub(crate) struct CheckpointSchema {
    #[schema(minimum = 1, maximum = 1)]
    v: u32,
    tenant: String,
    seq: u64,
    /// The hash of the event at `seq`.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    head: String,
    #[schema(value_type = Time)]
    at: String,
    key_id: String,
    /// Ed25519 over the checkpoint's domain and JCS bytes, lowercase hex.
    #[schema(pattern = "^[0-9a-f]{128}$")]
    sig: String,
}

/// The longest `action` filter.
const ACTION_LENGTH_MAX: usize = 64;

/// The public keys (checkpoint and 2FA) to verify the chain with.
#[utoipa::path(get, path = "/v1/ledger/keys", tag = "audit",
    responses((status = 200, description = "The keys", body = PublicKeys)))]
async fn ledger_keys(State(state): State<AppState>) -> Json<PublicKeys> {
    Json(PublicKeys {
        keys: state.keys.records.clone(),
    })
}

async fn require(ctx: &Ctx, permission: Permission) -> Result<(), ApiError> {
    ctx.read_as(permission, |_| Ok(())).await
}

/// The export for `ledger-audit verify` (JSON Lines, DESIGN section 4; audit.export).
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit",
    responses((status = 200, description = "header, keys, events, checkpoints: one JSON object per line", content_type = "application/jsonl", body = String)))]
async fn export(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, None);
    require(&ctx, Permission::AuditExport).await?;
    let tenant = ctx.caller.tenant.clone();
    let store = ctx.state.store.clone();
    let head = store.head(&tenant).await?;
    let header_line = lines::header(&Header {
        format: EXPORT_FORMAT.to_owned(),
        v: 1,
        tenant: tenant.clone(),
        from_seq: 1,
        to_seq: head.seq,
        exported_at: util::now(),
    });
    let mut prologue = header_line;
    prologue.push('\n');
    for record in &ctx.state.keys.records {
        prologue.push_str(&lines::key(record));
        prologue.push('\n');
    }
    enum Stage {
        Prologue(String),
        Events(u64),
        Checkpoints(u64),
        Done,
    }
    let stream = futures_util::stream::unfold(Stage::Prologue(prologue), move |stage| {
        let store = store.clone();
        let tenant = tenant.clone();
        async move {
            match stage {
                Stage::Prologue(text) => Some((Ok::<_, std::io::Error>(text), Stage::Events(0))),
                Stage::Events(after) if after >= head.seq => {
                    Some((String::new().into_ok(), Stage::Checkpoints(0)))
                }
                Stage::Events(after) => {
                    let limit = u32::try_from((head.seq - after).min(1000)).unwrap_or(1000);
                    match store.load(&tenant, after, limit).await {
                        Ok(page) if !page.is_empty() => {
                            let mut text = String::new();
                            let mut last = after;
                            for (event, _) in &page {
                                match lines::event(event) {
                                    Ok(line) => {
                                        text.push_str(&line);
                                        text.push('\n');
                                    }
                                    Err(e) => {
                                        return Some((
                                            Err(std::io::Error::other(e.to_string())),
                                            Stage::Done,
                                        ))
                                    }
                                }
                                last = event.seq;
                            }
                            Some((Ok(text), Stage::Events(last)))
                        }
                        Ok(_) => Some((Ok(String::new()), Stage::Checkpoints(0))),
                        Err(e) => Some((Err(std::io::Error::other(e.to_string())), Stage::Done)),
                    }
                }
                Stage::Checkpoints(after) => match store.checkpoints(&tenant, after, 1000).await {
                    Ok(page) if !page.is_empty() => {
                        let mut text = String::new();
                        let mut last = after;
                        for checkpoint in page.iter().filter(|c| c.seq <= head.seq) {
                            text.push_str(&lines::checkpoint(checkpoint));
                            text.push('\n');
                            last = checkpoint.seq;
                        }
                        if last == after {
                            return Some((Ok(text), Stage::Done));
                        }
                        Some((Ok(text), Stage::Checkpoints(last)))
                    }
                    Ok(_) => None,
                    Err(e) => Some((Err(std::io::Error::other(e.to_string())), Stage::Done)),
                },
                Stage::Done => None,
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/jsonl")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

trait IntoOk {
    fn into_ok(self) -> Result<String, std::io::Error>;
}

impl IntoOk for String {
    fn into_ok(self) -> Result<String, std::io::Error> {
        Ok(self)
    }
}

fn checkpoint_json(checkpoint: &Checkpoint) -> Value {
    serde_json::to_value(checkpoint).unwrap_or(Value::Null)
}

/// Sign a checkpoint of the tenant's head now (audit.read).
#[utoipa::path(post, path = "/v1/checkpoints", tag = "audit",
    responses((status = 201, description = "The checkpoint", body = CheckpointSchema)))]
async fn checkpoint_now(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, None);
    require(&ctx, Permission::AuditRead).await?;
    match ctx.state.writers.checkpoint(&ctx.caller.tenant).await? {
        Some(checkpoint) => Ok(created(checkpoint_json(&checkpoint))),
        None => Err(ApiError::Rejected(Rejection::InvalidState {
            detail: "the chain is empty".into(),
        })),
    }
}

/// The latest checkpoint (ledger.read).
#[utoipa::path(get, path = "/v1/checkpoints/latest", tag = "audit",
    responses((status = 200, description = "The checkpoint", body = CheckpointSchema)))]
async fn latest_checkpoint(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, None);
    require(&ctx, Permission::LedgerRead).await?;
    let mut after = 0;
    let mut latest = None;
    loop {
        let page = ctx
            .state
            .store
            .checkpoints(&ctx.caller.tenant, after, ledger_store::PAGE_LIMIT_MAX)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        latest = Some(last.clone());
        if page.len() < ledger_store::PAGE_LIMIT_MAX as usize {
            break;
        }
    }
    latest
        .map(|c| ok(checkpoint_json(&c)))
        .ok_or(ApiError::NotFound)
}

/// One decided command of the audit view.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditEntry {
    seq: u64,
    #[schema(value_type = Time)]
    at: Timestamp,
    #[schema(value_type = PrincipalIdSchema)]
    actor: PrincipalId,
    /// `payout.approve`, `role.grant`, …
    action: String,
    /// What it was about (an id, or `usr_x:role`).
    subject: String,
    #[schema(value_type = String, pattern = "^(accepted|denied)$")]
    result: Outcome,
    /// The denial's reason code.
    reason: Option<String>,
    /// The id of the request that caused it.
    request_id: Option<String>,
}

/// A page of the audit view.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditPage {
    entries: Vec<AuditEntry>,
    /// The cursor of the next page (`?after=`); null on the last.
    next: Option<String>,
    /// The seq the read model reflected.
    reflects_seq: Option<u64>,
}

fn audit_json(row: &AuditRow) -> AuditEntry {
    AuditEntry {
        seq: row.seq,
        at: row.at,
        actor: row.actor.clone(),
        action: row.action.clone(),
        subject: row.subject.clone(),
        result: row.result,
        reason: row.reason.clone(),
        request_id: row.request_id.clone(),
    }
}

/// `?actor=&action=&result=&from=&to=&after=&limit=&min_seq=` of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only this principal's commands.
    #[param(value_type = Option<PrincipalIdSchema>)]
    actor: Option<String>,
    /// Only this action, e.g. `payout.approve`.
    #[param(pattern = "^[a-z._]{1,64}$")]
    action: Option<String>,
    /// `accepted` or `denied`.
    #[param(pattern = "^(accepted|denied)$")]
    result: Option<String>,
    /// From this time (inclusive), RFC 3339.
    #[param(value_type = Option<Time>)]
    from: Option<String>,
    /// Until this time (exclusive), RFC 3339.
    #[param(value_type = Option<Time>)]
    to: Option<String>,
    /// The `next` of the previous page.
    after: Option<String>,
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1)]
    limit: Option<u32>,
    /// Wait until the read model reflects at least this seq.
    min_seq: Option<u64>,
}

fn time(what: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        Timestamp::parse_rfc3339(t)
            .map_err(|_| ApiError::Validation(format!("{what} must be an RFC 3339 date-time")))
    })
    .transpose()
}

/// The audit view: every decided command, accepted or denied, with its request id
/// (read model; audit.read).
///
/// One entry per decided command, accepted or denied with its reason
/// code, in seq order, each with the id of the request that caused it;
/// `{"entries":[…],"next","reflects_seq"}`. `from` is inclusive, `to` exclusive.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, description = "A page", body = AuditPage,
        headers(("Ledger-Reflects-Seq" = u64, description = "The seq the read model reflects")))))]
pub async fn audit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: QueryResult<AuditParams>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let head = permitted(&state, &caller, Permission::AuditRead).await?;
    let actor = params
        .actor
        .as_deref()
        .map(str::parse::<PrincipalId>)
        .transpose()
        .map_err(|_| ApiError::Validation("actor is not a principal id".into()))?;
    if let Some(action) = &params.action {
        let well_formed = !action.is_empty()
            && action.len() <= ACTION_LENGTH_MAX
            && action
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_');
        if !well_formed {
            return Err(ApiError::Validation(
                "action is an action name such as payout.approve".into(),
            ));
        }
    }
    let result = params
        .result
        .as_deref()
        .map(|r| {
            Outcome::parse(r)
                .ok_or_else(|| ApiError::Validation("result is accepted or denied".into()))
        })
        .transpose()?;
    let from = time("from", params.from.as_deref())?;
    let to = time("to", params.to.as_deref())?;
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(ApiError::Validation("from is after to".into()));
        }
    }
    let page = limit(params.limit, AUDIT_PAGE_MAX);
    let store_query = AuditQuery {
        actor,
        action: params.action.clone(),
        result,
        from,
        to,
        after: cursor(params.after.as_deref())?,
        limit: page + 1,
    };
    let needed = head.max(params.min_seq.unwrap_or(0));
    let found = reflected(&state, &caller, needed, || {
        state.store.projected_audit(&caller.tenant, &store_query)
    })
    .await?;
    let mut rows = found.value;
    let next = (rows.len() > page as usize).then(|| {
        rows.truncate(page as usize);
        rows.last().map(|row| row.seq.to_string())
    });
    let page = AuditPage {
        entries: rows.iter().map(audit_json).collect(),
        next: next.flatten(),
        reflects_seq: None,
    };
    Ok(answer(
        serde_json::to_value(page).unwrap_or_default(),
        found.seq,
    ))
}

/// The audit routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ledger_keys))
        .routes(routes!(audit))
        .routes(routes!(export))
        .routes(routes!(checkpoint_now))
        .routes(routes!(latest_checkpoint))
}
