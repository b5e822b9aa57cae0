//! What the webhook delivery worker needs from the store beyond single records: listing
//! one kind of a tenant's records (the subscriptions themselves are records, kind
//! `webhook`, kept by ledger-api with compare-and-set), and the index of tenants that
//! have a subscription, so the worker looks only into those.

use ledger_core::ids::TenantId;

use crate::records::{pg_scoped, sqlite_tx};
use crate::{detached, Record, Store, StoreError};

/// Most records one [`Store::records_of_kind`] call returns.
pub const RECORDS_PAGE_MAX: u32 = 1000;

const LIST: &str = "SELECT id, version, value FROM records \
     WHERE tenant_id = $1 AND kind = $2 AND id > $3 ORDER BY id LIMIT $4";
const INDEX: &str =
    "INSERT INTO webhook_index (tenant_id, id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const UNINDEX: &str = "DELETE FROM webhook_index WHERE tenant_id = $1 AND id = $2";
const TENANTS: &str = "SELECT DISTINCT tenant_id FROM webhook_index ORDER BY tenant_id";

impl Store {
    /// Up to `limit` (at most [`RECORDS_PAGE_MAX`]) records of `kind` of `tenant` whose
    /// id sorts after `after_id`, in id order, each with its id.
    pub async fn records_of_kind(
        &self,
        tenant: &TenantId,
        kind: &str,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        if limit > RECORDS_PAGE_MAX {
            return Err(StoreError::Limit {
                requested: limit,
                max: RECORDS_PAGE_MAX,
            });
        }
        let (store, tenant, kind, after_id) = (
            self.clone(),
            tenant.clone(),
            kind.to_owned(),
            after_id.to_owned(),
        );
        detached(async move {
            let rows: Vec<(String, i64, String)> = match store {
                Store::Sqlite(s) => {
                    let mut tx = sqlite_tx(&s).await?;
                    let rows = sqlx::query_as(LIST)
                        .bind(tenant.as_str())
                        .bind(&kind)
                        .bind(&after_id)
                        .bind(i64::from(limit))
                        .fetch_all(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    rows
                }
                Store::Postgres(s) => {
                    let mut tx = pg_scoped(&s, &tenant).await?;
                    let rows = sqlx::query_as(LIST)
                        .bind(tenant.as_str())
                        .bind(&kind)
                        .bind(&after_id)
                        .bind(i64::from(limit))
                        .fetch_all(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    rows
                }
            };
            Ok(rows
                .into_iter()
                .map(|(id, version, value)| (id, Record { version, value }))
                .collect())
        })
        .await
    }

    /// Records that `tenant` has the webhook subscription `id` (idempotent).
    pub async fn index_webhook(&self, tenant: &TenantId, id: &str) -> Result<(), StoreError> {
        self.webhook_index_statement(INDEX, tenant, id).await
    }

    /// Forgets the webhook subscription `id` of `tenant` (idempotent).
    pub async fn unindex_webhook(&self, tenant: &TenantId, id: &str) -> Result<(), StoreError> {
        self.webhook_index_statement(UNINDEX, tenant, id).await
    }

    async fn webhook_index_statement(
        &self,
        sql: &'static str,
        tenant: &TenantId,
        id: &str,
    ) -> Result<(), StoreError> {
        let (store, tenant, id) = (self.clone(), tenant.clone(), id.to_owned());
        detached(async move {
            match store {
                Store::Sqlite(s) => {
                    let _turn = s.write_turn().await;
                    sqlx::query(sql)
                        .bind(tenant.as_str())
                        .bind(&id)
                        .execute(s.writer())
                        .await?;
                }
                Store::Postgres(s) => {
                    sqlx::query(sql)
                        .bind(tenant.as_str())
                        .bind(&id)
                        .execute(s.pool())
                        .await?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Every tenant with at least one webhook subscription in the index.
    pub async fn webhook_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        let store = self.clone();
        detached(async move {
            let rows: Vec<(String,)> = match store {
                Store::Sqlite(s) => sqlx::query_as(TENANTS).fetch_all(s.pool()).await?,
                Store::Postgres(s) => sqlx::query_as(TENANTS).fetch_all(s.pool()).await?,
            };
            Ok(rows
                .into_iter()
                .filter_map(|(tenant,)| tenant.parse().ok())
                .collect())
        })
        .await
    }
}
