//! Records the HTTP service keeps beside the chain: API keys, invites, TOTP enrolments,
//! idempotency answers, HMAC nonces. The service owns their types and serialises them to
//! JSON; the store keeps them per tenant under a kind and an id, with a version for
//! compare-and-set, behind the same row-level security as the chain. Plus the one
//! cross-tenant lookup, [`Store::credential_tenant`]: which tenant a credential id
//! belongs to, made before the tenant is known.

use ledger_core::ids::TenantId;
use sqlx::{Postgres, Sqlite, Transaction};

use crate::{detached, Store, StoreError};

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Compare-and-set version, from 1.
    pub version: i64,
    /// The service's JSON.
    pub value: String,
}

const SCOPE: &str = "SELECT set_config('ledger.tenant', $1, true)";

pub(crate) async fn pg_scoped(
    store: &crate::PostgresStore,
    tenant: &TenantId,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    sqlx::query(SCOPE)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

pub(crate) async fn sqlite_tx(
    store: &crate::SqliteStore,
) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    store.pool().begin().await
}

const GET: &str =
    "SELECT version, value FROM records WHERE tenant_id = $1 AND kind = $2 AND id = $3";
const INSERT: &str = "INSERT INTO records (tenant_id, kind, id, version, value) \
     VALUES ($1, $2, $3, 1, $4) ON CONFLICT DO NOTHING";
const UPDATE: &str = "UPDATE records SET version = version + 1, value = $1 \
     WHERE tenant_id = $2 AND kind = $3 AND id = $4 AND version = $5";
const DELETE: &str = "DELETE FROM records WHERE tenant_id = $1 AND kind = $2 AND id = $3";

macro_rules! on_backend {
    (write $store:expr, $tenant:expr, |$tx:ident| $body:expr) => {
        match $store {
            Store::Sqlite(s) => {
                let (_turn, mut $tx) = s.begin_write().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            Store::Postgres(s) => {
                let mut $tx = pg_scoped(&s, $tenant).await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
    ($store:expr, $tenant:expr, |$tx:ident| $body:expr) => {
        match $store {
            Store::Sqlite(s) => {
                let mut $tx = sqlite_tx(&s).await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            Store::Postgres(s) => {
                let mut $tx = pg_scoped(&s, $tenant).await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

impl Store {
    /// The record `kind`/`id` of `tenant`.
    pub async fn record(
        &self,
        tenant: &TenantId,
        kind: &str,
        id: &str,
    ) -> Result<Option<Record>, StoreError> {
        let (store, tenant, kind, id) =
            (self.clone(), tenant.clone(), kind.to_owned(), id.to_owned());
        detached(async move {
            let row: Option<(i64, String)> = on_backend!(store, &tenant, |tx| sqlx::query_as(GET)
                .bind(tenant.as_str())
                .bind(&kind)
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?);
            Ok(row.map(|(version, value)| Record { version, value }))
        })
        .await
    }

    /// Creates the record at version 1; `false` if it already exists (nothing changed).
    pub async fn insert_record(
        &self,
        tenant: &TenantId,
        kind: &str,
        id: &str,
        value: &str,
    ) -> Result<bool, StoreError> {
        let (store, tenant, kind, id, value) = (
            self.clone(),
            tenant.clone(),
            kind.to_owned(),
            id.to_owned(),
            value.to_owned(),
        );
        detached(async move {
            let done = on_backend!(write store, &tenant, |tx| sqlx::query(INSERT)
                .bind(tenant.as_str())
                .bind(&kind)
                .bind(&id)
                .bind(&value)
                .execute(&mut *tx)
                .await?
                .rows_affected());
            Ok(done == 1)
        })
        .await
    }

    /// Replaces the record if it is still at `version`; `false` if it moved on or is gone.
    pub async fn update_record(
        &self,
        tenant: &TenantId,
        kind: &str,
        id: &str,
        version: i64,
        value: &str,
    ) -> Result<bool, StoreError> {
        let (store, tenant, kind, id, value) = (
            self.clone(),
            tenant.clone(),
            kind.to_owned(),
            id.to_owned(),
            value.to_owned(),
        );
        detached(async move {
            let done = on_backend!(write store, &tenant, |tx| sqlx::query(UPDATE)
                .bind(&value)
                .bind(tenant.as_str())
                .bind(&kind)
                .bind(&id)
                .bind(version)
                .execute(&mut *tx)
                .await?
                .rows_affected());
            Ok(done == 1)
        })
        .await
    }

    /// Deletes the record; `false` if there was none.
    pub async fn delete_record(
        &self,
        tenant: &TenantId,
        kind: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let (store, tenant, kind, id) =
            (self.clone(), tenant.clone(), kind.to_owned(), id.to_owned());
        detached(async move {
            let done = on_backend!(write store, &tenant, |tx| sqlx::query(DELETE)
                .bind(tenant.as_str())
                .bind(&kind)
                .bind(&id)
                .execute(&mut *tx)
                .await?
                .rows_affected());
            Ok(done == 1)
        })
        .await
    }

    /// Records that credential `id` belongs to `tenant`; `false` if the id is taken.
    pub async fn index_credential(&self, id: &str, tenant: &TenantId) -> Result<bool, StoreError> {
        let (store, id, tenant) = (self.clone(), id.to_owned(), tenant.clone());
        let sql =
            "INSERT INTO credential_index (id, tenant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
        detached(async move {
            let done = match store {
                Store::Sqlite(s) => {
                    let _turn = s.write_turn().await;
                    sqlx::query(sql)
                        .bind(&id)
                        .bind(tenant.as_str())
                        .execute(s.writer())
                        .await?
                        .rows_affected()
                }
                Store::Postgres(s) => sqlx::query(sql)
                    .bind(&id)
                    .bind(tenant.as_str())
                    .execute(s.pool())
                    .await?
                    .rows_affected(),
            };
            Ok(done == 1)
        })
        .await
    }

    /// Every tenant that has a credential (every tenant: its first administrator's invite
    /// is indexed when it is created). Not subject to row-level security, so a service
    /// can find the tenants it has to serve (the event relay).
    pub async fn indexed_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        let store = self.clone();
        let sql = "SELECT DISTINCT tenant_id FROM credential_index ORDER BY tenant_id";
        detached(async move {
            let rows: Vec<(String,)> = match store {
                Store::Sqlite(s) => sqlx::query_as(sql).fetch_all(s.pool()).await?,
                Store::Postgres(s) => sqlx::query_as(sql).fetch_all(s.pool()).await?,
            };
            Ok(rows
                .into_iter()
                .filter_map(|(tenant,)| tenant.parse().ok())
                .collect())
        })
        .await
    }

    /// The tenant credential `id` belongs to.
    pub async fn credential_tenant(&self, id: &str) -> Result<Option<TenantId>, StoreError> {
        let (store, id) = (self.clone(), id.to_owned());
        let sql = "SELECT tenant_id FROM credential_index WHERE id = $1";
        detached(async move {
            let row: Option<(String,)> = match store {
                Store::Sqlite(s) => {
                    sqlx::query_as(sql)
                        .bind(&id)
                        .fetch_optional(s.pool())
                        .await?
                }
                Store::Postgres(s) => {
                    sqlx::query_as(sql)
                        .bind(&id)
                        .fetch_optional(s.pool())
                        .await?
                }
            };
            row.map(|(tenant,)| {
                tenant.parse().map_err(|_| StoreError::Corrupt {
                    tenant: tenant.clone(),
                    seq: 0,
                    reason: "credential index names an invalid tenant".into(),
                })
            })
            .transpose()
        })
        .await
    }

    /// Whether `tenant`'s chain holds an event with this id.
    pub async fn event_exists(
        &self,
        tenant: &TenantId,
        event_id: uuid::Uuid,
    ) -> Result<bool, StoreError> {
        let (store, tenant) = (self.clone(), tenant.clone());
        let id = event_id.hyphenated().to_string();
        detached(async move {
            let row: Option<(i64,)> = match store {
                Store::Sqlite(s) => {
                    sqlx::query_as("SELECT seq FROM events WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.as_str())
                        .bind(&id)
                        .fetch_optional(s.pool())
                        .await?
                }
                Store::Postgres(s) => {
                    let mut tx = pg_scoped(&s, &tenant).await?;
                    let row = sqlx::query_as(
                        "SELECT seq FROM events WHERE tenant_id = $1 AND id = $2::uuid",
                    )
                    .bind(tenant.as_str())
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    row
                }
            };
            Ok(row.is_some())
        })
        .await
    }
}
