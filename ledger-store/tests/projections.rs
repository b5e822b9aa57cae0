//! The persisted projections on both backends: for any event log (random scenarios
//! decided by the writer's rules, `testkit::play`), appended in arbitrary batches and
//! projected in arbitrary chunks, the rows equal the pure fold and a rebuild from seq 1;
//! balances equal the sum of postings; the audit view has one row per decided command.
//! Two projectors racing on one database (two pools, as two processes) and a rebuild
//! racing a projector leave the same rows; the service role sees only its tenant's rows.

mod common;

use std::sync::Arc;

use common::{Backend, TestDb};
use ledger_core::event::{ChainHead, Event};
use ledger_core::ids::TenantId;
use ledger_core::state::Bucket;
use ledger_core::testkit::{play, standard_tenant, Ledger, Step};
use ledger_store::{AuditQuery, PayoutQuery, ProjectStep, ProjectedRows, Store};
use projections::{Outcome, ReadModel};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rust_decimal::Decimal;

fn with_bytes(events: &[Event]) -> Vec<(Event, Vec<u8>)> {
    events
        .iter()
        .map(|e| (e.clone(), e.canonical_bytes().expect("canonical bytes")))
        .collect()
}

fn step() -> impl Strategy<Value = Step> {
    (0u8..10, 0u8..5, 0u8..9, 1u32..3_000_000, any::<bool>()).prop_map(
        |(action, payout, actor, cents, request)| Step {
            action,
            payout,
            actor,
            cents,
            request,
        },
    )
}

/// Appends the ledger's events in batches of the given lengths (cycled).
async fn append_in_batches(store: &Store, ledger: &Ledger, batches: &[usize]) {
    let events = with_bytes(&ledger.events);
    let mut head = ChainHead::GENESIS;
    let mut at = 0;
    for length in batches.iter().cycle() {
        if at >= events.len() {
            break;
        }
        let to = (at + length.max(&1)).min(events.len());
        head = store
            .append(&ledger.tenant, head, &events[at..to])
            .await
            .expect("append");
        at = to;
    }
    assert_eq!(head, ledger.head);
}

/// Projects `tenant` to its head in steps of the given page sizes (cycled).
async fn project_in_chunks(store: &Store, tenant: &TenantId, pages: &[u32]) -> u64 {
    for limit in pages.iter().cycle() {
        match store
            .project_next(tenant, (*limit).max(1))
            .await
            .expect("project")
        {
            ProjectStep::Advanced { .. } | ProjectStep::Lost => {}
            ProjectStep::CaughtUp { seq } => return seq,
        }
    }
    unreachable!("cycle")
}

/// The facts every projection of `ledger` must show.
fn check_rows(
    rows: &ProjectedRows,
    ledger: &Ledger,
    decided: usize,
    setup: usize,
) -> Result<(), TestCaseError> {
    let fold = ProjectedRows::of(&ReadModel::rebuild(&ledger.events));
    prop_assert_eq!(rows, &fold);
    prop_assert_eq!(rows.seq, ledger.head.seq);
    for (account, balance) in &rows.balances {
        let sum = |bucket: Bucket| -> Decimal {
            ledger
                .events
                .iter()
                .flat_map(|e| e.body.postings())
                .filter(|p| p.account == bucket.to_text())
                .map(|p| p.amount.parse::<Decimal>().expect("amount"))
                .sum()
        };
        prop_assert_eq!(balance.available, sum(Bucket::Available(account.clone())));
        prop_assert_eq!(balance.held, sum(Bucket::Held(account.clone())));
        prop_assert_eq!(balance.available, ledger.state.accounts[account].available);
    }
    prop_assert_eq!(rows.audit.len(), setup + decided);
    let denied = rows
        .audit
        .iter()
        .filter(|r| r.result == Outcome::Denied)
        .count();
    let rejected = ledger
        .events
        .iter()
        .filter(|e| e.body.kind() == "command.rejected")
        .count();
    prop_assert_eq!(denied, rejected);
    Ok(())
}

/// The property, on one database of `backend`, one fresh tenant per case.
fn rows_equal_the_fold_and_a_rebuild(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let db = runtime.block_on(TestDb::new(backend));
    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    let strategy = (
        prop::collection::vec(step(), 1..80),
        prop::collection::vec(1usize..30, 1..10),
        prop::collection::vec(1u32..40, 1..10),
    );
    let outcome = runner.run(&strategy, |(steps, batches, pages)| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runtime.block_on(async {
            let mut ledger = standard_tenant(&format!("t{n}"), 9, "100000.00");
            let setup = ledger.events.len();
            let decided = play(&mut ledger, &steps);
            append_in_batches(&db.store, &ledger, &batches).await;
            // Incrementally, in chunks, racing nothing.
            let seq = project_in_chunks(&db.store, &ledger.tenant, &pages).await;
            prop_assert_eq!(seq, ledger.head.seq);
            let rows = db.store.projected_rows(&ledger.tenant).await.expect("rows");
            check_rows(&rows, &ledger, decided, setup)?;
            // A rebuild from seq 1 gives the same rows.
            let rebuilt = db
                .store
                .rebuild_projection(&ledger.tenant)
                .await
                .expect("rebuild");
            prop_assert_eq!(rebuilt, ledger.head.seq);
            let again = db.store.projected_rows(&ledger.tenant).await.expect("rows");
            prop_assert_eq!(&again, &rows);
            Ok(())
        })
    });
    runtime.block_on(db.cleanup());
    if let Err(error) = outcome {
        panic!("{error}");
    }
}

#[test]
fn sqlite_rows_equal_the_fold_and_a_rebuild() {
    rows_equal_the_fold_and_a_rebuild(Backend::Sqlite);
}

#[test]
fn postgres_rows_equal_the_fold_and_a_rebuild() {
    rows_equal_the_fold_and_a_rebuild(Backend::Postgres);
}

fn scenario(tenant: &str, seed: u8, length: usize) -> (Ledger, usize) {
    let mut ledger = standard_tenant(tenant, seed, "100000.00");
    let steps: Vec<Step> = (0..length)
        .map(|i| Step {
            action: [0, 1, 1, 2, 3, 4, 7, 8, 5, 6, 9][i % 11],
            payout: (i / 7 % 6) as u8,
            actor: (i * 5 % 9) as u8,
            cents: 1_000 + (i as u32) * 37,
            request: i % 3 != 0,
        })
        .collect();
    let decided = play(&mut ledger, &steps);
    (ledger, decided)
}

/// Two projectors on two pools (as two processes) race one tenant in small pages; a
/// rebuild runs in the middle of it. Whoever wins each step, the rows end up those of
/// the fold: nothing applied twice, nothing skipped.
async fn racing_projectors_and_a_rebuild_agree(db: Arc<TestDb>) {
    let (ledger, decided) = scenario("acme", 4, 300);
    append_in_batches(&db.store, &ledger, &[17]).await;
    let other = db.another_store().await;
    let tenant = ledger.tenant.clone();
    let run = |store: Store, pages: Vec<u32>| {
        let tenant = tenant.clone();
        tokio::spawn(async move {
            let mut lost = 0;
            for limit in pages.iter().cycle() {
                match store.project_next(&tenant, *limit).await.expect("project") {
                    ProjectStep::Advanced { .. } => {}
                    ProjectStep::Lost => lost += 1,
                    ProjectStep::CaughtUp { .. } => return lost,
                }
            }
            lost
        })
    };
    let first = run(db.store.clone(), vec![3, 5, 2]);
    let second = run(other.clone(), vec![4, 1, 6]);
    let rebuilt = {
        let store = other.clone();
        let tenant = tenant.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            store.rebuild_projection(&tenant).await.expect("rebuild")
        })
    };
    first.await.expect("first");
    second.await.expect("second");
    rebuilt.await.expect("rebuild");
    // Either may have stopped at a rebuild's cursor before the head: finish.
    project_in_chunks(&db.store, &tenant, &[50]).await;
    let rows = db.store.projected_rows(&tenant).await.expect("rows");
    let setup = ledger.events.len() - decided;
    check_rows(&rows, &ledger, decided, setup).expect("rows agree with the fold");
}

/// Grouped steps: several tenants projected together, by two pools (as two processes)
/// at once, each naming the tenants in another order, one in small pages and one in
/// pages whose rows fill more than one of SQLite's write transactions per step (a
/// tenant's rows and cursor stay in one). Every tenant's rows end up those of its fold.
async fn grouped_steps_over_many_tenants_agree_with_the_fold(db: Arc<TestDb>) {
    let scenarios: Vec<(Ledger, usize)> = (0..5u8)
        .map(|n| scenario(&format!("t{n}"), n + 1, 40 + usize::from(n) * 25))
        .collect();
    for (ledger, _) in &scenarios {
        append_in_batches(&db.store, ledger, &[7, 3, 11]).await;
    }
    let tenants: Vec<TenantId> = scenarios.iter().map(|(l, _)| l.tenant.clone()).collect();
    let other = db.another_store().await;
    let run = |store: Store, mut tenants: Vec<TenantId>, limit: u32| {
        tokio::spawn(async move {
            loop {
                let steps = store.project_many(&tenants, limit).await.expect("project");
                assert_eq!(steps.len(), tenants.len());
                if steps
                    .iter()
                    .all(|step| matches!(step, ProjectStep::CaughtUp { .. }))
                {
                    return;
                }
                tenants.rotate_left(1);
            }
        })
    };
    let mut reversed = tenants.clone();
    reversed.reverse();
    let first = run(db.store.clone(), tenants.clone(), 4);
    let second = run(other, reversed, 150);
    first.await.expect("first");
    second.await.expect("second");
    for (ledger, decided) in &scenarios {
        let rows = db.store.projected_rows(&ledger.tenant).await.expect("rows");
        let setup = ledger.events.len() - decided;
        check_rows(&rows, ledger, *decided, setup).expect("rows agree with the fold");
    }
}

/// The read queries: filters, cursors, and the seq each answer reflects.
async fn reads_filter_and_page(db: Arc<TestDb>) {
    let (ledger, _) = scenario("acme", 5, 200);
    append_in_batches(&db.store, &ledger, &[50]).await;
    // Before any projector step: nothing reflected, nothing found.
    let empty = db
        .store
        .projected_audit(
            &ledger.tenant,
            &AuditQuery {
                limit: 10,
                ..AuditQuery::default()
            },
        )
        .await
        .expect("audit");
    assert_eq!((empty.seq, empty.value.len()), (0, 0));
    project_in_chunks(&db.store, &ledger.tenant, &[64]).await;
    let fold = ReadModel::rebuild(&ledger.events);

    let account = "acct_ops".parse().expect("account");
    let balance = db
        .store
        .projected_account(&ledger.tenant, &account)
        .await
        .expect("account");
    assert_eq!(balance.seq, ledger.head.seq);
    assert_eq!(balance.value.as_ref(), fold.balances.accounts.get(&account));
    let missing = db
        .store
        .projected_account(&ledger.tenant, &"acct_nope".parse().expect("account"))
        .await
        .expect("account");
    assert_eq!(missing.value, None);

    // Payouts: every page in request order, filters as the fold says.
    for status in [None, Some("requested"), Some("released"), Some("cancelled")] {
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = db
                .store
                .projected_payouts(
                    &ledger.tenant,
                    &PayoutQuery {
                        status: status.map(str::to_owned),
                        account: Some(account.clone()),
                        after,
                        limit: 2,
                    },
                )
                .await
                .expect("payouts");
            assert_eq!(page.seq, ledger.head.seq);
            let Some(last) = page.value.last() else { break };
            after = last.requested.seq;
            seen.extend(page.value.iter().map(|p| p.payout.clone()));
        }
        let mut expected: Vec<_> = fold
            .payouts
            .payouts
            .values()
            .filter(|p| status.is_none_or(|s| p.status == s))
            .map(|p| (p.requested.seq, p.payout.clone()))
            .collect();
        expected.sort();
        let expected: Vec<_> = expected.into_iter().map(|(_, p)| p).collect();
        assert_eq!(seen, expected, "status {status:?}");
    }
    let one = fold.payouts.payouts.values().next().expect("a payout");
    let found = db
        .store
        .projected_payout(&ledger.tenant, &one.payout)
        .await
        .expect("payout");
    assert_eq!(found.value.as_ref(), Some(one));

    // Audit: by actor, action, result and time, paged.
    let middle = &fold.audit.rows[fold.audit.rows.len() / 2];
    for query in [
        AuditQuery {
            result: Some(Outcome::Denied),
            ..AuditQuery::default()
        },
        AuditQuery {
            actor: Some("usr_bob".parse().expect("actor")),
            ..AuditQuery::default()
        },
        AuditQuery {
            action: Some("payout.request".into()),
            ..AuditQuery::default()
        },
        AuditQuery {
            from: Some(middle.at),
            ..AuditQuery::default()
        },
        AuditQuery {
            to: Some(middle.at),
            result: Some(Outcome::Accepted),
            ..AuditQuery::default()
        },
    ] {
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = db
                .store
                .projected_audit(
                    &ledger.tenant,
                    &AuditQuery {
                        after,
                        limit: 7,
                        ..query.clone()
                    },
                )
                .await
                .expect("audit");
            let Some(last) = page.value.last() else { break };
            after = last.seq;
            seen.extend(page.value);
        }
        let expected: Vec<_> = fold
            .audit
            .rows
            .iter()
            .filter(|r| query.actor.as_ref().is_none_or(|a| &r.actor == a))
            .filter(|r| query.action.as_ref().is_none_or(|a| &r.action == a))
            .filter(|r| query.result.is_none_or(|o| r.result == o))
            .filter(|r| query.from.is_none_or(|t| r.at >= t))
            .filter(|r| query.to.is_none_or(|t| r.at < t))
            .cloned()
            .collect();
        assert!(!expected.is_empty(), "{query:?} selects something");
        assert_eq!(seen, expected, "{query:?}");
    }
    assert!(fold.audit.rows.iter().any(|r| r.request_id.is_some()));
}

async fn postgres_service_role_projects_only_its_tenant(db: Arc<TestDb>) {
    let (acme, _) = scenario("acme", 6, 40);
    let (beta, _) = scenario("beta", 7, 40);
    for ledger in [&acme, &beta] {
        append_in_batches(&db.store, ledger, &[100]).await;
    }
    let (_role, service) = db.service_role().await;
    let service = Store::Postgres(service);
    // The grants of docs/OPERATIONS.md are enough to project, read and rebuild.
    project_in_chunks(&service, &acme.tenant, &[25]).await;
    assert_eq!(
        service
            .rebuild_projection(&acme.tenant)
            .await
            .expect("rebuild"),
        acme.head.seq
    );
    let rows = service.projected_rows(&acme.tenant).await.expect("rows");
    assert_eq!(rows, ProjectedRows::of(&ReadModel::rebuild(&acme.events)));
    // Nothing of acme is visible under beta's scope, or with no scope at all.
    let Store::Postgres(pg) = &service else {
        unreachable!("postgres")
    };
    for table in [
        "projection_cursors",
        "projection_balances",
        "projection_payouts",
        "projection_audit",
    ] {
        for scope in [None, Some("beta")] {
            let mut tx = pg.pool().begin().await.expect("begin");
            if let Some(tenant) = scope {
                sqlx::query("SELECT set_config('ledger.tenant', $1, true)")
                    .bind(tenant)
                    .execute(&mut *tx)
                    .await
                    .expect("scope");
            }
            let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&mut *tx)
                .await
                .expect("count");
            assert_eq!(count, 0, "{table} under {scope:?}");
            tx.rollback().await.expect("rollback");
        }
    }
    let mut tx = pg.pool().begin().await.expect("begin");
    sqlx::query("SELECT set_config('ledger.tenant', 'beta', true)")
        .execute(&mut *tx)
        .await
        .expect("scope");
    // And a row for acme cannot be written under beta's scope.
    let forged = sqlx::query(
        "INSERT INTO projection_cursors (tenant_id, seq, approval_rules) VALUES ('acme', 1, '[]')",
    )
    .execute(&mut *tx)
    .await;
    assert!(
        forged.is_err(),
        "row-level security refuses another tenant's row"
    );
    // The beta projection is untouched by all of it.
    assert_eq!(db.store.projection_seq(&beta.tenant).await.expect("seq"), 0);
}

on_both_backends!(
    racing_projectors_and_a_rebuild_agree,
    grouped_steps_over_many_tenants_agree_with_the_fold,
    reads_filter_and_page
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_service_role_sees_only_its_tenants_projection() {
    common::run(
        Backend::Postgres,
        postgres_service_role_projects_only_its_tenant,
    )
    .await;
}
