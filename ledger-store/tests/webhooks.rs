//! What the webhook worker needs from the store, on both backends: one kind of a
//! tenant's records in id pages, and the index of tenants with subscriptions; on
//! PostgreSQL as the service role, with exactly the documented grants.

mod common;

use std::sync::Arc;

use common::TestDb;
use ledger_core::ids::TenantId;
use ledger_store::{Store, StoreError, RECORDS_PAGE_MAX};

fn tenant(s: &str) -> TenantId {
    s.parse().expect("tenant")
}

async fn listing_and_index(store: &Store) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    for id in ["wh_c", "wh_a", "wh_b"] {
        assert!(store
            .insert_record(&acme, "webhook", id, &format!("{{\"id\":\"{id}\"}}"))
            .await
            .expect("insert"));
    }
    assert!(store
        .insert_record(&acme, "totp", "wh_z", "{}")
        .await
        .expect("insert"));
    assert!(store
        .insert_record(&globex, "webhook", "wh_g", "{}")
        .await
        .expect("insert"));

    let ids = |page: &[(String, ledger_store::Record)]| {
        page.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()
    };
    let all = store
        .records_of_kind(&acme, "webhook", "", 10)
        .await
        .expect("list");
    assert_eq!(
        ids(&all),
        ["wh_a", "wh_b", "wh_c"],
        "this tenant, this kind, by id"
    );
    assert_eq!(all[0].1.value, "{\"id\":\"wh_a\"}");
    assert_eq!(all[0].1.version, 1);
    let first = store
        .records_of_kind(&acme, "webhook", "", 2)
        .await
        .expect("list");
    assert_eq!(ids(&first), ["wh_a", "wh_b"]);
    let rest = store
        .records_of_kind(&acme, "webhook", "wh_b", 2)
        .await
        .expect("list");
    assert_eq!(ids(&rest), ["wh_c"]);
    assert!(matches!(
        store
            .records_of_kind(&acme, "webhook", "", RECORDS_PAGE_MAX + 1)
            .await,
        Err(StoreError::Limit { .. })
    ));

    assert!(store.webhook_tenants().await.expect("tenants").is_empty());
    store.index_webhook(&acme, "wh_a").await.expect("index");
    store
        .index_webhook(&acme, "wh_a")
        .await
        .expect("idempotent");
    store.index_webhook(&acme, "wh_b").await.expect("index");
    store.index_webhook(&globex, "wh_g").await.expect("index");
    assert_eq!(
        store.webhook_tenants().await.expect("tenants"),
        [acme.clone(), globex.clone()]
    );
    store
        .unindex_webhook(&globex, "wh_g")
        .await
        .expect("unindex");
    store.unindex_webhook(&acme, "wh_a").await.expect("unindex");
    assert_eq!(
        store.webhook_tenants().await.expect("tenants"),
        std::slice::from_ref(&acme)
    );
    store.unindex_webhook(&acme, "wh_b").await.expect("unindex");
    store
        .unindex_webhook(&acme, "wh_b")
        .await
        .expect("idempotent");
    assert!(store.webhook_tenants().await.expect("tenants").is_empty());
}

async fn records_of_a_kind_and_the_webhook_index(db: Arc<TestDb>) {
    listing_and_index(&db.store).await;
}

on_both_backends!(records_of_a_kind_and_the_webhook_index);

/// The service role (row-level security, the documented grants) lists only the scoped
/// tenant's records and maintains the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_as_the_service_role() {
    common::run(common::Backend::Postgres, |db| async move {
        let (_role, service) = db.service_role().await;
        listing_and_index(&Store::Postgres(service)).await;
    })
    .await;
}
