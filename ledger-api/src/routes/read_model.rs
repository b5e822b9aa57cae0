//! What the reads answered from the persisted projections share (`GET /v1/accounts/{id}`
//! in `accounts`, `GET /v1/payouts/{id}` and `GET /v1/payouts` in `payouts`,
//! `GET /v1/audit` in `audit`).
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

use axum::extract::Query;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger_core::money::Currency;
use ledger_core::policy::Permission;
use ledger_core::Rejection;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::http::context::Caller;
use crate::routes::context::allowed;
use crate::state::AppState;

/// The header with the seq a read reflects.
pub const REFLECTS_HEADER: &str = "ledger-reflects-seq";
/// Most payouts per page.
pub const PAYOUTS_PAGE_MAX: u32 = 500;
/// Most audit rows per page.
pub const AUDIT_PAGE_MAX: u32 = 1000;
/// Rows per page unless `limit` says otherwise.
pub const PAGE_DEFAULT: u32 = 100;

pub(crate) type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

pub(crate) fn query<T>(query: QueryResult<T>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|_| ApiError::Validation("query parameters".into()))
}

/// Checks `permission` for the caller and returns the head of the tenant's chain as
/// this process's writer knows it (at least the last seq this process committed).
pub(crate) async fn permitted(
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
pub(crate) async fn reflected<T, F, Fut>(
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
pub(crate) fn answer(mut body: Value, seq: u64) -> Response {
    if let Some(map) = body.as_object_mut() {
        map.insert("reflects_seq".into(), Value::from(seq));
    }
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(REFLECTS_HEADER, HeaderValue::from(seq));
    response
}

pub(crate) fn amount_text(value: Decimal, currency: Currency) -> String {
    let mut value = value;
    value.rescale(currency.minor_units());
    value.to_string()
}

/// `?min_seq=` of the single-object reads.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ObjectQuery {
    /// Wait (up to the read wait) until the read model reflects at least this seq,
    /// e.g. a write's Ledger-Seq; else 503 projection_behind.
    pub(crate) min_seq: Option<u64>,
}

/// A page cursor: the seq of the last row of the previous page.
pub(crate) fn cursor(after: Option<&str>) -> Result<u64, ApiError> {
    match after {
        None => Ok(0),
        Some(text) => text
            .parse()
            .map_err(|_| ApiError::Validation("after must be a cursor from next".into())),
    }
}

pub(crate) fn limit(limit: Option<u32>, max: u32) -> u32 {
    limit.unwrap_or(PAGE_DEFAULT).clamp(1, max)
}
