//! The store's errors. Two layers, never blurred: a store failure is an outage (the
//! caller answers 503 and may retry later); a conflict is an answer (another writer won
//! the race: reload the head and retry); an invalid batch is a bug in the caller.

use ledger_core::event::ChainHead;

/// The database failed or holds something it must not.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused a statement.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration could not be applied.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row does not check out: its bytes, hash, tenant or seq disagree. The log
    /// was changed behind the service's back (or a bug wrote it).
    #[error("stored data of tenant {tenant} at seq {seq} is corrupt: {reason}")]
    Corrupt {
        /// The tenant.
        tenant: String,
        /// The seq of the row.
        seq: u64,
        /// What does not check out.
        reason: String,
    },
    /// The database URL names no backend this store knows.
    #[error("unsupported database URL scheme (expected sqlite: or postgres:)")]
    UnsupportedUrl,
    /// The task running the operation was cancelled (the runtime is shutting down).
    #[error("the store operation was interrupted")]
    Interrupted,
    /// A page larger than the store allows was asked for.
    #[error("limit {requested} exceeds the maximum {max}")]
    Limit {
        /// What was asked for.
        requested: u32,
        /// The maximum.
        max: u32,
    },
}

/// Why a batch was not appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The chain's head is not the one the batch was sealed on: another writer appended
    /// first. Nothing was written; reload state up to `actual`, re-decide, re-seal, retry.
    #[error("chain head moved: now at seq {}", actual.seq)]
    Conflict {
        /// The head found inside the transaction.
        actual: ChainHead,
    },
    /// An event's id is already in the tenant's chain (a replayed batch). Nothing was
    /// written.
    #[error("an event id of the batch is already stored")]
    DuplicateEventId,
    /// The batch itself is malformed: a bug in the caller, never retried. Nothing was
    /// written.
    #[error("event {index} of the batch: {reason}")]
    InvalidBatch {
        /// Index in the batch.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The store failed; whether the batch was committed is known only if the failure
    /// came before the commit (a failed COMMIT is ambiguous: reload the head).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AppendError {
    fn from(error: sqlx::Error) -> Self {
        AppendError::Store(StoreError::Database(error))
    }
}

/// Why a checkpoint was not stored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointStoreError {
    /// No event at the checkpoint's seq.
    #[error("no event at seq {seq}")]
    NoSuchEvent {
        /// The checkpoint's seq.
        seq: u64,
    },
    /// The event at the checkpoint's seq has another hash.
    #[error("checkpoint head does not match the event at seq {seq}")]
    HeadMismatch {
        /// The checkpoint's seq.
        seq: u64,
    },
    /// A checkpoint at this seq is already stored.
    #[error("a checkpoint at seq {seq} is already stored")]
    Duplicate {
        /// The checkpoint's seq.
        seq: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for CheckpointStoreError {
    fn from(error: sqlx::Error) -> Self {
        CheckpointStoreError::Store(StoreError::Database(error))
    }
}
