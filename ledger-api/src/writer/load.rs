//! A tenant's state loaded from its latest usable snapshot and the events after it, and
//! snapshots saved.

use std::time::Duration;

use ledger_core::event::ChainHead;
use ledger_core::ids::TenantId;
use ledger_core::state::TenantState;
use ledger_store::{Store, PAGE_LIMIT_MAX};

/// A tenant's writer and state leave memory after this long without a job (DESIGN
/// section 6: loaded lazily, evicted when idle).
pub const IDLE_EVICTION: Duration = Duration::from_secs(600);

/// A snapshot is saved after this many events since the last one.
pub const SNAPSHOT_EVERY_EVENTS: u64 = 50_000;

/// Applies `tenant`'s events after `head` to `state`.
async fn replay_tail(
    store: &Store,
    tenant: &TenantId,
    mut state: TenantState,
    mut head: ChainHead,
) -> Result<(TenantState, ChainHead), ledger_store::StoreError> {
    loop {
        let page = store.load(tenant, head.seq, PAGE_LIMIT_MAX).await?;
        let done = page.len() < PAGE_LIMIT_MAX as usize;
        for (event, _) in &page {
            state.apply_mut(event);
            head = event.head();
        }
        if done {
            return Ok((state, head));
        }
    }
}

/// The latest snapshot, if it restores and the stored event at its seq has its head
/// hash (a snapshot is a cache: one that disagrees with the chain is ignored).
async fn usable_snapshot(
    store: &Store,
    tenant: &TenantId,
) -> Result<Option<(TenantState, ChainHead)>, ledger_store::StoreError> {
    let Some((seq, head, text)) = store.latest_snapshot(tenant).await? else {
        return Ok(None);
    };
    let restored = ledger_core::snapshot::Snapshot::from_json(&text).and_then(|s| s.restore());
    let (state, snapshot_head) = match restored {
        Ok(restored) => restored,
        Err(error) => {
            tracing::warn!(tenant = %tenant, seq, error = %error, "snapshot ignored");
            return Ok(None);
        }
    };
    let stored = store.load(tenant, seq.saturating_sub(1), 1).await?;
    let agrees = snapshot_head.seq == seq
        && snapshot_head.hash == head
        && state.tenant == *tenant
        && stored
            .first()
            .is_some_and(|(event, _)| event.seq == seq && event.hash == head);
    if !agrees {
        tracing::warn!(tenant = %tenant, seq, "snapshot disagrees with the chain: ignored");
        return Ok(None);
    }
    Ok(Some((state, snapshot_head)))
}

/// Loads a tenant's state: the latest snapshot that agrees with the chain plus the
/// events after it, or the whole chain.
pub async fn load_state(
    store: &Store,
    tenant: &TenantId,
) -> Result<(TenantState, ChainHead), ledger_store::StoreError> {
    match usable_snapshot(store, tenant).await? {
        Some((state, head)) => replay_tail(store, tenant, state, head).await,
        None => {
            replay_tail(
                store,
                tenant,
                TenantState::new(tenant.clone()),
                ChainHead::GENESIS,
            )
            .await
        }
    }
}

/// Saves a snapshot of `state` at `head`.
pub async fn save_snapshot(
    store: &Store,
    state: &TenantState,
    head: ChainHead,
) -> Result<(), ledger_store::StoreError> {
    let text = ledger_core::snapshot::Snapshot::of(state, head).to_json();
    store
        .save_snapshot(&state.tenant, head.seq, head.hash, &text)
        .await
}
