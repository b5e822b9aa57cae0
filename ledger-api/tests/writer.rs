//! The per-tenant writer against a real store: group commit answers every caller after
//! the commit, denied commands are recorded, a lost race with another writer reloads and
//! retries, and checkpoints are written every 1000 events. (The other half of the rule,
//! 60 s of activity, is the constant `CHECKPOINT_EVERY`: its tests are the unit tests of
//! src/writer.rs, which can set a writer's last checkpoint back in time.)

use std::sync::Arc;

use ledger_api::keys;
use ledger_api::writer::{Submission, Writers, CHECKPOINT_EVERY_EVENTS};
use ledger_core::command::Command;
use ledger_core::event::EventBody;
use ledger_core::ids::{PrincipalId, TenantId};
use ledger_core::verify::{lines, verify_export, Header, EXPORT_FORMAT};
use ledger_store::Store;

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
        view: Box::new(|_, events| serde_json::json!(events.len())),
        peek: None,
    }
}

async fn setup() -> (tempfile::TempDir, Store, Arc<keys::Keys>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::Sqlite(
        ledger_store::SqliteStore::open(&dir.path().join("ledger.db"))
            .await
            .expect("open"),
    );
    store.migrate().await.expect("migrate");
    keys::ensure_keys(&dir.path().join("keys"), ledger_api::util::now()).expect("keys");
    let keys = Arc::new(keys::load(&dir.path().join("keys")).expect("load keys"));
    (dir, store, keys)
}

async fn create_tenant(writers: &Writers, tenant: &TenantId) {
    writers
        .submit(
            tenant,
            submission(
                "svc_operator",
                Command::CreateTenant {
                    name: "Acme".into(),
                    admin: Some(id("usr_admin")),
                },
            ),
        )
        .await
        .expect("create tenant");
}

fn add_user(n: usize) -> Command {
    Command::AddUser {
        user: id(&format!("usr_{n}")),
        name: format!("user {n}"),
    }
}

async fn export(store: &Store, tenant: &TenantId, keys: &keys::Keys) -> String {
    let head = store.head(tenant).await.expect("head");
    let mut out = vec![lines::header(&Header {
        format: EXPORT_FORMAT.into(),
        v: 1,
        tenant: tenant.clone(),
        from_seq: 1,
        to_seq: head.seq,
        exported_at: ledger_api::util::now(),
    })];
    out.extend(keys.records.iter().map(lines::key));
    for (event, _) in store.load(tenant, 0, 10_000).await.expect("load") {
        out.push(lines::event(&event).expect("line"));
    }
    for checkpoint in store
        .checkpoints(tenant, 0, 10_000)
        .await
        .expect("checkpoints")
    {
        out.push(lines::checkpoint(&checkpoint));
    }
    out.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_all_commit_and_a_checkpoint_follows_every_thousand_events() {
    let (_dir, store, keys) = setup().await;
    let writers = Writers::new(store.clone(), Arc::clone(&keys));
    let tenant: TenantId = id("acme");
    create_tenant(&writers, &tenant).await;
    let count = CHECKPOINT_EVERY_EVENTS as usize + 50;
    let mut tasks = Vec::new();
    for n in 0..count {
        let writers = writers.clone();
        let tenant = tenant.clone();
        tasks.push(tokio::spawn(async move {
            writers
                .submit(&tenant, submission("usr_admin", add_user(n)))
                .await
        }));
    }
    for task in tasks {
        let (events, answer) = task.await.expect("task").expect("committed");
        assert_eq!(events.len(), 1);
        assert_eq!(answer, serde_json::json!(1));
    }
    // Every answer came after its commit: all are in the store now.
    let head = store.head(&tenant).await.expect("head");
    assert_eq!(head.seq, count as u64 + 1);
    assert!(
        writers.commits() < count as u64,
        "group commit: {} transactions for {count} commands",
        writers.commits()
    );
    // The checkpoint is written after the group that crossed 1000 events.
    let checkpoints = store
        .checkpoints(&tenant, 0, 100)
        .await
        .expect("checkpoints");
    assert!(
        checkpoints.iter().any(|c| c.seq >= CHECKPOINT_EVERY_EVENTS),
        "{checkpoints:?}"
    );
    let report = verify_export(
        &export(&store, &tenant, &keys).await,
        Some(keys.set.clone()),
    )
    .expect("usable");
    assert!(report.is_intact(), "{report:?}");
    assert!(report.summary.checkpoints_verified >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_command_is_recorded_and_refused_after_the_commit() {
    let (_dir, store, keys) = setup().await;
    let writers = Writers::new(store.clone(), Arc::clone(&keys));
    let tenant: TenantId = id("acme");
    create_tenant(&writers, &tenant).await;
    // usr_zed was never added: forbidden, and evidence.
    let denied = writers
        .submit(&tenant, submission("usr_zed", add_user(1)))
        .await
        .expect_err("denied");
    assert!(denied.to_string().contains("forbidden"), "{denied}");
    let events = store.load(&tenant, 0, 100).await.expect("load");
    let last = &events.last().expect("events").0;
    assert!(
        matches!(&last.body, EventBody::CommandRejected(r) if r.reason == "forbidden"),
        "{last:?}"
    );
    // A bad value is refused without an event.
    let before = store.head(&tenant).await.expect("head");
    let refused = writers
        .submit(
            &tenant,
            Submission {
                commands: Vec::new(),
                ..submission("usr_admin", add_user(2))
            },
        )
        .await;
    assert!(refused.is_err());
    assert_eq!(store.head(&tenant).await.expect("head"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_of_one_tenant_reload_on_a_lost_race() {
    let (_dir, store, keys) = setup().await;
    // Two writer sets over one store: like two processes on one database.
    let first = Writers::new(store.clone(), Arc::clone(&keys));
    let second = Writers::new(store.clone(), Arc::clone(&keys));
    let tenant: TenantId = id("acme");
    create_tenant(&first, &tenant).await;
    let mut tasks = Vec::new();
    for n in 0..60 {
        let writers = if n % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let tenant = tenant.clone();
        tasks.push(tokio::spawn(async move {
            writers
                .submit(&tenant, submission("usr_admin", add_user(n)))
                .await
                .map(|_| n)
        }));
    }
    for task in tasks {
        task.await
            .expect("task")
            .expect("committed despite the race");
    }
    let events = store.load(&tenant, 0, 1000).await.expect("load");
    assert_eq!(events.len(), 61);
    let admin: PrincipalId = id("usr_admin");
    for n in 0..60 {
        let user: PrincipalId = id(&format!("usr_{n}"));
        let added = events
            .iter()
            .filter(|(e, _)| matches!(&e.body, EventBody::UserAdded(d) if d.user == user))
            .count();
        assert_eq!(added, 1, "{user} once");
    }
    assert!(events.iter().skip(1).all(|(e, _)| e.actor == admin));
    let report = verify_export(
        &export(&store, &tenant, &keys).await,
        Some(keys.set.clone()),
    )
    .expect("usable");
    assert!(report.is_intact(), "{report:?}");
}

/// Loading a tenant takes the latest snapshot that agrees with the chain and replays
/// only the tail; a snapshot that disagrees is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_uses_an_agreeing_snapshot_and_ignores_one_that_disagrees() {
    use ledger_api::writer::{load_state, save_snapshot};
    let (_dir, store, keys) = setup().await;
    let writers = Writers::new(store.clone(), Arc::clone(&keys));
    let tenant: TenantId = id("acme");
    create_tenant(&writers, &tenant).await;
    for n in 0..10 {
        writers
            .submit(&tenant, submission("usr_admin", add_user(n)))
            .await
            .expect("committed");
    }
    let (full, head) = load_state(&store, &tenant).await.expect("load");
    assert_eq!(head.seq, 11);

    // A snapshot at seq 6 that carries a marker a replay could never produce: if the
    // loaded state has it, the load started from the snapshot, not from seq 1.
    let events = store.load(&tenant, 0, 6).await.expect("load");
    let mut at_six = ledger_core::state::TenantState::new(tenant.clone());
    for (event, _) in &events {
        at_six.apply_mut(event);
    }
    let six = store.load(&tenant, 5, 1).await.expect("load")[0].0.head();
    let marker: PrincipalId = id("usr_from_the_snapshot");
    let mut marked = at_six.clone();
    marked.principals.insert(marker.clone(), Default::default());
    save_snapshot(&store, &marked, six).await.expect("save");
    let (loaded, loaded_head) = load_state(&store, &tenant).await.expect("load");
    assert_eq!(loaded_head, head);
    assert!(
        loaded.principals.contains_key(&marker),
        "the snapshot was used"
    );
    for n in 0..10 {
        let user: PrincipalId = id(&format!("usr_{n}"));
        assert!(
            loaded.principals.contains_key(&user),
            "the tail was replayed"
        );
    }

    // A later snapshot whose head is not the stored event's hash: ignored.
    let mut wrong = six;
    wrong.seq = 8;
    save_snapshot(&store, &marked, wrong).await.expect("save");
    let (replayed, _) = load_state(&store, &tenant).await.expect("load");
    assert_eq!(
        replayed, full,
        "a disagreeing snapshot falls back to the whole chain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tenant_is_evicted_and_reloaded_by_its_next_command() {
    let (_dir, store, keys) = setup().await;
    let writers =
        Writers::new(store.clone(), keys).with_idle_eviction(std::time::Duration::from_millis(300));
    let tenant: TenantId = id("acme");
    create_tenant(&writers, &tenant).await;
    writers
        .submit(&tenant, submission("usr_admin", add_user(1)))
        .await
        .expect("add user");
    let head = store.head(&tenant).await.expect("head");
    assert_eq!(writers.resident(), 1);
    let mut waited = 0;
    while writers.resident() > 0 {
        assert!(waited < 100, "the idle writer was never evicted");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    // Evicted with its head checkpointed.
    let checkpoints = store
        .checkpoints(&tenant, 0, 100)
        .await
        .expect("checkpoints");
    assert_eq!(checkpoints.last().map(|c| c.seq), Some(head.seq));
    // The next command starts a writer that loads the chain: the user added before the
    // eviction is known (adding it again is refused), and the chain goes on from the head.
    let again = writers
        .submit(&tenant, submission("usr_admin", add_user(1)))
        .await;
    assert!(again.is_err(), "the reloaded state forgot usr_1: {again:?}");
    writers
        .submit(&tenant, submission("usr_admin", add_user(2)))
        .await
        .expect("add another user");
    assert_eq!(writers.resident(), 1);
    let after = writers
        .read(&tenant, |_, head| head.seq)
        .await
        .expect("read");
    assert!(after > head.seq);
    assert_eq!(store.head(&tenant).await.expect("head").seq, after);
}

/// The request id of a submission is in the data of each of its events (a batch's and a
/// recorded denial's too), and the chain verifies with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_written_into_every_event_of_the_submission() {
    use ledger_core::event::REQUEST_ID_FIELD;
    let (_dir, store, keys) = setup().await;
    let writers = Writers::new(store.clone(), Arc::clone(&keys));
    let tenant: TenantId = id("acme");
    create_tenant(&writers, &tenant).await;
    let (events, _) = writers
        .submit(
            &tenant,
            Submission {
                commands: vec![add_user(1), add_user(2)],
                request_id: Some("req-batch".into()),
                ..submission("usr_admin", add_user(0))
            },
        )
        .await
        .expect("batch");
    assert_eq!(events.len(), 2);
    // A denied command (no role) is recorded with its request id.
    let denied = writers
        .submit(
            &tenant,
            Submission {
                request_id: Some("req-denied".into()),
                ..submission("usr_1", add_user(3))
            },
        )
        .await;
    assert!(denied.is_err());
    let stored = store.load(&tenant, 0, 100).await.expect("load");
    let ids: Vec<Option<String>> = stored
        .iter()
        .map(|(event, _)| event.data_string(REQUEST_ID_FIELD))
        .collect();
    assert_eq!(
        ids,
        [
            None,
            Some("req-batch"),
            Some("req-batch"),
            Some("req-denied")
        ]
        .map(|id| id.map(str::to_owned))
    );
    assert_eq!(stored[3].0.body.kind(), "command.rejected");
    let report = verify_export(
        &export(&store, &tenant, &keys).await,
        Some(keys.set.clone()),
    )
    .expect("usable");
    assert!(report.is_intact(), "{report:?}");
}
