//! The production backend. Every transaction first sets `ledger.tenant` (row-level
//! security keys on it). Appends are one call of the `ledger_append` function
//! (migrations/postgres), which sets the tenant, takes a per-tenant advisory lock (so
//! writers of one tenant serialise across pools and processes), checks the head and
//! inserts, for one tenant's batch or several; the (tenant_id, seq) primary key stays
//! the check of last resort.

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
    "GRANT SELECT, INSERT, DELETE ON webhook_index TO {role};",
    "GRANT SELECT, INSERT ON credential_index TO {role};",
    "GRANT SELECT, INSERT, DELETE ON snapshots TO {role};",
    "GRANT EXECUTE ON FUNCTION ledger_append(text[], bigint[], bytea[], integer[], integer[], \
     bigint[], text[], text[], text[], text[], bytea[], bytea[], bytea[]) TO {role};",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON projection_cursors, projection_balances, \
     projection_payouts, projection_audit TO {role};",
];

/// Connections per pool unless the caller chooses.
pub const POOL_CONNECTIONS_DEFAULT: u32 = 8;

/// One checked batch, borrowed: tenant, the head it was sealed on, its rows.
type BatchRef<'a> = (&'a TenantId, ChainHead, &'a [(Event, Vec<u8>)]);

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

    /// See [`crate::Store::append`] (which runs it detached from the caller): one call of
    /// `ledger_append` (migrations/postgres), which is its own transaction.
    pub(crate) async fn append(
        &self,
        tenant: &TenantId,
        expected_head: ChainHead,
        events: &[(Event, Vec<u8>)],
    ) -> Result<ChainHead, AppendError> {
        rows::check_batch(tenant, expected_head, events)?;
        match self.call_append(&[(tenant, expected_head, events)]).await {
            Ok(mut outcomes) => outcomes
                .pop()
                .unwrap_or(Err(AppendError::Store(StoreError::Interrupted))),
            Err(error) if is_unique_violation(&error) => {
                // A writer that did not take the lock won a race: the primary key is the
                // last resort.
                match self.head(tenant).await {
                    Ok(actual) if actual != expected_head => Err(AppendError::Conflict { actual }),
                    Ok(_) => Err(AppendError::DuplicateEventId),
                    Err(e) => Err(AppendError::Store(e)),
                }
            }
            Err(error) => Err(AppendError::from(error)),
        }
    }

    /// See [`crate::Store::append_many`]: every batch in ONE call of `ledger_append`, so
    /// one round trip and one commit for all of them; the function takes the tenants'
    /// advisory locks in tenant order (two committers cannot deadlock) and answers each
    /// batch's outcome. If the call itself fails on a unique key (an event id the chain
    /// already holds, which the function leaves to the (tenant_id, id) key, or a writer
    /// that did not take the lock), each batch is retried on its own, so that the failure
    /// names its batch and the others still commit.
    pub(crate) async fn append_many(
        &self,
        batches: &[crate::Batch],
    ) -> Result<Vec<Result<ChainHead, AppendError>>, StoreError> {
        let mut results: Vec<Option<Result<ChainHead, AppendError>>> =
            batches.iter().map(|_| None).collect();
        let mut valid = Vec::with_capacity(batches.len());
        for (index, (tenant, expected_head, events)) in batches.iter().enumerate() {
            match rows::check_batch(tenant, *expected_head, events) {
                Ok(()) => valid.push(index),
                Err(error) => results[index] = Some(Err(error)),
            }
        }
        let checked: Vec<BatchRef<'_>> = valid
            .iter()
            .map(|i| {
                let (tenant, head, events) = &batches[*i];
                (tenant, *head, events.as_slice())
            })
            .collect();
        if !checked.is_empty() {
            match self.call_append(&checked).await {
                Ok(outcomes) => {
                    for (index, outcome) in valid.iter().zip(outcomes) {
                        results[*index] = Some(outcome);
                    }
                }
                Err(error) if is_unique_violation(&error) => {
                    for (index, (tenant, head, events)) in valid.iter().zip(checked) {
                        results[*index] = Some(self.append(tenant, head, events).await);
                    }
                }
                Err(error) => return Err(StoreError::from(error)),
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(AppendError::Store(StoreError::Interrupted))))
            .collect())
    }

    /// Calls `ledger_append` with checked batches; one outcome per batch, in order.
    async fn call_append(
        &self,
        batches: &[BatchRef<'_>],
    ) -> Result<Vec<Result<ChainHead, AppendError>>, sqlx::Error> {
        let rows_total: usize = batches.iter().map(|(_, _, events)| events.len()).sum();
        let mut tenants = Vec::with_capacity(batches.len());
        let mut expected_seqs = Vec::with_capacity(batches.len());
        let mut expected_hashes = Vec::with_capacity(batches.len());
        let mut firsts = Vec::with_capacity(batches.len());
        let mut counts = Vec::with_capacity(batches.len());
        let mut seqs = Vec::with_capacity(rows_total);
        let mut ids = Vec::with_capacity(rows_total);
        let mut ats = Vec::with_capacity(rows_total);
        let mut actors = Vec::with_capacity(rows_total);
        let mut kinds = Vec::with_capacity(rows_total);
        let mut prevs = Vec::with_capacity(rows_total);
        let mut hashes = Vec::with_capacity(rows_total);
        let mut canonicals = Vec::with_capacity(rows_total);
        let too_many = || sqlx::Error::Protocol("too many rows for one append".into());
        for (tenant, expected_head, events) in batches {
            tenants.push(tenant.as_str());
            expected_seqs.push(rows::seq_to_db(expected_head.seq));
            expected_hashes.push(expected_head.hash.as_bytes().as_slice());
            // PostgreSQL arrays count from 1.
            firsts.push(i32::try_from(seqs.len() + 1).map_err(|_| too_many())?);
            counts.push(i32::try_from(events.len()).map_err(|_| too_many())?);
            for (event, bytes) in *events {
                seqs.push(rows::seq_to_db(event.seq));
                ids.push(event.id.uuid().hyphenated().to_string());
                ats.push(event.at.to_string());
                actors.push(event.actor.as_str());
                kinds.push(event.body.kind());
                prevs.push(event.prev.as_bytes().as_slice());
                hashes.push(event.hash.as_bytes().as_slice());
                canonicals.push(bytes.as_slice());
            }
        }
        let found: Vec<(i32, String, i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT batch, outcome, head_seq, head_hash FROM ledger_append(\
             $1::text[], $2::bigint[], $3::bytea[], $4::integer[], $5::integer[], \
             $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], \
             $11::bytea[], $12::bytea[], $13::bytea[])",
        )
        .bind(&tenants)
        .bind(&expected_seqs)
        .bind(&expected_hashes)
        .bind(&firsts)
        .bind(&counts)
        .bind(&seqs)
        .bind(&ids)
        .bind(&ats)
        .bind(&actors)
        .bind(&kinds)
        .bind(&prevs)
        .bind(&hashes)
        .bind(&canonicals)
        .fetch_all(&self.pool)
        .await?;
        let mut outcomes: Vec<Option<Result<ChainHead, AppendError>>> =
            batches.iter().map(|_| None).collect();
        for (batch, outcome, head_seq, head_hash) in found {
            let index = usize::try_from(batch)
                .ok()
                .and_then(|b| b.checked_sub(1))
                .filter(|i| *i < batches.len());
            let Some(index) = index else {
                return Err(sqlx::Error::Protocol(format!(
                    "ledger_append answered batch {batch} of {}",
                    batches.len()
                )));
            };
            let (tenant, expected_head, events) = batches[index];
            let found_head =
                || rows::head_from_row(tenant, head_hash.clone().map(|h| (head_seq, h)));
            outcomes[index] = Some(match outcome.as_str() {
                "ok" => Ok(events.last().map_or(expected_head, |(e, _)| e.head())),
                "conflict" => match found_head() {
                    Ok(actual) => Err(AppendError::Conflict { actual }),
                    Err(error) => Err(AppendError::Store(error)),
                },
                // Answered by the function's earlier versions only (a server started
                // before `migrate` replaced it); the current one leaves duplicates to the
                // unique key.
                "duplicate_id" => Err(AppendError::DuplicateEventId),
                other => {
                    return Err(sqlx::Error::Protocol(format!(
                        "ledger_append answered {other:?}"
                    )))
                }
            });
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Err(AppendError::Store(StoreError::Interrupted))))
            .collect())
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

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}
