//! Snapshots of tenant state (DESIGN section 6: load = latest snapshot + tail). The
//! store keeps the service's snapshot text with its seq and head hash; checking them
//! against the chain is the loader's job.

use ledger_core::crypto::Hash;
use ledger_core::ids::TenantId;

use crate::{detached, Store, StoreError};

const SCOPE: &str = "SELECT set_config('ledger.tenant', $1, true)";

impl Store {
    /// Stores a snapshot of `tenant` at `seq` (a second one at the same seq is ignored).
    pub async fn save_snapshot(
        &self,
        tenant: &TenantId,
        seq: u64,
        head: Hash,
        state: &str,
    ) -> Result<(), StoreError> {
        let (store, tenant, state) = (self.clone(), tenant.clone(), state.to_owned());
        let seq = i64::try_from(seq).map_err(|_| StoreError::Corrupt {
            tenant: tenant.to_string(),
            seq,
            reason: "seq out of range".into(),
        })?;
        let sql = "INSERT INTO snapshots (tenant_id, seq, head, state) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT DO NOTHING";
        detached(async move {
            match store {
                Store::Sqlite(s) => {
                    let _turn = s.write_turn().await;
                    sqlx::query(sql)
                        .bind(tenant.as_str())
                        .bind(seq)
                        .bind(head.as_bytes().as_slice())
                        .bind(&state)
                        .execute(s.writer())
                        .await?;
                }
                Store::Postgres(s) => {
                    let mut tx = s.pool().begin().await?;
                    sqlx::query(SCOPE)
                        .bind(tenant.as_str())
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(sql)
                        .bind(tenant.as_str())
                        .bind(seq)
                        .bind(head.as_bytes().as_slice())
                        .bind(&state)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                }
            }
            Ok(())
        })
        .await
    }

    /// The latest snapshot of `tenant`: (seq, head, text).
    pub async fn latest_snapshot(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<(u64, Hash, String)>, StoreError> {
        let (store, tenant) = (self.clone(), tenant.clone());
        let sql = "SELECT seq, head, state FROM snapshots WHERE tenant_id = $1 \
                   ORDER BY seq DESC LIMIT 1";
        detached(async move {
            let row: Option<(i64, Vec<u8>, String)> = match store {
                Store::Sqlite(s) => {
                    sqlx::query_as(sql)
                        .bind(tenant.as_str())
                        .fetch_optional(s.pool())
                        .await?
                }
                Store::Postgres(s) => {
                    let mut tx = s.pool().begin().await?;
                    sqlx::query(SCOPE)
                        .bind(tenant.as_str())
                        .execute(&mut *tx)
                        .await?;
                    let row = sqlx::query_as(sql)
                        .bind(tenant.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    row
                }
            };
            let Some((seq, head, state)) = row else {
                return Ok(None);
            };
            let corrupt = |reason: &str| StoreError::Corrupt {
                tenant: tenant.to_string(),
                seq: u64::try_from(seq).unwrap_or(0),
                reason: reason.into(),
            };
            let seq = u64::try_from(seq).map_err(|_| corrupt("snapshot seq"))?;
            let head: [u8; 32] = head.try_into().map_err(|_| corrupt("snapshot head"))?;
            Ok(Some((seq, Hash::from_bytes(head), state)))
        })
        .await
    }
}
