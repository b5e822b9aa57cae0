//! The `Committer`: lanes that append the batches of every tenant waiting at that
//! moment in one store call and transaction (`Store::append_many`).

use std::sync::Arc;

use ledger_core::event::{ChainHead, Event};
use ledger_core::ids::TenantId;
use ledger_store::{AppendError, Store};
use tokio::sync::{mpsc, oneshot};

/// Queue length per tenant (and per commit lane) before callers wait.
pub(crate) const QUEUE: usize = 4096;

/// Most tenants' batches committed in one transaction.
const COMMIT_GROUP_MAX: usize = 256;

type CommitJob = (
    ledger_store::Batch,
    oneshot::Sender<Result<ChainHead, AppendError>>,
);

/// Group commit across tenants: committer tasks ("lanes") take the sealed batches of
/// every tenant writer waiting at that moment and append them in ONE store call and
/// transaction (one commit, one fsync), each batch with its own outcome. A tenant always
/// uses the same lane, so its batches stay in order. SQLite has one writer at a time:
/// one lane. PostgreSQL commits transactions in parallel: a few lanes, each one call of
/// `ledger_append` per group.
#[derive(Clone)]
pub struct Committer {
    lanes: Arc<Vec<mpsc::Sender<CommitJob>>>,
    transactions: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("lanes", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

/// Committer lanes on PostgreSQL.
pub const POSTGRES_COMMIT_LANES: usize = 4;

impl Committer {
    /// Starts the committer of `store`.
    pub fn start(store: Store) -> Self {
        let transactions = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let lanes = match store {
            Store::Sqlite(_) => 1,
            Store::Postgres(_) => POSTGRES_COMMIT_LANES,
        };
        let lanes = (0..lanes)
            .map(|_| {
                let (sender, receiver) = mpsc::channel::<CommitJob>(QUEUE);
                tokio::spawn(commit_lane(
                    store.clone(),
                    receiver,
                    Arc::clone(&transactions),
                ));
                sender
            })
            .collect();
        Committer {
            lanes: Arc::new(lanes),
            transactions,
        }
    }

    /// Store transactions that committed events (for /metrics).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Appends one tenant's batch in the next group of its lane; answers after the
    /// commit.
    pub async fn append(
        &self,
        tenant: TenantId,
        head: ChainHead,
        events: Vec<(Event, Vec<u8>)>,
    ) -> Result<ChainHead, AppendError> {
        let lane = {
            use std::hash::BuildHasher;
            // A fixed hasher: the same tenant always takes the same lane.
            let hash = std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default()
                .hash_one(tenant.as_str());
            (hash % self.lanes.len() as u64) as usize
        };
        let (reply, answer) = oneshot::channel();
        let interrupted = || AppendError::Store(ledger_store::StoreError::Interrupted);
        self.lanes[lane]
            .send(((tenant, head, events), reply))
            .await
            .map_err(|_| interrupted())?;
        answer.await.map_err(|_| interrupted())?
    }
}

/// One lane: every batch waiting (up to [`COMMIT_GROUP_MAX`]) in one store call.
async fn commit_lane(
    store: Store,
    mut receiver: mpsc::Receiver<CommitJob>,
    transactions: Arc<std::sync::atomic::AtomicU64>,
) {
    while let Some(first) = receiver.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < COMMIT_GROUP_MAX {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (batches, replies): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
        match store.append_many(batches).await {
            Ok(results) => {
                transactions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                tracing::error!(error = %error, "group commit failed");
                for reply in replies {
                    let _ = reply.send(Err(AppendError::Store(
                        ledger_store::StoreError::Interrupted,
                    )));
                }
            }
        }
    }
}
