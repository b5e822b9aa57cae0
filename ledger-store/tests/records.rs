//! The service's records beside the chain, on both backends: compare-and-set, tenant
//! isolation (PostgreSQL row-level security as the service role), the credential index
//! and event lookup by id.

mod common;

use std::sync::Arc;

use common::TestDb;
use ledger_core::ids::TenantId;
use ledger_core::testkit::standard_tenant;
use ledger_store::{Record, Store};

fn tenant(s: &str) -> TenantId {
    s.parse().expect("tenant")
}

async fn compare_and_set(db: Arc<TestDb>) {
    let store = &db.store;
    let acme = tenant("acme");
    assert_eq!(
        store.record(&acme, "totp", "usr_a").await.expect("get"),
        None
    );
    assert!(store
        .insert_record(&acme, "totp", "usr_a", "{\"n\":1}")
        .await
        .expect("insert"));
    assert!(!store
        .insert_record(&acme, "totp", "usr_a", "{\"n\":9}")
        .await
        .expect("again"));
    let first = store.record(&acme, "totp", "usr_a").await.expect("get");
    assert_eq!(
        first,
        Some(Record {
            version: 1,
            value: "{\"n\":1}".into()
        })
    );
    assert!(store
        .update_record(&acme, "totp", "usr_a", 1, "{\"n\":2}")
        .await
        .expect("cas"));
    // A second writer holding version 1 loses.
    assert!(!store
        .update_record(&acme, "totp", "usr_a", 1, "{\"n\":3}")
        .await
        .expect("cas"));
    let now = store
        .record(&acme, "totp", "usr_a")
        .await
        .expect("get")
        .expect("some");
    assert_eq!((now.version, now.value.as_str()), (2, "{\"n\":2}"));
    // Another tenant's record of the same kind and id is another record.
    let globex = tenant("globex");
    assert_eq!(
        store.record(&globex, "totp", "usr_a").await.expect("get"),
        None
    );
    assert!(!store
        .update_record(&globex, "totp", "usr_a", 2, "x")
        .await
        .expect("cas"));
    assert!(!store
        .delete_record(&globex, "totp", "usr_a")
        .await
        .expect("delete"));
    assert!(store
        .delete_record(&acme, "totp", "usr_a")
        .await
        .expect("delete"));
    assert_eq!(
        store.record(&acme, "totp", "usr_a").await.expect("get"),
        None
    );
}

async fn credential_index_and_event_lookup(db: Arc<TestDb>) {
    let store: &Store = &db.store;
    let acme = tenant("acme");
    assert!(store
        .index_credential("key_abc", &acme)
        .await
        .expect("index"));
    assert!(!store
        .index_credential("key_abc", &tenant("globex"))
        .await
        .expect("taken"));
    assert_eq!(
        store.credential_tenant("key_abc").await.expect("get"),
        Some(acme.clone())
    );
    assert_eq!(store.credential_tenant("key_zzz").await.expect("get"), None);

    let ledger = standard_tenant("acme", 3, "10.00");
    let events: Vec<_> = ledger
        .events
        .iter()
        .map(|e| (e.clone(), e.canonical_bytes().expect("bytes")))
        .collect();
    store
        .append(&acme, ledger_core::event::ChainHead::GENESIS, &events)
        .await
        .expect("append");
    let known = ledger.events[3].id.uuid();
    assert!(store.event_exists(&acme, known).await.expect("lookup"));
    assert!(!store
        .event_exists(&tenant("globex"), known)
        .await
        .expect("lookup"));
    assert!(!store
        .event_exists(&acme, uuid::Uuid::from_u128(42))
        .await
        .expect("lookup"));
}

on_both_backends!(compare_and_set, credential_index_and_event_lookup);

/// As the service role (not the owner), row-level security hides and protects another
/// tenant's records even from a query that names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_records_are_tenant_isolated_for_the_service_role() {
    common::run(common::Backend::Postgres, |db| async move {
        let (_role, service) = db.service_role().await;
        let service = Store::Postgres(service);
        let acme = tenant("acme");
        assert!(service.insert_record(&acme, "idem", "k1", "{}").await.expect("insert"));
        let pool = service_pool(&service);
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("SELECT set_config('ledger.tenant', 'globex', true)")
            .execute(&mut *tx)
            .await
            .expect("scope");
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM records")
            .fetch_one(&mut *tx)
            .await
            .expect("count");
        assert_eq!(seen, 0, "acme's record is invisible with globex set");
        let written = sqlx::query(
            "INSERT INTO records (tenant_id, kind, id, version, value) VALUES ('acme', 'idem', 'k2', 1, '{}')",
        )
        .execute(&mut *tx)
        .await;
        assert!(written.is_err(), "a row of acme cannot be written with globex set");
    })
    .await;
}

fn service_pool(store: &Store) -> &sqlx::PgPool {
    match store {
        Store::Postgres(store) => store.pool(),
        Store::Sqlite(_) => unreachable!("PostgreSQL only"),
    }
}

/// Group commit across tenants: several tenants' batches in one transaction, each with
/// its own outcome — a stale head for one tenant is its conflict alone.
async fn append_many_commits_each_batch_or_reports_its_own_conflict(db: Arc<TestDb>) {
    let store: &Store = &db.store;
    let acme = standard_tenant("acme", 1, "10.00");
    let globex = standard_tenant("globex", 2, "10.00");
    let bytes = |l: &ledger_core::testkit::Ledger| -> Vec<_> {
        l.events
            .iter()
            .map(|e| (e.clone(), e.canonical_bytes().expect("bytes")))
            .collect()
    };
    let genesis = ledger_core::event::ChainHead::GENESIS;
    // globex already has its chain: a second batch sealed on genesis is stale.
    store
        .append(&globex.tenant, genesis, &bytes(&globex))
        .await
        .expect("globex");
    // initech has its chain but the last event; its next batch reuses an event id of
    // its own chain, which the database refuses (the slow, batch-by-batch path).
    let initech = standard_tenant("initech", 3, "10.00");
    let initech_rows = bytes(&initech);
    let (last, rest) = initech_rows.split_last().expect("events");
    let before_last = store
        .append(&initech.tenant, genesis, rest)
        .await
        .expect("initech");
    let (replayed, replayed_bytes) = ledger_core::event::Event::seal(
        before_last,
        initech.tenant.clone(),
        rest[0].0.id,
        last.0.at,
        last.0.actor.clone(),
        last.0.body.clone(),
    )
    .expect("seal");
    // umbrella: a plain new chain, committed beside the refused batch.
    let umbrella = standard_tenant("umbrella", 4, "10.00");
    let results = store
        .append_many(vec![
            (acme.tenant.clone(), genesis, bytes(&acme)),
            (globex.tenant.clone(), genesis, bytes(&globex)),
            (
                initech.tenant.clone(),
                before_last,
                vec![(replayed, replayed_bytes)],
            ),
            (umbrella.tenant.clone(), genesis, bytes(&umbrella)),
        ])
        .await
        .expect("one transaction");
    assert_eq!(results[0].as_ref().expect("acme committed"), &acme.head);
    assert!(
        matches!(&results[1], Err(ledger_store::AppendError::Conflict { actual }) if *actual == globex.head),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(
            &results[2],
            Err(ledger_store::AppendError::DuplicateEventId)
        ),
        "{:?}",
        results[2]
    );
    assert_eq!(
        results[3].as_ref().expect("umbrella committed"),
        &umbrella.head
    );
    assert_eq!(store.head(&acme.tenant).await.expect("head"), acme.head);
    assert_eq!(store.head(&globex.tenant).await.expect("head"), globex.head);
    assert_eq!(
        store.head(&initech.tenant).await.expect("head"),
        before_last
    );
    assert_eq!(
        store.head(&umbrella.tenant).await.expect("head"),
        umbrella.head
    );
    for ledger in [&acme, &umbrella] {
        let loaded = store.load(&ledger.tenant, 0, 1000).await.expect("load");
        let loaded: Vec<_> = loaded.into_iter().map(|(event, _)| event).collect();
        assert_eq!(loaded, ledger.events);
    }
}

mod group {
    use super::*;
    on_both_backends!(append_many_commits_each_batch_or_reports_its_own_conflict);
}
