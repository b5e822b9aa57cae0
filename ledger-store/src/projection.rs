//! The persisted projections: the projections crate's read models (balances, the payouts
//! view, the audit view) as tables, with the cursor they reflect (DESIGN section 5: the
//! read-model tables).
//!
//! A projector step ([`Store::project_next`]) is ONE transaction: read the cursor, read
//! the next page of events after it, move the cursor by compare-and-set (on PostgreSQL
//! the loser of a race between two processes finds the cursor moved, writes nothing and
//! rolls back; on SQLite the write lock is taken up front), load exactly the rows the
//! page names ([`projections::Keys`]), fold the page with the pure
//! [`ReadModel::apply_page`], and write the rows it reports. The rows therefore always
//! reflect exactly the events up to the cursor, and every read answers with the cursor
//! read in the same snapshot as its rows ([`Reflected`]).
//!
//! [`Store::rebuild_projection`] clears a tenant's rows and folds its whole chain from
//! seq 1 in one transaction: readers see the old rows or the new, never a mixture.

use std::collections::{BTreeMap, HashMap, HashSet};

use ledger_core::event::Event;
use ledger_core::ids::{AccountId, PayoutId, PrincipalId, TenantId};
use ledger_core::money::Currency;
use ledger_core::policy::ApprovalRule;
use ledger_core::time::Timestamp;
use projections::{AccountBalance, AuditRow, Gate, Keys, Outcome, PayoutRow, ReadModel};
use rust_decimal::Decimal;

use crate::rows::{self, check_limit, seq_to_db};
use crate::{detached, Store, StoreError};

/// Rows per multi-row statement (a payout row has 27 columns: 13 500 parameters, under
/// SQLite's 32 766).
const ROWS_PER_STATEMENT: usize = 500;
/// Rows (balances, payouts, audit entries) per projector write transaction on SQLite,
/// where every transaction holds the one write lock (a tenant's rows are never split).
const WRITE_ROWS_MAX: usize = 200;

/// `items` cut into consecutive parts of about [`WRITE_ROWS_MAX`] rows: a part closes
/// once it holds that many, so only a single item can take one past the bound.
fn write_parts<T>(items: &[T], rows: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut parts = Vec::new();
    let (mut start, mut held) = (0, 0);
    for (index, item) in items.iter().enumerate() {
        held += rows(item);
        if held >= WRITE_ROWS_MAX {
            parts.push(&items[start..=index]);
            (start, held) = (index + 1, 0);
        }
    }
    if start < items.len() {
        parts.push(&items[start..]);
    }
    parts
}

/// Events per page of a rebuild (all pages in one transaction).
const REBUILD_PAGE: u32 = 5_000;

/// A read answered from the projection: the rows, and the seq of the last event they
/// reflect (the cursor, read in the same snapshot as the rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reflected<T> {
    /// The cursor: every event up to it, and none after, is in `value`.
    pub seq: u64,
    /// The rows.
    pub value: T,
}

/// What one projector step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectStep {
    /// Folded `events` events; the cursor is now `to`.
    Advanced {
        /// The new cursor.
        to: u64,
        /// Events folded.
        events: usize,
    },
    /// No event after the cursor, which is at `seq`.
    CaughtUp {
        /// The cursor.
        seq: u64,
    },
    /// Another projector moved the cursor first: nothing was written.
    Lost,
}

/// `GET /v1/payouts` filters: in request order, after a requested seq.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayoutQuery {
    /// Only this status.
    pub status: Option<String>,
    /// Only this source account.
    pub account: Option<AccountId>,
    /// Only payouts requested after this seq (the page cursor).
    pub after: u64,
    /// At most this many (at most [`crate::PAGE_LIMIT_MAX`]).
    pub limit: u32,
}

/// `GET /v1/audit` filters: in seq order, after a seq.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this actor.
    pub actor: Option<PrincipalId>,
    /// Only this action (`payout.approve`, ...).
    pub action: Option<String>,
    /// Only accepted, or only denied.
    pub result: Option<Outcome>,
    /// At or after this time.
    pub from: Option<Timestamp>,
    /// Before this time.
    pub to: Option<Timestamp>,
    /// Only rows after this seq (the page cursor).
    pub after: u64,
    /// At most this many (at most [`crate::PAGE_LIMIT_MAX`]).
    pub limit: u32,
}

/// Every persisted row of one tenant's projection (for tests and tools: it is all of
/// it, in memory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectedRows {
    /// The cursor.
    pub seq: u64,
    /// The approval rules the payouts view folds with.
    pub policy: Vec<ApprovalRule>,
    /// Balances by account.
    pub balances: BTreeMap<AccountId, AccountBalance>,
    /// Payouts by id.
    pub payouts: BTreeMap<PayoutId, PayoutRow>,
    /// Audit rows in seq order.
    pub audit: Vec<AuditRow>,
}

impl ProjectedRows {
    /// The rows of a pure fold, for comparison.
    pub fn of(model: &ReadModel) -> Self {
        Self {
            seq: model.seq,
            policy: model.payouts.policy.clone(),
            balances: model.balances.accounts.clone(),
            payouts: model.payouts.payouts.clone(),
            audit: model.audit.rows.clone(),
        }
    }
}

impl Store {
    /// One projector step for `tenant` over at most `limit` events (see the module
    /// documentation): rows and cursor in one transaction, compare-and-set on the cursor.
    pub async fn project_next(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<ProjectStep, StoreError> {
        let (store, tenant) = (self.clone(), tenant.clone());
        detached(async move {
            match store {
                Store::Sqlite(s) => on_sqlite::project_next(&s, &tenant, limit).await,
                Store::Postgres(s) => on_postgres::project_next(&s, &tenant, limit).await,
            }
        })
        .await
    }

    /// One projector step for each of `tenants` (see [`Store::project_next`]), all in ONE
    /// transaction (one commit for every tenant's rows and cursor), tenants in a fixed
    /// order; each tenant's outcome in the order given. A tenant whose compare-and-set
    /// is lost writes nothing ([`ProjectStep::Lost`]); an `Err` means nothing was written.
    pub async fn project_many(
        &self,
        tenants: &[TenantId],
        limit: u32,
    ) -> Result<Vec<ProjectStep>, StoreError> {
        let (store, tenants) = (self.clone(), tenants.to_vec());
        detached(async move {
            match store {
                Store::Sqlite(s) => on_sqlite::project_many(&s, &tenants, limit).await,
                Store::Postgres(s) => on_postgres::project_many(&s, &tenants, limit).await,
            }
        })
        .await
    }

    /// Clears `tenant`'s projection rows and folds its chain from seq 1, in one
    /// transaction. Returns the seq the rows now reflect.
    pub async fn rebuild_projection(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let (store, tenant) = (self.clone(), tenant.clone());
        detached(async move {
            match store {
                Store::Sqlite(s) => on_sqlite::rebuild(&s, &tenant).await,
                Store::Postgres(s) => on_postgres::rebuild(&s, &tenant).await,
            }
        })
        .await
    }

    /// The seq `tenant`'s projection reflects (0 before its first step).
    pub async fn projection_seq(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let (store, tenant) = (self.clone(), tenant.clone());
        detached(async move {
            match store {
                Store::Sqlite(s) => {
                    let mut tx = s.pool().begin().await?;
                    let seq = on_sqlite::cursor_in(&mut tx, &tenant)
                        .await?
                        .map_or(0, |c| c.0);
                    tx.commit().await?;
                    Ok(seq)
                }
                Store::Postgres(s) => {
                    let mut tx = on_postgres::read_tx(&s, &tenant).await?;
                    let seq = on_postgres::cursor_in(&mut tx, &tenant)
                        .await?
                        .map_or(0, |c| c.0);
                    tx.commit().await?;
                    Ok(seq)
                }
            }
        })
        .await
    }

    /// One account's projected balances.
    pub async fn projected_account(
        &self,
        tenant: &TenantId,
        account: &AccountId,
    ) -> Result<Reflected<Option<AccountBalance>>, StoreError> {
        let (store, tenant, account) = (self.clone(), tenant.clone(), account.clone());
        detached(async move {
            let accounts = std::slice::from_ref(&account);
            let (seq, found) = match store {
                Store::Sqlite(s) => {
                    let mut tx = s.pool().begin().await?;
                    let seq = on_sqlite::cursor_in(&mut tx, &tenant)
                        .await?
                        .map_or(0, |c| c.0);
                    let found = on_sqlite::balances_in(&mut tx, &tenant, Some(accounts)).await?;
                    tx.commit().await?;
                    (seq, found)
                }
                Store::Postgres(s) => {
                    let mut tx = on_postgres::read_tx(&s, &tenant).await?;
                    let seq = on_postgres::cursor_in(&mut tx, &tenant)
                        .await?
                        .map_or(0, |c| c.0);
                    let found = on_postgres::balances_in(&mut tx, &tenant, Some(accounts)).await?;
                    tx.commit().await?;
                    (seq, found)
                }
            };
            Ok(Reflected {
                seq,
                value: found.into_iter().next().map(|(_, balance)| balance),
            })
        })
        .await
    }

    /// One projected payout.
    pub async fn projected_payout(
        &self,
        tenant: &TenantId,
        payout: &PayoutId,
    ) -> Result<Reflected<Option<PayoutRow>>, StoreError> {
        let (store, tenant, payout) = (self.clone(), tenant.clone(), payout.clone());
        detached(async move {
            let payouts = std::slice::from_ref(&payout);
            let (seq, found) = match store {
                Store::Sqlite(s) => {
                    let mut tx = s.pool().begin().await?;
                    let seq = on_sqlite::cursor_in(&mut tx, &tenant)
                        .await?
                        .map_or(0, |c| c.0);
                    let found = on_sqlite::payouts_in(&mut tx, &tenant, Some(payouts)).await?;
                    tx.commit().await?;
                    (seq, found)
                }
                Store::Postgres(s) => {
                    let mut tx = on_postgres::read_tx(&s, &tenant).await?;
                    let seq = on_postgres::cursor_in(&mut tx, &tenant)
                        .await?
                        .map_or(0, |c| c.0);
                    let found = on_postgres::payouts_in(&mut tx, &tenant, Some(payouts)).await?;
                    tx.commit().await?;
                    (seq, found)
                }
            };
            Ok(Reflected {
                seq,
                value: found.into_iter().next(),
            })
        })
        .await
    }

    /// Projected payouts matching `query`, in request order.
    pub async fn projected_payouts(
        &self,
        tenant: &TenantId,
        query: &PayoutQuery,
    ) -> Result<Reflected<Vec<PayoutRow>>, StoreError> {
        check_limit(query.limit)?;
        let (store, tenant, query) = (self.clone(), tenant.clone(), query.clone());
        detached(async move {
            let (seq, value) = match store {
                Store::Sqlite(s) => {
                    let mut tx = s.pool().begin().await?;
                    let seq = on_sqlite::cursor_in(&mut tx, &tenant)
                        .await?
                        .map_or(0, |c| c.0);
                    let value = on_sqlite::list_payouts_in(&mut tx, &tenant, &query).await?;
                    tx.commit().await?;
                    (seq, value)
                }
                Store::Postgres(s) => {
                    let mut tx = on_postgres::read_tx(&s, &tenant).await?;
                    let seq = on_postgres::cursor_in(&mut tx, &tenant)
                        .await?
                        .map_or(0, |c| c.0);
                    let value = on_postgres::list_payouts_in(&mut tx, &tenant, &query).await?;
                    tx.commit().await?;
                    (seq, value)
                }
            };
            Ok(Reflected { seq, value })
        })
        .await
    }

    /// Projected audit rows matching `query`, in seq order.
    pub async fn projected_audit(
        &self,
        tenant: &TenantId,
        query: &AuditQuery,
    ) -> Result<Reflected<Vec<AuditRow>>, StoreError> {
        check_limit(query.limit)?;
        let (store, tenant, query) = (self.clone(), tenant.clone(), query.clone());
        detached(async move {
            let (seq, value) = match store {
                Store::Sqlite(s) => {
                    let mut tx = s.pool().begin().await?;
                    let seq = on_sqlite::cursor_in(&mut tx, &tenant)
                        .await?
                        .map_or(0, |c| c.0);
                    let value = on_sqlite::audit_in(&mut tx, &tenant, &query).await?;
                    tx.commit().await?;
                    (seq, value)
                }
                Store::Postgres(s) => {
                    let mut tx = on_postgres::read_tx(&s, &tenant).await?;
                    let seq = on_postgres::cursor_in(&mut tx, &tenant)
                        .await?
                        .map_or(0, |c| c.0);
                    let value = on_postgres::audit_in(&mut tx, &tenant, &query).await?;
                    tx.commit().await?;
                    (seq, value)
                }
            };
            Ok(Reflected { seq, value })
        })
        .await
    }

    /// Every projection row of `tenant`, read in one snapshot (for tests and tools).
    pub async fn projected_rows(&self, tenant: &TenantId) -> Result<ProjectedRows, StoreError> {
        let (store, tenant) = (self.clone(), tenant.clone());
        detached(async move {
            let all = AuditQuery {
                limit: u32::MAX,
                ..AuditQuery::default()
            };
            let (cursor, balances, payouts, audit) = match store {
                Store::Sqlite(s) => {
                    let mut tx = s.pool().begin().await?;
                    let cursor = on_sqlite::cursor_in(&mut tx, &tenant).await?;
                    let balances = on_sqlite::balances_in(&mut tx, &tenant, None).await?;
                    let payouts = on_sqlite::payouts_in(&mut tx, &tenant, None).await?;
                    let audit = on_sqlite::audit_in(&mut tx, &tenant, &all).await?;
                    tx.commit().await?;
                    (cursor, balances, payouts, audit)
                }
                Store::Postgres(s) => {
                    let mut tx = on_postgres::read_tx(&s, &tenant).await?;
                    let cursor = on_postgres::cursor_in(&mut tx, &tenant).await?;
                    let balances = on_postgres::balances_in(&mut tx, &tenant, None).await?;
                    let payouts = on_postgres::payouts_in(&mut tx, &tenant, None).await?;
                    let audit = on_postgres::audit_in(&mut tx, &tenant, &all).await?;
                    tx.commit().await?;
                    (cursor, balances, payouts, audit)
                }
            };
            let (seq, policy) = cursor.unwrap_or_default();
            Ok(ProjectedRows {
                seq,
                policy,
                balances: balances.into_iter().collect(),
                payouts: payouts
                    .into_iter()
                    .map(|row| (row.payout.clone(), row))
                    .collect(),
                audit,
            })
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Rows <-> columns, shared by both backends
// ---------------------------------------------------------------------------------------

fn corrupt(tenant: &TenantId, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tenant: tenant.as_str().to_owned(),
        seq: 0,
        reason: format!("projection: {}", reason.into()),
    }
}

/// Decimal text at the currency's scale.
fn amount_text(value: Decimal, currency: Currency) -> String {
    let mut value = value;
    value.rescale(currency.minor_units());
    value.to_string()
}

fn parse_as<T: std::str::FromStr>(
    tenant: &TenantId,
    what: &str,
    text: &str,
) -> Result<T, StoreError> {
    text.parse()
        .map_err(|_| corrupt(tenant, format!("{what} does not parse")))
}

fn time_from_db(tenant: &TenantId, text: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse(text).map_err(|_| corrupt(tenant, "a time does not parse"))
}

fn seq_from_db(tenant: &TenantId, seq: i64) -> Result<u64, StoreError> {
    rows::seq_from_db(tenant, seq)
}

fn rules_text(rules: &[ApprovalRule]) -> String {
    serde_json::to_string(rules).unwrap_or_else(|_| "[]".to_owned())
}

fn rules_from_db(tenant: &TenantId, text: &str) -> Result<Vec<ApprovalRule>, StoreError> {
    serde_json::from_str(text).map_err(|_| corrupt(tenant, "approval rules do not parse"))
}

/// A row of a query over many tenants: the tenant, then the columns.
#[derive(sqlx::FromRow)]
struct Tenanted<T> {
    tenant_id: String,
    #[sqlx(flatten)]
    row: T,
}

/// `columns` (a comma-separated list) with each name qualified by `prefix`.
fn prefixed(prefix: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{prefix}{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(sqlx::FromRow)]
struct BalanceColumns {
    account: String,
    currency: String,
    available: String,
    held: String,
    released: String,
    deposited: String,
}

impl BalanceColumns {
    fn into_row(self, tenant: &TenantId) -> Result<(AccountId, AccountBalance), StoreError> {
        Ok((
            parse_as(tenant, "account", &self.account)?,
            AccountBalance {
                currency: parse_as(tenant, "currency", &self.currency)?,
                available: parse_as(tenant, "available", &self.available)?,
                held: parse_as(tenant, "held", &self.held)?,
                released: parse_as(tenant, "released", &self.released)?,
                deposited: parse_as(tenant, "deposited", &self.deposited)?,
            },
        ))
    }
}

#[derive(sqlx::FromRow)]
struct PayoutColumns {
    payout: String,
    status: String,
    account: String,
    payee: String,
    amount: String,
    currency: String,
    reference: String,
    approvals_required: i64,
    requested_by: String,
    requested_at: String,
    requested_seq: i64,
    approvals: String,
    authorized_by: Option<String>,
    authorized_at: Option<String>,
    authorized_seq: Option<i64>,
    executed_by: Option<String>,
    executed_at: Option<String>,
    executed_seq: Option<i64>,
    released_by: Option<String>,
    released_at: Option<String>,
    released_seq: Option<i64>,
    ended_by: Option<String>,
    ended_at: Option<String>,
    ended_seq: Option<i64>,
    ended_reason: Option<String>,
}

fn gate_from_db(
    tenant: &TenantId,
    by: Option<String>,
    at: Option<String>,
    seq: Option<i64>,
) -> Result<Option<Gate>, StoreError> {
    match (by, at, seq) {
        (None, None, None) => Ok(None),
        (Some(by), Some(at), Some(seq)) => Ok(Some(Gate {
            by: parse_as(tenant, "gate principal", &by)?,
            at: time_from_db(tenant, &at)?,
            seq: seq_from_db(tenant, seq)?,
        })),
        _ => Err(corrupt(tenant, "a gate is partly recorded")),
    }
}

impl PayoutColumns {
    fn into_row(self, tenant: &TenantId) -> Result<PayoutRow, StoreError> {
        let ended = match (
            gate_from_db(tenant, self.ended_by, self.ended_at, self.ended_seq)?,
            self.ended_reason,
        ) {
            (None, None) => None,
            (Some(gate), Some(reason)) => Some((gate, reason)),
            (Some(_), None) | (None, Some(_)) => {
                return Err(corrupt(tenant, "an ended payout without its reason"))
            }
        };
        Ok(PayoutRow {
            payout: parse_as(tenant, "payout", &self.payout)?,
            status: self.status,
            account: parse_as(tenant, "account", &self.account)?,
            payee: parse_as(tenant, "payee", &self.payee)?,
            amount: self.amount,
            currency: parse_as(tenant, "currency", &self.currency)?,
            reference: self.reference,
            requested: Gate {
                by: parse_as(tenant, "requester", &self.requested_by)?,
                at: time_from_db(tenant, &self.requested_at)?,
                seq: seq_from_db(tenant, self.requested_seq)?,
            },
            approvals: serde_json::from_str(&self.approvals)
                .map_err(|_| corrupt(tenant, "approvals do not parse"))?,
            authorized: gate_from_db(
                tenant,
                self.authorized_by,
                self.authorized_at,
                self.authorized_seq,
            )?,
            executed: gate_from_db(
                tenant,
                self.executed_by,
                self.executed_at,
                self.executed_seq,
            )?,
            released: gate_from_db(
                tenant,
                self.released_by,
                self.released_at,
                self.released_seq,
            )?,
            ended,
            approvals_required: u32::try_from(self.approvals_required)
                .map_err(|_| corrupt(tenant, "approvals required out of range"))?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AuditColumns {
    seq: i64,
    at: String,
    actor: String,
    action: String,
    subject: String,
    result: String,
    reason: Option<String>,
    request_id: Option<String>,
}

impl AuditColumns {
    fn into_row(self, tenant: &TenantId) -> Result<AuditRow, StoreError> {
        Ok(AuditRow {
            seq: seq_from_db(tenant, self.seq)?,
            at: time_from_db(tenant, &self.at)?,
            actor: parse_as(tenant, "actor", &self.actor)?,
            action: self.action,
            subject: self.subject,
            result: Outcome::parse(&self.result)
                .ok_or_else(|| corrupt(tenant, "audit result is neither accepted nor denied"))?,
            reason: self.reason,
            request_id: self.request_id,
        })
    }
}

/// A gate as (by, at, seq) columns.
type GateColumns = (Option<String>, Option<String>, Option<i64>);

fn gate_columns(gate: Option<&Gate>) -> GateColumns {
    match gate {
        None => (None, None, None),
        Some(gate) => (
            Some(gate.by.to_string()),
            Some(gate.at.to_string()),
            Some(seq_to_db(gate.seq)),
        ),
    }
}

fn approvals_text(row: &PayoutRow) -> String {
    serde_json::to_string(&row.approvals).unwrap_or_else(|_| "[]".to_owned())
}

/// Folds `events` over the persisted state at `seq` (its rules and the rows the events
/// name, already loaded).
fn fold(
    seq: u64,
    policy: Vec<ApprovalRule>,
    balances: Vec<(AccountId, AccountBalance)>,
    payouts: Vec<PayoutRow>,
    events: &[Event],
) -> projections::RowChanges {
    let mut model = ReadModel::partial(seq, policy, balances, payouts);
    model.apply_page(events)
}

const PAYOUT_UPDATE: &str = " ON CONFLICT (tenant_id, payout) DO UPDATE SET \
     status = excluded.status, account = excluded.account, payee = excluded.payee, \
     amount = excluded.amount, currency = excluded.currency, reference = excluded.reference, \
     approvals_required = excluded.approvals_required, requested_by = excluded.requested_by, \
     requested_at = excluded.requested_at, requested_seq = excluded.requested_seq, \
     approvals = excluded.approvals, authorized_by = excluded.authorized_by, \
     authorized_at = excluded.authorized_at, authorized_seq = excluded.authorized_seq, \
     executed_by = excluded.executed_by, executed_at = excluded.executed_at, \
     executed_seq = excluded.executed_seq, released_by = excluded.released_by, \
     released_at = excluded.released_at, released_seq = excluded.released_seq, \
     ended_by = excluded.ended_by, ended_at = excluded.ended_at, ended_seq = excluded.ended_seq, \
     ended_reason = excluded.ended_reason";

const BALANCE_UPDATE: &str = " ON CONFLICT (tenant_id, account) DO UPDATE SET \
     currency = excluded.currency, available = excluded.available, held = excluded.held, \
     released = excluded.released, deposited = excluded.deposited";

const PAYOUT_INSERT: &str = "INSERT INTO projection_payouts (tenant_id, payout, status, \
     account, payee, amount, currency, reference, approvals_required, requested_by, \
     requested_at, requested_seq, approvals, authorized_by, authorized_at, authorized_seq, \
     executed_by, executed_at, executed_seq, released_by, released_at, released_seq, \
     ended_by, ended_at, ended_seq, ended_reason) ";

const BALANCE_INSERT: &str = "INSERT INTO projection_balances (tenant_id, account, currency, \
     available, held, released, deposited) ";

const AUDIT_INSERT: &str = "INSERT INTO projection_audit (tenant_id, seq, at, actor, action, \
     subject, result, reason, request_id) ";

// ---------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------

mod on_sqlite {
    use super::*;
    use crate::SqliteStore;
    use sqlx::{QueryBuilder, Sqlite, Transaction};

    type Tx = Transaction<'static, Sqlite>;

    const BALANCE_COLUMNS: &str = "account, currency, available, held, released, deposited";
    const PAYOUT_COLUMNS: &str = "payout, status, account, payee, amount, currency, reference, \
         approvals_required, requested_by, requested_at, requested_seq, approvals, \
         authorized_by, authorized_at, authorized_seq, executed_by, executed_at, executed_seq, \
         released_by, released_at, released_seq, ended_by, ended_at, ended_seq, ended_reason";
    const AUDIT_COLUMNS: &str = "seq, at, actor, action, subject, result, reason, request_id";

    /// A read-model table as SQLite holds it: its name, the column that names a row
    /// within a tenant, its columns, and the row they parse to.
    trait ProjectionColumns: Sized {
        type Row;
        const TABLE: &'static str;
        const KEY_COLUMN: &'static str;
        const SQLITE_COLUMNS: &'static str;
        fn into_row(self, tenant: &TenantId) -> Result<Self::Row, StoreError>;
    }

    impl ProjectionColumns for BalanceColumns {
        type Row = (AccountId, AccountBalance);
        const TABLE: &'static str = "projection_balances";
        const KEY_COLUMN: &'static str = "account";
        const SQLITE_COLUMNS: &'static str = BALANCE_COLUMNS;
        fn into_row(self, tenant: &TenantId) -> Result<Self::Row, StoreError> {
            BalanceColumns::into_row(self, tenant)
        }
    }

    impl ProjectionColumns for PayoutColumns {
        type Row = PayoutRow;
        const TABLE: &'static str = "projection_payouts";
        const KEY_COLUMN: &'static str = "payout";
        const SQLITE_COLUMNS: &'static str = PAYOUT_COLUMNS;
        fn into_row(self, tenant: &TenantId) -> Result<Self::Row, StoreError> {
            PayoutColumns::into_row(self, tenant)
        }
    }

    pub(super) async fn cursor_in(
        tx: &mut Tx,
        tenant: &TenantId,
    ) -> Result<Option<(u64, Vec<ApprovalRule>)>, StoreError> {
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT seq, approval_rules FROM projection_cursors WHERE tenant_id = $1",
        )
        .bind(tenant.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        row.map(|(seq, rules)| Ok((seq_from_db(tenant, seq)?, rules_from_db(tenant, &rules)?)))
            .transpose()
    }

    async fn events_in(
        tx: &mut Tx,
        tenant: &TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let limit = check_limit(limit)?;
        let found: Vec<(i64, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, hash, canonical FROM events \
             WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(seq_to_db(after))
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?;
        found
            .into_iter()
            .map(|(seq, hash, canonical)| {
                rows::event_from_row(tenant, seq, &hash, canonical).map(|(event, _)| event)
            })
            .collect()
    }

    pub(super) async fn balances_in(
        tx: &mut Tx,
        tenant: &TenantId,
        only: Option<&[AccountId]>,
    ) -> Result<Vec<(AccountId, AccountBalance)>, StoreError> {
        let mut out = Vec::new();
        let chunks: Vec<Option<&[AccountId]>> = match only {
            None => vec![None],
            Some(accounts) => accounts.chunks(ROWS_PER_STATEMENT).map(Some).collect(),
        };
        for chunk in chunks {
            let mut select = QueryBuilder::<Sqlite>::new(format!(
                "SELECT {BALANCE_COLUMNS} FROM projection_balances WHERE tenant_id = "
            ));
            select.push_bind(tenant.as_str());
            if let Some(accounts) = chunk {
                select.push(" AND account IN (");
                let mut list = select.separated(", ");
                for account in accounts {
                    list.push_bind(account.as_str());
                }
                select.push(")");
            }
            select.push(" ORDER BY account");
            let rows: Vec<BalanceColumns> = select.build_query_as().fetch_all(&mut **tx).await?;
            for row in rows {
                out.push(row.into_row(tenant)?);
            }
        }
        Ok(out)
    }

    pub(super) async fn payouts_in(
        tx: &mut Tx,
        tenant: &TenantId,
        only: Option<&[PayoutId]>,
    ) -> Result<Vec<PayoutRow>, StoreError> {
        let mut out = Vec::new();
        let chunks: Vec<Option<&[PayoutId]>> = match only {
            None => vec![None],
            Some(payouts) => payouts.chunks(ROWS_PER_STATEMENT).map(Some).collect(),
        };
        for chunk in chunks {
            let mut select = QueryBuilder::<Sqlite>::new(format!(
                "SELECT {PAYOUT_COLUMNS} FROM projection_payouts WHERE tenant_id = "
            ));
            select.push_bind(tenant.as_str());
            if let Some(payouts) = chunk {
                select.push(" AND payout IN (");
                let mut list = select.separated(", ");
                for payout in payouts {
                    list.push_bind(payout.as_str());
                }
                select.push(")");
            } else {
                // Only the whole dump is ordered: with a key list, an ORDER BY makes
                // SQLite walk the requested_seq index over every payout of the tenant.
                select.push(" ORDER BY requested_seq");
            }
            let rows: Vec<PayoutColumns> = select.build_query_as().fetch_all(&mut **tx).await?;
            for row in rows {
                out.push(row.into_row(tenant)?);
            }
        }
        Ok(out)
    }

    pub(super) async fn list_payouts_in(
        tx: &mut Tx,
        tenant: &TenantId,
        query: &PayoutQuery,
    ) -> Result<Vec<PayoutRow>, StoreError> {
        let mut select = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {PAYOUT_COLUMNS} FROM projection_payouts WHERE tenant_id = "
        ));
        select.push_bind(tenant.as_str());
        if let Some(status) = &query.status {
            select.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(account) = &query.account {
            select.push(" AND account = ").push_bind(account.as_str());
        }
        select
            .push(" AND requested_seq > ")
            .push_bind(seq_to_db(query.after))
            .push(" ORDER BY requested_seq LIMIT ")
            .push_bind(i64::from(query.limit));
        let rows: Vec<PayoutColumns> = select.build_query_as().fetch_all(&mut **tx).await?;
        rows.into_iter().map(|row| row.into_row(tenant)).collect()
    }

    pub(super) async fn audit_in(
        tx: &mut Tx,
        tenant: &TenantId,
        query: &AuditQuery,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let mut select = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM projection_audit WHERE tenant_id = "
        ));
        select.push_bind(tenant.as_str());
        if let Some(actor) = &query.actor {
            select.push(" AND actor = ").push_bind(actor.as_str());
        }
        if let Some(action) = &query.action {
            select.push(" AND action = ").push_bind(action.as_str());
        }
        if let Some(result) = query.result {
            select.push(" AND result = ").push_bind(result.as_str());
        }
        // Stored as RFC 3339 with six digits and Z: text order is time order.
        if let Some(from) = query.from {
            select.push(" AND at >= ").push_bind(from.to_string());
        }
        if let Some(to) = query.to {
            select.push(" AND at < ").push_bind(to.to_string());
        }
        select
            .push(" AND seq > ")
            .push_bind(seq_to_db(query.after))
            .push(" ORDER BY seq LIMIT ")
            .push_bind(i64::from(query.limit));
        let rows: Vec<AuditColumns> = select.build_query_as().fetch_all(&mut **tx).await?;
        rows.into_iter().map(|row| row.into_row(tenant)).collect()
    }

    /// Loads the rows `events` name and folds the events over `(seq, policy)`.
    async fn load_fold(
        tx: &mut Tx,
        tenant: &TenantId,
        seq: u64,
        policy: Vec<ApprovalRule>,
        events: &[Event],
    ) -> Result<projections::RowChanges, StoreError> {
        let keys = Keys::of(events);
        let accounts: Vec<AccountId> = keys.accounts.into_iter().collect();
        let payouts: Vec<PayoutId> = keys.payouts.into_iter().collect();
        let balances = balances_in(tx, tenant, Some(&accounts)).await?;
        let payout_rows = payouts_in(tx, tenant, Some(&payouts)).await?;
        Ok(fold(seq, policy, balances, payout_rows, events))
    }

    /// Writes the folded changes of any number of tenants, in multi-row statements
    /// across tenants.
    async fn write_changes(
        tx: &mut Tx,
        changes: &[(&TenantId, &projections::RowChanges)],
    ) -> Result<(), StoreError> {
        let balances: Vec<(&TenantId, &(AccountId, AccountBalance))> = changes
            .iter()
            .flat_map(|(tenant, c)| c.balances.iter().map(move |row| (*tenant, row)))
            .collect();
        let payouts: Vec<(&TenantId, &PayoutRow)> = changes
            .iter()
            .flat_map(|(tenant, c)| c.payouts.iter().map(move |row| (*tenant, row)))
            .collect();
        let audit: Vec<(&TenantId, &AuditRow)> = changes
            .iter()
            .flat_map(|(tenant, c)| c.audit.iter().map(move |row| (*tenant, row)))
            .collect();
        for chunk in balances.chunks(ROWS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Sqlite>::new(BALANCE_INSERT);
            insert.push_values(chunk, |mut row, (tenant, (account, balance))| {
                let currency = balance.currency;
                row.push_bind(tenant.as_str())
                    .push_bind(account.as_str())
                    .push_bind(currency.code())
                    .push_bind(amount_text(balance.available, currency))
                    .push_bind(amount_text(balance.held, currency))
                    .push_bind(amount_text(balance.released, currency))
                    .push_bind(amount_text(balance.deposited, currency));
            });
            insert.push(BALANCE_UPDATE);
            insert.build().execute(&mut **tx).await?;
        }
        for chunk in payouts.chunks(ROWS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Sqlite>::new(PAYOUT_INSERT);
            insert.push_values(chunk, |mut row, (tenant, payout)| {
                let (authorized_by, authorized_at, authorized_seq) =
                    gate_columns(payout.authorized.as_ref());
                let (executed_by, executed_at, executed_seq) =
                    gate_columns(payout.executed.as_ref());
                let (released_by, released_at, released_seq) =
                    gate_columns(payout.released.as_ref());
                let (ended_by, ended_at, ended_seq) =
                    gate_columns(payout.ended.as_ref().map(|(gate, _)| gate));
                row.push_bind(tenant.as_str())
                    .push_bind(payout.payout.to_string())
                    .push_bind(payout.status.clone())
                    .push_bind(payout.account.to_string())
                    .push_bind(payout.payee.to_string())
                    .push_bind(payout.amount.clone())
                    .push_bind(payout.currency.code())
                    .push_bind(payout.reference.clone())
                    .push_bind(i64::from(payout.approvals_required))
                    .push_bind(payout.requested.by.to_string())
                    .push_bind(payout.requested.at.to_string())
                    .push_bind(seq_to_db(payout.requested.seq))
                    .push_bind(approvals_text(payout))
                    .push_bind(authorized_by)
                    .push_bind(authorized_at)
                    .push_bind(authorized_seq)
                    .push_bind(executed_by)
                    .push_bind(executed_at)
                    .push_bind(executed_seq)
                    .push_bind(released_by)
                    .push_bind(released_at)
                    .push_bind(released_seq)
                    .push_bind(ended_by)
                    .push_bind(ended_at)
                    .push_bind(ended_seq)
                    .push_bind(payout.ended.as_ref().map(|(_, reason)| reason.clone()));
            });
            insert.push(PAYOUT_UPDATE);
            insert.build().execute(&mut **tx).await?;
        }
        for chunk in audit.chunks(ROWS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Sqlite>::new(AUDIT_INSERT);
            insert.push_values(chunk, |mut row, (tenant, audit)| {
                row.push_bind(tenant.as_str())
                    .push_bind(seq_to_db(audit.seq))
                    .push_bind(audit.at.to_string())
                    .push_bind(audit.actor.to_string())
                    .push_bind(audit.action.clone())
                    .push_bind(audit.subject.clone())
                    .push_bind(audit.result.as_str())
                    .push_bind(audit.reason.clone())
                    .push_bind(audit.request_id.clone());
            });
            insert.build().execute(&mut **tx).await?;
        }
        for (tenant, c) in changes {
            if let Some(rules) = &c.policy {
                sqlx::query(
                    "UPDATE projection_cursors SET approval_rules = $1 WHERE tenant_id = $2",
                )
                .bind(rules_text(rules))
                .bind(tenant.as_str())
                .execute(&mut **tx)
                .await?;
            }
        }
        Ok(())
    }

    /// Loads the rows `events` name, folds them over `(seq, policy)`, writes the changes;
    /// the rules after them.
    async fn apply_in(
        tx: &mut Tx,
        tenant: &TenantId,
        seq: u64,
        policy: Vec<ApprovalRule>,
        events: &[Event],
    ) -> Result<Vec<ApprovalRule>, StoreError> {
        let changes = load_fold(tx, tenant, seq, policy.clone(), events).await?;
        write_changes(tx, &[(tenant, &changes)]).await?;
        Ok(changes.policy.unwrap_or(policy))
    }

    pub(super) async fn project_next(
        store: &SqliteStore,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<ProjectStep, StoreError> {
        let steps = project_many(store, std::slice::from_ref(tenant), limit).await?;
        Ok(steps.into_iter().next().unwrap_or(ProjectStep::Lost))
    }

    /// Steps many tenants, in a constant number of statements whatever their number.
    /// Everything that only reads — the cursors, the next page of each tenant's events,
    /// the rows those events name, and the fold — happens in one read snapshot (WAL: no
    /// lock, beside the writers); the write transaction then only moves every cursor by
    /// compare-and-set from the value its fold started at, and writes the rows of the
    /// tenants whose cursor had not moved, in multi-row statements. A projection's rows
    /// are a function of its cursor, so an unmoved cursor means the rows read are still
    /// the rows in place.
    pub(super) async fn project_many(
        store: &SqliteStore,
        tenants: &[TenantId],
        limit: u32,
    ) -> Result<Vec<ProjectStep>, StoreError> {
        check_limit(limit)?;
        let mut steps: Vec<Option<ProjectStep>> = tenants.iter().map(|_| None).collect();
        let mut look = store.pool().begin().await?;
        let cursors = cursors_in(&mut look, tenants).await?;
        let mut events = pages_in(&mut look, tenants, &cursors, limit).await?;
        let mut prepared = Vec::new();
        let mut keys = Vec::new();
        for (index, tenant) in tenants.iter().enumerate() {
            let page = events.remove(tenant.as_str()).unwrap_or_default();
            let Some(last) = page.last().map(|e| e.seq) else {
                let seq = cursors.get(tenant.as_str()).map_or(0, |c| c.0);
                steps[index] = Some(ProjectStep::CaughtUp { seq });
                continue;
            };
            let page_keys = Keys::of(&page);
            keys.push((tenant, page_keys));
            prepared.push((index, last, page));
        }
        let mut balances = keyed_balances_in(&mut look, &keys).await?;
        let mut payouts = keyed_payouts_in(&mut look, &keys).await?;
        look.commit().await?;
        if prepared.is_empty() {
            return Ok(steps
                .into_iter()
                .map(|s| s.unwrap_or(ProjectStep::Lost))
                .collect());
        }
        let mut folded = Vec::with_capacity(prepared.len());
        for (index, last, page) in prepared {
            let tenant = &tenants[index];
            let cursor = cursors.get(tenant.as_str()).cloned();
            let expected = cursor.as_ref().map(|c| c.0);
            let (seq, policy) = cursor.unwrap_or_default();
            let changes = fold(
                seq,
                policy,
                balances.remove(tenant.as_str()).unwrap_or_default(),
                payouts.remove(tenant.as_str()).unwrap_or_default(),
                &page,
            );
            folded.push((index, expected, last, page.len(), changes));
        }
        // The rows go in transactions of about WRITE_ROWS_MAX rows each, each holding the
        // write lock briefly: appends queued at the gate commit in between instead of
        // waiting behind one long projector transaction. Each tenant's rows and its
        // cursor's compare-and-set stay in one transaction.
        let rows = |(_, _, _, _, c): &(_, _, _, _, projections::RowChanges)| {
            c.balances.len() + c.payouts.len() + c.audit.len()
        };
        for part in write_parts(&folded, rows) {
            let (_turn, mut tx) = store.begin_write().await?;
            let moves: Vec<(&TenantId, Option<u64>, u64)> = part
                .iter()
                .map(|(index, expected, last, _, _)| (&tenants[*index], *expected, *last))
                .collect();
            let moved = move_cursors_in(&mut tx, &moves).await?;
            let won: Vec<(&TenantId, &projections::RowChanges)> = part
                .iter()
                .map(|(index, _, _, _, changes)| (&tenants[*index], changes))
                .filter(|(tenant, _)| moved.contains(tenant.as_str()))
                .collect();
            write_changes(&mut tx, &won).await?;
            tx.commit().await?;
            for (index, _, last, count, _) in part {
                steps[*index] = Some(if moved.contains(tenants[*index].as_str()) {
                    ProjectStep::Advanced {
                        to: *last,
                        events: *count,
                    }
                } else {
                    ProjectStep::Lost
                });
            }
        }
        Ok(steps
            .into_iter()
            .map(|step| step.unwrap_or(ProjectStep::Lost))
            .collect())
    }

    /// The cursors of `tenants` that have one, by tenant.
    async fn cursors_in(
        tx: &mut Tx,
        tenants: &[TenantId],
    ) -> Result<HashMap<String, (u64, Vec<ApprovalRule>)>, StoreError> {
        let mut out = HashMap::new();
        for chunk in tenants.chunks(ROWS_PER_STATEMENT) {
            let mut select = QueryBuilder::<Sqlite>::new(
                "SELECT tenant_id, seq, approval_rules FROM projection_cursors WHERE tenant_id IN (",
            );
            let mut list = select.separated(", ");
            for tenant in chunk {
                list.push_bind(tenant.as_str());
            }
            select.push(")");
            let rows: Vec<(String, i64, String)> =
                select.build_query_as().fetch_all(&mut **tx).await?;
            let known: HashMap<&str, &TenantId> = chunk.iter().map(|t| (t.as_str(), t)).collect();
            for (tenant, seq, rules) in rows {
                let Some(id) = known.get(tenant.as_str()).copied() else {
                    continue;
                };
                let cursor = (seq_from_db(id, seq)?, rules_from_db(id, &rules)?);
                out.insert(tenant, cursor);
            }
        }
        Ok(out)
    }

    /// The next page (at most `limit` events after its cursor) of every tenant, by
    /// tenant. A tenant's seqs have no gaps, so its page is the seq range
    /// `(cursor, cursor + limit]`.
    async fn pages_in(
        tx: &mut Tx,
        tenants: &[TenantId],
        cursors: &HashMap<String, (u64, Vec<ApprovalRule>)>,
        limit: u32,
    ) -> Result<HashMap<String, Vec<Event>>, StoreError> {
        let limit = check_limit(limit)?;
        let mut out: HashMap<String, Vec<Event>> = HashMap::new();
        for chunk in tenants.chunks(ROWS_PER_STATEMENT) {
            let mut select = QueryBuilder::<Sqlite>::new(
                "SELECT e.tenant_id, e.seq, e.hash, e.canonical FROM (",
            );
            select.push_values(chunk, |mut row, tenant| {
                let after = cursors.get(tenant.as_str()).map_or(0, |c| c.0);
                row.push_bind(tenant.as_str())
                    .push_bind(seq_to_db(after))
                    .push_bind(seq_to_db(after).saturating_add(limit));
            });
            select.push(
                ") AS c JOIN events e ON e.tenant_id = c.column1 \
                 AND e.seq > c.column2 AND e.seq <= c.column3 ORDER BY e.tenant_id, e.seq",
            );
            let rows: Vec<(String, i64, Vec<u8>, Vec<u8>)> =
                select.build_query_as().fetch_all(&mut **tx).await?;
            let known: HashMap<&str, &TenantId> = chunk.iter().map(|t| (t.as_str(), t)).collect();
            for (tenant, seq, hash, canonical) in rows {
                let Some(id) = known.get(tenant.as_str()).copied() else {
                    continue;
                };
                let (event, _) = rows::event_from_row(id, seq, &hash, canonical)?;
                out.entry(tenant).or_default().push(event);
            }
        }
        Ok(out)
    }

    /// The balance rows the pages name, by tenant.
    async fn keyed_balances_in(
        tx: &mut Tx,
        keys: &[(&TenantId, Keys)],
    ) -> Result<HashMap<String, Vec<(AccountId, AccountBalance)>>, StoreError> {
        let wanted = keys
            .iter()
            .flat_map(|(tenant, k)| k.accounts.iter().map(move |a| (*tenant, a.as_str())))
            .collect::<Vec<_>>();
        keyed_rows_in::<BalanceColumns>(tx, &wanted).await
    }

    /// The payout rows the pages name, by tenant.
    async fn keyed_payouts_in(
        tx: &mut Tx,
        keys: &[(&TenantId, Keys)],
    ) -> Result<HashMap<String, Vec<PayoutRow>>, StoreError> {
        let wanted = keys
            .iter()
            .flat_map(|(tenant, k)| k.payouts.iter().map(move |p| (*tenant, p.as_str())))
            .collect::<Vec<_>>();
        keyed_rows_in::<PayoutColumns>(tx, &wanted).await
    }

    /// The rows of `C`'s table whose `(tenant_id, key column)` are among `wanted`,
    /// parsed, by tenant.
    async fn keyed_rows_in<C>(
        tx: &mut Tx,
        wanted: &[(&TenantId, &str)],
    ) -> Result<HashMap<String, Vec<C::Row>>, StoreError>
    where
        C: ProjectionColumns + Send + Unpin,
        for<'r> Tenanted<C>: sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    {
        let mut out: HashMap<String, Vec<C::Row>> = HashMap::new();
        for chunk in wanted.chunks(ROWS_PER_STATEMENT) {
            let mut select = QueryBuilder::<Sqlite>::new(format!(
                "SELECT r.tenant_id, {} FROM (",
                prefixed("r.", C::SQLITE_COLUMNS)
            ));
            select.push_values(chunk, |mut row, (tenant, key)| {
                row.push_bind(tenant.as_str()).push_bind(*key);
            });
            select.push(format!(
                ") AS k JOIN {} r ON r.tenant_id = k.column1 AND r.{} = k.column2",
                C::TABLE,
                C::KEY_COLUMN
            ));
            let rows: Vec<Tenanted<C>> = select.build_query_as().fetch_all(&mut **tx).await?;
            let known: HashMap<&str, &TenantId> =
                chunk.iter().map(|(t, _)| (t.as_str(), *t)).collect();
            for row in rows {
                let Some(id) = known.get(row.tenant_id.as_str()).copied() else {
                    continue;
                };
                let parsed = row.row.into_row(id)?;
                out.entry(row.tenant_id).or_default().push(parsed);
            }
        }
        Ok(out)
    }

    /// Compare-and-set of many cursors: each moves from its expected value (`None`: no
    /// cursor row yet) to its new one; the tenants whose cursor moved.
    async fn move_cursors_in(
        tx: &mut Tx,
        moves: &[(&TenantId, Option<u64>, u64)],
    ) -> Result<HashSet<String>, StoreError> {
        let mut moved = HashSet::new();
        let (updates, inserts): (Vec<_>, Vec<_>) = moves
            .iter()
            .partition(|(_, expected, _)| expected.is_some());
        for chunk in updates.chunks(ROWS_PER_STATEMENT) {
            let mut update =
                QueryBuilder::<Sqlite>::new("UPDATE projection_cursors SET seq = v.column3 FROM (");
            update.push_values(chunk, |mut row, (tenant, expected, to)| {
                row.push_bind(tenant.as_str())
                    .push_bind(seq_to_db(expected.unwrap_or(0)))
                    .push_bind(seq_to_db(*to));
            });
            update.push(
                ") AS v WHERE projection_cursors.tenant_id = v.column1 \
                 AND projection_cursors.seq = v.column2 RETURNING projection_cursors.tenant_id",
            );
            let rows: Vec<(String,)> = update.build_query_as().fetch_all(&mut **tx).await?;
            moved.extend(rows.into_iter().map(|(tenant,)| tenant));
        }
        for chunk in inserts.chunks(ROWS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO projection_cursors (tenant_id, seq, approval_rules) ",
            );
            insert.push_values(chunk, |mut row, (tenant, _, to)| {
                row.push_bind(tenant.as_str())
                    .push_bind(seq_to_db(*to))
                    .push_bind("[]");
            });
            insert.push(" ON CONFLICT DO NOTHING RETURNING tenant_id");
            let rows: Vec<(String,)> = insert.build_query_as().fetch_all(&mut **tx).await?;
            moved.extend(rows.into_iter().map(|(tenant,)| tenant));
        }
        Ok(moved)
    }

    pub(super) async fn rebuild(store: &SqliteStore, tenant: &TenantId) -> Result<u64, StoreError> {
        let (_turn, mut tx) = store.begin_write().await?;
        sqlx::query(
            "INSERT INTO projection_cursors (tenant_id, seq, approval_rules) VALUES ($1, 0, '[]') \
             ON CONFLICT (tenant_id) DO UPDATE SET seq = 0, approval_rules = '[]'",
        )
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
        for table in [
            "projection_balances",
            "projection_payouts",
            "projection_audit",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let (mut seq, mut policy) = (0, Vec::new());
        loop {
            let events = events_in(&mut tx, tenant, seq, REBUILD_PAGE).await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                break;
            };
            policy = apply_in(&mut tx, tenant, seq, policy, &events).await?;
            seq = last;
        }
        sqlx::query("UPDATE projection_cursors SET seq = $1 WHERE tenant_id = $2")
            .bind(seq_to_db(seq))
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(seq)
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

mod on_postgres {
    use super::*;
    use crate::PostgresStore;
    use sqlx::{Postgres, QueryBuilder, Transaction};

    type Tx = Transaction<'static, Postgres>;

    const SCOPE: &str = "SELECT set_config('ledger.tenant', $1, true)";

    // The SELECTs below are planned at every execution (`persistent(false)`): a plan
    // cached while a table was small (a fresh database, statistics not yet gathered)
    // would keep scanning the whole table after it has grown to millions of rows.

    /// `column` as RFC 3339 text with six digits and Z.
    macro_rules! time_text {
        ($column:literal) => {
            concat!(
                "to_char(",
                $column,
                " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS ",
                $column
            )
        };
    }

    const BALANCE_COLUMNS: &str = "account, currency, available::text AS available, \
         held::text AS held, released::text AS released, deposited::text AS deposited";
    const PAYOUT_COLUMNS: &str = concat!(
        "payout, status, account, payee, amount::text AS amount, currency, reference, ",
        "approvals_required::bigint AS approvals_required, requested_by, ",
        time_text!("requested_at"),
        ", requested_seq, approvals::text AS approvals, authorized_by, ",
        time_text!("authorized_at"),
        ", authorized_seq, executed_by, ",
        time_text!("executed_at"),
        ", executed_seq, released_by, ",
        time_text!("released_at"),
        ", released_seq, ended_by, ",
        time_text!("ended_at"),
        ", ended_seq, ended_reason"
    );
    const AUDIT_COLUMNS: &str = concat!(
        "seq, ",
        time_text!("at"),
        ", actor, action, subject, result, reason, request_id"
    );

    async fn scoped(
        store: &PostgresStore,
        tenant: &TenantId,
        begin: &'static str,
    ) -> Result<Tx, StoreError> {
        let mut tx = store.pool().begin_with(begin).await?;
        sqlx::query(SCOPE)
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A read-only transaction on one snapshot (the cursor and the rows agree).
    pub(super) async fn read_tx(
        store: &PostgresStore,
        tenant: &TenantId,
    ) -> Result<Tx, StoreError> {
        scoped(
            store,
            tenant,
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        )
        .await
    }

    pub(super) async fn cursor_in(
        tx: &mut Tx,
        tenant: &TenantId,
    ) -> Result<Option<(u64, Vec<ApprovalRule>)>, StoreError> {
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT seq, approval_rules FROM projection_cursors WHERE tenant_id = $1",
        )
        .bind(tenant.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        row.map(|(seq, rules)| Ok((seq_from_db(tenant, seq)?, rules_from_db(tenant, &rules)?)))
            .transpose()
    }

    async fn events_in(
        tx: &mut Tx,
        tenant: &TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let limit = check_limit(limit)?;
        let found: Vec<(i64, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, hash, canonical FROM events \
             WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(seq_to_db(after))
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?;
        found
            .into_iter()
            .map(|(seq, hash, canonical)| {
                rows::event_from_row(tenant, seq, &hash, canonical).map(|(event, _)| event)
            })
            .collect()
    }

    /// Compare-and-set (see the SQLite side). Under READ COMMITTED the UPDATE waits for
    /// a concurrent projector's transaction on the same row and then re-checks `seq`:
    /// the loser updates nothing.
    async fn move_cursor_in(
        tx: &mut Tx,
        tenant: &TenantId,
        expected: Option<u64>,
        to: u64,
    ) -> Result<bool, StoreError> {
        let done = match expected {
            None => sqlx::query(
                "INSERT INTO projection_cursors (tenant_id, seq, approval_rules) \
                 VALUES ($1, $2, '[]') ON CONFLICT DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(seq_to_db(to))
            .execute(&mut **tx)
            .await?
            .rows_affected(),
            Some(expected) => sqlx::query(
                "UPDATE projection_cursors SET seq = $1 WHERE tenant_id = $2 AND seq = $3",
            )
            .bind(seq_to_db(to))
            .bind(tenant.as_str())
            .bind(seq_to_db(expected))
            .execute(&mut **tx)
            .await?
            .rows_affected(),
        };
        Ok(done == 1)
    }

    pub(super) async fn balances_in(
        tx: &mut Tx,
        tenant: &TenantId,
        only: Option<&[AccountId]>,
    ) -> Result<Vec<(AccountId, AccountBalance)>, StoreError> {
        let rows: Vec<BalanceColumns> = match only {
            None => {
                sqlx::query_as(&format!(
                    "SELECT {BALANCE_COLUMNS} FROM projection_balances \
                     WHERE tenant_id = $1 ORDER BY account"
                ))
                .persistent(false)
                .bind(tenant.as_str())
                .fetch_all(&mut **tx)
                .await?
            }
            Some(accounts) => {
                let accounts: Vec<&str> = accounts.iter().map(AccountId::as_str).collect();
                sqlx::query_as(&format!(
                    "SELECT {BALANCE_COLUMNS} FROM projection_balances \
                     WHERE tenant_id = $1 AND account = ANY($2::text[]) ORDER BY account"
                ))
                .persistent(false)
                .bind(tenant.as_str())
                .bind(&accounts)
                .fetch_all(&mut **tx)
                .await?
            }
        };
        rows.into_iter().map(|row| row.into_row(tenant)).collect()
    }

    pub(super) async fn payouts_in(
        tx: &mut Tx,
        tenant: &TenantId,
        only: Option<&[PayoutId]>,
    ) -> Result<Vec<PayoutRow>, StoreError> {
        let rows: Vec<PayoutColumns> = match only {
            None => {
                sqlx::query_as(&format!(
                    "SELECT {PAYOUT_COLUMNS} FROM projection_payouts \
                     WHERE tenant_id = $1 ORDER BY requested_seq"
                ))
                .persistent(false)
                .bind(tenant.as_str())
                .fetch_all(&mut **tx)
                .await?
            }
            Some(payouts) => {
                let payouts: Vec<&str> = payouts.iter().map(PayoutId::as_str).collect();
                sqlx::query_as(&format!(
                    "SELECT {PAYOUT_COLUMNS} FROM projection_payouts \
                     WHERE tenant_id = $1 AND payout = ANY($2::text[])"
                ))
                .persistent(false)
                .bind(tenant.as_str())
                .bind(&payouts)
                .fetch_all(&mut **tx)
                .await?
            }
        };
        rows.into_iter().map(|row| row.into_row(tenant)).collect()
    }

    pub(super) async fn list_payouts_in(
        tx: &mut Tx,
        tenant: &TenantId,
        query: &PayoutQuery,
    ) -> Result<Vec<PayoutRow>, StoreError> {
        let mut select = QueryBuilder::<Postgres>::new(format!(
            "SELECT {PAYOUT_COLUMNS} FROM projection_payouts WHERE tenant_id = "
        ));
        select.push_bind(tenant.as_str());
        if let Some(status) = &query.status {
            select.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(account) = &query.account {
            select.push(" AND account = ").push_bind(account.as_str());
        }
        select
            .push(" AND requested_seq > ")
            .push_bind(seq_to_db(query.after))
            .push(" ORDER BY requested_seq LIMIT ")
            .push_bind(i64::from(query.limit));
        let rows: Vec<PayoutColumns> = select
            .build_query_as()
            .persistent(false)
            .fetch_all(&mut **tx)
            .await?;
        rows.into_iter().map(|row| row.into_row(tenant)).collect()
    }

    pub(super) async fn audit_in(
        tx: &mut Tx,
        tenant: &TenantId,
        query: &AuditQuery,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let mut select = QueryBuilder::<Postgres>::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM projection_audit WHERE tenant_id = "
        ));
        select.push_bind(tenant.as_str());
        if let Some(actor) = &query.actor {
            select.push(" AND actor = ").push_bind(actor.as_str());
        }
        if let Some(action) = &query.action {
            select.push(" AND action = ").push_bind(action.as_str());
        }
        if let Some(result) = query.result {
            select.push(" AND result = ").push_bind(result.as_str());
        }
        if let Some(from) = query.from {
            select
                .push(" AND at >= ")
                .push_bind(from.to_string())
                .push("::timestamptz");
        }
        if let Some(to) = query.to {
            select
                .push(" AND at < ")
                .push_bind(to.to_string())
                .push("::timestamptz");
        }
        select
            .push(" AND seq > ")
            .push_bind(seq_to_db(query.after))
            .push(" ORDER BY seq LIMIT ")
            .push_bind(i64::from(query.limit));
        let rows: Vec<AuditColumns> = select
            .build_query_as()
            .persistent(false)
            .fetch_all(&mut **tx)
            .await?;
        rows.into_iter().map(|row| row.into_row(tenant)).collect()
    }

    /// Loads the rows `events` name, folds them over `(seq, policy)`, writes the changes
    /// (each kind of row in one statement over arrays).
    async fn apply_in(
        tx: &mut Tx,
        tenant: &TenantId,
        seq: u64,
        policy: Vec<ApprovalRule>,
        events: &[Event],
    ) -> Result<Vec<ApprovalRule>, StoreError> {
        let keys = Keys::of(events);
        let accounts: Vec<AccountId> = keys.accounts.into_iter().collect();
        let payouts: Vec<PayoutId> = keys.payouts.into_iter().collect();
        let balances = balances_in(tx, tenant, Some(&accounts)).await?;
        let payout_rows = payouts_in(tx, tenant, Some(&payouts)).await?;
        let changes = fold(seq, policy.clone(), balances, payout_rows, events);
        if !changes.balances.is_empty() {
            let mut columns: [Vec<String>; 6] = Default::default();
            for (account, balance) in &changes.balances {
                let currency = balance.currency;
                columns[0].push(account.to_string());
                columns[1].push(currency.code().to_owned());
                columns[2].push(amount_text(balance.available, currency));
                columns[3].push(amount_text(balance.held, currency));
                columns[4].push(amount_text(balance.released, currency));
                columns[5].push(amount_text(balance.deposited, currency));
            }
            let [account, currency, available, held, released, deposited] = columns;
            sqlx::query(&format!(
                "{BALANCE_INSERT} SELECT $1, account, currency, available::numeric, \
                 held::numeric, released::numeric, deposited::numeric \
                 FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                             $7::text[]) \
                      AS r(account, currency, available, held, released, deposited) \
                 {BALANCE_UPDATE}"
            ))
            .bind(tenant.as_str())
            .bind(&account)
            .bind(&currency)
            .bind(&available)
            .bind(&held)
            .bind(&released)
            .bind(&deposited)
            .execute(&mut **tx)
            .await?;
        }
        if !changes.payouts.is_empty() {
            write_payouts(tx, tenant, &changes.payouts).await?;
        }
        if !changes.audit.is_empty() {
            write_audit(tx, tenant, &changes.audit).await?;
        }
        match changes.policy {
            None => Ok(policy),
            Some(rules) => {
                sqlx::query(
                    "UPDATE projection_cursors SET approval_rules = $1 WHERE tenant_id = $2",
                )
                .bind(rules_text(&rules))
                .bind(tenant.as_str())
                .execute(&mut **tx)
                .await?;
                Ok(rules)
            }
        }
    }

    /// One gate's (by, at, seq) columns over every row.
    type GateArrays = (Vec<Option<String>>, Vec<Option<String>>, Vec<Option<i64>>);

    async fn write_payouts(
        tx: &mut Tx,
        tenant: &TenantId,
        payouts: &[PayoutRow],
    ) -> Result<(), StoreError> {
        let count = payouts.len();
        let mut texts: [Vec<String>; 9] = Default::default();
        let mut requested_seq = Vec::with_capacity(count);
        let mut approvals_required = Vec::with_capacity(count);
        let mut gates: [GateArrays; 4] = Default::default();
        let mut ended_reason = Vec::with_capacity(count);
        for payout in payouts {
            texts[0].push(payout.payout.to_string());
            texts[1].push(payout.status.clone());
            texts[2].push(payout.account.to_string());
            texts[3].push(payout.payee.to_string());
            texts[4].push(payout.amount.clone());
            texts[5].push(payout.currency.code().to_owned());
            texts[6].push(payout.reference.clone());
            texts[7].push(payout.requested.by.to_string());
            texts[8].push(payout.requested.at.to_string());
            requested_seq.push(seq_to_db(payout.requested.seq));
            approvals_required.push(i64::from(payout.approvals_required));
            let ended = payout.ended.as_ref().map(|(gate, _)| gate);
            for (slot, gate) in gates.iter_mut().zip([
                payout.authorized.as_ref(),
                payout.executed.as_ref(),
                payout.released.as_ref(),
                ended,
            ]) {
                let (by, at, seq) = gate_columns(gate);
                slot.0.push(by);
                slot.1.push(at);
                slot.2.push(seq);
            }
            ended_reason.push(payout.ended.as_ref().map(|(_, reason)| reason.clone()));
        }
        let approvals: Vec<String> = payouts.iter().map(approvals_text).collect();
        let [payout, status, account, payee, amount, currency, reference, requested_by, requested_at] =
            texts;
        let [authorized, executed, released, ended] = gates;
        sqlx::query(&format!(
            "{PAYOUT_INSERT} SELECT $1, payout, status, account, payee, amount::numeric, \
             currency, reference, approvals_required::integer, requested_by, \
             requested_at::timestamptz, requested_seq, approvals::jsonb, authorized_by, \
             authorized_at::timestamptz, authorized_seq, executed_by, executed_at::timestamptz, \
             executed_seq, released_by, released_at::timestamptz, released_seq, ended_by, \
             ended_at::timestamptz, ended_seq, ended_reason \
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                         $8::text[], $9::bigint[], $10::text[], $11::text[], $12::bigint[], \
                         $13::text[], $14::text[], $15::text[], $16::bigint[], $17::text[], \
                         $18::text[], $19::bigint[], $20::text[], $21::text[], $22::bigint[], \
                         $23::text[], $24::text[], $25::bigint[], $26::text[]) \
                  AS r(payout, status, account, payee, amount, currency, reference, \
                       approvals_required, requested_by, requested_at, requested_seq, \
                       approvals, authorized_by, authorized_at, authorized_seq, executed_by, \
                       executed_at, executed_seq, released_by, released_at, released_seq, \
                       ended_by, ended_at, ended_seq, ended_reason) \
             {PAYOUT_UPDATE}"
        ))
        .bind(tenant.as_str())
        .bind(&payout)
        .bind(&status)
        .bind(&account)
        .bind(&payee)
        .bind(&amount)
        .bind(&currency)
        .bind(&reference)
        .bind(&approvals_required)
        .bind(&requested_by)
        .bind(&requested_at)
        .bind(&requested_seq)
        .bind(&approvals)
        .bind(&authorized.0)
        .bind(&authorized.1)
        .bind(&authorized.2)
        .bind(&executed.0)
        .bind(&executed.1)
        .bind(&executed.2)
        .bind(&released.0)
        .bind(&released.1)
        .bind(&released.2)
        .bind(&ended.0)
        .bind(&ended.1)
        .bind(&ended.2)
        .bind(&ended_reason)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn write_audit(
        tx: &mut Tx,
        tenant: &TenantId,
        audit: &[AuditRow],
    ) -> Result<(), StoreError> {
        let count = audit.len();
        let mut seqs = Vec::with_capacity(count);
        let mut texts: [Vec<String>; 5] = Default::default();
        let mut reasons = Vec::with_capacity(count);
        let mut request_ids = Vec::with_capacity(count);
        for row in audit {
            seqs.push(seq_to_db(row.seq));
            texts[0].push(row.at.to_string());
            texts[1].push(row.actor.to_string());
            texts[2].push(row.action.clone());
            texts[3].push(row.subject.clone());
            texts[4].push(row.result.as_str().to_owned());
            reasons.push(row.reason.clone());
            request_ids.push(row.request_id.clone());
        }
        let [at, actor, action, subject, result] = texts;
        sqlx::query(&format!(
            "{AUDIT_INSERT} SELECT $1, seq, at::timestamptz, actor, action, subject, result, \
             reason, request_id \
             FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
                         $7::text[], $8::text[], $9::text[]) \
                  AS r(seq, at, actor, action, subject, result, reason, request_id)"
        ))
        .bind(tenant.as_str())
        .bind(&seqs)
        .bind(&at)
        .bind(&actor)
        .bind(&action)
        .bind(&subject)
        .bind(&result)
        .bind(&reasons)
        .bind(&request_ids)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub(super) async fn project_next(
        store: &PostgresStore,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<ProjectStep, StoreError> {
        check_limit(limit)?;
        let mut tx = scoped(store, tenant, "BEGIN").await?;
        let cursor = cursor_in(&mut tx, tenant).await?;
        let (seq, policy) = cursor.clone().unwrap_or_default();
        let events = events_in(&mut tx, tenant, seq, limit).await?;
        let Some(last) = events.last().map(|e| e.seq) else {
            tx.rollback().await?;
            return Ok(ProjectStep::CaughtUp { seq });
        };
        if !move_cursor_in(&mut tx, tenant, cursor.map(|c| c.0), last).await? {
            tx.rollback().await?;
            return Ok(ProjectStep::Lost);
        }
        apply_in(&mut tx, tenant, seq, policy, &events).await?;
        tx.commit().await?;
        Ok(ProjectStep::Advanced {
            to: last,
            events: events.len(),
        })
    }

    pub(super) async fn project_many(
        store: &PostgresStore,
        tenants: &[TenantId],
        limit: u32,
    ) -> Result<Vec<ProjectStep>, StoreError> {
        check_limit(limit)?;
        let mut steps: Vec<Option<ProjectStep>> = tenants.iter().map(|_| None).collect();
        // Tenants in a fixed order: two processes' transactions lock cursor rows in the
        // same order and cannot deadlock.
        let mut order: Vec<usize> = (0..tenants.len()).collect();
        order.sort_by(|a, b| tenants[*a].as_str().cmp(tenants[*b].as_str()));
        let mut tx = store.pool().begin().await?;
        for index in order {
            let tenant = &tenants[index];
            sqlx::query(SCOPE)
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
            let cursor = cursor_in(&mut tx, tenant).await?;
            let (seq, policy) = cursor.clone().unwrap_or_default();
            let events = events_in(&mut tx, tenant, seq, limit).await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                steps[index] = Some(ProjectStep::CaughtUp { seq });
                continue;
            };
            if !move_cursor_in(&mut tx, tenant, cursor.map(|c| c.0), last).await? {
                steps[index] = Some(ProjectStep::Lost);
                continue;
            }
            apply_in(&mut tx, tenant, seq, policy, &events).await?;
            steps[index] = Some(ProjectStep::Advanced {
                to: last,
                events: events.len(),
            });
        }
        tx.commit().await?;
        Ok(steps
            .into_iter()
            .map(|step| step.unwrap_or(ProjectStep::Lost))
            .collect())
    }

    pub(super) async fn rebuild(
        store: &PostgresStore,
        tenant: &TenantId,
    ) -> Result<u64, StoreError> {
        let mut tx = scoped(store, tenant, "BEGIN").await?;
        // Resetting the cursor row locks it: a concurrent projector's compare-and-set
        // waits for this transaction and then finds the cursor moved.
        sqlx::query(
            "INSERT INTO projection_cursors (tenant_id, seq, approval_rules) VALUES ($1, 0, '[]') \
             ON CONFLICT (tenant_id) DO UPDATE SET seq = 0, approval_rules = '[]'",
        )
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
        for table in [
            "projection_balances",
            "projection_payouts",
            "projection_audit",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let (mut seq, mut policy) = (0, Vec::new());
        loop {
            let events = events_in(&mut tx, tenant, seq, REBUILD_PAGE).await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                break;
            };
            policy = apply_in(&mut tx, tenant, seq, policy, &events).await?;
            seq = last;
        }
        sqlx::query("UPDATE projection_cursors SET seq = $1 WHERE tenant_id = $2")
            .bind(seq_to_db(seq))
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The parts are the items in order, each closed as soon as it reaches the bound.
        #[test]
        fn write_parts_cut_in_order_at_the_bound(rows in proptest::collection::vec(0usize..450, 0..40)) {
            let parts = write_parts(&rows, |r| *r);
            let joined: Vec<usize> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            prop_assert_eq!(&joined, &rows);
            for (index, part) in parts.iter().enumerate() {
                prop_assert!(!part.is_empty());
                let total: usize = part.iter().sum();
                let before_last: usize = part[..part.len() - 1].iter().sum();
                prop_assert!(before_last < WRITE_ROWS_MAX, "closed late: {:?}", part);
                if index + 1 < parts.len() {
                    prop_assert!(total >= WRITE_ROWS_MAX, "closed early: {:?}", part);
                }
            }
        }
    }
}
