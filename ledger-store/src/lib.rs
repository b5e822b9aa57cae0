//! sqlx adapters for the event log on SQLite (the embedded default) and PostgreSQL; the
//! only crate that knows SQL.
//!
//! One interface, [`Store`], an enum over the two backends rather than a trait object:
//! there are exactly two, both known here, so an enum keeps every call a plain `async fn`
//! (no boxed futures, no `async-trait`), lets each backend keep its own SQL side by side,
//! and makes adding a third backend break every `match` that must handle it. Callers
//! hold a `Store` and never see which backend is behind it.
//!
//! Append semantics (DESIGN section 6): a batch of one tenant's events is written in
//! ONE transaction, after checking inside that transaction that the chain's head is the
//! one the batch was sealed on. A lost race is [`AppendError::Conflict`] with the actual
//! head; nothing is acknowledged before commit; a failed or dropped transaction leaves
//! nothing behind.
//!
//! Every call runs in a task of its own, detached from the caller: if the caller's future
//! is dropped (a client hung up, a timeout fired), the transaction still runs to its
//! commit or rollback instead of being cut off between statements. A cut-off transaction
//! could otherwise leave a pooled connection inside `BEGIN IMMEDIATE` (sqlx 0.8 can lose
//! the rollback of a transaction whose `BEGIN` was acknowledged to a dropped future),
//! holding SQLite's write lock or a PostgreSQL advisory lock for good. A dropped append
//! is therefore either committed or not at all; the caller, who got no answer, finds out
//! from the head (a retry meets a [`AppendError::Conflict`]).

pub mod crypto;
mod error;
mod export;
pub mod postgres;
mod projection;
mod records;
mod rows;
mod snapshots;
pub mod sqlite;
mod webhooks;

use std::future::Future;

use ledger_core::checkpoint::Checkpoint;
use ledger_core::event::{ChainHead, Event};
use ledger_core::ids::TenantId;

pub use error::{AppendError, CheckpointStoreError, StoreError};
pub use export::ExportError;
pub use postgres::PostgresStore;
pub use projection::{AuditQuery, PayoutQuery, ProjectStep, ProjectedRows, Reflected};
pub use records::Record;
pub use sqlite::SqliteStore;
pub use webhooks::RECORDS_PAGE_MAX;

/// One tenant's batch for [`Store::append_many`]: the tenant, the head it was sealed
/// on, and the events with their canonical bytes.
pub type Batch = (TenantId, ChainHead, Vec<(Event, Vec<u8>)>);

/// Most events in one appended batch (one transaction).
pub const BATCH_EVENTS_MAX: usize = 10_000;
/// Most rows one `load` or `checkpoints` call returns.
pub const PAGE_LIMIT_MAX: u32 = 10_000;

/// Runs `work` on its own task and waits for it; a panic in it is re-raised here.
async fn detached<T, E>(work: impl Future<Output = Result<T, E>> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(result) => result,
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => Err(E::from(StoreError::Interrupted)),
        },
    }
}

/// The event log on one of the two backends.
#[derive(Debug, Clone)]
pub enum Store {
    /// The embedded default: one WAL-mode file.
    Sqlite(SqliteStore),
    /// Production: a PostgreSQL database, possibly shared by several processes.
    Postgres(PostgresStore),
}

impl Store {
    /// Connects to `sqlite:…` or `postgres:…`/`postgresql:…`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(SqliteStore::connect(url).await?))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Store::Postgres(PostgresStore::connect(url).await?))
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    /// Applies the backend's migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.migrate().await,
            Store::Postgres(store) => store.migrate().await,
        }
    }

    /// Appends `events` (each with its exact canonical bytes, as [`Event::seal`] returns
    /// them) to `tenant`'s chain in one transaction, if and only if the chain's head is
    /// still `expected_head`. Returns the new head.
    ///
    /// The batch is checked before anything is written (one tenant, contiguous seqs from
    /// the head, prev links, bytes hashing to each hash); a malformed batch is
    /// [`AppendError::InvalidBatch`]. When another writer got there first, the answer is
    /// [`AppendError::Conflict`] with the head found: reload, re-decide, re-seal, retry.
    pub async fn append(
        &self,
        tenant: &TenantId,
        expected_head: ChainHead,
        events: &[(Event, Vec<u8>)],
    ) -> Result<ChainHead, AppendError> {
        let (store, tenant, events) = (self.clone(), tenant.clone(), events.to_vec());
        detached(async move {
            match store {
                Store::Sqlite(store) => store.append(&tenant, expected_head, &events).await,
                Store::Postgres(store) => store.append(&tenant, expected_head, &events).await,
            }
        })
        .await
    }

    /// Appends several tenants' batches in ONE transaction (one commit for all of them:
    /// group commit across tenants), each as [`Store::append`] would, and each with its
    /// own outcome: one batch's conflict or refusal does not affect the others. An
    /// `Err` means the transaction itself failed and nothing was written.
    pub async fn append_many(
        &self,
        batches: Vec<Batch>,
    ) -> Result<Vec<Result<ChainHead, AppendError>>, StoreError> {
        let store = self.clone();
        detached(async move {
            match store {
                Store::Sqlite(store) => store.append_many(&batches).await,
                Store::Postgres(store) => store.append_many(&batches).await,
            }
        })
        .await
    }

    /// The head of `tenant`'s chain ([`ChainHead::GENESIS`] when it has no event).
    pub async fn head(&self, tenant: &TenantId) -> Result<ChainHead, StoreError> {
        let (store, tenant) = (self.clone(), tenant.clone());
        detached(async move {
            match store {
                Store::Sqlite(store) => store.head(&tenant).await,
                Store::Postgres(store) => store.head(&tenant).await,
            }
        })
        .await
    }

    /// Up to `limit` (at most [`PAGE_LIMIT_MAX`]) events of `tenant` after `after_seq`,
    /// in order, each parsed back from its stored canonical bytes with [`Event::parse`]
    /// and checked against its stored hash; a row that does not check out is
    /// [`StoreError::Corrupt`].
    pub async fn load(
        &self,
        tenant: &TenantId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<(Event, Vec<u8>)>, StoreError> {
        let (store, tenant) = (self.clone(), tenant.clone());
        detached(async move {
            match store {
                Store::Sqlite(store) => store.load(&tenant, after_seq, limit).await,
                Store::Postgres(store) => store.load(&tenant, after_seq, limit).await,
            }
        })
        .await
    }

    /// Stores a signed checkpoint after checking, in the same transaction, that its head
    /// is the hash of the stored event at its seq. The signature is the signer's business
    /// (the store holds no keys); the auditor checks it.
    pub async fn append_checkpoint(
        &self,
        checkpoint: &Checkpoint,
    ) -> Result<(), CheckpointStoreError> {
        let (store, checkpoint) = (self.clone(), checkpoint.clone());
        detached(async move {
            match store {
                Store::Sqlite(store) => store.append_checkpoint(&checkpoint).await,
                Store::Postgres(store) => store.append_checkpoint(&checkpoint).await,
            }
        })
        .await
    }

    /// Up to `limit` (at most [`PAGE_LIMIT_MAX`]) checkpoints of `tenant` after
    /// `after_seq`, in seq order.
    pub async fn checkpoints(
        &self,
        tenant: &TenantId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        let (store, tenant) = (self.clone(), tenant.clone());
        detached(async move {
            match store {
                Store::Sqlite(store) => store.checkpoints(&tenant, after_seq, limit).await,
                Store::Postgres(store) => store.checkpoints(&tenant, after_seq, limit).await,
            }
        })
        .await
    }

    /// Closes the connection pool.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(store) => store.close().await,
            Store::Postgres(store) => store.close().await,
        }
    }
}
