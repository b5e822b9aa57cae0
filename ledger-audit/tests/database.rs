//! `ledger-audit export` and `verify --database-url` against real databases: a stored
//! tenant exports and verifies intact on SQLite and PostgreSQL, and a row edited behind
//! the service's back (as superuser, with the append-only trigger disabled) is caught
//! at its seq.

use std::path::Path;
use std::process::{Command, Output};

use ledger_core::command::Command as Cmd;
use ledger_core::event::{ChainHead, EventBody};
use ledger_core::money::{Currency, Money};
use ledger_core::testkit::{standard_tenant, Ledger};
use ledger_store::Store;
use sqlx::Connection;

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect(s)
}

fn audit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger-audit"))
        .args(args)
        .output()
        .expect("run ledger-audit")
}

/// A tenant with a payout through every gate and a checkpoint.
fn chain() -> Ledger {
    let mut ledger = standard_tenant("acme", 9, "1000.00");
    let po = "po_1";
    ledger
        .execute(
            "usr_ann",
            Cmd::RequestPayout {
                payout: id(po),
                account: id("acct_ops"),
                payee: id("pay_lark"),
                money: Money::parse("125.50", Currency::Eur).expect("money"),
                reference: "inv-1".into(),
                metadata: None,
            },
        )
        .expect("request");
    ledger
        .execute(
            "usr_bob",
            Cmd::ApprovePayout {
                payout: id(po),
                batch: None,
            },
        )
        .expect("approve");
    let proof = ledger.proof("usr_cat", "payout.authorize", po);
    ledger
        .execute(
            "usr_cat",
            Cmd::AuthorizePayout {
                payout: id(po),
                two_factor: Some(proof),
                batch: None,
            },
        )
        .expect("authorize");
    ledger.checkpoint();
    ledger
}

async fn store_chain(store: &Store, ledger: &Ledger) {
    store.migrate().await.expect("migrate");
    let events: Vec<_> = ledger
        .events
        .iter()
        .map(|e| (e.clone(), e.canonical_bytes().expect("bytes")))
        .collect();
    store
        .append(&ledger.tenant, ChainHead::GENESIS, &events)
        .await
        .expect("append");
    for checkpoint in &ledger.checkpoints {
        store
            .append_checkpoint(checkpoint)
            .await
            .expect("checkpoint");
    }
}

fn write_keys(dir: &Path, ledger: &Ledger) -> String {
    let keys: Vec<_> = ledger.keys.iter().cloned().collect();
    let path = dir.join("keys.json");
    std::fs::write(&path, serde_json::json!({ "keys": keys }).to_string()).expect("keys");
    path.to_str().expect("path").to_owned()
}

fn export_then_verify(url: &str, dir: &Path, keys: &str) {
    let out = dir.join("acme.jsonl");
    let out = out.to_str().expect("path");
    let exported = audit(&[
        "export",
        "--database-url",
        url,
        "--tenant",
        "acme",
        "--keys",
        keys,
        "--out",
        out,
    ]);
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let verified = audit(&["verify", out, "--keys", keys]);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(0), "{text}");
    assert!(text.contains("checkpoints          1 verified"), "{text}");
    let direct = audit(&["verify", "--database-url", url, "--keys", keys]);
    assert_eq!(
        direct.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&direct.stdout)
    );
    assert!(String::from_utf8_lossy(&direct.stdout).starts_with("INTACT: export of tenant acme"));
    // The database holds no keys: --keys is required.
    let unpinned = audit(&["verify", "--database-url", url]);
    assert_eq!(unpinned.status.code(), Some(2));
}

#[test]
fn sqlite_a_stored_tenant_exports_and_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let ledger = chain();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = Store::connect(&url).await.expect("connect");
        store_chain(&store, &ledger).await;
        store.close().await;
    });
    let keys = write_keys(dir.path(), &ledger);
    export_then_verify(&url, dir.path(), &keys);
}

#[test]
fn postgres_a_stored_tenant_exports_verifies_and_an_edited_row_is_caught_at_its_seq() {
    let admin_url = test_support::database_url();
    let name = format!("ledger_audit_{}", std::process::id());
    let url = match admin_url.rfind('/') {
        Some(i) => format!("{}/{name}", &admin_url[..i]),
        None => panic!("DATABASE_URL without a database"),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = chain();
    let keys = write_keys(dir.path(), &ledger);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let edited_seq = ledger
        .events
        .iter()
        .find(|e| matches!(e.body, EventBody::PayoutRequested(_)))
        .expect("request")
        .seq;
    runtime.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .expect("drop");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create");
        let store = Store::connect(&url).await.expect("connect");
        store_chain(&store, &ledger).await;
        store.close().await;
    });
    export_then_verify(&url, dir.path(), &keys);

    // Behind the service's back: a superuser disables the trigger and edits an amount.
    runtime.block_on(async {
        let mut db = sqlx::PgConnection::connect(&url).await.expect("connect");
        for statement in [
            "ALTER TABLE events DISABLE TRIGGER events_append_only".to_owned(),
            format!(
                "UPDATE events SET canonical = convert_to(replace(convert_from(canonical, 'UTF8'), \
                 '125.50', '925.50'), 'UTF8') WHERE tenant_id = 'acme' AND seq = {edited_seq}"
            ),
            "ALTER TABLE events ENABLE TRIGGER events_append_only".to_owned(),
        ] {
            sqlx::query(&statement)
                .execute(&mut db)
                .await
                .expect(&statement);
        }
    });
    let caught = audit(&[
        "verify",
        "--database-url",
        &url,
        "--tenant",
        "acme",
        "--keys",
        &keys,
    ]);
    let err = String::from_utf8_lossy(&caught.stderr);
    assert_eq!(caught.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("broken at seq {edited_seq}:")),
        "{err}"
    );

    runtime.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .expect("drop");
    });
}
