//! One writer per tenant, with group commit (DESIGN section 6).
//!
//! Each tenant's commands queue to one task that holds the tenant's state in memory. It
//! takes every command waiting (up to [`GROUP_MAX`]), decides them one after another
//! with ledger-core against the state (each seeing the events of those before it),
//! seals the events, appends them all in ONE transaction, and only then answers each
//! caller. A lost race with another process (the store's typed conflict) reloads the
//! state and decides the group again; any other store failure reloads and answers 503,
//! so the memory never holds an event the store does not. Denied commands that are
//! evidence are appended as `command.rejected` in the same transaction, and their
//! callers get the denial after the commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use ledger_core::checkpoint::Checkpoint;
use ledger_core::command::{Command, Context, Enforcement, Rejection};
use ledger_core::decide::{decide, decide_batch, rejection_event};
use ledger_core::event::{ChainHead, Event, EventBody, ExtraData, REQUEST_ID_FIELD};
use ledger_core::ids::{EventId, KeyId, PrincipalId, TenantId};
use ledger_core::policy::Permission;
use ledger_core::proof::DirectCheck;
use ledger_core::state::TenantState;
use ledger_store::{AppendError, Store, PAGE_LIMIT_MAX};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::ApiError;
use crate::keys::Keys;
use crate::util;

mod committer;
mod load;

use committer::QUEUE;
pub use committer::{Committer, POSTGRES_COMMIT_LANES};
pub use load::{load_state, save_snapshot, IDLE_EVICTION, SNAPSHOT_EVERY_EVENTS};

/// Most commands decided and committed together.
pub const GROUP_MAX: usize = 512;
/// A checkpoint after this many events...
pub const CHECKPOINT_EVERY_EVENTS: u64 = 1000;
/// ...or after this long with uncheckpointed events.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);
/// Conflicts retried before answering 503.
const CONFLICT_RETRIES: usize = 8;

/// What a caller builds its answer from, once committed: the state after the group and
/// the command's own events.
pub type View = Box<dyn FnOnce(&TenantState, &[Event]) -> serde_json::Value + Send + Sync>;

/// Looks at the state just before a submission is decided (after the submissions
/// decided before it in the same group): what a closing command's answer needs of the
/// payout it closes, which the state keeps only while the payout is open.
pub type Peek = Box<dyn FnMut(&TenantState) + Send + Sync>;

/// One command (or an all-or-nothing batch) for the writer.
pub struct Submission {
    /// Who.
    pub actor: PrincipalId,
    /// The API key's scopes, narrowing the roles.
    pub scopes: Option<Vec<Permission>>,
    /// One command, or a batch decided all or nothing.
    pub commands: Vec<Command>,
    /// A denial the shell already made (a wrong or locked TOTP code): nothing is decided,
    /// the command is recorded as `command.rejected` and the caller gets the denial.
    pub denied: Option<Rejection>,
    /// Seed for the events' ids (the idempotency key's digest), so a retried request
    /// can be recognised in the chain; random ids without it.
    pub id_seed: Option<[u8; 32]>,
    /// A retry that took over a request which may have committed before its process
    /// died: if the chain already holds its first event, nothing is decided again and
    /// the answer is built from the state.
    pub recheck: bool,
    /// The id of the request, written into the data of each of its events (the
    /// [`REQUEST_ID_FIELD`] extra field) so that the audit view shows it; already
    /// validated by the shell (`http::RequestId`).
    pub request_id: Option<String>,
    /// Builds the answer.
    pub view: View,
    /// Called with the state right before this submission is decided.
    pub peek: Option<Peek>,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission")
            .field("actor", &self.actor)
            .field("commands", &self.commands.len())
            .finish_non_exhaustive()
    }
}

/// The events committed for a submission and the answer built from them.
pub type Outcome = Result<(Vec<Event>, serde_json::Value), ApiError>;

type Read = Box<dyn FnOnce(&TenantState, ChainHead) + Send>;

enum Job {
    Write(Box<Submission>, oneshot::Sender<Outcome>),
    Read(Read),
    Checkpoint(oneshot::Sender<Result<Option<Checkpoint>, ApiError>>),
}

/// The id of the `index`th event of a submission seeded with `seed` (a UUID v8), or a
/// random UUID v4.
pub fn event_id(seed: Option<&[u8; 32]>, index: usize) -> EventId {
    let mut bytes: [u8; 16] = match seed {
        Some(seed) => {
            let digest = Sha256::new()
                .chain_update(seed)
                .chain_update((index as u64).to_be_bytes())
                .finalize();
            let mut out = [0u8; 16];
            out.copy_from_slice(&digest[..16]);
            out[6] = (out[6] & 0x0F) | 0x80;
            out
        }
        None => {
            let mut out = util::random_bytes::<16>();
            out[6] = (out[6] & 0x0F) | 0x40;
            out
        }
    };
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    EventId::from_uuid(uuid::Uuid::from_bytes(bytes))
}

/// The writers of every tenant this process has touched.
#[derive(Clone)]
pub struct Writers {
    store: Store,
    keys: Arc<Keys>,
    queues: Arc<Mutex<HashMap<TenantId, mpsc::Sender<Job>>>>,
    commits: Arc<std::sync::atomic::AtomicU64>,
    heads: Arc<Mutex<HashMap<TenantId, watch::Sender<u64>>>>,
    committer: Committer,
    idle_eviction: Duration,
    any_commit: watch::Sender<u64>,
}

impl std::fmt::Debug for Writers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writers").finish_non_exhaustive()
    }
}

impl Writers {
    /// Writers over `store`, signing checkpoints with `keys`.
    pub fn new(store: Store, keys: Arc<Keys>) -> Self {
        Self {
            store: store.clone(),
            keys,
            queues: Arc::new(Mutex::new(HashMap::new())),
            commits: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            heads: Arc::new(Mutex::new(HashMap::new())),
            committer: Committer::start(store.clone()),
            idle_eviction: IDLE_EVICTION,
            any_commit: watch::channel(0).0,
        }
    }

    /// Changes on every commit of any tenant in this process (for workers that follow
    /// every tenant: they still poll, for other processes' commits).
    pub fn watch_all(&self) -> watch::Receiver<u64> {
        self.any_commit.subscribe()
    }

    /// The same writers, evicting a tenant's state after `idle` without a job.
    pub fn with_idle_eviction(mut self, idle: Duration) -> Self {
        self.idle_eviction = idle;
        self
    }

    /// Tenants whose writer (and state) is in memory now.
    pub fn resident(&self) -> usize {
        let queues = match self.queues.lock() {
            Ok(queues) => queues,
            Err(poisoned) => poisoned.into_inner(),
        };
        queues.values().filter(|sender| !sender.is_closed()).count()
    }

    fn head_sender(&self, tenant: &TenantId) -> watch::Sender<u64> {
        let mut heads = match self.heads.lock() {
            Ok(heads) => heads,
            Err(poisoned) => poisoned.into_inner(),
        };
        heads
            .entry(tenant.clone())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    /// The seq this process last committed for `tenant`, changing on every commit (for
    /// streams that wait for new events).
    pub fn watch(&self, tenant: &TenantId) -> watch::Receiver<u64> {
        self.head_sender(tenant).subscribe()
    }

    /// Tenant batches committed so far (for /metrics).
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Store transactions that committed them (several tenants' batches may share one).
    pub fn transactions(&self) -> u64 {
        self.committer.transactions()
    }

    fn queue(&self, tenant: &TenantId) -> mpsc::Sender<Job> {
        let mut queues = match self.queues.lock() {
            Ok(queues) => queues,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(sender) = queues.get(tenant) {
            if !sender.is_closed() {
                return sender.clone();
            }
        }
        queues.retain(|_, sender| !sender.is_closed());
        let (sender, receiver) = mpsc::channel(QUEUE);
        let task = TenantWriter {
            tenant: tenant.clone(),
            store: self.store.clone(),
            keys: Arc::clone(&self.keys),
            commits: Arc::clone(&self.commits),
            head: self.head_sender(tenant),
            committer: self.committer.clone(),
            idle_eviction: self.idle_eviction,
            any_commit: self.any_commit.clone(),
            loaded: None,
            last_checkpoint_seq: 0,
            last_checkpoint_at: Instant::now(),
            last_snapshot_seq: 0,
        };
        tokio::spawn(task.run(receiver));
        queues.insert(tenant.clone(), sender.clone());
        sender
    }

    /// Queues `job` to the tenant's writer, starting one if there is none (or if the
    /// one found was just evicted: its queue is closed, and the job comes back).
    async fn send_job(&self, tenant: &TenantId, job: Job) -> Result<(), ApiError> {
        let mut job = job;
        for _attempt in 0..2 {
            match self.queue(tenant).send(job).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(returned)) => job = returned,
            }
        }
        Err(ApiError::Unavailable)
    }

    /// Decides and commits `submission` for `tenant`; answers after the commit.
    pub async fn submit(&self, tenant: &TenantId, submission: Submission) -> Outcome {
        let (reply, answer) = oneshot::channel();
        self.send_job(tenant, Job::Write(Box::new(submission), reply))
            .await?;
        answer.await.map_err(|_| ApiError::Unavailable)?
    }

    /// Reads the tenant's committed state.
    pub async fn read<T: Send + 'static>(
        &self,
        tenant: &TenantId,
        read: impl FnOnce(&TenantState, ChainHead) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Read(Box::new(move |state, head| {
            let _ = reply.send(read(state, head));
        }));
        self.send_job(tenant, job).await?;
        answer.await.map_err(|_| ApiError::Unavailable)
    }

    /// Signs and stores a checkpoint of the head now (`None` for an empty chain).
    pub async fn checkpoint(&self, tenant: &TenantId) -> Result<Option<Checkpoint>, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.send_job(tenant, Job::Checkpoint(reply)).await?;
        answer.await.map_err(|_| ApiError::Unavailable)?
    }
}

struct TenantWriter {
    tenant: TenantId,
    store: Store,
    keys: Arc<Keys>,
    commits: Arc<std::sync::atomic::AtomicU64>,
    head: watch::Sender<u64>,
    committer: Committer,
    idle_eviction: Duration,
    any_commit: watch::Sender<u64>,
    loaded: Option<(TenantState, ChainHead)>,
    last_checkpoint_seq: u64,
    last_checkpoint_at: Instant,
    last_snapshot_seq: u64,
}

/// Events sealed with their canonical bytes, ready to append.
type Sealed = Vec<(Event, Vec<u8>)>;

/// What deciding one submission produced, before the commit.
enum Decided {
    /// Events to append; the caller gets them (or the denial, for evidence).
    Events {
        range: std::ops::Range<usize>,
        denial: Option<Rejection>,
    },
    /// Refused without an event (unknown object, bad values).
    Refused(Rejection),
    /// Committed earlier (a retried request).
    Already,
}

impl TenantWriter {
    async fn ensure_loaded(&mut self) -> Result<(), ApiError> {
        if self.loaded.is_none() {
            let (state, head) = load_state(&self.store, &self.tenant).await?;
            let mut after = 0;
            loop {
                let page = self
                    .store
                    .checkpoints(&self.tenant, after, PAGE_LIMIT_MAX)
                    .await?;
                match page.last() {
                    Some(last) => after = last.seq,
                    None => break,
                }
                if page.len() < PAGE_LIMIT_MAX as usize {
                    break;
                }
            }
            self.last_checkpoint_seq = after;
            self.last_snapshot_seq = self.last_snapshot_seq.max(head.seq);
            self.loaded = Some((state, head));
        }
        Ok(())
    }

    async fn run(mut self, mut receiver: mpsc::Receiver<Job>) {
        let mut last_job = Instant::now();
        loop {
            let wait = CHECKPOINT_EVERY.min(self.idle_eviction);
            let job = match tokio::time::timeout(wait, receiver.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(_elapsed) => {
                    if self.checkpoint_due() {
                        let _ = self.write_checkpoint().await;
                    }
                    if last_job.elapsed() >= self.idle_eviction && !receiver.is_closed() {
                        let behind = self
                            .loaded
                            .as_ref()
                            .is_some_and(|(_, head)| head.seq > self.last_checkpoint_seq);
                        if behind {
                            let _ = self.write_checkpoint().await;
                        }
                        // Evicted: no new job can arrive (a sender that finds the queue
                        // closed starts a new writer); the jobs already queued are
                        // still answered before the state is dropped.
                        receiver.close();
                    }
                    continue;
                }
            };
            last_job = Instant::now();
            let mut jobs = vec![job];
            while jobs.len() < GROUP_MAX {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            if let Err(error) = self.ensure_loaded().await {
                for job in jobs {
                    fail(job, &error);
                }
                continue;
            }
            let mut writes = Vec::new();
            for job in jobs {
                match job {
                    Job::Read(read) => {
                        if let Some((state, head)) = &self.loaded {
                            read(state, *head);
                        }
                    }
                    Job::Checkpoint(reply) => {
                        let _ = reply.send(self.write_checkpoint().await);
                    }
                    Job::Write(submission, reply) => writes.push((submission, reply)),
                }
            }
            if !writes.is_empty() {
                self.commit_group(writes).await;
            }
            // After a group too, not only after a quiet period: a tenant that keeps
            // getting commands is checkpointed every period of activity.
            if self.checkpoint_due() {
                let _ = self.write_checkpoint().await;
            }
            self.snapshot_if_due().await;
        }
    }

    /// Saves a snapshot every [`SNAPSHOT_EVERY_EVENTS`]; a failure only costs a longer
    /// load later.
    async fn snapshot_if_due(&mut self) {
        let Some((state, head)) = &self.loaded else {
            return;
        };
        if head.seq.saturating_sub(self.last_snapshot_seq) < SNAPSHOT_EVERY_EVENTS {
            return;
        }
        match save_snapshot(&self.store, state, *head).await {
            Ok(()) => self.last_snapshot_seq = head.seq,
            Err(error) => {
                tracing::warn!(tenant = %self.tenant, error = %error, "snapshot not saved")
            }
        }
    }

    fn checkpoint_due(&self) -> bool {
        let Some((_, head)) = &self.loaded else {
            return false;
        };
        let behind = head.seq.saturating_sub(self.last_checkpoint_seq);
        behind >= CHECKPOINT_EVERY_EVENTS
            || (behind > 0 && self.last_checkpoint_at.elapsed() >= CHECKPOINT_EVERY)
    }

    async fn write_checkpoint(&mut self) -> Result<Option<Checkpoint>, ApiError> {
        self.ensure_loaded().await?;
        let Some((_, head)) = &self.loaded else {
            return Ok(None);
        };
        if head.seq == 0 {
            return Ok(None);
        }
        let (key_id, key): &(KeyId, SigningKey) = &self.keys.checkpoint;
        let checkpoint = Checkpoint::sign(
            self.tenant.clone(),
            head.seq,
            head.hash,
            util::now(),
            key_id.clone(),
            key,
        );
        match self.store.append_checkpoint(&checkpoint).await {
            Ok(()) => {}
            Err(ledger_store::CheckpointStoreError::Duplicate { .. }) => {}
            Err(error) => {
                tracing::error!(tenant = %self.tenant, error = %error, "checkpoint not stored");
                return Err(ApiError::Unavailable);
            }
        }
        self.last_checkpoint_seq = head.seq;
        self.last_checkpoint_at = Instant::now();
        Ok(Some(checkpoint))
    }

    /// Decides every submission against the state in memory (mutating it), seals.
    fn decide_group(
        &mut self,
        writes: &mut [(Box<Submission>, oneshot::Sender<Outcome>)],
        already: &[bool],
    ) -> (Vec<Decided>, Sealed, ChainHead) {
        let signatures = DirectCheck(&self.keys.set);
        let mut decided = Vec::with_capacity(writes.len());
        let mut sealed: Vec<(Event, Vec<u8>)> = Vec::new();
        let Some((state, head)) = self.loaded.as_mut() else {
            return (decided, sealed, ChainHead::GENESIS);
        };
        let start_head = *head;
        let at = util::now();
        for ((submission, _), already) in writes.iter_mut().zip(already) {
            if let Some(peek) = submission.peek.as_mut() {
                peek(state);
            }
            if *already {
                decided.push(Decided::Already);
                continue;
            }
            let ctx = Context {
                tenant: &self.tenant,
                actor: &submission.actor,
                at,
                scopes: submission.scopes.as_deref(),
                signatures: &signatures,
                enforcement: Enforcement::Writer,
            };
            let result = match (&submission.denied, submission.commands.as_slice()) {
                (_, []) => {
                    decided.push(Decided::Refused(Rejection::Validation {
                        detail: "no command".into(),
                    }));
                    continue;
                }
                (Some(denial), [first, ..]) => Err((first, denial.clone())),
                (None, [one]) => decide(state, one, &ctx).map_err(|r| (one, r)),
                (None, many) => decide_batch(state, many, &ctx).map_err(|(i, r)| (&many[i], r)),
            };
            let (bodies, denial): (Vec<EventBody>, Option<Rejection>) = match result {
                Ok(bodies) => (bodies, None),
                Err((command, rejection)) => {
                    if rejection.is_evidence() {
                        (vec![rejection_event(command, &rejection)], Some(rejection))
                    } else {
                        decided.push(Decided::Refused(rejection));
                        continue;
                    }
                }
            };
            let from = sealed.len();
            let mut extra = ExtraData::new();
            if let Some(request_id) = &submission.request_id {
                extra.insert(
                    REQUEST_ID_FIELD.to_owned(),
                    serde_json::Value::from(request_id.as_str()),
                );
            }
            for (index, body) in bodies.into_iter().enumerate() {
                let id = event_id(submission.id_seed.as_ref(), index);
                match Event::seal_with(
                    *head,
                    self.tenant.clone(),
                    id,
                    at,
                    body.sealed_actor(&submission.actor),
                    body,
                    &extra,
                ) {
                    Ok((event, bytes)) => {
                        state.apply_mut(&event);
                        *head = event.head();
                        sealed.push((event, bytes));
                    }
                    Err(error) => {
                        tracing::error!(error = %error, "cannot seal an event");
                    }
                }
            }
            decided.push(Decided::Events {
                range: from..sealed.len(),
                denial,
            });
        }
        (decided, sealed, start_head)
    }

    async fn commit_group(&mut self, mut writes: Vec<(Box<Submission>, oneshot::Sender<Outcome>)>) {
        let mut already = Vec::with_capacity(writes.len());
        for (submission, _) in &writes {
            let committed = match (submission.recheck, submission.id_seed.as_ref()) {
                (true, Some(seed)) => {
                    let first = event_id(Some(seed), 0).uuid();
                    match self.store.event_exists(&self.tenant, first).await {
                        Ok(found) => found,
                        Err(error) => {
                            tracing::error!(error = %error, "event lookup failed");
                            false
                        }
                    }
                }
                (true, None) | (false, _) => false,
            };
            already.push(committed);
        }
        for _attempt in 0..CONFLICT_RETRIES {
            let (decided, sealed, start_head) = self.decide_group(&mut writes, &already);
            let refused = decided.iter().any(|d| matches!(d, Decided::Refused(_)));
            let result = if sealed.is_empty() && refused {
                // Nothing to append, so no conflict would tell that another process
                // moved the chain (several processes share a PostgreSQL database): a
                // refusal decided on a stale state (an object another process created)
                // is answered only once the stored head is the one decided on.
                match self.store.head(&self.tenant).await {
                    Ok(actual) if actual != start_head => Err(AppendError::Conflict { actual }),
                    Ok(_) => Ok(start_head),
                    Err(error) => Err(AppendError::Store(error)),
                }
            } else if sealed.is_empty() {
                Ok(start_head)
            } else {
                self.committer
                    .append(self.tenant.clone(), start_head, sealed.clone())
                    .await
            };
            match result {
                Ok(_) => {
                    if let Some((last, _)) = sealed.last() {
                        self.head.send_replace(last.seq);
                        self.any_commit.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    if !sealed.is_empty() {
                        self.commits
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let Some((state, _)) = &self.loaded else {
                        return;
                    };
                    for ((submission, reply), decided) in writes.drain(..).zip(decided) {
                        let outcome = match decided {
                            Decided::Refused(rejection) => Err(ApiError::Rejected(rejection)),
                            Decided::Already => Ok((Vec::new(), (submission.view)(state, &[]))),
                            Decided::Events {
                                denial: Some(denial),
                                ..
                            } => Err(ApiError::Rejected(denial)),
                            Decided::Events {
                                range,
                                denial: None,
                            } => {
                                let events: Vec<Event> =
                                    sealed[range].iter().map(|(e, _)| e.clone()).collect();
                                let answer = (submission.view)(state, &events);
                                Ok((events, answer))
                            }
                        };
                        let _ = reply.send(outcome);
                    }
                    return;
                }
                Err(AppendError::Conflict { actual }) => {
                    tracing::info!(tenant = %self.tenant, seq = actual.seq, "lost a race: reloading");
                    self.loaded = None;
                    if self.ensure_loaded().await.is_err() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::error!(tenant = %self.tenant, error = %error, "append failed");
                    self.loaded = None;
                    break;
                }
            }
        }
        self.loaded = None;
        for (_, reply) in writes {
            let _ = reply.send(Err(ApiError::Unavailable));
        }
    }
}

fn fail(job: Job, error: &ApiError) {
    let unavailable = || {
        if matches!(error, ApiError::Unavailable) {
            ApiError::Unavailable
        } else {
            ApiError::Internal(error.to_string())
        }
    };
    match job {
        Job::Write(_, reply) => {
            let _ = reply.send(Err(unavailable()));
        }
        Job::Checkpoint(reply) => {
            let _ = reply.send(Err(unavailable()));
        }
        Job::Read(_) => {}
    }
}

#[cfg(test)]
mod tests {
    //! The checkpoint rule "every 1000 events or 60 s of activity per tenant": the period
    //! is the constant [`CHECKPOINT_EVERY`], so it is tested here, on a writer whose last
    //! checkpoint is set back in time rather than by waiting.

    use super::*;

    fn id<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().expect(s)
    }

    fn submission(actor: &str, command: Command) -> Submission {
        Submission {
            actor: id(actor),
            scopes: None,
            commands: vec![command],
            denied: None,
            id_seed: None,
            recheck: false,
            request_id: None,
            view: Box::new(|_, _| serde_json::Value::Null),
            peek: None,
        }
    }

    fn add_user(n: usize) -> Command {
        Command::AddUser {
            user: id(&format!("usr_{n}")),
            name: format!("user {n}"),
        }
    }

    /// An instant `ago` before now.
    fn before_now(ago: Duration) -> Instant {
        Instant::now()
            .checked_sub(ago)
            .expect("a monotonic clock older than the period")
    }

    /// A store holding tenant `acme` (created, one user added), and a writer of it, not
    /// yet loaded, as [`Writers`] would start it.
    async fn setup() -> (tempfile::TempDir, Store, TenantWriter) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::Sqlite(
            ledger_store::SqliteStore::open(&dir.path().join("ledger.db"))
                .await
                .expect("open"),
        );
        store.migrate().await.expect("migrate");
        crate::keys::ensure_keys(&dir.path().join("keys"), util::now()).expect("keys");
        let keys = Arc::new(crate::keys::load(&dir.path().join("keys")).expect("keys"));
        let tenant: TenantId = id("acme");
        let writers = Writers::new(store.clone(), Arc::clone(&keys));
        let create = Command::CreateTenant {
            name: "Acme".into(),
            admin: Some(id("usr_admin")),
        };
        for (actor, command) in [("svc_operator", create), ("usr_admin", add_user(0))] {
            writers
                .submit(&tenant, submission(actor, command))
                .await
                .expect("committed");
        }
        let writer = TenantWriter {
            tenant,
            store: store.clone(),
            keys,
            commits: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            head: watch::channel(0).0,
            committer: Committer::start(store.clone()),
            idle_eviction: IDLE_EVICTION,
            any_commit: watch::channel(0).0,
            loaded: None,
            last_checkpoint_seq: 0,
            last_checkpoint_at: Instant::now(),
            last_snapshot_seq: 0,
        };
        (dir, store, writer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_is_due_after_the_period_or_the_event_count() {
        let (_dir, _store, mut writer) = setup().await;
        assert!(!writer.checkpoint_due(), "nothing loaded, nothing due");
        writer.ensure_loaded().await.expect("load");
        let head = writer.loaded.as_ref().map(|(_, head)| *head).expect("head");
        assert_eq!((head.seq, writer.last_checkpoint_seq), (2, 0));
        let recently = Duration::from_secs(1);
        let long_ago = CHECKPOINT_EVERY + Duration::from_secs(1);
        let head_seq = 2 * CHECKPOINT_EVERY_EVENTS;
        if let Some((_, loaded_head)) = writer.loaded.as_mut() {
            loaded_head.seq = head_seq;
        }
        // (events since the last checkpoint, time since it) -> due
        let cases = [
            (2, long_ago, true),
            (2, recently, false),
            (0, long_ago, false),
            (CHECKPOINT_EVERY_EVENTS, recently, true),
            (CHECKPOINT_EVERY_EVENTS - 1, recently, false),
            (CHECKPOINT_EVERY_EVENTS - 1, long_ago, true),
        ];
        for (behind, ago, due) in cases {
            writer.last_checkpoint_seq = head_seq - behind;
            writer.last_checkpoint_at = before_now(ago);
            assert_eq!(
                writer.checkpoint_due(),
                due,
                "{behind} events, last checkpoint {ago:?} ago"
            );
        }
    }

    /// A tenant that keeps getting commands (so its queue never idles for the period) and
    /// has events older than the period without a checkpoint gets one after its next
    /// group: "60 s of activity", not only 60 s of silence after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_tenant_is_checkpointed_once_the_period_has_passed() {
        let (_dir, store, mut writer) = setup().await;
        writer.ensure_loaded().await.expect("load");
        // The last checkpoint (here: the writer's start) is older than the period.
        writer.last_checkpoint_at = before_now(CHECKPOINT_EVERY + Duration::from_secs(1));
        let tenant = writer.tenant.clone();
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(writer.run(receiver));
        let (reply, answer) = oneshot::channel();
        let job = Job::Write(Box::new(submission("usr_admin", add_user(1))), reply);
        assert!(sender.send(job).await.is_ok(), "the writer stopped");
        let (events, _) = answer.await.expect("answered").expect("committed");
        let head_seq = events.last().map(|e| e.seq).expect("an event");
        // A read is answered on the writer's next turn: after its post-group duties.
        let (reply, answer) = oneshot::channel();
        let read = Job::Read(Box::new(move |_, head: ChainHead| {
            let _ = reply.send(head.seq);
        }));
        assert!(sender.send(read).await.is_ok(), "the writer stopped");
        assert_eq!(answer.await.expect("read"), head_seq);
        let checkpoints = store
            .checkpoints(&tenant, 0, 100)
            .await
            .expect("checkpoints");
        assert_eq!(
            checkpoints.last().map(|c| c.seq),
            Some(head_seq),
            "events older than {CHECKPOINT_EVERY:?} and no checkpoint after the group"
        );
    }
}
