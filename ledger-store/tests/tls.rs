//! TLS to PostgreSQL: a cluster started with `ssl = on` and a certificate for `localhost`
//! from a test CA (made here, at test time). The URL's `sslmode` is honoured:
//! `verify-full` with the CA file connects to `localhost` over TLS and refuses the same
//! server reached as `127.0.0.1` (a certificate for another host name), and an unknown
//! CA; `require` refuses a server without TLS; `disable` stays plain.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use ledger_store::{PostgresStore, Store, StoreError};

/// Writes the CA, and the server's certificate and key for `localhost`, into `dir`; the
/// cluster's TLS settings.
fn tls_files(dir: &Path) -> Vec<String> {
    let ca = test_support::ca::TestCa::new();
    let server = ca.issue_for(&["localhost"], "localhost", 2020, 2200);
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca");
    std::fs::write(dir.join("server.crt"), &server.certificate).expect("crt");
    let key_path = dir.join("server.key");
    std::fs::write(&key_path, &server.key).expect("key");
    // PostgreSQL refuses a key that others can read.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    vec![
        "ssl=on".to_owned(),
        format!("ssl_cert_file={}", dir.join("server.crt").display()),
        format!("ssl_key_file={}", key_path.display()),
        "ssl_min_protocol_version=TLSv1.2".to_owned(),
    ]
}

async fn connect(url: &str) -> Result<Store, StoreError> {
    Store::connect(url).await
}

/// Whether the store's connection to the server is encrypted (`pg_stat_ssl`).
async fn encrypted(store: &Store) -> bool {
    let Store::Postgres(postgres) = store else {
        panic!("a PostgreSQL store")
    };
    sqlx::query_scalar::<_, bool>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(postgres.pool())
        .await
        .expect("pg_stat_ssl")
}

#[tokio::test]
async fn sslmode_verify_full_connects_over_tls_and_refuses_another_host_name() {
    let cluster = test_support::start_postgres_with(tls_files);
    let port = cluster.port;
    let ca = cluster.dir.join("ca.pem");
    let ca = ca.display();

    let full = format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    );
    let store = connect(&full).await.expect("verify-full to localhost");
    assert!(encrypted(&store).await, "verify-full connected without TLS");
    store.close().await;

    // The certificate names localhost, not 127.0.0.1: verify-full refuses.
    let wrong_name = format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    );
    let refused = connect(&wrong_name).await;
    assert!(
        refused.is_err(),
        "verify-full accepted a certificate for another host name"
    );

    // Without the CA file the test CA is not trusted.
    let untrusted = format!("postgres://postgres@localhost:{port}/postgres?sslmode=verify-full");
    assert!(
        connect(&untrusted).await.is_err(),
        "an unknown CA was trusted"
    );

    // sslmode=disable stays plain (what a local socket setup may choose).
    let plain = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    let store = connect(&plain).await.expect("disable");
    assert!(!encrypted(&store).await);
    store.close().await;
}

#[tokio::test]
async fn sslmode_require_refuses_a_server_without_tls() {
    let cluster = test_support::start_postgres_with(|_| Vec::new());
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=require",
        cluster.port
    );
    assert!(
        PostgresStore::connect(&url).await.is_err(),
        "sslmode=require connected to a server without TLS"
    );
}
