//! The read-model tables on SQLite.

use std::collections::{HashMap, HashSet};

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
use crate::projection::columns::prefixed;
use crate::projection::columns::rules_from_db;
use crate::projection::columns::rules_text;
use crate::projection::columns::seq_from_db;
use crate::projection::columns::Tenanted;
use crate::projection::model::write_parts;
use crate::projection::model::REBUILD_PAGE;
use crate::projection::model::ROWS_PER_STATEMENT;
use crate::projection::payouts::PayoutColumns;
use crate::projection::payouts::PAYOUT_INSERT;
use crate::projection::payouts::PAYOUT_UPDATE;
use crate::rows::{self, check_limit, seq_to_db};
use crate::AuditQuery;
use crate::PayoutQuery;
use crate::ProjectStep;
use crate::SqliteStore;
use crate::StoreError;
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
            let (executed_by, executed_at, executed_seq) = gate_columns(payout.executed.as_ref());
            let (released_by, released_at, released_seq) = gate_columns(payout.released.as_ref());
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
            sqlx::query("UPDATE projection_cursors SET approval_rules = $1 WHERE tenant_id = $2")
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
        let rows: Vec<(String, i64, String)> = select.build_query_as().fetch_all(&mut **tx).await?;
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
        let mut select =
            QueryBuilder::<Sqlite>::new("SELECT e.tenant_id, e.seq, e.hash, e.canonical FROM (");
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
        let known: HashMap<&str, &TenantId> = chunk.iter().map(|(t, _)| (t.as_str(), *t)).collect();
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
