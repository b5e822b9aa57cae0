//! The production backend. Every transaction first sets `ledger.tenant` (row-level
//! security keys on it); appends then take a per-tenant advisory lock, so writers of one
//! tenant serialise across pools and processes, and the (tenant_id, seq) primary key
//! stays the check of last resort.

use std::str::FromStr;

use ledger_core::checkpoint::Checkpoint;
use ledger_core::event::{ChainHead, Event};
use ledger_core::ids::TenantId;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::error::{AppendError, CheckpointStoreError, StoreError};
use crate::rows::{self, CheckpointRow};

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// What the service role is granted: it owns nothing, and holds only INSERT and SELECT on
/// the append-only tables. `{database}` and `{role}` are placeholders. docs/OPERATIONS.md
/// lists the same statements, and the store's tests grant exactly these to the role they
/// run the row-level-security checks as.
pub const SERVICE_ROLE_GRANTS: &[&str] = &[
    "GRANT CONNECT ON DATABASE {database} TO {role};",
    "GRANT USAGE ON SCHEMA public TO {role};",
    "GRANT SELECT, INSERT ON events, checkpoints TO {role};",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON records TO {role};",
    "GRANT SELECT, INSERT ON credential_index TO {role};",
    "GRANT SELECT, INSERT, DELETE ON snapshots TO {role};",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON projection_cursors, projection_balances, \
     projection_payouts, projection_audit TO {role};",
];

/// Connections per pool unless the caller chooses.
pub const POOL_CONNECTIONS_DEFAULT: u32 = 8;

/// Sets the tenant for row-level security and takes the tenant's advisory lock, both
/// scoped to the transaction. The lock key is a 64-bit hash of the tenant in a
/// namespace of its own.
const SCOPE_AND_LOCK: &str = "SELECT set_config('ledger.tenant', $1, true), \
     pg_advisory_xact_lock(hashtextextended('payout-ledger/tenant:' || $1, 0))";
const SCOPE: &str = "SELECT set_config('ledger.tenant', $1, true)";

/// The PostgreSQL event log.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to a `postgres:` URL.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(PgConnectOptions::from_str(url)?, POOL_CONNECTIONS_DEFAULT).await
    }

    /// Connects with explicit options.
    pub async fn connect_with(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// The pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the migrations in `migrations/postgres/` (as the owner role, never as the
    /// service role: see docs/OPERATIONS.md).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_scoped(
        &self,
        tenant: &TenantId,
        statement: &'static str,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(statement)
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    async fn head_in(
        tx: &mut Transaction<'static, Postgres>,
        tenant: &TenantId,
    ) -> Result<ChainHead, StoreError> {
        let row: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, hash FROM events WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        rows::head_from_row(tenant, row)
    }

    /// See [`crate::Store::append`] (which runs it detached from the caller).
    pub(crate) async fn append(
        &self,
        tenant: &TenantId,
        expected_head: ChainHead,
        events: &[(Event, Vec<u8>)],
    ) -> Result<ChainHead, AppendError> {
        rows::check_batch(tenant, expected_head, events)?;
        let mut tx = self.begin_scoped(tenant, SCOPE_AND_LOCK).await?;
        let actual = Self::head_in(&mut tx, tenant).await?;
        if actual != expected_head {
            // Release the lock now rather than when the connection is next used.
            tx.rollback().await?;
            return Err(AppendError::Conflict { actual });
        }
        let inserted = Self::insert_in(&mut tx, tenant, events).await;
        if let Err(error) = inserted {
            return Err(self.insert_failed(tenant, expected_head, tx, error).await);
        }
        tx.commit().await?;
        match events.last() {
            Some((event, _)) => Ok(event.head()),
            None => Ok(expected_head),
        }
    }

    /// Inserts `events` of `tenant` inside `tx`, as one statement over arrays.
    async fn insert_in(
        tx: &mut Transaction<'static, Postgres>,
        tenant: &TenantId,
        events: &[(Event, Vec<u8>)],
    ) -> Result<(), sqlx::Error> {
        let count = events.len();
        let mut seqs = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        let mut ats = Vec::with_capacity(count);
        let mut actors = Vec::with_capacity(count);
        let mut kinds = Vec::with_capacity(count);
        let mut prevs = Vec::with_capacity(count);
        let mut hashes = Vec::with_capacity(count);
        let mut canonicals = Vec::with_capacity(count);
        for (event, bytes) in events {
            seqs.push(rows::seq_to_db(event.seq));
            ids.push(event.id.uuid().hyphenated().to_string());
            ats.push(event.at.to_string());
            actors.push(event.actor.as_str());
            kinds.push(event.body.kind());
            prevs.push(event.prev.as_bytes().as_slice());
            hashes.push(event.hash.as_bytes().as_slice());
            canonicals.push(bytes.as_slice());
        }
        sqlx::query(
            "INSERT INTO events (tenant_id, seq, id, at, actor, kind, prev, hash, canonical) \
             SELECT $1, seq, id::uuid, at::timestamptz, actor, kind, prev, hash, canonical \
             FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
                         $7::bytea[], $8::bytea[], $9::bytea[]) \
                  AS batch(seq, id, at, actor, kind, prev, hash, canonical)",
        )
        .bind(tenant.as_str())
        .bind(&seqs)
        .bind(&ids)
        .bind(&ats)
        .bind(&actors)
        .bind(&kinds)
        .bind(&prevs)
        .bind(&hashes)
        .bind(&canonicals)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// See [`crate::Store::append_many`]: every batch in one transaction, tenants in a
    /// fixed order (their advisory locks too, so two committers cannot deadlock), each
    /// batch behind a savepoint so that one batch's conflict leaves the others standing.
    pub(crate) async fn append_many(
        &self,
        batches: &[crate::Batch],
    ) -> Result<Vec<Result<ChainHead, AppendError>>, StoreError> {
        let mut order: Vec<usize> = (0..batches.len()).collect();
        order.sort_by(|a, b| batches[*a].0.as_str().cmp(batches[*b].0.as_str()));
        let mut results: Vec<Option<Result<ChainHead, AppendError>>> =
            (0..batches.len()).map(|_| None).collect();
        let mut tx = self.pool.begin().await?;
        for index in order {
            let (tenant, expected_head, events) = &batches[index];
            if let Err(error) = rows::check_batch(tenant, *expected_head, events) {
                results[index] = Some(Err(error));
                continue;
            }
            sqlx::query(SCOPE_AND_LOCK)
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query("SAVEPOINT batch").execute(&mut *tx).await?;
            let actual = Self::head_in(&mut tx, tenant).await?;
            let outcome = if actual != *expected_head {
                Err(AppendError::Conflict { actual })
            } else {
                match Self::insert_in(&mut tx, tenant, events).await {
                    Ok(()) => Ok(events.last().map_or(*expected_head, |(e, _)| e.head())),
                    Err(error)
                        if error
                            .as_database_error()
                            .is_some_and(|e| e.is_unique_violation()) =>
                    {
                        Err(AppendError::DuplicateEventId)
                    }
                    Err(error) => Err(AppendError::from(error)),
                }
            };
            if outcome.is_err() {
                sqlx::query("ROLLBACK TO SAVEPOINT batch")
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("RELEASE SAVEPOINT batch")
                .execute(&mut *tx)
                .await?;
            results[index] = Some(outcome);
        }
        tx.commit().await?;
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(AppendError::Store(StoreError::Interrupted))))
            .collect())
    }

    /// Maps an INSERT failure: a unique violation is a conflict when the head moved (a
    /// writer that did not take the lock: the primary key is the last resort) or a
    /// replayed event id.
    async fn insert_failed(
        &self,
        tenant: &TenantId,
        expected_head: ChainHead,
        tx: Transaction<'static, Postgres>,
        error: sqlx::Error,
    ) -> AppendError {
        let unique = error
            .as_database_error()
            .is_some_and(|e| e.is_unique_violation());
        if let Err(rollback) = tx.rollback().await {
            return AppendError::from(rollback);
        }
        if !unique {
            return AppendError::from(error);
        }
        match self.head(tenant).await {
            Ok(actual) if actual != expected_head => AppendError::Conflict { actual },
            Ok(_) => AppendError::DuplicateEventId,
            Err(e) => AppendError::Store(e),
        }
    }

    /// See [`crate::Store::head`] (which runs it detached from the caller).
    pub(crate) async fn head(&self, tenant: &TenantId) -> Result<ChainHead, StoreError> {
        let mut tx = self.begin_scoped(tenant, SCOPE).await?;
        let head = Self::head_in(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(head)
    }

    /// See [`crate::Store::load`] (which runs it detached from the caller).
    pub(crate) async fn load(
        &self,
        tenant: &TenantId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<(Event, Vec<u8>)>, StoreError> {
        let limit = rows::check_limit(limit)?;
        let mut tx = self.begin_scoped(tenant, SCOPE).await?;
        let found: Vec<(i64, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, hash, canonical FROM events \
             WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(rows::seq_to_db(after_seq))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        found
            .into_iter()
            .map(|(seq, hash, canonical)| rows::event_from_row(tenant, seq, &hash, canonical))
            .collect()
    }

    /// See [`crate::Store::append_checkpoint`] (which runs it detached from the caller).
    pub(crate) async fn append_checkpoint(
        &self,
        checkpoint: &Checkpoint,
    ) -> Result<(), CheckpointStoreError> {
        let tenant = &checkpoint.tenant;
        let seq = rows::seq_to_db(checkpoint.seq);
        let mut tx = self.begin_scoped(tenant, SCOPE).await?;
        let hash: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT hash FROM events WHERE tenant_id = $1 AND seq = $2")
                .bind(tenant.as_str())
                .bind(seq)
                .fetch_optional(&mut *tx)
                .await?;
        match hash {
            None => {
                return Err(CheckpointStoreError::NoSuchEvent {
                    seq: checkpoint.seq,
                })
            }
            Some((hash,)) if hash.as_slice() != checkpoint.head.as_bytes().as_slice() => {
                return Err(CheckpointStoreError::HeadMismatch {
                    seq: checkpoint.seq,
                })
            }
            Some(_) => {}
        }
        let inserted = sqlx::query(
            "INSERT INTO checkpoints (tenant_id, seq, head, at, key_id, sig) \
             VALUES ($1, $2, $3, $4::timestamptz, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(seq)
        .bind(checkpoint.head.as_bytes().as_slice())
        .bind(checkpoint.at.to_string())
        .bind(checkpoint.key_id.as_str())
        .bind(checkpoint.sig.as_bytes().as_slice())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            return Err(CheckpointStoreError::Duplicate {
                seq: checkpoint.seq,
            });
        }
        tx.commit().await?;
        Ok(())
    }

    /// See [`crate::Store::checkpoints`] (which runs it detached from the caller).
    pub(crate) async fn checkpoints(
        &self,
        tenant: &TenantId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        let limit = rows::check_limit(limit)?;
        let mut tx = self.begin_scoped(tenant, SCOPE).await?;
        let found: Vec<CheckpointRow> = sqlx::query_as(
            // `at` back as RFC 3339 with six digits and Z.
            r#"SELECT seq, head, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at,
                      key_id, sig
               FROM checkpoints WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"#,
        )
        .bind(tenant.as_str())
        .bind(rows::seq_to_db(after_seq))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        found
            .into_iter()
            .map(|row| rows::checkpoint_from_row(tenant, row))
            .collect()
    }
}
