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

mod audit;
mod balances;
mod columns;
mod model;
mod payouts;
mod postgres;
mod sqlite;

pub use model::{AuditQuery, PayoutQuery, ProjectStep, ProjectedRows, Reflected};

use ledger_core::ids::{AccountId, PayoutId, TenantId};
use projections::{AccountBalance, AuditRow, PayoutRow};

use crate::rows::check_limit;
use crate::{detached, Store, StoreError};
use postgres as on_postgres;
use sqlite as on_sqlite;

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
