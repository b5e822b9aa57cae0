//! The storage suite, run on both backends (SQLite in a temp dir, PostgreSQL in a fresh
//! database per test), plus the PostgreSQL-only role and row-level-security checks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Backend, TestDb};
use ledger_core::checkpoint::Checkpoint;
use ledger_core::crypto::Hash;
use ledger_core::event::{ChainHead, Event};
use ledger_core::ids::{EventId, TenantId};
use ledger_core::money::{Currency, Money};
use ledger_core::testkit::{standard_tenant, Ledger};
use ledger_core::verify::{lines, verify_export, Header, EXPORT_FORMAT};
use ledger_core::Command;
use ledger_store::{AppendError, CheckpointStoreError, Store, StoreError, PAGE_LIMIT_MAX};

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect(s)
}

/// Events with their exact canonical bytes, as `Event::seal` returns them.
fn with_bytes(events: &[Event]) -> Vec<(Event, Vec<u8>)> {
    events
        .iter()
        .map(|e| (e.clone(), e.canonical_bytes().expect("canonical bytes")))
        .collect()
}

/// A standard tenant, a payout through every gate, a denied attempt kept as evidence,
/// and two checkpoints.
fn sample_chain(tenant: &str, seed: u8) -> Ledger {
    let mut ledger = standard_tenant(tenant, seed, "1000.00");
    ledger.checkpoint();
    let po = "po_1";
    ledger
        .execute(
            "usr_ann",
            Command::RequestPayout {
                payout: id(po),
                account: id("acct_ops"),
                payee: id("pay_lark"),
                money: Money::parse("125.50", Currency::Eur).expect("money"),
                reference: "inv-1".into(),
                metadata: None,
            },
        )
        .expect("request");
    // The requester approving her own payout is denied, and recorded.
    ledger
        .execute_or_record(
            "usr_ann",
            Command::ApprovePayout {
                payout: id(po),
                batch: None,
            },
        )
        .expect_err("four eyes");
    ledger
        .execute(
            "usr_bob",
            Command::ApprovePayout {
                payout: id(po),
                batch: None,
            },
        )
        .expect("approve");
    let proof = ledger.proof("usr_cat", "payout.authorize", po);
    ledger
        .execute(
            "usr_cat",
            Command::AuthorizePayout {
                payout: id(po),
                two_factor: Some(proof),
                batch: None,
            },
        )
        .expect("authorize");
    let proof = ledger.proof("usr_dan", "payout.execute", po);
    ledger
        .execute(
            "usr_dan",
            Command::ExecutePayout {
                payout: id(po),
                rail: Some("SEPA".into()),
                two_factor: Some(proof),
                batch: None,
            },
        )
        .expect("execute");
    let proof = ledger.proof("usr_rex", "payout.release", po);
    ledger
        .execute(
            "usr_rex",
            Command::ReleasePayout {
                payout: id(po),
                two_factor: Some(proof),
                batch: None,
            },
        )
        .expect("release");
    ledger.checkpoint();
    ledger
}

/// A deposit event decided by the core on `ledger`'s state: its body is valid on any
/// later head of the same tenant, so it can be re-sealed on whatever head a writer finds.
fn deposit(ledger: &mut Ledger, amount: &str) -> Event {
    let events = ledger
        .execute(
            "usr_eve",
            Command::Deposit {
                account: id("acct_ops"),
                money: Money::parse(amount, Currency::Eur).expect("money"),
                reference: Some("top-up".into()),
            },
        )
        .expect("deposit");
    events.into_iter().next().expect("one event")
}

/// `template`'s body, actor and time sealed on `head` with a new id.
fn reseal(template: &Event, head: ChainHead, event_id: u128) -> (Event, Vec<u8>) {
    Event::seal(
        head,
        template.tenant.clone(),
        EventId::from_uuid(uuid::Uuid::from_u128(event_id)),
        template.at,
        template.actor.clone(),
        template.body.clone(),
    )
    .expect("seal")
}

/// A chain of `count` deposits from `head`, ids from `first_id`.
fn deposits_after(
    template: &Event,
    head: ChainHead,
    count: usize,
    first_id: u128,
) -> Vec<(Event, Vec<u8>)> {
    let mut head = head;
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let sealed = reseal(template, head, first_id + n as u128);
        head = sealed.0.head();
        out.push(sealed);
    }
    out
}

/// `ledger`'s checkpoint of `head`, signed with its checkpoint key.
fn checkpoint_at(ledger: &Ledger, head: ChainHead) -> Checkpoint {
    Checkpoint::sign(
        ledger.tenant.clone(),
        head.seq,
        head.hash,
        ledger.clock,
        id("ckpt-1"),
        &ledger.checkpoint_key,
    )
}

async fn load_all(store: &Store, tenant: &TenantId) -> Vec<(Event, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map_or(0, |(e, _): &(Event, Vec<u8>)| e.seq);
        let page = store.load(tenant, after, 97).await.expect("load");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The section 4 export of what the store holds, with `ledger`'s public keys.
async fn export_from_store(store: &Store, ledger: &Ledger) -> String {
    let tenant = &ledger.tenant;
    let events = load_all(store, tenant).await;
    let checkpoints = store
        .checkpoints(tenant, 0, PAGE_LIMIT_MAX)
        .await
        .expect("checkpoints");
    let header = Header {
        format: EXPORT_FORMAT.to_owned(),
        v: 1,
        tenant: tenant.clone(),
        from_seq: 1,
        to_seq: events.last().map_or(0, |(e, _)| e.seq),
        exported_at: ledger.clock,
    };
    let mut out = vec![lines::header(&header)];
    out.extend(ledger.keys.iter().map(lines::key));
    for (event, _) in &events {
        out.push(lines::event(event).expect("event line"));
    }
    out.extend(checkpoints.iter().map(lines::checkpoint));
    let mut text = out.join("\n");
    text.push('\n');
    text
}

async fn assert_export_intact(store: &Store, ledger: &Ledger) {
    let export = export_from_store(store, ledger).await;
    let report = verify_export(&export, None).expect("export is usable");
    assert!(report.is_intact(), "export does not verify: {report:?}");
}

// ---------------------------------------------------------------------------------------
// The suite, on both backends.

on_both_backends!(
    append_and_load_round_trip_the_exact_bytes,
    a_stale_head_is_a_conflict_and_writes_nothing,
    malformed_batches_are_refused_before_writing,
    concurrent_appenders_on_two_pools_make_one_chain,
    update_and_delete_are_refused_even_for_the_owner,
    a_failed_or_dropped_batch_leaves_nothing,
    tenants_see_only_their_own_chain,
    checkpoints_must_match_the_chain,
    a_row_edited_behind_the_store_is_reported_at_its_seq,
);

async fn append_and_load_round_trip_the_exact_bytes(db: Arc<TestDb>) {
    let ledger = sample_chain("acme", 1);
    let tenant = &ledger.tenant;
    let all = with_bytes(&ledger.events);
    assert!(all.len() > 20, "a chain with some variety");
    assert_eq!(
        db.store.head(tenant).await.expect("head"),
        ChainHead::GENESIS
    );
    // Batches of 1, 5 and the rest.
    let mut head = ChainHead::GENESIS;
    for batch in [&all[..1], &all[1..6], &all[6..]] {
        head = db.store.append(tenant, head, batch).await.expect("append");
        assert_eq!(head, batch.last().expect("non-empty").0.head());
    }
    assert_eq!(head, ledger.head);
    assert_eq!(db.store.head(tenant).await.expect("head"), ledger.head);
    for checkpoint in &ledger.checkpoints {
        db.store
            .append_checkpoint(checkpoint)
            .await
            .expect("checkpoint");
    }

    let loaded = load_all(&db.store, tenant).await;
    assert_eq!(loaded.len(), all.len());
    for ((event, bytes), (original, original_bytes)) in loaded.iter().zip(&all) {
        assert_eq!(
            bytes, original_bytes,
            "stored bytes differ at seq {}",
            original.seq
        );
        assert_eq!(
            event, original,
            "parsed event differs at seq {}",
            original.seq
        );
    }
    // Pages start after the cursor and respect the limit.
    let page = db.store.load(tenant, 10, 3).await.expect("page");
    let seqs: Vec<u64> = page.iter().map(|(e, _)| e.seq).collect();
    assert_eq!(seqs, vec![11, 12, 13]);
    assert!(db
        .store
        .load(tenant, ledger.head.seq, 10)
        .await
        .expect("tail")
        .is_empty());
    assert!(matches!(
        db.store.load(tenant, 0, PAGE_LIMIT_MAX + 1).await,
        Err(StoreError::Limit { .. })
    ));

    let checkpoints = db
        .store
        .checkpoints(tenant, 0, PAGE_LIMIT_MAX)
        .await
        .expect("checkpoints");
    assert_eq!(checkpoints, ledger.checkpoints);
    assert_export_intact(&db.store, &ledger).await;
}

async fn a_stale_head_is_a_conflict_and_writes_nothing(db: Arc<TestDb>) {
    let mut ledger = sample_chain("acme", 2);
    let tenant = ledger.tenant.clone();
    let all = with_bytes(&ledger.events);
    let head = db
        .store
        .append(&tenant, ChainHead::GENESIS, &all)
        .await
        .expect("append");

    // The same batch again, sealed on genesis: the head has moved.
    match db.store.append(&tenant, ChainHead::GENESIS, &all).await {
        Err(AppendError::Conflict { actual }) => assert_eq!(actual, head),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A batch sealed on an older head.
    let template = deposit(&mut ledger, "1.00");
    let older = all[all.len() - 2].0.head();
    let stale = deposits_after(&template, older, 3, 1 << 100);
    match db.store.append(&tenant, older, &stale).await {
        Err(AppendError::Conflict { actual }) => assert_eq!(actual, head),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Right seq, wrong hash: a fork attempt.
    let forked = ChainHead {
        seq: head.seq,
        hash: Hash::of(b"fork", b""),
    };
    let fork = deposits_after(&template, forked, 2, 2 << 100);
    match db.store.append(&tenant, forked, &fork).await {
        Err(AppendError::Conflict { actual }) => assert_eq!(actual, head),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(db.store.head(&tenant).await.expect("head"), head);
    assert_eq!(load_all(&db.store, &tenant).await.len(), all.len());

    // Retrying on the actual head succeeds.
    let retry = deposits_after(&template, head, 2, 3 << 100);
    let new_head = db.store.append(&tenant, head, &retry).await.expect("retry");
    assert_eq!(new_head.seq, head.seq + 2);

    // A tenant without a chain, and a batch sealed on a head it never had.
    let other = sample_chain("initech", 3);
    let other_rows = with_bytes(&other.events);
    let assumed = other.events[0].head();
    match db
        .store
        .append(&other.tenant, assumed, &other_rows[1..])
        .await
    {
        Err(AppendError::Conflict { actual }) => assert_eq!(actual, ChainHead::GENESIS),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        db.store.head(&other.tenant).await.expect("head"),
        ChainHead::GENESIS
    );
}

async fn malformed_batches_are_refused_before_writing(db: Arc<TestDb>) {
    let mut ledger = standard_tenant("acme", 5, "1000.00");
    let mut other = standard_tenant("beta", 6, "1000.00");
    let tenant = ledger.tenant.clone();
    let all = with_bytes(&ledger.events);
    let head = db
        .store
        .append(&tenant, ChainHead::GENESIS, &all)
        .await
        .expect("append");
    let template = deposit(&mut ledger, "1.00");

    let check = |result: Result<ChainHead, AppendError>, index: usize| match result {
        Err(AppendError::InvalidBatch { index: at, .. }) => assert_eq!(at, index),
        other => panic!("expected an invalid batch at {index}, got {other:?}"),
    };
    check(db.store.append(&tenant, head, &[]).await, 0);
    // Another tenant's event.
    let foreign = deposit(&mut other, "1.00");
    let foreign = reseal(&foreign, head, 10);
    check(db.store.append(&tenant, head, &[foreign]).await, 0);
    // A gap in seq.
    let mut gap = deposits_after(&template, head, 3, 20);
    gap.remove(1);
    check(db.store.append(&tenant, head, &gap).await, 1);
    // Bytes that are not the event's.
    let mut tampered = deposits_after(&template, head, 2, 30);
    tampered[1].1.push(b' ');
    check(db.store.append(&tenant, head, &tampered).await, 1);
    // An envelope field changed after sealing: the columns would disagree with the bytes.
    let mut edited = deposits_after(&template, head, 2, 40);
    edited[0].0.actor = id("usr_admin");
    check(db.store.append(&tenant, head, &edited).await, 0);
    assert_eq!(db.store.head(&tenant).await.expect("head"), head);
}

async fn concurrent_appenders_on_two_pools_make_one_chain(db: Arc<TestDb>) {
    const TASKS: u128 = 8;
    const APPENDS_PER_TASK: u128 = 25;
    let mut ledger = standard_tenant("acme", 3, "1000.00");
    let tenant = ledger.tenant.clone();
    let base = with_bytes(&ledger.events);
    db.store
        .append(&tenant, ChainHead::GENESIS, &base)
        .await
        .expect("append base");
    let template = deposit(&mut ledger, "1.00");
    let stores = [db.store.clone(), db.another_store().await];

    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = stores[(task % 2) as usize].clone();
        let tenant = tenant.clone();
        let template = template.clone();
        tasks.spawn(async move {
            let mut acknowledged = Vec::new();
            let mut conflicts = 0u32;
            for n in 0..APPENDS_PER_TASK {
                let event_id = (0xC0DE_u128 << 96) | (task << 32) | n;
                let mut head = store.head(&tenant).await.expect("head");
                loop {
                    let sealed = reseal(&template, head, event_id);
                    let event = sealed.0.clone();
                    match store.append(&tenant, head, &[sealed]).await {
                        Ok(new_head) => {
                            assert_eq!(new_head, event.head());
                            acknowledged.push(event);
                            break;
                        }
                        Err(AppendError::Conflict { actual }) => {
                            conflicts += 1;
                            assert!(conflicts < 100_000, "retries are bounded");
                            assert!(actual.seq > head.seq, "a conflict means the head moved on");
                            head = actual;
                        }
                        Err(other) => panic!("append failed: {other}"),
                    }
                }
            }
            (acknowledged, conflicts)
        });
    }
    let mut acknowledged = Vec::new();
    let mut conflicts = 0;
    while let Some(joined) = tasks.join_next().await {
        let (events, task_conflicts) = joined.expect("appender task");
        acknowledged.extend(events);
        conflicts += task_conflicts;
    }
    let elapsed = started.elapsed();
    let total = base.len() + (TASKS * APPENDS_PER_TASK) as usize;
    eprintln!(
        "{:?}: {} concurrent appends in {elapsed:?}, {conflicts} conflicts retried",
        db.backend,
        acknowledged.len()
    );

    let loaded = load_all(&db.store, &tenant).await;
    assert_eq!(loaded.len(), total);
    for (index, (event, _)) in loaded.iter().enumerate() {
        assert_eq!(event.seq, index as u64 + 1, "contiguous seqs");
    }
    assert_eq!(acknowledged.len(), (TASKS * APPENDS_PER_TASK) as usize);
    for event in &acknowledged {
        let (stored, _) = &loaded[(event.seq - 1) as usize];
        assert_eq!(
            stored, event,
            "acknowledged event at seq {} is stored",
            event.seq
        );
    }
    assert_eq!(
        db.store.head(&tenant).await.expect("head"),
        loaded[total - 1].0.head()
    );
    assert_export_intact(&db.store, &ledger).await;
}

async fn update_and_delete_are_refused_even_for_the_owner(db: Arc<TestDb>) {
    let ledger = sample_chain("acme", 7);
    let tenant = &ledger.tenant;
    let all = with_bytes(&ledger.events);
    db.store
        .append(tenant, ChainHead::GENESIS, &all)
        .await
        .expect("append");
    for checkpoint in &ledger.checkpoints {
        db.store
            .append_checkpoint(checkpoint)
            .await
            .expect("checkpoint");
    }
    if db.backend == Backend::Postgres {
        // The connection is a superuser and owns the tables: triggers still fire.
        assert_eq!(
            db.owner_count(
                "SELECT count(*) FROM pg_roles WHERE rolname = current_user AND rolsuper"
            )
            .await,
            1
        );
        assert_eq!(
            db.owner_count(
                "SELECT count(*) FROM pg_tables WHERE tablename IN ('events', 'checkpoints') \
                 AND tableowner = current_user"
            )
            .await,
            2
        );
    }
    let mut statements = vec![
        "UPDATE events SET kind = 'payout.stolen'",
        "UPDATE events SET canonical = canonical WHERE seq = 1",
        "DELETE FROM events",
        "DELETE FROM events WHERE seq = 3",
        "UPDATE checkpoints SET key_id = 'ckpt-forged'",
        "DELETE FROM checkpoints",
    ];
    if db.backend == Backend::Postgres {
        statements.extend(["TRUNCATE checkpoints", "TRUNCATE events, checkpoints"]);
    }
    for statement in statements {
        let error = db.owner_execute(statement).await.expect_err(statement);
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: refused for another reason: {error}"
        );
    }
    let loaded = load_all(&db.store, tenant).await;
    assert_eq!(loaded, all);
    assert_eq!(
        db.store
            .checkpoints(tenant, 0, 100)
            .await
            .expect("checkpoints"),
        ledger.checkpoints
    );
}

async fn a_failed_or_dropped_batch_leaves_nothing(db: Arc<TestDb>) {
    let mut ledger = standard_tenant("acme", 4, "1000.00");
    let tenant = ledger.tenant.clone();
    let base = with_bytes(&ledger.events);
    let mut head = db
        .store
        .append(&tenant, ChainHead::GENESIS, &base)
        .await
        .expect("append");
    let template = deposit(&mut ledger, "1.00");

    // A long batch whose last event reuses a stored id: the database refuses it after
    // the first rows went in (SQLite: several INSERT statements), and the whole
    // transaction is rolled back.
    let mut batch = deposits_after(&template, head, 1_199, 1 << 90);
    let last_head = batch.last().expect("non-empty").0.head();
    let duplicate = Event::seal(
        last_head,
        tenant.clone(),
        base[0].0.id,
        template.at,
        template.actor.clone(),
        template.body.clone(),
    )
    .expect("seal");
    batch.push(duplicate);
    match db.store.append(&tenant, head, &batch).await {
        Err(AppendError::DuplicateEventId) => {}
        other => panic!("expected a duplicate id, got {other:?}"),
    }
    assert_eq!(db.store.head(&tenant).await.expect("head"), head);
    assert_eq!(load_all(&db.store, &tenant).await.len(), base.len());

    // A writer whose transaction dies (its connection is gone) after inserting part of
    // a batch: nothing of it is visible, and the write lock dies with it, so the next
    // append goes through.
    let batch = deposits_after(&template, head, 10, 3 << 90);
    writer_dies_mid_batch(&db, &tenant, &batch[..5]).await;
    assert_eq!(db.store.head(&tenant).await.expect("head"), head);
    assert_eq!(load_all(&db.store, &tenant).await.len() as u64, head.seq);
    head = tokio::time::timeout(
        Duration::from_secs(30),
        db.store.append(&tenant, head, &batch),
    )
    .await
    .expect("the lock died with the writer")
    .expect("append after a dead writer");

    // Appends whose caller goes away at various points: the store runs each to its end
    // on a task of its own, so the head is only ever the old one or the whole batch, and
    // it settles on the whole batch.
    for (round, delay_micros) in [0u64, 100, 500, 2_000, 10_000].into_iter().enumerate() {
        let batch = deposits_after(&template, head, 1_000, (4 << 90) + ((round as u128) << 32));
        let full = batch.last().expect("non-empty").0.head();
        let outcome = tokio::time::timeout(
            Duration::from_micros(delay_micros),
            db.store.append(&tenant, head, &batch),
        )
        .await;
        if let Ok(result) = outcome {
            assert_eq!(result.expect("append"), full);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let now = db.store.head(&tenant).await.expect("head");
            assert!(
                now == head || now == full,
                "a dropped append left a partial batch: head {now:?}"
            );
            if now == full {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the dropped append never settled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(load_all(&db.store, &tenant).await.len() as u64, full.seq);
        head = full;
    }
    assert_export_intact(&db.store, &ledger_with_keys_only(&ledger)).await;
}

/// Opens a connection of its own, starts an append transaction as the store does, inserts
/// `rows`, and dies without committing (SQLite: the connection is closed; PostgreSQL:
/// the backend is terminated).
async fn writer_dies_mid_batch(db: &TestDb, tenant: &TenantId, rows: &[(Event, Vec<u8>)]) {
    use sqlx::{Connection, Executor};
    match &db.store {
        Store::Sqlite(store) => {
            let mut conn = store.pool().acquire().await.expect("acquire").detach();
            conn.execute("BEGIN IMMEDIATE").await.expect("begin");
            for (event, bytes) in rows {
                sqlx::query(
                    "INSERT INTO events (tenant_id, seq, id, at, actor, kind, prev, hash, canonical) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(tenant.as_str())
                .bind(event.seq as i64)
                .bind(event.id.uuid().hyphenated().to_string())
                .bind(event.at.to_string())
                .bind(event.actor.as_str())
                .bind(event.body.kind())
                .bind(event.prev.as_bytes().as_slice())
                .bind(event.hash.as_bytes().as_slice())
                .bind(bytes.as_slice())
                .execute(&mut conn)
                .await
                .expect("insert");
            }
            let inside: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(&mut conn)
                .await
                .expect("count");
            assert!(inside as usize >= rows.len(), "the rows went in");
            drop(conn);
        }
        Store::Postgres(store) => {
            let mut conn = store.pool().acquire().await.expect("acquire").detach();
            let mut tx = conn.begin().await.expect("begin");
            sqlx::query(
                "SELECT set_config('ledger.tenant', $1, true), \
                 pg_advisory_xact_lock(hashtextextended('payout-ledger/tenant:' || $1, 0))",
            )
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await
            .expect("lock");
            for (event, bytes) in rows {
                sqlx::query(
                    "INSERT INTO events (tenant_id, seq, id, at, actor, kind, prev, hash, canonical) \
                     VALUES ($1, $2, $3::uuid, $4::timestamptz, $5, $6, $7, $8, $9)",
                )
                .bind(tenant.as_str())
                .bind(event.seq as i64)
                .bind(event.id.uuid().hyphenated().to_string())
                .bind(event.at.to_string())
                .bind(event.actor.as_str())
                .bind(event.body.kind())
                .bind(event.prev.as_bytes().as_slice())
                .bind(event.hash.as_bytes().as_slice())
                .bind(bytes.as_slice())
                .execute(&mut *tx)
                .await
                .expect("insert");
            }
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut *tx)
                .await
                .expect("pid");
            let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(store.pool())
                .await
                .expect("terminate");
            assert!(terminated);
            drop(tx);
            drop(conn);
        }
    }
}

/// The keys and clock of `ledger`, for exporting what a store holds.
fn ledger_with_keys_only(ledger: &Ledger) -> Ledger {
    let mut copy = Ledger::new(ledger.tenant.as_str(), 4);
    copy.keys = ledger.keys.clone();
    copy.clock = ledger.clock;
    copy
}

async fn tenants_see_only_their_own_chain(db: Arc<TestDb>) {
    let acme = sample_chain("acme", 8);
    let beta = sample_chain("beta", 9);
    for ledger in [&acme, &beta] {
        db.store
            .append(
                &ledger.tenant,
                ChainHead::GENESIS,
                &with_bytes(&ledger.events),
            )
            .await
            .expect("append");
        for checkpoint in &ledger.checkpoints {
            db.store
                .append_checkpoint(checkpoint)
                .await
                .expect("checkpoint");
        }
    }
    for ledger in [&acme, &beta] {
        let loaded = load_all(&db.store, &ledger.tenant).await;
        assert_eq!(loaded, with_bytes(&ledger.events));
        assert_eq!(
            db.store.head(&ledger.tenant).await.expect("head"),
            ledger.head
        );
        assert_eq!(
            db.store
                .checkpoints(&ledger.tenant, 0, 100)
                .await
                .expect("checkpoints"),
            ledger.checkpoints
        );
        assert_export_intact(&db.store, ledger).await;
    }
    let nobody: TenantId = id("nobody");
    assert_eq!(
        db.store.head(&nobody).await.expect("head"),
        ChainHead::GENESIS
    );
    assert!(db
        .store
        .load(&nobody, 0, 10)
        .await
        .expect("load")
        .is_empty());
}

async fn checkpoints_must_match_the_chain(db: Arc<TestDb>) {
    let ledger = sample_chain("acme", 10);
    let tenant = &ledger.tenant;
    db.store
        .append(tenant, ChainHead::GENESIS, &with_bytes(&ledger.events))
        .await
        .expect("append");
    let sign = |seq: u64, hash: Hash| checkpoint_at(&ledger, ChainHead { seq, hash });
    match db
        .store
        .append_checkpoint(&sign(ledger.head.seq + 1, ledger.head.hash))
        .await
    {
        Err(CheckpointStoreError::NoSuchEvent { seq }) => assert_eq!(seq, ledger.head.seq + 1),
        other => panic!("expected no such event, got {other:?}"),
    }
    match db
        .store
        .append_checkpoint(&sign(ledger.head.seq, Hash::ZERO))
        .await
    {
        Err(CheckpointStoreError::HeadMismatch { seq }) => assert_eq!(seq, ledger.head.seq),
        other => panic!("expected a head mismatch, got {other:?}"),
    }
    let good = sign(ledger.head.seq, ledger.head.hash);
    db.store.append_checkpoint(&good).await.expect("checkpoint");
    match db.store.append_checkpoint(&good).await {
        Err(CheckpointStoreError::Duplicate { seq }) => assert_eq!(seq, ledger.head.seq),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    assert_eq!(
        db.store
            .checkpoints(tenant, 0, 10)
            .await
            .expect("checkpoints"),
        vec![good]
    );
}

async fn a_row_edited_behind_the_store_is_reported_at_its_seq(db: Arc<TestDb>) {
    let ledger = sample_chain("acme", 11);
    let tenant = &ledger.tenant;
    db.store
        .append(tenant, ChainHead::GENESIS, &with_bytes(&ledger.events))
        .await
        .expect("append");
    let deposit_seq = ledger
        .events
        .iter()
        .find(|e| e.body.kind() == "funds.deposited")
        .expect("a deposit")
        .seq;
    // An operator with full rights disables the guard and rewrites the amount.
    let edit = match db.backend {
        Backend::Sqlite => format!(
            "DROP TRIGGER events_no_update; \
             UPDATE events SET canonical = CAST(replace(CAST(canonical AS TEXT), \
             '\"1000.00\"', '\"9000.00\"') AS BLOB) WHERE tenant_id = 'acme' AND seq = {deposit_seq};"
        ),
        Backend::Postgres => format!(
            "ALTER TABLE events DISABLE TRIGGER events_append_only; \
             UPDATE events SET canonical = convert_to(replace(convert_from(canonical, 'UTF8'), \
             '\"1000.00\"', '\"9000.00\"'), 'UTF8') WHERE tenant_id = 'acme' AND seq = {deposit_seq}; \
             ALTER TABLE events ENABLE TRIGGER events_append_only;"
        ),
    };
    db.owner_execute(&edit).await.expect("edit as the owner");
    match db.store.load(tenant, 0, PAGE_LIMIT_MAX).await {
        Err(StoreError::Corrupt { tenant: t, seq, .. }) => {
            assert_eq!(t, "acme");
            assert_eq!(seq, deposit_seq);
        }
        other => panic!("expected corruption at seq {deposit_seq}, got {other:?}"),
    }
    // Rows before it still load.
    let before = db
        .store
        .load(tenant, 0, (deposit_seq - 1) as u32)
        .await
        .expect("load");
    assert_eq!(before.len() as u64, deposit_seq - 1);
}

// ---------------------------------------------------------------------------------------
// PostgreSQL only: the service role and row-level security.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_service_role_sees_and_writes_only_its_tenant() {
    common::run(Backend::Postgres, service_role_isolation).await;
}

async fn service_role_isolation(db: Arc<TestDb>) {
    let mut acme = sample_chain("acme", 12);
    let beta = sample_chain("beta", 13);
    for ledger in [&acme, &beta] {
        db.store
            .append(
                &ledger.tenant,
                ChainHead::GENESIS,
                &with_bytes(&ledger.events),
            )
            .await
            .expect("append as owner");
    }
    let (role, service) = db.service_role().await;
    let service_store = Store::Postgres(service.clone());
    let stored_head = acme.head;

    // The grants of docs/OPERATIONS.md are enough to run the store.
    assert_eq!(
        service_store.head(&acme.tenant).await.expect("head"),
        acme.head
    );
    assert_eq!(
        load_all(&service_store, &acme.tenant).await,
        with_bytes(&acme.events)
    );
    let template = deposit(&mut acme, "1.00");
    let more = deposits_after(&template, stored_head, 3, 7 << 80);
    let acme_head = service_store
        .append(&acme.tenant, stored_head, &more)
        .await
        .expect("append as the service");
    let checkpoint = checkpoint_at(&acme, acme_head);
    service_store
        .append_checkpoint(&checkpoint)
        .await
        .expect("checkpoint as the service");
    let acme_rows = i64::try_from(acme_head.seq).expect("small");

    let pool = service.pool();
    let count = |sql: &'static str, tenant: Option<&'static str>| async move {
        let mut tx = pool.begin().await.expect("begin");
        if let Some(tenant) = tenant {
            sqlx::query("SELECT set_config('ledger.tenant', $1, true)")
                .bind(tenant)
                .execute(&mut *tx)
                .await
                .expect("set tenant");
        }
        let n: i64 = sqlx::query_scalar(sql)
            .fetch_one(&mut *tx)
            .await
            .expect(sql);
        tx.rollback().await.expect("rollback");
        n
    };
    // With tenant A set, B's rows are invisible, even when asked for by name.
    assert_eq!(
        count("SELECT count(*) FROM events", Some("acme")).await,
        acme_rows
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM events WHERE tenant_id = 'beta'",
            Some("acme")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM checkpoints WHERE tenant_id = 'beta'",
            Some("acme")
        )
        .await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM checkpoints", Some("acme")).await,
        1
    );
    // With no tenant set, nothing is visible.
    assert_eq!(count("SELECT count(*) FROM events", None).await, 0);
    // The setting is per transaction: it does not leak to the next user of a connection.
    let mut conn = pool.acquire().await.expect("acquire");
    sqlx::Executor::execute(
        &mut *conn,
        "BEGIN; SELECT set_config('ledger.tenant', 'acme', true); COMMIT;",
    )
    .await
    .expect("scoped transaction");
    let leaked: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut *conn)
        .await
        .expect("count");
    assert_eq!(leaked, 0);
    drop(conn);

    // With tenant A set, a row of B cannot be written.
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT set_config('ledger.tenant', 'acme', true)")
        .execute(&mut *tx)
        .await
        .expect("set tenant");
    let error = sqlx::query(
        "INSERT INTO events (tenant_id, seq, id, at, actor, kind, prev, hash, canonical) \
         VALUES ('beta', 999, gen_random_uuid(), now(), 'usr_x', 'funds.deposited', \
                 decode(repeat('00', 32), 'hex'), decode(repeat('11', 32), 'hex'), '\\x7b7d')",
    )
    .execute(&mut *tx)
    .await
    .expect_err("insert of another tenant's row");
    assert!(
        error.to_string().contains("row-level security"),
        "refused for another reason: {error}"
    );
    drop(tx);
    // Nor can the service role change or remove rows of its own tenant: no grant.
    for statement in [
        "UPDATE events SET kind = kind",
        "DELETE FROM events",
        "TRUNCATE events",
        "ALTER TABLE events DISABLE TRIGGER events_append_only",
        "ALTER TABLE events NO FORCE ROW LEVEL SECURITY",
    ] {
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("SELECT set_config('ledger.tenant', 'acme', true)")
            .execute(&mut *tx)
            .await
            .expect("set tenant");
        let error = sqlx::query(statement)
            .execute(&mut *tx)
            .await
            .expect_err(statement);
        let message = error.to_string();
        assert!(
            message.contains("permission denied") || message.contains("must be owner"),
            "{statement}: refused for another reason: {message}"
        );
    }
    // It owns nothing.
    assert_eq!(
        db.owner_count(&format!(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner \
             WHERE r.rolname = '{role}'"
        ))
        .await,
        0
    );
    // Through the store, B is untouched and A has what the service appended.
    assert_eq!(db.store.head(&beta.tenant).await.expect("head"), beta.head);
    assert_eq!(db.store.head(&acme.tenant).await.expect("head"), acme_head);
}

#[test]
fn the_operations_doc_lists_the_service_grants() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/OPERATIONS.md");
    let doc = std::fs::read_to_string(&path).expect("docs/OPERATIONS.md");
    for grant in ledger_store::postgres::SERVICE_ROLE_GRANTS {
        assert!(
            doc.contains(grant),
            "docs/OPERATIONS.md does not list {grant}"
        );
    }
}

/// Every connection of the embedded store's pool runs with the durability and tuning
/// settings it was opened with: WAL, `synchronous=FULL` (a 2xx means the commit is on
/// disk), the longer WAL before checkpoints and the larger page cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sqlite_connection_is_durable_and_tuned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ledger_store::SqliteStore::open(&dir.path().join("ledger.db"))
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    // Hold several connections at once, so that the pool opens more than one.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut connection = store.pool().acquire().await.expect("acquire");
        assert_durable_and_tuned(&mut connection).await;
        held.push(connection);
    }
    assert!(store.pool().size() >= 3);
    // The writes' own connection: as durable and tuned as the readers'.
    let mut writer = store.writer().acquire().await.expect("acquire the writer");
    assert_durable_and_tuned(&mut writer).await;
    assert_eq!(store.writer().size(), 1, "one connection for every write");
}

/// WAL, `synchronous=FULL`, the longer WAL before checkpoints and the larger cache.
async fn assert_durable_and_tuned(connection: &mut sqlx::SqliteConnection) {
    let mode: (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut *connection)
        .await
        .expect("journal_mode");
    assert_eq!(mode.0, "wal");
    let synchronous: (i64,) = sqlx::query_as("PRAGMA synchronous")
        .fetch_one(&mut *connection)
        .await
        .expect("synchronous");
    assert_eq!(synchronous.0, 2, "synchronous=FULL");
    let pages: (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint")
        .fetch_one(&mut *connection)
        .await
        .expect("wal_autocheckpoint");
    assert_eq!(
        pages.0,
        i64::from(ledger_store::sqlite::WAL_AUTOCHECKPOINT_PAGES)
    );
    assert!(pages.0 > 1000, "longer than SQLite's default");
    let cache: (i64,) = sqlx::query_as("PRAGMA cache_size")
        .fetch_one(&mut *connection)
        .await
        .expect("cache_size");
    assert_eq!(cache.0, -i64::from(ledger_store::sqlite::CACHE_KIB));
}

/// The SQLite migration that puts the events in commit order (20261204000500), run on
/// a file written by the migrations before it: every event and checkpoint is kept byte
/// for byte, the chains still verify, the tables are still append-only, the checkpoints'
/// foreign key still holds, and appends go on from the heads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_events_keep_every_row_when_moved_to_commit_order() {
    const COMMIT_ORDER: i64 = 20261204000500;
    async fn events_sql(sqlite: &ledger_store::SqliteStore) -> String {
        let (sql,): (String,) = sqlx::query_as(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'",
        )
        .fetch_one(sqlite.pool())
        .await
        .expect("the events table");
        sql
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ledger.db");
    let sqlite = ledger_store::SqliteStore::open(&path).await.expect("open");
    let every: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
    assert!(
        every.iter().any(|m| m.version == COMMIT_ORDER),
        "the migration is embedded"
    );
    let earlier = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            every
                .iter()
                .filter(|m| m.version < COMMIT_ORDER)
                .cloned()
                .collect(),
        ),
        ..every
    };
    earlier
        .run(sqlite.pool())
        .await
        .expect("the earlier migrations");
    assert!(events_sql(&sqlite).await.contains("WITHOUT ROWID"));
    let store = Store::Sqlite(sqlite.clone());
    let acme = sample_chain("acme", 21);
    let globex = sample_chain("globex", 22);
    let (acme_first, acme_rest) = acme.events.split_at(acme.events.len() / 2);
    let mut acme_head = store
        .append(&acme.tenant, ChainHead::GENESIS, &with_bytes(acme_first))
        .await
        .expect("acme");
    store
        .append(
            &globex.tenant,
            ChainHead::GENESIS,
            &with_bytes(&globex.events),
        )
        .await
        .expect("globex");
    let checkpoint = checkpoint_at(&acme, acme_head);
    store
        .append_checkpoint(&checkpoint)
        .await
        .expect("checkpoint");
    let acme_before = load_all(&store, &acme.tenant).await;
    let globex_before = load_all(&store, &globex.tenant).await;

    sqlite.migrate().await.expect("the move to commit order");
    assert!(events_sql(&sqlite)
        .await
        .contains("pos       INTEGER PRIMARY KEY"));
    assert_eq!(load_all(&store, &acme.tenant).await, acme_before);
    assert_eq!(load_all(&store, &globex.tenant).await, globex_before);
    assert_eq!(store.head(&acme.tenant).await.expect("head"), acme_head);
    assert_eq!(
        store
            .checkpoints(&acme.tenant, 0, PAGE_LIMIT_MAX)
            .await
            .expect("checkpoints"),
        vec![checkpoint]
    );
    assert_export_intact(&store, &globex).await;
    // Still append-only, and a checkpoint still needs its event.
    for edit in [
        "UPDATE events SET actor = 'mallory' WHERE tenant_id = 'acme' AND seq = 1",
        "DELETE FROM events WHERE tenant_id = 'acme' AND seq = 1",
        "UPDATE checkpoints SET key_id = 'other' WHERE tenant_id = 'acme'",
        "DELETE FROM checkpoints WHERE tenant_id = 'acme'",
    ] {
        let refused = sqlx::query(edit)
            .execute(sqlite.pool())
            .await
            .expect_err("append-only");
        assert!(
            refused.to_string().contains("append-only"),
            "{edit}: {refused}"
        );
    }
    let orphan = sqlx::query(
        "INSERT INTO checkpoints (tenant_id, seq, head, at, key_id, sig) \
         VALUES ('acme', 9999, zeroblob(32), '2026-12-04T00:00:00.000000Z', 'ckpt-1', zeroblob(64))",
    )
    .execute(sqlite.pool())
    .await
    .expect_err("no such event");
    assert!(orphan.to_string().contains("FOREIGN KEY"), "{orphan}");
    // The chain goes on from its head, and the whole of it verifies.
    for event in acme_rest {
        acme_head = store
            .append(
                &acme.tenant,
                acme_head,
                &with_bytes(std::slice::from_ref(event)),
            )
            .await
            .expect("acme after the move");
    }
    assert_eq!(acme_head, acme.head);
    assert_export_intact(&store, &acme).await;
}

/// Every write of the embedded store goes through its one writer connection, whose page
/// cache SQLite then keeps across commits. `PRAGMA data_version` changes on a connection
/// only when another connection has committed: after appends and a projection step it is
/// unchanged on the writer and changed on a reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sqlite_write_goes_through_the_one_writer_connection() {
    async fn data_version(connection: &mut sqlx::SqliteConnection) -> i64 {
        let (version,): (i64,) = sqlx::query_as("PRAGMA data_version")
            .fetch_one(connection)
            .await
            .expect("data_version");
        version
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = ledger_store::SqliteStore::open(&dir.path().join("ledger.db"))
        .await
        .expect("open");
    sqlite.migrate().await.expect("migrate");
    let store = Store::Sqlite(sqlite.clone());
    let ledger = sample_chain("acme", 1);
    let all = with_bytes(&ledger.events);
    let mut reader = sqlite.pool().acquire().await.expect("a reader");
    let reader_before = data_version(&mut reader).await;
    let writer_before = {
        let mut writer = sqlite.writer().acquire().await.expect("the writer");
        data_version(&mut writer).await
    };
    let mut head = ChainHead::GENESIS;
    for row in &all {
        head = store
            .append(&ledger.tenant, head, std::slice::from_ref(row))
            .await
            .expect("append");
    }
    store
        .project_next(&ledger.tenant, PAGE_LIMIT_MAX)
        .await
        .expect("project");
    let mut writer = sqlite.writer().acquire().await.expect("the writer");
    assert_eq!(
        data_version(&mut writer).await,
        writer_before,
        "no other connection committed"
    );
    assert_ne!(
        data_version(&mut reader).await,
        reader_before,
        "the reader saw the writer's commits"
    );
}

/// The background WAL checkpoint: below its bound it only copies beside the commits;
/// past it, it finishes in the write gate, and the next commit writes the log from its
/// start again (so the log does not grow while commits keep coming). Nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_checkpoint_finishes_and_the_log_starts_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ledger.db");
    let sqlite = ledger_store::SqliteStore::open(&path).await.expect("open");
    sqlite.migrate().await.expect("migrate");
    let store = Store::Sqlite(sqlite.clone());
    let ledger = sample_chain("acme", 1);
    let tenant = &ledger.tenant;
    let all = with_bytes(&ledger.events);
    let (first, rest) = all.split_at(all.len() / 2);
    let mut head = ChainHead::GENESIS;
    for row in first {
        head = store
            .append(tenant, head, std::slice::from_ref(row))
            .await
            .expect("append");
    }
    let below = sqlite.checkpoint_wal(i64::MAX).await.expect("checkpoint");
    assert!(!below.finished, "below the bound: {below:?}");
    assert!(below.frames > 0, "the appends are in the log: {below:?}");
    let done = sqlite.checkpoint_wal(1).await.expect("checkpoint");
    assert!(done.finished, "{done:?}");
    let grown = done.frames;
    // One more commit: the log starts over, far shorter than it had grown.
    head = store
        .append(tenant, head, &rest[..1])
        .await
        .expect("append");
    let after = sqlite.checkpoint_wal(i64::MAX).await.expect("checkpoint");
    assert!(
        after.frames < grown,
        "the log started over: {after:?} after {grown} frames"
    );
    for row in &rest[1..] {
        head = store
            .append(tenant, head, std::slice::from_ref(row))
            .await
            .expect("append");
    }
    assert_eq!(head, ledger.head);
    sqlite.close().await;
    let reopened = Store::Sqlite(ledger_store::SqliteStore::open(&path).await.expect("open"));
    assert_eq!(load_all(&reopened, tenant).await, all);
}
