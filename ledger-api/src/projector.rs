//! The projector: keeps every tenant's persisted projections (balances, the payouts view,
//! the audit view) current, and lets reads wait until they reflect a seq.
//!
//! `serve` starts it ([`Projector::start`]). One task per tenant repeats the store's
//! projector step (the next page of events after the cursor, folded, rows and cursor
//! written in one transaction with a compare-and-set on the cursor) until it is caught
//! up — the steps that tenants ask for at the same moment are taken together, in one
//! transaction ([`Store::project_many`]), so that many busy tenants cost few commits — then sleeps until this process's writer commits for
//! the tenant ([`Writers::watch`]), a read asks for a seq not yet reflected, or
//! [`POLL`] passes (another process sharing the database may have committed). A lost
//! compare-and-set means another process projected first: the step is simply taken
//! again from the cursor it left. A supervisor finds new tenants every
//! [`TENANTS_POLL`].
//!
//! Reads answer from the tables, with the cursor read in the same snapshot, and only
//! once it reaches the seq they need ([`Projector::read_at_least`]): bounded waiting,
//! then `503` with Retry-After rather than stale data.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger_core::ids::TenantId;
use ledger_store::{ProjectStep, Reflected, Store, StoreError};
use tokio::sync::{watch, Notify};

use crate::error::ApiError;
use crate::writer::Writers;

/// Events folded per projector transaction.
pub const PAGE_EVENTS: u32 = 1000;
/// How often an idle tenant's projector looks for other processes' commits.
pub const POLL: Duration = Duration::from_secs(1);
/// How often the supervisor looks for tenants it has no projector for.
pub const TENANTS_POLL: Duration = Duration::from_secs(5);
/// Pause after a store failure before the projector tries again.
const RETRY: Duration = Duration::from_secs(1);
/// The longest a waiting read sleeps between two looks at the store.
const READ_POLL: Duration = Duration::from_millis(50);
/// Most tenants stepped in one transaction.
pub const STEP_GROUP_MAX: usize = 128;
/// The shortest time between two grouped steps: under a stream of commits, tenants that
/// need a step gather for this long, so that the projector's commits (and, on SQLite,
/// its turns at the one write lock) stay few beside the writers'. A read that waits for
/// its own write waits at most about this long more ([`STEP_INTERVAL_MAX`] when many
/// tenants are busy). (10 ms gave 1 500 commands/s over
/// 100 tenants on SQLite where 100 ms gives 2 000-2 700: docs/PERFORMANCE.md.)
pub const STEP_INTERVAL_MIN: Duration = Duration::from_millis(100);
/// The longest pause after a group, reached once it held [`STEP_GROUP_WIDE`] tenants.
/// A group's commit costs about one set of pages per tenant (each tenant's last leaves
/// of the payouts, audit and balances tables and their indexes) whatever its rows, so
/// with many busy tenants a longer gathering puts more rows on each page written: 100
/// tenants on SQLite, 250 ms against 100 ms, +6 to +35 % commands/s with less WAL per
/// command (docs/PERFORMANCE.md). One busy tenant keeps about the 100 ms.
pub const STEP_INTERVAL_MAX: Duration = Duration::from_millis(250);
/// Tenants in a group from which the pause after it is [`STEP_INTERVAL_MAX`].
pub const STEP_GROUP_WIDE: usize = 64;

/// The pause after a group of `tenants`: from [`STEP_INTERVAL_MIN`] for one tenant,
/// growing in proportion, to [`STEP_INTERVAL_MAX`] from [`STEP_GROUP_WIDE`] tenants on.
pub fn step_interval(tenants: usize) -> Duration {
    let wide = tenants.clamp(1, STEP_GROUP_WIDE) - 1;
    let span = STEP_INTERVAL_MAX - STEP_INTERVAL_MIN;
    STEP_INTERVAL_MIN + span * wide as u32 / (STEP_GROUP_WIDE as u32 - 1)
}

type StepJob = (
    TenantId,
    tokio::sync::oneshot::Sender<Result<ProjectStep, StoreError>>,
);

/// Takes the steps every tenant's projector asks for and runs all those waiting at that
/// moment in ONE transaction ([`Store::project_many`]), at most one group at a time.
async fn step_groups(store: Store, mut jobs: tokio::sync::mpsc::Receiver<StepJob>) {
    while let Some(first) = jobs.recv().await {
        let started = tokio::time::Instant::now();
        let mut group = vec![first];
        while group.len() < STEP_GROUP_MAX {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let pause = step_interval(group.len());
        let (tenants, replies): (Vec<TenantId>, Vec<_>) = group.into_iter().unzip();
        match store.project_many(&tenants, PAGE_EVENTS).await {
            Ok(steps) => {
                for (reply, step) in replies.into_iter().zip(steps) {
                    let _ = reply.send(Ok(step));
                }
            }
            Err(error) => {
                let text = error.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Interrupted));
                }
                tracing::warn!(error = %text, "projector: grouped step failed");
            }
        }
        tokio::time::sleep_until(started + pause).await;
    }
}

/// One tenant's projector, as the readers see it.
#[derive(Clone)]
struct Handle {
    /// Wakes the projector (a read is waiting).
    nudge: Arc<Notify>,
    /// The cursor the projector last wrote or found.
    projected: watch::Receiver<u64>,
}

struct Inner {
    store: Store,
    writers: Writers,
    started: AtomicBool,
    tenants: Mutex<HashMap<TenantId, Handle>>,
    steps: tokio::sync::mpsc::Sender<StepJob>,
    step_jobs: Mutex<Option<tokio::sync::mpsc::Receiver<StepJob>>>,
}

/// The projector of this process.
#[derive(Clone)]
pub struct Projector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").finish_non_exhaustive()
    }
}

impl Projector {
    /// A projector over `store`, woken by `writers`' commits; idle until started.
    pub fn new(store: Store, writers: Writers) -> Self {
        let (steps, step_jobs) = tokio::sync::mpsc::channel(STEP_GROUP_MAX * 4);
        Self {
            inner: Arc::new(Inner {
                store,
                writers,
                started: AtomicBool::new(false),
                tenants: Mutex::new(HashMap::new()),
                steps,
                step_jobs: Mutex::new(Some(step_jobs)),
            }),
        }
    }

    /// Starts the supervisor, which starts a projector for every tenant (and for new
    /// ones as they appear).
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let step_jobs = match self.inner.step_jobs.lock() {
            Ok(mut jobs) => jobs.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(step_jobs) = step_jobs {
            tokio::spawn(step_groups(self.inner.store.clone(), step_jobs));
        }
        let projector = self.clone();
        tokio::spawn(async move {
            loop {
                match projector.inner.store.indexed_tenants().await {
                    Ok(tenants) => {
                        for tenant in tenants {
                            projector.handle(&tenant);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "projector: cannot list tenants");
                    }
                }
                tokio::time::sleep(TENANTS_POLL).await;
            }
        });
    }

    /// The tenant's projector, started on first use (once the projector is started).
    fn handle(&self, tenant: &TenantId) -> Option<Handle> {
        if !self.inner.started.load(Ordering::SeqCst) {
            return None;
        }
        let mut tenants = match self.inner.tenants.lock() {
            Ok(tenants) => tenants,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(handle) = tenants.get(tenant) {
            return Some(handle.clone());
        }
        let (sender, projected) = watch::channel(0);
        let handle = Handle {
            nudge: Arc::new(Notify::new()),
            projected,
        };
        tokio::spawn(run_tenant(
            self.inner.steps.clone(),
            tenant.clone(),
            self.inner.writers.watch(tenant),
            Arc::clone(&handle.nudge),
            sender,
        ));
        tenants.insert(tenant.clone(), handle.clone());
        Some(handle)
    }

    /// Runs `read` until the projection it answers from reflects at least `min_seq`,
    /// waking the tenant's projector and waiting at most `wait`; then
    /// [`ApiError::ProjectionBehind`].
    pub async fn read_at_least<T, F, Fut>(
        &self,
        tenant: &TenantId,
        min_seq: u64,
        wait: Duration,
        mut read: F,
    ) -> Result<Reflected<T>, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Reflected<T>, StoreError>>,
    {
        let deadline = Instant::now() + wait;
        let handle = self.handle(tenant);
        let mut projected = handle.as_ref().map(|h| h.projected.clone());
        loop {
            let answer = read().await?;
            if answer.seq >= min_seq {
                return Ok(answer);
            }
            if let Some(handle) = &handle {
                handle.nudge.notify_one();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::ProjectionBehind {
                    reflected: answer.seq,
                });
            }
            // This process's projector moving wakes us at once; another process's (on a
            // shared database) is seen at the next look.
            let pause = left.min(READ_POLL);
            match projected.as_mut() {
                Some(receiver) => {
                    if let Ok(Err(_closed)) = tokio::time::timeout(pause, receiver.changed()).await
                    {
                        projected = None;
                    }
                }
                None => tokio::time::sleep(pause).await,
            }
        }
    }
}

/// Waits for the writer's next commit; forever once the writer is gone.
async fn commit(commits: &mut watch::Receiver<u64>) {
    if commits.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn run_tenant(
    steps: tokio::sync::mpsc::Sender<StepJob>,
    tenant: TenantId,
    mut commits: watch::Receiver<u64>,
    nudge: Arc<Notify>,
    projected: watch::Sender<u64>,
) {
    loop {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if steps.send((tenant.clone(), reply)).await.is_err() {
            return; // the projector is gone
        }
        let Ok(step) = answer.await else {
            return;
        };
        match step {
            Ok(ProjectStep::Advanced { to, .. }) => {
                projected.send_replace(to);
                continue;
            }
            Ok(ProjectStep::Lost) => {
                tracing::debug!(tenant = %tenant, "projector: another process projected first");
                continue;
            }
            Ok(ProjectStep::CaughtUp { seq }) => {
                projected.send_if_modified(|known| {
                    let moved = *known != seq;
                    *known = seq;
                    moved
                });
            }
            Err(error) => {
                tracing::warn!(tenant = %tenant, error = %error, "projector: step failed; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        }
        tokio::select! {
            () = commit(&mut commits) => {}
            () = nudge.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_after_a_group_grows_with_its_tenants_between_the_bounds() {
        assert_eq!(step_interval(0), STEP_INTERVAL_MIN);
        assert_eq!(step_interval(1), STEP_INTERVAL_MIN);
        assert_eq!(step_interval(STEP_GROUP_WIDE), STEP_INTERVAL_MAX);
        assert_eq!(step_interval(STEP_GROUP_MAX), STEP_INTERVAL_MAX);
        let mut last = Duration::ZERO;
        for tenants in 1..=STEP_GROUP_MAX {
            let pause = step_interval(tenants);
            assert!(pause >= last, "{tenants} tenants: {pause:?} after {last:?}");
            assert!((STEP_INTERVAL_MIN..=STEP_INTERVAL_MAX).contains(&pause));
            last = pause;
        }
        assert!(step_interval(STEP_GROUP_WIDE / 2) > STEP_INTERVAL_MIN);
        assert!(step_interval(STEP_GROUP_WIDE / 2) < STEP_INTERVAL_MAX);
    }
}
