//! Verifying or exporting straight from a ledger database (`--database-url`): the
//! store's export of each tenant is streamed to a temporary file, then verified by the
//! same pipeline as an export file. The database holds no keys, so `--keys` (the JSON of
//! `GET /v1/ledger/keys`) supplies the key lines and pins them.

use std::io::{BufWriter, Write};
use std::path::Path;

use ledger_core::crypto::{KeyRecord, KeySet};
use ledger_core::ids::TenantId;
use ledger_core::time::Timestamp;
use ledger_core::verify::{Break, BreakKind, BreakLocation, Report, Summary};
use ledger_store::{ExportError, Store, StoreError};

use crate::error::Error;
use crate::pipeline::{verify_file, Options};

fn store_error(error: impl std::fmt::Display) -> Error {
    Error::Database(error.to_string())
}

fn now() -> Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_unix_micros(micros)
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(store_error)
}

/// The outcome of exporting one tenant: written, or a stored row that does not match
/// its own hash (reported as a break at its seq, like the verifier would).
enum Exported {
    Written,
    Corrupt { seq: u64, reason: String },
}

async fn export_to(
    store: &Store,
    tenant: &TenantId,
    keys: &[KeyRecord],
    out: &mut impl Write,
) -> Result<Exported, Error> {
    match store.write_export(tenant, keys, now(), out).await {
        Ok(_) => Ok(Exported::Written),
        Err(ExportError::Store(StoreError::Corrupt { seq, reason, .. })) => {
            Ok(Exported::Corrupt { seq, reason })
        }
        Err(ExportError::Write(source)) => Err(Error::Write {
            path: "export".into(),
            source,
        }),
        Err(other) => Err(store_error(other)),
    }
}

/// Writes the export of `tenant` to `out` (a file, or stdout for `-`).
pub fn export(url: &str, tenant: &TenantId, keys: &[KeyRecord], out: &Path) -> Result<(), Error> {
    let runtime = runtime()?;
    runtime.block_on(async {
        let store = Store::connect(url).await.map_err(store_error)?;
        let result = if out == Path::new("-") {
            let mut stdout = BufWriter::new(std::io::stdout().lock());
            export_to(&store, tenant, keys, &mut stdout).await
        } else {
            let file = std::fs::File::create(out).map_err(|source| Error::Write {
                path: out.to_owned(),
                source,
            })?;
            let mut writer = BufWriter::new(file);
            export_to(&store, tenant, keys, &mut writer).await
        };
        store.close().await;
        match result? {
            Exported::Written => Ok(()),
            Exported::Corrupt { seq, reason } => Err(Error::Database(format!(
                "the stored event at seq {seq} does not match its own hash ({reason}); \
                 verify the database to report it"
            ))),
        }
    })
}

/// Verifies `tenant` (or every tenant the connection can see) in the database.
pub fn verify(
    url: &str,
    tenant: Option<&TenantId>,
    keys: &KeySet,
) -> Result<Vec<(TenantId, Report)>, Error> {
    let records: Vec<KeyRecord> = keys.iter().cloned().collect();
    let runtime = runtime()?;
    let store = runtime.block_on(Store::connect(url)).map_err(store_error)?;
    let tenants = match tenant {
        Some(tenant) => vec![tenant.clone()],
        None => runtime.block_on(store.tenants()).map_err(store_error)?,
    };
    if tenants.is_empty() {
        return Err(Error::Database(
            "no tenant visible: pass --tenant, or connect as a role that may read every tenant"
                .into(),
        ));
    }
    let mut reports = Vec::new();
    for tenant in tenants {
        let file = tempfile::NamedTempFile::new().map_err(|source| Error::Write {
            path: std::env::temp_dir(),
            source,
        })?;
        let mut writer = BufWriter::new(file.as_file());
        let exported = runtime.block_on(export_to(&store, &tenant, &records, &mut writer))?;
        drop(writer);
        let report = match exported {
            Exported::Written => verify_file(
                file.path(),
                Options {
                    pinned: Some(keys.clone()),
                    ..Options::default()
                },
            )?,
            Exported::Corrupt { seq, reason } => Report {
                first_break: Some(Break {
                    location: BreakLocation::Event { seq },
                    kind: BreakKind::Hash,
                    code: None,
                    reason: format!("the stored row does not match its hash: {reason}"),
                    line: 0,
                }),
                also_rule_break: None,
                summary: Summary {
                    tenant: Some(tenant.clone()),
                    keys_pinned: true,
                    ..Summary::default()
                },
            },
        };
        reports.push((tenant, report));
    }
    runtime.block_on(store.close());
    Ok(reports)
}
