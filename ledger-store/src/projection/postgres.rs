//! The read-model tables on PostgreSQL.

use ledger_core::event::Event;
use ledger_core::ids::{AccountId, PayoutId, TenantId};
use ledger_core::policy::ApprovalRule;
use projections::{AccountBalance, AuditRow, Keys, PayoutRow};

use crate::projection::audit::AuditColumns;
use crate::projection::audit::AUDIT_INSERT;
use crate::projection::balances::BalanceColumns;
use crate::projection::balances::BALANCE_INSERT;
use crate::projection::balances::BALANCE_UPDATE;
use crate::projection::columns::amount_text;
use crate::projection::columns::approvals_text;
use crate::projection::columns::fold;
use crate::projection::columns::gate_columns;
use crate::projection::columns::rules_from_db;
use crate::projection::columns::rules_text;
use crate::projection::columns::seq_from_db;
use crate::projection::model::REBUILD_PAGE;
use crate::projection::payouts::PayoutColumns;
use crate::projection::payouts::PAYOUT_INSERT;
use crate::projection::payouts::PAYOUT_UPDATE;
use crate::rows::{self, check_limit, seq_to_db};
use crate::AuditQuery;
use crate::PayoutQuery;
use crate::PostgresStore;
use crate::ProjectStep;
use crate::StoreError;
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
pub(super) async fn read_tx(store: &PostgresStore, tenant: &TenantId) -> Result<Tx, StoreError> {
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
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, approval_rules FROM projection_cursors WHERE tenant_id = $1")
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
        Some(expected) => {
            sqlx::query("UPDATE projection_cursors SET seq = $1 WHERE tenant_id = $2 AND seq = $3")
                .bind(seq_to_db(to))
                .bind(tenant.as_str())
                .bind(seq_to_db(expected))
                .execute(&mut **tx)
                .await?
                .rows_affected()
        }
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
            sqlx::query("UPDATE projection_cursors SET approval_rules = $1 WHERE tenant_id = $2")
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

async fn write_audit(tx: &mut Tx, tenant: &TenantId, audit: &[AuditRow]) -> Result<(), StoreError> {
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

pub(super) async fn rebuild(store: &PostgresStore, tenant: &TenantId) -> Result<u64, StoreError> {
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
