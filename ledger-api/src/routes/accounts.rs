//! Accounts: `POST /v1/accounts`, `POST /v1/accounts/{id}/deposits` (the writer), and
//! `GET /v1/accounts/{id}` (the read model).

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use ledger_core::command::Command;
use ledger_core::ids::AccountId;
use ledger_core::money::{Currency, Money};
use ledger_core::policy::Permission;
use ledger_core::state::TenantState;
use projections::AccountBalance;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency};
use crate::http::extract::{Body, Path};
use crate::routes::context::{created, new_id, parse, path_id, Ctx};
use crate::routes::read_model::{
    amount_text, answer, permitted, query, reflected, ObjectQuery, QueryResult,
};
use crate::routes::schema::{AccountId as AccountIdSchema, Amount, CurrencyCode};
use crate::state::AppState;

/// An account and its balances. The write answers carry what the writer knows
/// (`available`, `held`); `GET /v1/accounts/{id}` adds the all-time totals from the read
/// model and the seq it reflects.
#[derive(Serialize, ToSchema)]
pub(crate) struct AccountView {
    #[schema(value_type = AccountIdSchema)]
    account: AccountId,
    #[schema(value_type = CurrencyCode)]
    currency: Currency,
    /// Free to pay out.
    #[schema(value_type = Amount)]
    available: String,
    /// Held by authorized payouts.
    #[schema(value_type = Amount)]
    held: String,
    /// Paid out to payees, all time (reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Amount>)]
    released: Option<String>,
    /// Deposited, all time (reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Amount>)]
    deposited: Option<String>,
    /// The seq the read model reflected (reads; also the Ledger-Reflects-Seq header).
    #[serde(skip_serializing_if = "Option::is_none")]
    reflects_seq: Option<u64>,
}

const ACCOUNT: &str = "The account";

fn account_view(state: &TenantState, id: &AccountId) -> Value {
    match state.accounts.get(id) {
        None => Value::Null,
        Some(account) => serde_json::to_value(AccountView {
            account: id.clone(),
            currency: account.currency,
            available: amount_text(account.available, account.currency),
            held: amount_text(account.held, account.currency),
            released: None,
            deposited: None,
            reflects_seq: None,
        })
        .unwrap_or_default(),
    }
}

/// `POST /v1/accounts`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewAccount {
    /// The account's only currency.
    #[schema(value_type = CurrencyCode)]
    currency: Currency,
    name: String,
}

/// Open an account (account.manage).
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = NewAccount,
    responses((status = 201, description = "The account, empty", body = AccountView)))]
async fn open_account(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<NewAccount>,
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

/// `POST /v1/accounts/{id}/deposits`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewDeposit {
    /// In the account's currency.
    #[schema(value_type = Amount)]
    amount: String,
    /// The funding's reference (a bank statement line, say).
    reference: Option<String>,
}

/// Deposit funds into an account (funds.deposit).
#[utoipa::path(post, path = "/v1/accounts/{id}/deposits", tag = "accounts", request_body = NewDeposit,
    params(("id" = AccountIdSchema, Path, description = ACCOUNT)),
    responses((status = 201, description = "The account after the deposit", body = AccountView)))]
async fn deposit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path(id): Path<String>,
    Body(body): Body<NewDeposit>,
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
    serde_json::to_value(AccountView {
        account: account.clone(),
        currency,
        available: amount_text(balance.available, currency),
        held: amount_text(balance.held, currency),
        released: Some(amount_text(balance.released, currency)),
        deposited: Some(amount_text(balance.deposited, currency)),
        reflects_seq: None,
    })
    .unwrap_or_default()
}

/// An account's balances (read model; ledger.read).
///
/// `{"account","currency","available","held","released","deposited","reflects_seq"}`.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = AccountIdSchema, Path, description = ACCOUNT), ObjectQuery),
    responses((status = 200, description = "The account", body = AccountView,
        headers(("Ledger-Reflects-Seq" = u64, description = "The seq the read model reflects")))))]
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
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(open_account))
        .routes(routes!(get_account))
        .routes(routes!(deposit))
}
