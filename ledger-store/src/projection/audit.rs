//! The audit read model's rows as columns (`projection_audit`).

use ledger_core::ids::TenantId;
use projections::{AuditRow, Outcome};

use crate::projection::columns::{corrupt, parse_as, seq_from_db, time_from_db};
use crate::StoreError;

#[derive(sqlx::FromRow)]
pub(crate) struct AuditColumns {
    pub(crate) seq: i64,
    pub(crate) at: String,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) subject: String,
    pub(crate) result: String,
    pub(crate) reason: Option<String>,
    pub(crate) request_id: Option<String>,
}

impl AuditColumns {
    pub(crate) fn into_row(self, tenant: &TenantId) -> Result<AuditRow, StoreError> {
        Ok(AuditRow {
            seq: seq_from_db(tenant, self.seq)?,
            at: time_from_db(tenant, &self.at)?,
            actor: parse_as(tenant, "actor", &self.actor)?,
            action: self.action,
            subject: self.subject,
            result: Outcome::parse(&self.result)
                .ok_or_else(|| corrupt(tenant, "audit result is neither accepted nor denied"))?,
            reason: self.reason,
            request_id: self.request_id,
        })
    }
}

pub(crate) const AUDIT_INSERT: &str =
    "INSERT INTO projection_audit (tenant_id, seq, at, actor, action, \
     subject, result, reason, request_id) ";

// ---------------------------------------------------------------------------------------
