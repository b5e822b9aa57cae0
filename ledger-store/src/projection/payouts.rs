//! The payouts read model's rows as columns (`projection_payouts`).

use ledger_core::ids::TenantId;
use projections::{Gate, PayoutRow};

use crate::projection::columns::{corrupt, parse_as, seq_from_db, time_from_db};
use crate::StoreError;

#[derive(sqlx::FromRow)]
pub(crate) struct PayoutColumns {
    pub(crate) payout: String,
    pub(crate) status: String,
    pub(crate) account: String,
    pub(crate) payee: String,
    pub(crate) amount: String,
    pub(crate) currency: String,
    pub(crate) reference: String,
    pub(crate) approvals_required: i64,
    pub(crate) requested_by: String,
    pub(crate) requested_at: String,
    pub(crate) requested_seq: i64,
    pub(crate) approvals: String,
    pub(crate) authorized_by: Option<String>,
    pub(crate) authorized_at: Option<String>,
    pub(crate) authorized_seq: Option<i64>,
    pub(crate) executed_by: Option<String>,
    pub(crate) executed_at: Option<String>,
    pub(crate) executed_seq: Option<i64>,
    pub(crate) released_by: Option<String>,
    pub(crate) released_at: Option<String>,
    pub(crate) released_seq: Option<i64>,
    pub(crate) ended_by: Option<String>,
    pub(crate) ended_at: Option<String>,
    pub(crate) ended_seq: Option<i64>,
    pub(crate) ended_reason: Option<String>,
}

pub(crate) fn gate_from_db(
    tenant: &TenantId,
    by: Option<String>,
    at: Option<String>,
    seq: Option<i64>,
) -> Result<Option<Gate>, StoreError> {
    match (by, at, seq) {
        (None, None, None) => Ok(None),
        (Some(by), Some(at), Some(seq)) => Ok(Some(Gate {
            by: parse_as(tenant, "gate principal", &by)?,
            at: time_from_db(tenant, &at)?,
            seq: seq_from_db(tenant, seq)?,
        })),
        _ => Err(corrupt(tenant, "a gate is partly recorded")),
    }
}

impl PayoutColumns {
    pub(crate) fn into_row(self, tenant: &TenantId) -> Result<PayoutRow, StoreError> {
        let ended = match (
            gate_from_db(tenant, self.ended_by, self.ended_at, self.ended_seq)?,
            self.ended_reason,
        ) {
            (None, None) => None,
            (Some(gate), Some(reason)) => Some((gate, reason)),
            (Some(_), None) | (None, Some(_)) => {
                return Err(corrupt(tenant, "an ended payout without its reason"))
            }
        };
        Ok(PayoutRow {
            payout: parse_as(tenant, "payout", &self.payout)?,
            status: self.status,
            account: parse_as(tenant, "account", &self.account)?,
            payee: parse_as(tenant, "payee", &self.payee)?,
            amount: self.amount,
            currency: parse_as(tenant, "currency", &self.currency)?,
            reference: self.reference,
            requested: Gate {
                by: parse_as(tenant, "requester", &self.requested_by)?,
                at: time_from_db(tenant, &self.requested_at)?,
                seq: seq_from_db(tenant, self.requested_seq)?,
            },
            approvals: serde_json::from_str(&self.approvals)
                .map_err(|_| corrupt(tenant, "approvals do not parse"))?,
            authorized: gate_from_db(
                tenant,
                self.authorized_by,
                self.authorized_at,
                self.authorized_seq,
            )?,
            executed: gate_from_db(
                tenant,
                self.executed_by,
                self.executed_at,
                self.executed_seq,
            )?,
            released: gate_from_db(
                tenant,
                self.released_by,
                self.released_at,
                self.released_seq,
            )?,
            ended,
            approvals_required: u32::try_from(self.approvals_required)
                .map_err(|_| corrupt(tenant, "approvals required out of range"))?,
        })
    }
}

pub(crate) const PAYOUT_UPDATE: &str = " ON CONFLICT (tenant_id, payout) DO UPDATE SET \
     status = excluded.status, account = excluded.account, payee = excluded.payee, \
     amount = excluded.amount, currency = excluded.currency, reference = excluded.reference, \
     approvals_required = excluded.approvals_required, requested_by = excluded.requested_by, \
     requested_at = excluded.requested_at, requested_seq = excluded.requested_seq, \
     approvals = excluded.approvals, authorized_by = excluded.authorized_by, \
     authorized_at = excluded.authorized_at, authorized_seq = excluded.authorized_seq, \
     executed_by = excluded.executed_by, executed_at = excluded.executed_at, \
     executed_seq = excluded.executed_seq, released_by = excluded.released_by, \
     released_at = excluded.released_at, released_seq = excluded.released_seq, \
     ended_by = excluded.ended_by, ended_at = excluded.ended_at, ended_seq = excluded.ended_seq, \
     ended_reason = excluded.ended_reason";

pub(crate) const PAYOUT_INSERT: &str =
    "INSERT INTO projection_payouts (tenant_id, payout, status, \
     account, payee, amount, currency, reference, approvals_required, requested_by, \
     requested_at, requested_seq, approvals, authorized_by, authorized_at, authorized_seq, \
     executed_by, executed_at, executed_seq, released_by, released_at, released_seq, \
     ended_by, ended_at, ended_seq, ended_reason) ";
