//! The export of one stored tenant (DESIGN section 4), written as a stream: the header,
//! the key lines, every event from its stored canonical bytes, page by page, then the
//! checkpoints. Memory holds one page, whatever the chain's length.

use std::io::Write;

use ledger_core::crypto::KeyRecord;
use ledger_core::event::ChainHead;
use ledger_core::ids::TenantId;
use ledger_core::time::Timestamp;
use ledger_core::verify::{lines, Header, EXPORT_FORMAT};

use crate::{Store, StoreError, PAGE_LIMIT_MAX};

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store failed (or a stored row does not check out).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The output cannot be written.
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
    /// An event cannot be written as a line.
    #[error("event {seq}: {message}")]
    Event {
        /// Its seq.
        seq: u64,
        /// Why.
        message: String,
    },
}

impl Store {
    /// Writes `tenant`'s export up to the head it finds when it starts, with `keys` as
    /// the key lines (the store holds no keys: the service publishes them). Returns the
    /// head exported.
    pub async fn write_export(
        &self,
        tenant: &TenantId,
        keys: &[KeyRecord],
        exported_at: Timestamp,
        out: &mut impl Write,
    ) -> Result<ChainHead, ExportError> {
        let head = self.head(tenant).await?;
        let header = Header {
            format: EXPORT_FORMAT.to_owned(),
            v: 1,
            tenant: tenant.clone(),
            from_seq: 1,
            to_seq: head.seq,
            exported_at,
        };
        writeln!(out, "{}", lines::header(&header))?;
        for record in keys {
            writeln!(out, "{}", lines::key(record))?;
        }
        let mut after = 0;
        while after < head.seq {
            let limit = u32::try_from((head.seq - after).min(u64::from(PAGE_LIMIT_MAX)))
                .unwrap_or(PAGE_LIMIT_MAX);
            let page = self.load(tenant, after, limit).await?;
            let Some((last, _)) = page.last() else { break };
            after = last.seq;
            for (event, _) in &page {
                let line = lines::event(event).map_err(|e| ExportError::Event {
                    seq: event.seq,
                    message: e.to_string(),
                })?;
                writeln!(out, "{line}")?;
            }
        }
        let mut after = 0;
        loop {
            let page = self.checkpoints(tenant, after, PAGE_LIMIT_MAX).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for checkpoint in page.iter().filter(|c| c.seq <= head.seq) {
                writeln!(out, "{}", lines::checkpoint(checkpoint))?;
            }
            if page.len() < PAGE_LIMIT_MAX as usize {
                break;
            }
        }
        out.flush()?;
        Ok(head)
    }

    /// The tenants whose events this connection can see (on PostgreSQL, row-level
    /// security shows a service role none: an auditor lists them as a role that may
    /// read every tenant, or names the tenant).
    pub async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        let sql = "SELECT DISTINCT tenant_id FROM events ORDER BY tenant_id";
        let rows: Vec<(String,)> = match self {
            Store::Sqlite(s) => sqlx::query_as(sql).fetch_all(s.pool()).await?,
            Store::Postgres(s) => sqlx::query_as(sql).fetch_all(s.pool()).await?,
        };
        rows.into_iter()
            .map(|(tenant,)| {
                tenant.parse().map_err(|_| StoreError::Corrupt {
                    tenant: tenant.clone(),
                    seq: 0,
                    reason: "a stored tenant id is invalid".into(),
                })
            })
            .collect()
    }
}
