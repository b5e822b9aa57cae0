//! Accounts: `POST /v1/accounts`, `POST /v1/accounts/{id}/deposits` (the writer), and
//! `GET /v1/accounts/{id}` (the read model).

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use ledger_core::command::Command;
use ledger_core::ids::AccountId;
use ledger_core::money::{Currency, Money};
use ledger_core::policy::Permission;
use ledger_core::state::TenantState;
use projections::AccountBalance;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency};
use crate::http::extract::{Body, Path};
use crate::routes::context::{created, new_id, parse, path_id, Ctx};
use crate::routes::read_model::{
    amount_text, answer, permitted, query, reflected, ObjectQuery, QueryResult,
};
use crate::state::AppState;

fn account_view(state: &TenantState, id: &AccountId) -> Value {
    match state.accounts.get(id) {
        None => Value::Null,
        Some(account) => {
            let minor = account.currency.minor_units();
            let text = |d: rust_decimal::Decimal| {
                let mut d = d;
                d.rescale(minor);
                d.to_string()
            };
            json!({
                "account": id,
                "currency": account.currency,
                "available": text(account.available),
                "held": text(account.held),
            })
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountBody {
    currency: Currency,
    name: String,
}

async fn open_account(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<AccountBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let account: AccountId = parse(
        "account",
        &new_id("acct_", ctx.idempotency.as_ref(), "account"),
    )?;
    let view_account = account.clone();
    let answer = ctx
        .submit(
            vec![Command::OpenAccount {
                account,
                currency: body.currency,
                name: Some(body.name),
            }],
            None,
            Box::new(move |state, _| account_view(state, &view_account)),
        )
        .await?;
    Ok(created(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepositBody {
    amount: String,
    reference: Option<String>,
}

async fn deposit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path(id): Path<String>,
    Body(body): Body<DepositBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let account: AccountId = path_id(&id)?;
    let lookup = account.clone();
    let currency = ctx
        .read(move |state| state.accounts.get(&lookup).map(|a| a.currency))
        .await?
        .ok_or(ApiError::NotFound)?;
    let money = Money::parse(&body.amount, currency)
        .map_err(|e| ApiError::Validation(format!("amount: {e}")))?;
    let view_account = account.clone();
    let answer = ctx
        .submit(
            vec![Command::Deposit {
                account,
                money,
                reference: body.reference,
            }],
            None,
            Box::new(move |state, _| account_view(state, &view_account)),
        )
        .await?;
    Ok(created(answer))
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

/// The account routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts", post(open_account))
        .route("/v1/accounts/{id}", get(get_account))
        .route("/v1/accounts/{id}/deposits", post(deposit))
}
