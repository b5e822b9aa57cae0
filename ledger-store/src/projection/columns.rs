//! Rows <-> columns, shared by both backends and every read model.

use ledger_core::event::Event;
use ledger_core::ids::{AccountId, TenantId};
use ledger_core::money::Currency;
use ledger_core::policy::ApprovalRule;
use ledger_core::time::Timestamp;
use projections::{AccountBalance, Gate, PayoutRow, ReadModel};
use rust_decimal::Decimal;

use crate::rows::seq_to_db;
use crate::{rows, StoreError};

pub(crate) fn corrupt(tenant: &TenantId, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tenant: tenant.as_str().to_owned(),
        seq: 0,
        reason: format!("projection: {}", reason.into()),
    }
}

/// Decimal text at the currency's scale.
pub(crate) fn amount_text(value: Decimal, currency: Currency) -> String {
    let mut value = value;
    value.rescale(currency.minor_units());
    value.to_string()
}

pub(crate) fn parse_as<T: std::str::FromStr>(
    tenant: &TenantId,
    what: &str,
    text: &str,
) -> Result<T, StoreError> {
    text.parse()
        .map_err(|_| corrupt(tenant, format!("{what} does not parse")))
}

pub(crate) fn time_from_db(tenant: &TenantId, text: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse(text).map_err(|_| corrupt(tenant, "a time does not parse"))
}

pub(crate) fn seq_from_db(tenant: &TenantId, seq: i64) -> Result<u64, StoreError> {
    rows::seq_from_db(tenant, seq)
}

pub(crate) fn rules_text(rules: &[ApprovalRule]) -> String {
    serde_json::to_string(rules).unwrap_or_else(|_| "[]".to_owned())
}

pub(crate) fn rules_from_db(
    tenant: &TenantId,
    text: &str,
) -> Result<Vec<ApprovalRule>, StoreError> {
    serde_json::from_str(text).map_err(|_| corrupt(tenant, "approval rules do not parse"))
}

/// A row of a query over many tenants: the tenant, then the columns.
#[derive(sqlx::FromRow)]
pub(crate) struct Tenanted<T> {
    pub(crate) tenant_id: String,
    #[sqlx(flatten)]
    pub(crate) row: T,
}

/// `columns` (a comma-separated list) with each name qualified by `prefix`.
pub(crate) fn prefixed(prefix: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{prefix}{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A gate as (by, at, seq) columns.
pub(crate) type GateColumns = (Option<String>, Option<String>, Option<i64>);

pub(crate) fn gate_columns(gate: Option<&Gate>) -> GateColumns {
    match gate {
        None => (None, None, None),
        Some(gate) => (
            Some(gate.by.to_string()),
            Some(gate.at.to_string()),
            Some(seq_to_db(gate.seq)),
        ),
    }
}

pub(crate) fn approvals_text(row: &PayoutRow) -> String {
    serde_json::to_string(&row.approvals).unwrap_or_else(|_| "[]".to_owned())
}

/// Folds `events` over the persisted state at `seq` (its rules and the rows the events
/// name, already loaded).
pub(crate) fn fold(
    seq: u64,
    policy: Vec<ApprovalRule>,
    balances: Vec<(AccountId, AccountBalance)>,
    payouts: Vec<PayoutRow>,
    events: &[Event],
) -> projections::RowChanges {
    let mut model = ReadModel::partial(seq, policy, balances, payouts);
    model.apply_page(events)
}
