//! Payouts: requests, actions on one or a batch (the writer), and the reads of one or
//! a page (the read model).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use ledger_core::command::Command;
use ledger_core::ids::{AccountId, PayeeId, PayoutId};
use ledger_core::money::{Currency, Money};
use ledger_core::policy::Permission;
use ledger_core::state::{OpenPayout, Payout, PayoutStatus, TenantState};
use ledger_store::PayoutQuery;
use projections::{Gate, PayoutRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency};
use crate::http::extract::{Body, Path};
use crate::routes::context::{created, new_id, ok, parse, path_id, Ctx};
use crate::routes::read_model::{
    answer, cursor, limit, permitted, query, reflected, ObjectQuery, QueryResult, PAYOUTS_PAGE_MAX,
};
use crate::routes::schema::{
    with_schema, AccountId as AccountIdSchema, Amount, CurrencyCode, OneTimeCode,
    PayeeId as PayeeIdSchema, PayoutId as PayoutIdSchema, PayoutStatusName,
    PrincipalId as PrincipalIdSchema, Time,
};
use crate::state::AppState;
use crate::writer::{Peek, View};

/// Who acted at a gate, when, at which seq.
#[derive(Serialize, ToSchema)]
pub(crate) struct GateView {
    #[schema(value_type = PrincipalIdSchema)]
    by: String,
    #[schema(value_type = Time)]
    at: String,
    seq: u64,
}

/// How a payout ended before release (rejected, cancelled, failed).
#[derive(Serialize, ToSchema)]
pub(crate) struct EndView {
    #[schema(value_type = PrincipalIdSchema)]
    by: String,
    #[schema(value_type = Time)]
    at: String,
    seq: u64,
    reason: String,
}

/// A payout: the same shape from every endpoint. Its terms, its status and who acted at
/// each gate as the writer knows them; the reads (`GET /v1/payouts…`, from the read
/// model) add the payee, the reference, when each gate was passed, and the seq they
/// reflect.
#[derive(Serialize, ToSchema)]
pub(crate) struct PayoutView {
    #[schema(value_type = PayoutIdSchema)]
    payout: String,
    #[schema(value_type = PayoutStatusName)]
    status: String,
    #[schema(value_type = AccountIdSchema)]
    account: String,
    #[schema(value_type = Amount)]
    amount: String,
    #[schema(value_type = CurrencyCode)]
    currency: String,
    #[schema(value_type = PrincipalIdSchema)]
    requester: String,
    /// Distinct approvers so far, in order.
    #[schema(value_type = Vec<PrincipalIdSchema>)]
    approvers: Vec<String>,
    /// Approvals the policy required at request time.
    approvals_required: u32,
    #[schema(value_type = Option<PrincipalIdSchema>)]
    authorizer: Option<String>,
    #[schema(value_type = Option<PrincipalIdSchema>)]
    executor: Option<String>,
    /// Who released it (reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<PrincipalIdSchema>)]
    releaser: Option<Option<String>>,
    /// Reads: the payee.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<PayeeIdSchema>)]
    payee: Option<String>,
    /// Reads: the payout's reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    /// Reads: the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    requested: Option<GateView>,
    /// Reads: each approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    approvals: Option<Vec<GateView>>,
    /// Reads: the authorization, once passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<GateView>)]
    authorized: Option<Option<GateView>>,
    /// Reads: the execution, once passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<GateView>)]
    executed: Option<Option<GateView>>,
    /// Reads: the release, once passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<GateView>)]
    released: Option<Option<GateView>>,
    /// Reads: the end, for a rejected, cancelled or failed payout.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<EndView>)]
    ended: Option<Option<EndView>>,
    /// Reads: the seq the read model reflected (also the Ledger-Reflects-Seq header).
    #[serde(skip_serializing_if = "Option::is_none")]
    reflects_seq: Option<u64>,
}

impl PayoutView {
    fn of_open(id: &PayoutId, status: PayoutStatus, open: &OpenPayout) -> Self {
        let name = |p: &ledger_core::ids::PrincipalId| p.to_string();
        PayoutView {
            payout: id.to_string(),
            status: status.name().to_owned(),
            account: open.account.to_string(),
            amount: open.money.to_text(),
            currency: open.money.currency().to_string(),
            requester: name(&open.requester),
            approvers: open.approvers.iter().map(name).collect(),
            approvals_required: open.approvals_required,
            authorizer: open.authorizer.as_ref().map(name),
            executor: open.executor.as_ref().map(name),
            releaser: None,
            payee: None,
            reference: None,
            requested: None,
            approvals: None,
            authorized: None,
            executed: None,
            released: None,
            ended: None,
            reflects_seq: None,
        }
    }
}

/// The open payouts of `ids` as they stood before a submission closed any of them
/// (the state keeps a closed payout's status only).
#[derive(Clone, Default)]
struct Before(Arc<Mutex<BTreeMap<PayoutId, OpenPayout>>>);

impl Before {
    fn peek(&self, ids: Vec<PayoutId>) -> Peek {
        let slot = self.0.clone();
        Box::new(move |state: &TenantState| {
            if let Ok(mut seen) = slot.lock() {
                seen.clear();
                for id in &ids {
                    if let Some(Payout::Open(open)) = state.payouts.get(id) {
                        seen.insert(id.clone(), (**open).clone());
                    }
                }
            }
        })
    }

    fn get(&self, id: &PayoutId) -> Option<OpenPayout> {
        self.0.lock().ok().and_then(|seen| seen.get(id).cloned())
    }
}

/// A payout as the writer's state has it after a submission; a payout the submission
/// closed, from its terms just before (`before`). `None` when neither holds them (a
/// retried request found already committed): the caller answers from the read model.
fn payout_view(state: &TenantState, id: &PayoutId, before: &Before) -> Option<PayoutView> {
    match state.payouts.get(id)? {
        Payout::Closed(status) => before
            .get(id)
            .map(|open| PayoutView::of_open(id, *status, &open)),
        Payout::Open(open) => Some(PayoutView::of_open(id, open.status, open)),
    }
}

fn to_value(view: Option<PayoutView>) -> Value {
    view.and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(Value::Null)
}

/// `POST /v1/payouts`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPayout {
    /// The source account.
    #[schema(value_type = AccountIdSchema)]
    account: AccountId,
    #[schema(value_type = PayeeIdSchema)]
    payee: PayeeId,
    /// In `currency`, which must be the account's.
    #[schema(value_type = Amount)]
    amount: String,
    #[schema(value_type = CurrencyCode)]
    currency: Currency,
    /// The payment's reference, as the payee will see it.
    reference: String,
    /// Free text pairs kept in the chain.
    metadata: Option<BTreeMap<String, String>>,
}

/// Request a payout (payout.request).
#[utoipa::path(post, path = "/v1/payouts", tag = "payouts", request_body = NewPayout,
    responses((status = 201, description = "The payout, requested", body = PayoutView)))]
async fn request_payout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<NewPayout>,
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
            Box::new(move |state, _| {
                to_value(payout_view(state, &view_payout, &Before::default()))
            }),
        )
        .await?;
    Ok(created(answer))
}

/// The body of an action on one payout: `{}` to approve, `{"reason"}` to reject,
/// fail or cancel, `{"otp"}` to authorize, execute or release (and `rail`, the rail's
/// name, optionally, to execute).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayoutAction {
    #[schema(value_type = Option<OneTimeCode>)]
    otp: Option<String>,
    reason: Option<String>,
    rail: Option<String>,
}

/// The actions on several payouts under one code.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only: the path segment is matched as text
pub(crate) enum BatchActionName {
    Approve,
    Authorize,
    Execute,
    Release,
}

fn payout_command(
    action: &str,
    payout: PayoutId,
    body: &PayoutAction,
) -> Result<Command, ApiError> {
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

/// Whether the action ends the payout.
fn closes(action: &str) -> bool {
    matches!(action, "reject" | "release" | "fail" | "cancel")
}

fn needs_code(action: &str) -> bool {
    matches!(action, "authorize" | "execute" | "release")
}

/// The shared part of the actions on one payout (`POST /v1/payouts/{id}/<action>`).
async fn payout_action(
    action: &str,
    state: AppState,
    caller: Caller,
    idempotency: Option<Extension<Idempotency>>,
    id: &str,
    body: PayoutAction,
) -> Result<Response, ApiError> {
    let before = Before::default();
    let ctx = Ctx::new(state, caller, idempotency);
    let payout: PayoutId = path_id(id)?;
    // Only a closing action needs the payout as it stood before (the state keeps an
    // open payout's terms, not a closed one's): no copy on the other gates.
    let ctx = if closes(action) {
        ctx.peeking(before.peek(vec![payout.clone()]))
    } else {
        ctx
    };
    let command = payout_command(action, payout.clone(), &body)?;
    let view_payout = payout.clone();
    let view: View = Box::new(move |state, _| to_value(payout_view(state, &view_payout, &before)));
    let answer = if needs_code(action) {
        ctx.submit_with_code(vec![command], body.otp.as_deref(), view)
            .await?
    } else {
        ctx.submit(vec![command], None, view).await?
    };
    if answer.is_null() {
        return Ok(ok(read_payout(&ctx.state, &ctx.caller, &payout).await?));
    }
    Ok(ok(answer))
}

/// One operation per action on one payout, each with the same body
/// ([`PayoutAction`]) and answer (the whole payout).
macro_rules! action {
    ($(#[$doc:meta])* $handler:ident, $action:literal) => {
        $(#[$doc])*
        #[utoipa::path(post, path = concat!("/v1/payouts/{id}/", $action), tag = "payouts",
            request_body = PayoutAction,
            params(("id" = PayoutIdSchema, Path, description = "The payout")),
            responses((status = 200, description = "The payout after the action", body = PayoutView)))]
        async fn $handler(
            State(state): State<AppState>,
            Extension(caller): Extension<Caller>,
            idempotency: Option<Extension<Idempotency>>,
            Path(id): Path<String>,
            Body(body): Body<PayoutAction>,
        ) -> Result<Response, ApiError> {
            payout_action($action, state, caller, idempotency, &id, body).await
        }
    };
}

action!(
    /// Approve (gate 1; payout.approve): `{}`; the approver is not the requester.
    approve, "approve"
);
action!(
    /// Reject before execution (payout.reject): `{"reason"}`.
    reject, "reject"
);
action!(
    /// Authorize (gate 2, 2FA; payout.authorize): `{"otp"}`; holds the funds.
    ///
    /// The authorizer is none of the requester and the approvers; refused with
    /// insufficient_funds when the account's available balance is short.
    authorize, "authorize"
);
action!(
    /// Execute (gate 3, 2FA; payout.execute): `{"otp","rail"?}`.
    ///
    /// The executor is none of the requester, the approvers and the authorizer.
    execute, "execute"
);
action!(
    /// Release (2FA for a person; payout.release): `{"otp"}`; the releaser is not the executor.
    release, "release"
);
action!(
    /// Mark an executed payout failed (payout.fail): `{"reason"}`; the hold goes back.
    fail, "fail"
);
action!(
    /// Cancel before execution (payout.cancel): `{"reason"}`; a hold goes back.
    cancel, "cancel"
);

/// A payout from the read model (once it reflects this process's writes).
async fn read_payout(
    state: &AppState,
    caller: &Caller,
    payout: &PayoutId,
) -> Result<PayoutView, ApiError> {
    let head = permitted(state, caller, Permission::LedgerRead).await?;
    let found = reflected(state, caller, head, || {
        state.store.projected_payout(&caller.tenant, payout)
    })
    .await?;
    found
        .value
        .as_ref()
        .map(payout_json)
        .ok_or(ApiError::NotFound)
}

/// `POST /v1/payouts/{action}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchAction {
    /// All or nothing.
    #[schema(value_type = Vec<PayoutIdSchema>, min_items = 1, max_items = 1000)]
    payouts: Vec<PayoutId>,
    /// One code for the whole batch (authorize, execute, release): one batch proof.
    #[schema(value_type = Option<OneTimeCode>)]
    otp: Option<String>,
}

/// The payouts after a batch action, in the order asked.
#[derive(Serialize, ToSchema)]
pub(crate) struct PayoutsActedOn {
    payouts: Vec<PayoutView>,
}

/// Act on several payouts at once (approve, authorize, execute, release), all or nothing.
#[utoipa::path(post, path = "/v1/payouts/{id}", tag = "payouts", request_body = BatchAction,
    params(("id" = BatchActionName, Path, description = "The action (the segment after /v1/payouts/)")),
    responses((status = 200, description = "The payouts after the action", body = PayoutsActedOn)))]
async fn batch_action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path(action): Path<String>,
    Body(body): Body<BatchAction>,
) -> Result<Response, ApiError> {
    let before = Before::default();
    let ctx = Ctx::new(state, caller, idempotency);
    let ctx = if closes(&action) {
        ctx.peeking(before.peek(body.payouts.clone()))
    } else {
        ctx
    };
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
        .map(|p| payout_command(&action, p.clone(), &PayoutAction::default()))
        .collect::<Result<_, _>>()?;
    let payouts = body.payouts.clone();
    let view: View = Box::new(move |state, _| {
        let views: Option<Vec<PayoutView>> = payouts
            .iter()
            .map(|p| payout_view(state, p, &before))
            .collect();
        views
            .and_then(|payouts| serde_json::to_value(PayoutsActedOn { payouts }).ok())
            .unwrap_or(Value::Null)
    });
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
                | Command::CancelPayout { .. }
                | Command::EnableAutopayRule { .. }
                | Command::ProposeAutopayRule { .. }
                | Command::DisableAutopayRule { .. }
                | Command::ApprovePayoutByRule { .. }
                | Command::DeactivateUser { .. }
                | Command::RecoverTotp {}
                | Command::SuspendTenant { .. }
                | Command::ResumeTenant { .. }) => other,
            })
            .collect();
        ctx.submit(commands, None, view).await?
    };
    if answer.is_null() {
        let mut payouts = Vec::with_capacity(body.payouts.len());
        for payout in &body.payouts {
            payouts.push(read_payout(&ctx.state, &ctx.caller, payout).await?);
        }
        return Ok(ok(PayoutsActedOn { payouts }));
    }
    Ok(ok(answer))
}

fn gate_json(gate: &Gate) -> GateView {
    GateView {
        by: gate.by.to_string(),
        at: gate.at.to_string(),
        seq: gate.seq,
    }
}

/// A payout: its terms, its status, who acted at each gate and when (`requested`,
/// `approvals`, `authorized`, `executed`, `released`, `ended` with the reason), and the
/// same actors flat as the write answers name them.
fn payout_json(row: &PayoutRow) -> PayoutView {
    PayoutView {
        payout: row.payout.to_string(),
        status: row.status.to_string(),
        account: row.account.to_string(),
        amount: row.amount.to_string(),
        currency: row.currency.to_string(),
        requester: row.requested.by.to_string(),
        approvers: row.approvals.iter().map(|g| g.by.to_string()).collect(),
        approvals_required: row.approvals_required,
        authorizer: row.authorized.as_ref().map(|g| g.by.to_string()),
        executor: row.executed.as_ref().map(|g| g.by.to_string()),
        releaser: Some(row.released.as_ref().map(|g| g.by.to_string())),
        payee: Some(row.payee.to_string()),
        reference: Some(row.reference.to_string()),
        requested: Some(gate_json(&row.requested)),
        approvals: Some(row.approvals.iter().map(gate_json).collect()),
        authorized: Some(row.authorized.as_ref().map(gate_json)),
        executed: Some(row.executed.as_ref().map(gate_json)),
        released: Some(row.released.as_ref().map(gate_json)),
        ended: Some(row.ended.as_ref().map(|(gate, reason)| EndView {
            by: gate.by.to_string(),
            at: gate.at.to_string(),
            seq: gate.seq,
            reason: reason.clone(),
        })),
        reflects_seq: None,
    }
}

/// A payout with who acted at each gate and when (read model; ledger.read).
#[utoipa::path(get, path = "/v1/payouts/{id}", tag = "payouts",
    params(("id" = PayoutIdSchema, Path, description = "The payout"), ObjectQuery),
    responses((status = 200, description = "The payout", body = PayoutView,
        headers(("Ledger-Reflects-Seq" = u64, description = "The seq the read model reflects")))))]
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
    Ok(answer(
        serde_json::to_value(payout_json(&row)).unwrap_or_default(),
        found.seq,
    ))
}

/// `?status=&account=&after=&limit=&min_seq=` of `GET /v1/payouts`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PayoutsQuery {
    /// Only payouts in this status.
    #[param(value_type = Option<PayoutStatusName>)]
    status: Option<String>,
    /// Only payouts from this account.
    #[param(value_type = Option<AccountIdSchema>)]
    account: Option<String>,
    /// The `next` of the previous page.
    after: Option<String>,
    /// Rows per page, 1 to 500 (default 100).
    #[param(minimum = 1)]
    limit: Option<u32>,
    /// Wait until the read model reflects at least this seq.
    min_seq: Option<u64>,
}

/// A page of payouts.
#[derive(Serialize, ToSchema)]
pub(crate) struct PayoutPage {
    payouts: Vec<PayoutView>,
    /// The cursor of the next page (`?after=`); null on the last.
    next: Option<String>,
    /// The seq the read model reflected.
    reflects_seq: Option<u64>,
}

/// List payouts by status and account (read model; ledger.read; cursor pages).
///
/// Payouts in request order, `{"payouts":[…],"next","reflects_seq"}`.
#[utoipa::path(get, path = "/v1/payouts", tag = "payouts", params(PayoutsQuery),
    responses((status = 200, description = "A page", body = PayoutPage,
        headers(("Ledger-Reflects-Seq" = u64, description = "The seq the read model reflects")))))]
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
    let page = PayoutPage {
        payouts: rows.iter().map(payout_json).collect(),
        next: next.flatten(),
        reflects_seq: None,
    };
    Ok(answer(
        serde_json::to_value(page).unwrap_or_default(),
        found.seq,
    ))
}

/// The payout routes.
pub fn router() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(request_payout, list_payouts))
        .routes(routes!(get_payout, batch_action))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(authorize))
        .routes(routes!(execute))
        .routes(routes!(release))
        .routes(routes!(fail))
        .routes(routes!(cancel));
    with_schema::<BatchActionName, _>(router)
}
