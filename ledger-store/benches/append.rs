//! Append throughput on both backends for batches of 1, 10, 100 and 1000 events, against
//! the raw multi-row INSERT of the same rows (one transaction per batch: no head check,
//! no lock, no validation, no re-encoding) measured in the same run as the baseline.
//!
//! `cargo bench -p ledger-store --bench append` with PostgreSQL on DATABASE_URL (default
//! postgres://postgres@127.0.0.1:5432/postgres; a scratch database is created and
//! dropped) and SQLite in a temp dir. Prints one line per backend and batch size.

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::str::FromStr;
use std::time::{Duration, Instant};

use ledger_core::event::{ChainHead, Event};
use ledger_core::ids::{EventId, TenantId};
use ledger_core::money::{Currency, Money};
use ledger_core::testkit::standard_tenant;
use ledger_core::Command;
use ledger_store::{PostgresStore, SqliteStore, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, Postgres, QueryBuilder, Sqlite};

/// (events per batch, events in the run)
const RUNS: [(usize, usize); 4] = [(1, 300), (10, 2_000), (100, 10_000), (1_000, 20_000)];
const COLUMNS: &str =
    "INSERT INTO events (tenant_id, seq, id, at, actor, kind, prev, hash, canonical) ";

type Batch = Vec<(Event, Vec<u8>)>;

/// `count` deposits of a fresh `tenant`, after its standard opening events.
fn chain(tenant: &str, count: usize) -> (TenantId, Batch, Batch) {
    let mut ledger = standard_tenant(tenant, 1, "1000.00");
    let opening: Batch = ledger
        .events
        .iter()
        .map(|e| (e.clone(), e.canonical_bytes().expect("bytes")))
        .collect();
    let mut head: ChainHead = ledger.head;
    let template = ledger
        .execute(
            "usr_eve",
            Command::Deposit {
                account: "acct_ops".parse().expect("account"),
                money: Money::parse("1.00", Currency::Eur).expect("money"),
                reference: Some("bench".into()),
            },
        )
        .expect("deposit")
        .remove(0);
    let mut events = Vec::with_capacity(count);
    for n in 0..count {
        let sealed = Event::seal(
            head,
            template.tenant.clone(),
            EventId::from_uuid(uuid::Uuid::from_u128((7 << 100) + n as u128)),
            template.at,
            template.actor.clone(),
            template.body.clone(),
        )
        .expect("seal");
        head = sealed.0.head();
        events.push(sealed);
    }
    (ledger.tenant.clone(), opening, events)
}

async fn raw_sqlite(store: &SqliteStore, tenant: &TenantId, batch: &[(Event, Vec<u8>)]) {
    let mut tx = store.pool().begin().await.expect("begin");
    for chunk in batch.chunks(500) {
        let mut insert = QueryBuilder::<Sqlite>::new(COLUMNS);
        insert.push_values(chunk, |mut row, (event, bytes)| {
            row.push_bind(tenant.as_str())
                .push_bind(event.seq as i64)
                .push_bind(event.id.uuid().hyphenated().to_string())
                .push_bind(event.at.to_string())
                .push_bind(event.actor.as_str())
                .push_bind(event.body.kind())
                .push_bind(event.prev.as_bytes().as_slice())
                .push_bind(event.hash.as_bytes().as_slice())
                .push_bind(bytes.as_slice());
        });
        insert.build().execute(&mut *tx).await.expect("raw insert");
    }
    tx.commit().await.expect("commit");
}

async fn raw_postgres(store: &PostgresStore, tenant: &TenantId, batch: &[(Event, Vec<u8>)]) {
    let mut tx = store.pool().begin().await.expect("begin");
    let mut insert = QueryBuilder::<Postgres>::new(COLUMNS);
    insert.push_values(batch, |mut row, (event, bytes)| {
        row.push_bind(tenant.as_str())
            .push_bind(event.seq as i64)
            .push_bind(event.id.uuid().hyphenated().to_string())
            .push_unseparated("::uuid")
            .push_bind(event.at.to_string())
            .push_unseparated("::timestamptz")
            .push_bind(event.actor.as_str())
            .push_bind(event.body.kind())
            .push_bind(event.prev.as_bytes().as_slice())
            .push_bind(event.hash.as_bytes().as_slice())
            .push_bind(bytes.as_slice());
    });
    insert.build().execute(&mut *tx).await.expect("raw insert");
    tx.commit().await.expect("commit");
}

fn rate(events: usize, elapsed: Duration) -> f64 {
    #[allow(clippy::float_arithmetic)] // A rate for a report.
    let rate = events as f64 / elapsed.as_secs_f64();
    rate
}

async fn run(name: &str, store: &Store) {
    for (round, (batch_size, count)) in RUNS.into_iter().enumerate() {
        // A fresh tenant per measurement, so both see an equally sized table.
        let (tenant, opening, events) = chain(&format!("store-{round}"), count);
        let head = store
            .append(&tenant, ChainHead::GENESIS, &opening)
            .await
            .expect("opening");
        let started = Instant::now();
        let mut head = head;
        for batch in events.chunks(batch_size) {
            head = store.append(&tenant, head, batch).await.expect("append");
        }
        let store_elapsed = started.elapsed();

        let (tenant, opening, events) = chain(&format!("raw-{round}"), count);
        store
            .append(&tenant, ChainHead::GENESIS, &opening)
            .await
            .expect("opening");
        let started = Instant::now();
        for batch in events.chunks(batch_size) {
            match store {
                Store::Sqlite(s) => raw_sqlite(s, &tenant, batch).await,
                Store::Postgres(s) => raw_postgres(s, &tenant, batch).await,
            }
        }
        let raw_elapsed = started.elapsed();
        let (store_rate, raw_rate) = (rate(count, store_elapsed), rate(count, raw_elapsed));
        #[allow(clippy::float_arithmetic)]
        let ratio = store_rate / raw_rate;
        println!(
            "{name:<10} batch {batch_size:>5}: store {store_rate:>9.0} events/s, \
             raw INSERT {raw_rate:>9.0} rows/s, ratio {ratio:.2} ({count} events)"
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = Store::Sqlite(
        SqliteStore::open(&dir.path().join("bench.db"))
            .await
            .expect("sqlite"),
    );
    sqlite.migrate().await.expect("migrate sqlite");
    run("sqlite", &sqlite).await;
    sqlite.close().await;

    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin = PgConnectOptions::from_str(&url)
        .expect("DATABASE_URL")
        .disable_statement_logging();
    let name = format!("ledger_bench_{}", std::process::id());
    let mut conn = PgConnection::connect_with(&admin).await.expect("connect");
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    let postgres = Store::Postgres(
        PostgresStore::connect_with(admin.clone().database(&name), 4)
            .await
            .expect("postgres"),
    );
    postgres.migrate().await.expect("migrate postgres");
    run("postgres", &postgres).await;
    postgres.close().await;
    conn.execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
        .await
        .expect("drop database");
    conn.close().await.expect("close");
}
