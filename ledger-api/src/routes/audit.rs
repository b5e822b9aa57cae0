//! Audit: the public keys, the audit view (`GET /v1/audit`, the read model), the
//! export (JSON Lines) and checkpoints.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use ledger_core::checkpoint::Checkpoint;
use ledger_core::ids::PrincipalId;
use ledger_core::policy::Permission;
use ledger_core::time::Timestamp;
use ledger_core::verify::{lines, Header, EXPORT_FORMAT};
use ledger_core::Rejection;
use ledger_store::AuditQuery;
use projections::{AuditRow, Outcome};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::context::Caller;
use crate::routes::context::{created, ok, Ctx};
use crate::routes::read_model::{
    answer, cursor, limit, permitted, query, reflected, QueryResult, AUDIT_PAGE_MAX,
};
use crate::state::AppState;
use crate::util;

/// The longest `action` filter.
const ACTION_LENGTH_MAX: usize = 64;

async fn ledger_keys(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "keys": state.keys.records }))
}

async fn require(ctx: &Ctx, permission: Permission) -> Result<(), ApiError> {
    ctx.read_as(permission, |_| Ok(())).await
}

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

fn audit_json(row: &AuditRow) -> Value {
    json!({
        "seq": row.seq,
        "at": row.at,
        "actor": row.actor,
        "action": row.action,
        "subject": row.subject,
        "result": row.result,
        "reason": row.reason,
        "request_id": row.request_id,
    })
}

/// `?actor=&action=&result=&from=&to=&after=&limit=&min_seq=` of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    actor: Option<String>,
    action: Option<String>,
    result: Option<String>,
    from: Option<String>,
    to: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
    min_seq: Option<u64>,
}

fn time(what: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        Timestamp::parse_rfc3339(t)
            .map_err(|_| ApiError::Validation(format!("{what} must be an RFC 3339 date-time")))
    })
    .transpose()
}

/// `GET /v1/audit?actor=&action=&result=accepted|denied&from=&to=&after=&limit=`
/// (`audit.read`): one entry per decided command, accepted or denied with its reason
/// code, in seq order, each with the id of the request that caused it;
/// `{"entries":[…],"next","reflects_seq"}`. `from` is inclusive, `to` exclusive.
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
    let entries: Vec<Value> = rows.iter().map(audit_json).collect();
    Ok(answer(
        json!({"entries": entries, "next": next.flatten()}),
        found.seq,
    ))
}

/// The audit routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/ledger/keys", get(ledger_keys))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/export", get(export))
        .route("/v1/checkpoints", post(checkpoint_now))
        .route("/v1/checkpoints/latest", get(latest_checkpoint))
}
