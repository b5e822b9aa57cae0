//! The embedded store's WAL, copied back into the database file by a task of its own
//! (see [`ledger_store::SqliteStore::checkpoint_wal`]), so that commits do not wait for it.

use std::sync::Arc;

use ledger_store::sqlite::WAL_CHECKPOINT_EVERY;
use ledger_store::SqliteStore;

use crate::metrics::Metrics;

/// Checkpoints the WAL every [`WAL_CHECKPOINT_EVERY`] for as long as the server runs,
/// starting the log over once it holds `reset_frames` frames. A
/// failed checkpoint is logged (without detail beyond the store's error kind) and tried
/// again on the next tick; the autocheckpoint remains the backstop.
pub async fn run(store: SqliteStore, reset_frames: i64, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(WAL_CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.checkpoint_wal(reset_frames).await {
            Ok(done) if done.finished => metrics.wal_checkpoint_finished(),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "WAL checkpoint failed"),
        }
    }
}
