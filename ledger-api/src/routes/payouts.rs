//! Payouts: requests, actions on one or a batch (the writer), and the reads of one or
//! a page (the read model).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use ledger_core::command::Command;
use ledger_core::ids::{AccountId, PayeeId, PayoutId};
use ledger_core::money::{Currency, Money};
use ledger_core::policy::Permission;
use ledger_core::state::{Payout, PayoutStatus, TenantState};
use ledger_store::PayoutQuery;
use projections::{Gate, PayoutRow};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency};
use crate::http::extract::{Body, Path};
use crate::routes::context::{created, new_id, ok, parse, path_id, Ctx};
use crate::routes::read_model::{
    answer, cursor, limit, permitted, query, reflected, ObjectQuery, QueryResult, PAYOUTS_PAGE_MAX,
};
use crate::state::AppState;
use crate::writer::View;

fn payout_view(state: &TenantState, id: &PayoutId) -> Value {
    match state.payouts.get(id) {
        None => Value::Null,
        Some(Payout::Closed(status)) => json!({"payout": id, "status": status.name()}),
        Some(Payout::Open(open)) => json!({
            "payout": id,
            "status": open.status.name(),
            "account": open.account,
            "amount": open.money.to_text(),
            "currency": open.money.currency(),
            "requester": open.requester,
            "approvers": open.approvers.as_slice(),
            "approvals_required": open.approvals_required,
            "authorizer": open.authorizer,
            "executor": open.executor,
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayoutBody {
    account: AccountId,
    payee: PayeeId,
    amount: String,
    currency: Currency,
    reference: String,
    metadata: Option<BTreeMap<String, String>>,
}

async fn request_payout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<PayoutBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let money = Money::parse(&body.amount, body.currency)
        .map_err(|e| ApiError::Validation(format!("amount: {e}")))?;
    let payout: PayoutId = parse("payout", &new_id("po_", ctx.idempotency.as_ref(), "payout"))?;
    let view_payout = payout.clone();
    let answer = ctx
        .submit(
            vec![Command::RequestPayout {
                payout,
                account: body.account,
                payee: body.payee,
                money,
                reference: body.reference,
                metadata: body.metadata,
            }],
            None,
            Box::new(move |state, _| payout_view(state, &view_payout)),
        )
        .await?;
    Ok(created(answer))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    otp: Option<String>,
    reason: Option<String>,
    rail: Option<String>,
}

fn payout_command(action: &str, payout: PayoutId, body: &ActionBody) -> Result<Command, ApiError> {
    let reason = || {
        body.reason
            .clone()
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| ApiError::Validation("reason is required".into()))
    };
    Ok(match action {
        "approve" => Command::ApprovePayout {
            payout,
            batch: None,
        },
        "reject" => Command::RejectPayout {
            payout,
            reason: reason()?,
        },
        "authorize" => Command::AuthorizePayout {
            payout,
            two_factor: None,
            batch: None,
        },
        "execute" => Command::ExecutePayout {
            payout,
            rail: body.rail.clone(),
            two_factor: None,
            batch: None,
        },
        "release" => Command::ReleasePayout {
            payout,
            two_factor: None,
            batch: None,
        },
        "fail" => Command::FailPayout {
            payout,
            reason: reason()?,
        },
        "cancel" => Command::CancelPayout {
            payout,
            reason: reason()?,
        },
        _ => return Err(ApiError::NotFound),
    })
}

fn needs_code(action: &str) -> bool {
    matches!(action, "authorize" | "execute" | "release")
}

async fn payout_action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path((id, action)): Path<(String, String)>,
    Body(body): Body<ActionBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let payout: PayoutId = path_id(&id)?;
    let command = payout_command(&action, payout.clone(), &body)?;
    let view: View = Box::new(move |state, _| payout_view(state, &payout));
    let answer = if needs_code(&action) {
        ctx.submit_with_code(vec![command], body.otp.as_deref(), view)
            .await?
    } else {
        ctx.submit(vec![command], None, view).await?
    };
    Ok(ok(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    payouts: Vec<PayoutId>,
    otp: Option<String>,
}

async fn batch_action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path(action): Path<String>,
    Body(body): Body<BatchBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    if !matches!(
        action.as_str(),
        "approve" | "authorize" | "execute" | "release"
    ) {
        return Err(ApiError::NotFound);
    }
    if body.payouts.is_empty() || body.payouts.len() > 1000 {
        return Err(ApiError::Validation("payouts: 1 to 1000".into()));
    }
    let list: Vec<String> = body.payouts.iter().map(ToString::to_string).collect();
    let commands: Vec<Command> = body
        .payouts
        .iter()
        .map(|p| payout_command(&action, p.clone(), &ActionBody::default()))
        .collect::<Result<_, _>>()?;
    let payouts = body.payouts.clone();
    let view: View = Box::new(
        move |state, _| json!({"payouts": payouts.iter().map(|p| payout_view(state, p)).collect::<Vec<_>>()}),
    );
    let answer = if needs_code(&action) {
        ctx.submit_with_code(commands, body.otp.as_deref(), view)
            .await?
    } else {
        let commands = commands
            .into_iter()
            .map(|c| match c {
                Command::ApprovePayout { payout, .. } => Command::ApprovePayout {
                    payout,
                    batch: Some(list.clone()),
                },
                other @ (Command::CreateTenant { .. }
                | Command::AddUser { .. }
                | Command::GrantRole { .. }
                | Command::RevokeRole { .. }
                | Command::IssueApiKey { .. }
                | Command::RevokeApiKey { .. }
                | Command::OpenAccount { .. }
                | Command::Deposit { .. }
                | Command::AddPayee { .. }
                | Command::UpdatePolicy { .. }
                | Command::RequestPayout { .. }
                | Command::RejectPayout { .. }
                | Command::AuthorizePayout { .. }
                | Command::ExecutePayout { .. }
                | Command::ReleasePayout { .. }
                | Command::FailPayout { .. }
                | Command::CancelPayout { .. }) => other,
            })
            .collect();
        ctx.submit(commands, None, view).await?
    };
    Ok(ok(answer))
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

/// The payout routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/payouts", post(request_payout).get(list_payouts))
        .route("/v1/payouts/{id}", get(get_payout).post(batch_action))
        .route("/v1/payouts/{id}/{action}", post(payout_action))
}
