//! The embedded backend: one SQLite file in WAL mode. Appends take the write lock up
//! front (`BEGIN IMMEDIATE`), so two writers on one file serialise and the loser sees
//! the winner's head inside its own transaction.
//!
//! Within one process every write first takes its turn at the store's write gate (a fair
//! async mutex, [`SqliteStore::write_turn`]): SQLite's busy handler does not wake a
//! waiting writer when the lock is released but polls it with sleeps of 1 to 100 ms, so
//! the writers of one process (the committer, the projector, checkpoints, records) queue
//! in the gate, in order, instead of sleeping in the busy handler. Other processes on the
//! same file still meet at SQLite's lock and its busy timeout.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ledger_core::checkpoint::Checkpoint;
use ledger_core::event::{ChainHead, Event};
use ledger_core::ids::TenantId;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, Transaction};

use crate::error::{AppendError, CheckpointStoreError, StoreError};
use crate::rows::{self, CheckpointRow};

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// Rows per INSERT statement; 9 columns each, well under SQLite's bound-parameter limit.
const INSERT_ROWS_MAX: usize = 500;
/// How long a writer waits for another's write lock before the append fails as a store
/// error.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// WAL pages before a commit checkpoints them into the database file (SQLite's default
/// is 1000). The log and projector rewrite the same hot pages (each tenant's last leaf)
/// commit after commit; a longer WAL copies each of them back once per checkpoint
/// rather than once per 1000 pages, and commits stall on checkpoints less often
/// (100 tenants: about +25 % commands/s with [`CACHE_KIB`], docs/PERFORMANCE.md).
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;
/// WAL frames past which the server's [`SqliteStore::checkpoint_wal`] finishes its
/// checkpoint under the write gate, so that the next commit starts the log over (about
/// 20 MiB of log: each restart copies the hot pages back once more, so not too often;
/// below [`WAL_AUTOCHECKPOINT_PAGES`], so that the commits' own checkpoint stays idle).
pub const WAL_RESET_FRAMES: i64 = 5_000;
/// How often the server runs [`SqliteStore::checkpoint_wal`].
pub const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// Page cache per connection, in KiB (SQLite's default is 2 000): the hot pages of
/// every tenant's chain and projections stay in memory instead of being re-read from
/// the OS after every other connection's commit.
pub const CACHE_KIB: u32 = 65_536;
/// Connections per pool: one writer at a time anyway; the rest read concurrently (WAL).
const POOL_CONNECTIONS_MAX: u32 = 4;

/// What one [`SqliteStore::checkpoint_wal`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalCheckpoint {
    /// Frames in the log when it last looked.
    pub frames: i64,
    /// Every frame copied back under the write gate: the next commit starts the log over.
    pub finished: bool,
}

/// This process's turn at the write lock of one SQLite store (see the module docs); held
/// until the write transaction has committed or rolled back.
pub(crate) type WriteTurn = tokio::sync::OwnedMutexGuard<()>;

/// The SQLite event log.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The one connection every write of this process uses (they take turns at the gate
    /// anyway): SQLite drops a connection's whole page cache when another connection has
    /// committed since its last transaction, so writes spread over the pool re-read their
    /// pages from the OS after every commit, while this one keeps them warm.
    writer: SqlitePool,
    /// The write gate, shared by every clone of this store.
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::connect_with(SqliteConnectOptions::new().filename(path)).await
    }

    /// Opens the database named by a `sqlite:` URL.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(SqliteConnectOptions::from_str(url)?).await
    }

    /// Opens with the store's settings applied over `options`: created if missing, WAL,
    /// `synchronous=FULL` (a commit is durable before it is acknowledged), foreign keys
    /// on, and a busy timeout for the write lock.
    pub async fn connect_with(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
            .pragma("cache_size", format!("-{CACHE_KIB}"));
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_CONNECTIONS_MAX)
            // An embedded file has no network to break a connection: no ping before
            // every acquire (one round trip to the connection's thread saved per use).
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        Ok(Self { pool, writer, gate })
    }

    /// Copies the WAL back into the database file off the commits' path, so that no
    /// commit waits for [`WAL_AUTOCHECKPOINT_PAGES`] pages to be copied (that stall was
    /// the tail of the commit latency). First a passive checkpoint beside the writers
    /// (SQLite lets one run while another connection commits); then, when the log holds
    /// at least `reset_frames` frames, a second one in the write gate, which has
    /// only the frames committed meanwhile left to copy and leaves the log fully copied
    /// with no commit in between, so the next commit writes the log from its start
    /// again (without it the log would only grow while commits keep coming). Readers
    /// still on older frames can keep a checkpoint from finishing: it is tried again on
    /// the next call. The autocheckpoint stays as the backstop.
    pub async fn checkpoint_wal(&self, reset_frames: i64) -> Result<WalCheckpoint, StoreError> {
        const PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";
        let mut connection = self.pool.acquire().await?;
        let (_, frames, _): (i64, i64, i64) =
            sqlx::query_as(PASSIVE).fetch_one(&mut *connection).await?;
        if frames < reset_frames {
            return Ok(WalCheckpoint {
                frames,
                finished: false,
            });
        }
        // Once more beside the commits: the pages they wrote during the first copy.
        sqlx::query_as::<_, (i64, i64, i64)>(PASSIVE)
            .fetch_one(&mut *connection)
            .await?;
        let _turn = self.write_turn().await;
        let (busy, frames, copied): (i64, i64, i64) =
            sqlx::query_as(PASSIVE).fetch_one(&mut *connection).await?;
        Ok(WalCheckpoint {
            frames,
            finished: busy == 0 && frames >= 0 && copied == frames,
        })
    }

    /// The pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The writes' one connection (see the field): for a write statement run in this
    /// process's turn ([`Self::write_turn`]), and for tests of its settings.
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Waits for this process's turn to write (FIFO); hold it across the whole write
    /// transaction or auto-committed write statement.
    pub(crate) async fn write_turn(&self) -> WriteTurn {
        Arc::clone(&self.gate).lock_owned().await
    }

    /// A write transaction: this process's turn, then `BEGIN IMMEDIATE` (SQLite's write
    /// lock, against other processes). Bind both (`let (_turn, mut tx) = ...`) so that the
    /// turn is released after the transaction ends.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<(WriteTurn, Transaction<'static, Sqlite>), sqlx::Error> {
        let turn = self.write_turn().await;
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        Ok((turn, tx))
    }

    /// Applies the migrations in `migrations/sqlite/`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Closes the pools (the writer's and the readers').
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    async fn head_in(
        tx: &mut Transaction<'static, Sqlite>,
        tenant: &TenantId,
    ) -> Result<ChainHead, StoreError> {
        let row: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, hash FROM events WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        rows::head_from_row(tenant, row)
    }

    /// Inserts `events` of `tenant` inside `tx`, in multi-row statements.
    async fn insert_in(
        tx: &mut Transaction<'static, Sqlite>,
        tenant: &TenantId,
        events: &[(Event, Vec<u8>)],
    ) -> Result<(), sqlx::Error> {
        let pending: Vec<(&TenantId, &(Event, Vec<u8>))> =
            events.iter().map(|row| (tenant, row)).collect();
        Self::insert_rows(tx, &pending).await
    }

    /// Inserts rows of any tenants inside `tx`, in multi-row statements.
    async fn insert_rows(
        tx: &mut Transaction<'static, Sqlite>,
        pending: &[(&TenantId, &(Event, Vec<u8>))],
    ) -> Result<(), sqlx::Error> {
        for chunk in pending.chunks(INSERT_ROWS_MAX) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO events (tenant_id, seq, id, at, actor, kind, prev, hash, canonical) ",
            );
            insert.push_values(chunk, |mut row, (tenant, (event, bytes))| {
                row.push_bind(tenant.as_str())
                    .push_bind(rows::seq_to_db(event.seq))
                    .push_bind(event.id.uuid().hyphenated().to_string())
                    .push_bind(event.at.to_string())
                    .push_bind(event.actor.as_str())
                    .push_bind(event.body.kind())
                    .push_bind(event.prev.as_bytes().as_slice())
                    .push_bind(event.hash.as_bytes().as_slice())
                    .push_bind(bytes.as_slice());
            });
            insert.build().execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// The heads of `tenants` inside `tx`, in one statement (each tenant's last row by
    /// the primary key, so the cost does not grow with the chains' lengths).
    async fn heads_in(
        tx: &mut Transaction<'static, Sqlite>,
        tenants: &[&TenantId],
    ) -> Result<Vec<ChainHead>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new("WITH t(i, tenant) AS (");
        query.push_values(tenants.iter().enumerate(), |mut row, (index, tenant)| {
            row.push_bind(index as i64).push_bind(tenant.as_str());
        });
        query.push(
            ") SELECT t.i, \
             (SELECT seq FROM events e WHERE e.tenant_id = t.tenant ORDER BY seq DESC LIMIT 1), \
             (SELECT hash FROM events e WHERE e.tenant_id = t.tenant ORDER BY seq DESC LIMIT 1) \
             FROM t ORDER BY t.i",
        );
        let found: Vec<(i64, Option<i64>, Option<Vec<u8>>)> =
            query.build_query_as().fetch_all(&mut **tx).await?;
        if found.len() != tenants.len() {
            return Err(StoreError::Corrupt {
                tenant: String::new(),
                seq: 0,
                reason: "head lookup returned the wrong number of rows".into(),
            });
        }
        tenants
            .iter()
            .zip(found)
            .map(|(tenant, (_, seq, hash))| match (seq, hash) {
                (Some(seq), Some(hash)) => rows::head_from_row(tenant, Some((seq, hash))),
                (None, None) => Ok(ChainHead::GENESIS),
                (Some(_), None) | (None, Some(_)) => rows::head_from_row(tenant, None),
            })
            .collect()
    }

    /// See [`crate::Store::append_many`]: every batch in one transaction (one write
    /// lock, one fsync). The heads of all the tenants are read in one statement and the
    /// rows of every batch whose head still holds are inserted together; only if that
    /// insert fails on a unique key (a replayed event id) is it redone batch by batch,
    /// each behind a savepoint, so that one batch's refusal leaves the others standing.
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
        if !valid.is_empty() {
            let (_turn, mut tx) = self.begin_write().await?;
            let tenants: Vec<&TenantId> = valid.iter().map(|i| &batches[*i].0).collect();
            let heads = Self::heads_in(&mut tx, &tenants).await?;
            let mut ready = Vec::with_capacity(valid.len());
            for (index, actual) in valid.into_iter().zip(heads) {
                if actual == batches[index].1 {
                    ready.push(index);
                } else {
                    results[index] = Some(Err(AppendError::Conflict { actual }));
                }
            }
            let pending: Vec<(&TenantId, &(Event, Vec<u8>))> = ready
                .iter()
                .flat_map(|i| {
                    let (tenant, _, events) = &batches[*i];
                    events.iter().map(move |row| (tenant, row))
                })
                .collect();
            // One INSERT statement needs no savepoint: a constraint failure undoes that
            // statement alone and leaves the transaction open (SQLite's ABORT).
            let savepoint = pending.len() > INSERT_ROWS_MAX;
            if savepoint {
                sqlx::query("SAVEPOINT batches").execute(&mut *tx).await?;
            }
            match Self::insert_rows(&mut tx, &pending).await {
                Ok(()) => {
                    if savepoint {
                        sqlx::query("RELEASE SAVEPOINT batches")
                            .execute(&mut *tx)
                            .await?;
                    }
                    for index in ready {
                        let (_, expected_head, events) = &batches[index];
                        let head = events.last().map_or(*expected_head, |(e, _)| e.head());
                        results[index] = Some(Ok(head));
                    }
                }
                Err(error) if is_unique_violation(&error) => {
                    if savepoint {
                        sqlx::query("ROLLBACK TO SAVEPOINT batches")
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query("RELEASE SAVEPOINT batches")
                            .execute(&mut *tx)
                            .await?;
                    }
                    for index in ready {
                        results[index] = Some(Self::insert_alone(&mut tx, &batches[index]).await?);
                    }
                }
                Err(error) => return Err(StoreError::from(error)),
            }
            tx.commit().await?;
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(AppendError::Store(StoreError::Interrupted))))
            .collect())
    }

    /// One batch behind its own savepoint (the slow path of [`Self::append_many`]).
    async fn insert_alone(
        tx: &mut Transaction<'static, Sqlite>,
        (tenant, expected_head, events): &crate::Batch,
    ) -> Result<Result<ChainHead, AppendError>, StoreError> {
        sqlx::query("SAVEPOINT batch").execute(&mut **tx).await?;
        let outcome = match Self::insert_in(tx, tenant, events).await {
            Ok(()) => Ok(events.last().map_or(*expected_head, |(e, _)| e.head())),
            Err(error) if is_unique_violation(&error) => Err(AppendError::DuplicateEventId),
            Err(error) => Err(AppendError::from(error)),
        };
        if outcome.is_err() {
            sqlx::query("ROLLBACK TO SAVEPOINT batch")
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query("RELEASE SAVEPOINT batch")
            .execute(&mut **tx)
            .await?;
        Ok(outcome)
    }

    /// See [`crate::Store::append`] (which runs it detached from the caller).
    pub(crate) async fn append(
        &self,
        tenant: &TenantId,
        expected_head: ChainHead,
        events: &[(Event, Vec<u8>)],
    ) -> Result<ChainHead, AppendError> {
        rows::check_batch(tenant, expected_head, events)?;
        let (_turn, mut tx) = self.begin_write().await?;
        let actual = Self::head_in(&mut tx, tenant).await?;
        if actual != expected_head {
            // Release the lock now rather than when the connection is next used.
            tx.rollback().await?;
            return Err(AppendError::Conflict { actual });
        }
        if let Err(error) = Self::insert_in(&mut tx, tenant, events).await {
            return Err(self
                .unique_violation(tenant, expected_head, tx, error)
                .await);
        }
        tx.commit().await?;
        match events.last() {
            Some((event, _)) => Ok(event.head()),
            None => Ok(expected_head),
        }
    }

    /// Maps an INSERT failure: a unique violation is a conflict when the head moved
    /// (impossible under the write lock, kept as the last resort) or a replayed event id.
    async fn unique_violation(
        &self,
        tenant: &TenantId,
        expected_head: ChainHead,
        tx: Transaction<'static, Sqlite>,
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
        // One statement: no transaction needed for a consistent answer.
        let row: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, hash FROM events WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await?;
        rows::head_from_row(tenant, row)
    }

    /// See [`crate::Store::load`] (which runs it detached from the caller).
    pub(crate) async fn load(
        &self,
        tenant: &TenantId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<(Event, Vec<u8>)>, StoreError> {
        let limit = rows::check_limit(limit)?;
        let found: Vec<(i64, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, hash, canonical FROM events \
             WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(rows::seq_to_db(after_seq))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
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
        let (_turn, mut tx) = self.begin_write().await?;
        let hash: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT hash FROM events WHERE tenant_id = ? AND seq = ?")
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
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
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
        let found: Vec<CheckpointRow> = sqlx::query_as(
            "SELECT seq, head, at, key_id, sig FROM checkpoints \
             WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(rows::seq_to_db(after_seq))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
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
