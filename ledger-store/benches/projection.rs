//! Projection catch-up on both backends: a tenant's chain (an export written by
//! `ledger-audit generate`, the writer's own rules) appended through the store, then
//! projected from seq 0 to its head with the projector's step (`Store::project_next`:
//! one transaction per page, rows and cursor together), and rebuilt from seq 1 in one
//! transaction (`Store::rebuild_projection`). Prints events/s for each.
//!
//!     cargo build --release -p ledger-audit
//!     target/release/ledger-audit generate --events 1000000 --profile payouts --out /tmp/payouts-1m.jsonl
//!     LEDGER_BENCH_EXPORT=/tmp/payouts-1m.jsonl cargo bench -p ledger-store --bench projection
//!
//! PostgreSQL on DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres; a
//! scratch database is created and dropped), SQLite in a temp dir. `LEDGER_BENCH_PAGE`
//! sets the events per projector step (default 1000, as the service's projector);
//! `LEDGER_BENCH_BACKENDS` = `sqlite`, `postgres` or both (default).

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::io::BufRead;
use std::str::FromStr;
use std::time::{Duration, Instant};

use ledger_core::event::{ChainHead, Event};
use ledger_core::ids::TenantId;
use ledger_core::verify::{parse_line, ExportLine};
use ledger_store::{PostgresStore, ProjectStep, SqliteStore, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};

/// Events per appended batch.
const APPEND_BATCH: usize = 5_000;

fn rate(events: u64, elapsed: Duration) -> f64 {
    #[allow(clippy::float_arithmetic)] // A rate for a report.
    let rate = events as f64 / elapsed.as_secs_f64();
    rate
}

/// Streams the export's events into `store`, batch by batch; returns the tenant and head.
async fn append_export(store: &Store, path: &str) -> (TenantId, ChainHead) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| {
        panic!(
            "{path}: {e}. Generate it with `ledger-audit generate --events 1000000 \
             --profile payouts --out {path}` (or set LEDGER_BENCH_EXPORT)"
        )
    });
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut head = ChainHead::GENESIS;
    let mut tenant: Option<TenantId> = None;
    let mut batch: Vec<(Event, Vec<u8>)> = Vec::with_capacity(APPEND_BATCH);
    for line in reader.lines() {
        let line = line.expect("read the export");
        let ExportLine::Event(parsed) = parse_line(&line).expect("an export line") else {
            continue;
        };
        let event = parsed.event;
        let bytes = event.canonical_bytes().expect("canonical bytes");
        tenant.get_or_insert_with(|| event.tenant.clone());
        batch.push((event, bytes));
        if batch.len() == APPEND_BATCH {
            let tenant = tenant.as_ref().expect("tenant");
            head = store.append(tenant, head, &batch).await.expect("append");
            batch.clear();
        }
    }
    let tenant = tenant.expect("the export has events");
    if !batch.is_empty() {
        head = store.append(&tenant, head, &batch).await.expect("append");
    }
    (tenant, head)
}

async fn run(name: &str, store: &Store, path: &str, page: u32) {
    let started = Instant::now();
    let (tenant, head) = append_export(store, path).await;
    let appended = started.elapsed();
    println!(
        "{name:<10} appended {} events in {:.1} s ({:.0} events/s)",
        head.seq,
        appended.as_secs_f64(),
        rate(head.seq, appended)
    );

    let started = Instant::now();
    let mut steps = 0u64;
    let mut lost = 0u64;
    loop {
        match store.project_next(&tenant, page).await.expect("project") {
            ProjectStep::Advanced { .. } => steps += 1,
            ProjectStep::Lost => lost += 1,
            ProjectStep::CaughtUp { seq } => {
                assert_eq!(seq, head.seq, "caught up at the head");
                break;
            }
        }
    }
    let caught_up = started.elapsed();
    assert_eq!(lost, 0, "nothing else projects this tenant");
    println!(
        "{name:<10} catch-up  {} events in {:.1} s: {:.0} events/s ({steps} steps of {page})",
        head.seq,
        caught_up.as_secs_f64(),
        rate(head.seq, caught_up)
    );

    let started = Instant::now();
    let rebuilt = store.rebuild_projection(&tenant).await.expect("rebuild");
    let rebuild = started.elapsed();
    assert_eq!(rebuilt, head.seq);
    println!(
        "{name:<10} rebuild   {} events in {:.1} s: {:.0} events/s (one transaction)",
        head.seq,
        rebuild.as_secs_f64(),
        rate(head.seq, rebuild)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let path =
        std::env::var("LEDGER_BENCH_EXPORT").unwrap_or_else(|_| "/tmp/payouts-1m.jsonl".into());
    let page: u32 = std::env::var("LEDGER_BENCH_PAGE")
        .ok()
        .map(|p| p.parse().expect("LEDGER_BENCH_PAGE: a number"))
        .unwrap_or(1000);
    let backends = std::env::var("LEDGER_BENCH_BACKENDS").unwrap_or_default();
    let wants = |backend: &str| backends.is_empty() || backends.contains(backend);

    if wants("sqlite") {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = Store::Sqlite(
            SqliteStore::open(&dir.path().join("bench.db"))
                .await
                .expect("sqlite"),
        );
        sqlite.migrate().await.expect("migrate sqlite");
        run("sqlite", &sqlite, &path, page).await;
        sqlite.close().await;
    }

    if wants("postgres") {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let admin = PgConnectOptions::from_str(&url)
            .expect("DATABASE_URL")
            .disable_statement_logging();
        let name = format!("ledger_bench_projection_{}", std::process::id());
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
        run("postgres", &postgres, &path, page).await;
        postgres.close().await;
        conn.execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
            .await
            .expect("drop database");
        conn.close().await.expect("close");
    }
}
