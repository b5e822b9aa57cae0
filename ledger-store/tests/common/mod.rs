//! Test databases: SQLite in a temp dir, PostgreSQL as a fresh database per test on
//! `DATABASE_URL` (or a cluster started for the test binary: `test_support`), dropped after
//! the test whether it passed or not. No mocks.

#![allow(dead_code)] // Each test binary uses part of this.

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ledger_store::postgres::SERVICE_ROLE_GRANTS;
use ledger_store::{PostgresStore, SqliteStore, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub use test_support::database_url;

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Debug)]
struct PgDatabase {
    admin: PgConnectOptions,
    name: String,
    options: PgConnectOptions,
    roles: Mutex<Vec<String>>,
}

/// One test's database and the stores opened on it.
#[derive(Debug)]
pub struct TestDb {
    pub backend: Backend,
    /// The store the test mostly uses, connected as the owner (PostgreSQL: the
    /// superuser of DATABASE_URL, which ran the migrations).
    pub store: Store,
    sqlite_dir: Option<tempfile::TempDir>,
    pg: Option<PgDatabase>,
    opened: Mutex<Vec<Store>>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = Store::Sqlite(
                    SqliteStore::open(&dir.path().join("ledger.db"))
                        .await
                        .expect("open sqlite"),
                );
                store.migrate().await.expect("migrate sqlite");
                TestDb {
                    backend,
                    store: store.clone(),
                    sqlite_dir: Some(dir),
                    pg: None,
                    opened: Mutex::new(vec![store]),
                }
            }
            Backend::Postgres => {
                let admin = PgConnectOptions::from_str(&database_url())
                    .expect("DATABASE_URL")
                    .disable_statement_logging();
                let name = format!("ledger_test_{}", unique_suffix());
                let mut conn = PgConnection::connect_with(&admin)
                    .await
                    .expect("connect to DATABASE_URL (is PostgreSQL running?)");
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create test database");
                conn.close().await.expect("close admin connection");
                let options = admin.clone().database(&name);
                let store = Store::Postgres(
                    PostgresStore::connect_with(options.clone(), 8)
                        .await
                        .expect("connect to the test database"),
                );
                store.migrate().await.expect("migrate postgres");
                TestDb {
                    backend,
                    store: store.clone(),
                    sqlite_dir: None,
                    pg: Some(PgDatabase {
                        admin,
                        name,
                        options,
                        roles: Mutex::new(Vec::new()),
                    }),
                    opened: Mutex::new(vec![store]),
                }
            }
        }
    }

    /// Another store on the same database: a separate pool, as a second process would
    /// have.
    pub async fn another_store(&self) -> Store {
        let store = match (&self.sqlite_dir, &self.pg) {
            (Some(dir), _) => Store::Sqlite(
                SqliteStore::open(&dir.path().join("ledger.db"))
                    .await
                    .expect("open sqlite again"),
            ),
            (None, Some(pg)) => Store::Postgres(
                PostgresStore::connect_with(pg.options.clone(), 8)
                    .await
                    .expect("connect again"),
            ),
            (None, None) => unreachable!("a test database has a backend"),
        };
        self.opened.lock().expect("lock").push(store.clone());
        store
    }

    /// Runs raw SQL as the owner (PostgreSQL: a superuser), outside the store.
    pub async fn owner_execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match &self.store {
            Store::Sqlite(store) => Ok(store.pool().execute(sql).await?.rows_affected()),
            Store::Postgres(store) => Ok(store.pool().execute(sql).await?.rows_affected()),
        }
    }

    /// A counted query as the owner, bypassing the store (and, for a superuser, RLS).
    pub async fn owner_count(&self, sql: &str) -> i64 {
        match &self.store {
            Store::Sqlite(store) => sqlx::query_scalar(sql).fetch_one(store.pool()).await,
            Store::Postgres(store) => sqlx::query_scalar(sql).fetch_one(store.pool()).await,
        }
        .expect("count")
    }

    /// PostgreSQL only: a fresh LOGIN role holding exactly the service grants of
    /// docs/OPERATIONS.md, and a store connected as it.
    pub async fn service_role(&self) -> (String, PostgresStore) {
        let pg = self
            .pg
            .as_ref()
            .expect("service roles exist on PostgreSQL only");
        let role = format!("ledger_svc_{}", unique_suffix());
        let Store::Postgres(owner) = &self.store else {
            unreachable!("PostgreSQL test database");
        };
        owner
            .pool()
            .execute(format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS").as_str())
            .await
            .expect("create role");
        pg.roles.lock().expect("lock").push(role.clone());
        for grant in SERVICE_ROLE_GRANTS {
            let statement = grant
                .replace("{database}", &pg.name)
                .replace("{role}", &role);
            owner
                .pool()
                .execute(statement.as_str())
                .await
                .expect("grant");
        }
        let store = PostgresStore::connect_with(pg.options.clone().username(&role), 4)
            .await
            .expect("connect as the service role");
        self.opened
            .lock()
            .expect("lock")
            .push(Store::Postgres(store.clone()));
        (role, store)
    }

    /// Closes every pool and drops the PostgreSQL database and roles.
    pub async fn cleanup(&self) {
        let opened: Vec<Store> = self.opened.lock().expect("lock").drain(..).collect();
        for store in opened {
            store.close().await;
        }
        if let Some(pg) = &self.pg {
            let mut conn = PgConnection::connect_with(&pg.admin)
                .await
                .expect("connect to DATABASE_URL for cleanup");
            conn.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg.name).as_str())
                .await
                .expect("drop test database");
            let roles: Vec<String> = pg.roles.lock().expect("lock").drain(..).collect();
            for role in roles {
                conn.execute(format!("DROP ROLE IF EXISTS {role}").as_str())
                    .await
                    .expect("drop test role");
            }
            conn.close().await.expect("close admin connection");
        }
    }
}

/// Runs `body` on a fresh database of `backend`, then cleans up, then re-raises the
/// body's panic if it had one.
pub async fn run<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Arc<TestDb>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = Arc::new(TestDb::new(backend).await);
    let outcome = tokio::spawn(body(Arc::clone(&db))).await;
    db.cleanup().await;
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("test task failed: {error}"),
        }
    }
}

/// Generates `sqlite::NAME` and `postgres::NAME` tests from `async fn NAME(Arc<TestDb>)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    $crate::common::run($crate::common::Backend::Sqlite, super::$test).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    $crate::common::run($crate::common::Backend::Postgres, super::$test).await;
                }
            )*
        }
    };
}
