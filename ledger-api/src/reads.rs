//! The reads answered from the persisted projections: `GET /v1/accounts/{id}`,
//! `GET /v1/payouts/{id}`, `GET /v1/payouts` and `GET /v1/audit`.
//!
//! Every answer says how far the read model has caught up: `"reflects_seq": N` in the
//! body and the `Ledger-Reflects-Seq` header, N being the cursor read in the same
//! snapshot as the rows. A read waits (at most the configured read wait) until N is at
//! least the seq it needs, else it answers `503 projection_behind` with Retry-After
//! rather than stale data. The seq it needs is `?min_seq=` when given, and always at
//! least the head of the tenant's chain as this process's writer knows it, which covers
//! everything this process committed for the tenant (read-your-writes). Lists page with
//! an opaque `next` cursor, passed back as `?after=`; `next` is null on the last page.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ledger_core::ids::{AccountId, PayoutId, PrincipalId};
use ledger_core::money::Currency;
use ledger_core::policy::Permission;
use ledger_core::state::PayoutStatus;
use ledger_core::time::Timestamp;
use ledger_core::Rejection;
use ledger_store::{AuditQuery, PayoutQuery};
use projections::{AccountBalance, AuditRow, Gate, Outcome, PayoutRow};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::Caller;
use crate::routes::allowed;
use crate::routes::Path;
use crate::state::AppState;

/// The header with the seq a read reflects.
pub const REFLECTS_HEADER: &str = "ledger-reflects-seq";
/// Most payouts per page.
pub const PAYOUTS_PAGE_MAX: u32 = 500;
/// Most audit rows per page.
pub const AUDIT_PAGE_MAX: u32 = 1000;
/// Rows per page unless `limit` says otherwise.
pub const PAGE_DEFAULT: u32 = 100;
/// The longest `action` filter.
const ACTION_LENGTH_MAX: usize = 64;

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query<T>(query: QueryResult<T>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|_| ApiError::Validation("query parameters".into()))
}

/// Checks `permission` for the caller and returns the head of the tenant's chain as
/// this process's writer knows it (at least the last seq this process committed).
async fn permitted(
    state: &AppState,
    caller: &Caller,
    permission: Permission,
) -> Result<u64, ApiError> {
    let who = caller.clone();
    let (may, head) = state
        .writers
        .read(&caller.tenant, move |tenant, head| {
            (allowed(tenant, &who, permission), head.seq)
        })
        .await?;
    if may {
        Ok(head)
    } else {
        Err(ApiError::Rejected(Rejection::Forbidden { permission }))
    }
}

/// Waits until the read model reflects `needed` (see the module documentation).
async fn reflected<T, F, Fut>(
    state: &AppState,
    caller: &Caller,
    needed: u64,
    read: F,
) -> Result<ledger_store::Reflected<T>, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<ledger_store::Reflected<T>, ledger_store::StoreError>>,
{
    let wait: Duration = state.read_wait;
    state
        .projector
        .read_at_least(&caller.tenant, needed, wait, read)
        .await
}

/// The answer: `body` with `reflects_seq`, and the header.
fn answer(mut body: Value, seq: u64) -> Response {
    if let Some(map) = body.as_object_mut() {
        map.insert("reflects_seq".into(), Value::from(seq));
    }
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(REFLECTS_HEADER, HeaderValue::from(seq));
    response
}

fn amount_text(value: Decimal, currency: Currency) -> String {
    let mut value = value;
    value.rescale(currency.minor_units());
    value.to_string()
}

fn account_json(account: &AccountId, balance: &AccountBalance) -> Value {
    let currency = balance.currency;
    json!({
        "account": account,
        "currency": currency,
        "available": amount_text(balance.available, currency),
        "held": amount_text(balance.held, currency),
        "released": amount_text(balance.released, currency),
        "deposited": amount_text(balance.deposited, currency),
    })
}

fn gate_json(gate: &Gate) -> Value {
    json!({"by": gate.by, "at": gate.at, "seq": gate.seq})
}

/// A payout: its terms, its status, who acted at each gate and when (`requested`,
/// `approvals`, `authorized`, `executed`, `released`, `ended` with the reason), and the
/// same actors flat as the write answers name them.
fn payout_json(row: &PayoutRow) -> Value {
    json!({
        "payout": row.payout,
        "status": row.status,
        "account": row.account,
        "payee": row.payee,
        "amount": row.amount,
        "currency": row.currency,
        "reference": row.reference,
        "approvals_required": row.approvals_required,
        "requester": row.requested.by,
        "approvers": row.approvals.iter().map(|g| &g.by).collect::<Vec<_>>(),
        "authorizer": row.authorized.as_ref().map(|g| &g.by),
        "executor": row.executed.as_ref().map(|g| &g.by),
        "releaser": row.released.as_ref().map(|g| &g.by),
        "requested": gate_json(&row.requested),
        "approvals": row.approvals.iter().map(gate_json).collect::<Vec<_>>(),
        "authorized": row.authorized.as_ref().map(gate_json),
        "executed": row.executed.as_ref().map(gate_json),
        "released": row.released.as_ref().map(gate_json),
        "ended": row.ended.as_ref().map(|(gate, reason)| json!({
            "by": gate.by, "at": gate.at, "seq": gate.seq, "reason": reason,
        })),
    })
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

/// `?min_seq=` of the single-object reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectQuery {
    min_seq: Option<u64>,
}

/// `GET /v1/accounts/{id}`: `{"account","currency","available","held","released",
/// "deposited","reflects_seq"}` (`ledger.read`).
pub async fn get_account(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    params: QueryResult<ObjectQuery>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let head = permitted(&state, &caller, Permission::LedgerRead).await?;
    let account: AccountId = id.parse().map_err(|_| ApiError::NotFound)?;
    let needed = head.max(params.min_seq.unwrap_or(0));
    let found = reflected(&state, &caller, needed, || {
        state.store.projected_account(&caller.tenant, &account)
    })
    .await?;
    let balance = found.value.ok_or(ApiError::NotFound)?;
    Ok(answer(account_json(&account, &balance), found.seq))
}

/// `GET /v1/payouts/{id}` (`ledger.read`).
pub async fn get_payout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    params: QueryResult<ObjectQuery>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let head = permitted(&state, &caller, Permission::LedgerRead).await?;
    let payout: PayoutId = id.parse().map_err(|_| ApiError::NotFound)?;
    let needed = head.max(params.min_seq.unwrap_or(0));
    let found = reflected(&state, &caller, needed, || {
        state.store.projected_payout(&caller.tenant, &payout)
    })
    .await?;
    let row = found.value.ok_or(ApiError::NotFound)?;
    Ok(answer(payout_json(&row), found.seq))
}

/// A page cursor: the seq of the last row of the previous page.
fn cursor(after: Option<&str>) -> Result<u64, ApiError> {
    match after {
        None => Ok(0),
        Some(text) => text
            .parse()
            .map_err(|_| ApiError::Validation("after must be a cursor from next".into())),
    }
}

fn limit(limit: Option<u32>, max: u32) -> u32 {
    limit.unwrap_or(PAGE_DEFAULT).clamp(1, max)
}

/// `?status=&account=&after=&limit=&min_seq=` of `GET /v1/payouts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutsQuery {
    status: Option<String>,
    account: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
    min_seq: Option<u64>,
}

/// `GET /v1/payouts?status=&account=&after=&limit=` (`ledger.read`): payouts in request
/// order, `{"payouts":[…],"next","reflects_seq"}`.
pub async fn list_payouts(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: QueryResult<PayoutsQuery>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let head = permitted(&state, &caller, Permission::LedgerRead).await?;
    if let Some(status) = &params.status {
        if !PayoutStatus::ALL.iter().any(|s| s.name() == status) {
            return Err(ApiError::Validation("status is not a payout status".into()));
        }
    }
    let account = params
        .account
        .as_deref()
        .map(str::parse::<AccountId>)
        .transpose()
        .map_err(|_| ApiError::Validation("account is not an account id".into()))?;
    let page = limit(params.limit, PAYOUTS_PAGE_MAX);
    let store_query = PayoutQuery {
        status: params.status.clone(),
        account,
        after: cursor(params.after.as_deref())?,
        // One more than the page, to know whether there is a next one.
        limit: page + 1,
    };
    let needed = head.max(params.min_seq.unwrap_or(0));
    let found = reflected(&state, &caller, needed, || {
        state.store.projected_payouts(&caller.tenant, &store_query)
    })
    .await?;
    let mut rows = found.value;
    let next = (rows.len() > page as usize).then(|| {
        rows.truncate(page as usize);
        rows.last().map(|row| row.requested.seq.to_string())
    });
    let items: Vec<Value> = rows.iter().map(payout_json).collect();
    Ok(answer(
        json!({"payouts": items, "next": next.flatten()}),
        found.seq,
    ))
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
