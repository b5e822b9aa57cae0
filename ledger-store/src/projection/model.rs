//! What the projections answer and take: `Reflected`, `ProjectStep`, the queries, and
//! the sizes of a step's reads and writes.

use std::collections::BTreeMap;

use ledger_core::ids::{AccountId, PayoutId, PrincipalId};
use ledger_core::policy::ApprovalRule;
use ledger_core::time::Timestamp;
use projections::{AccountBalance, AuditRow, Outcome, PayoutRow, ReadModel};

/// Rows per multi-row statement (a payout row has 27 columns: 13 500 parameters, under
/// SQLite's 32 766).
pub(crate) const ROWS_PER_STATEMENT: usize = 500;
/// Rows (balances, payouts, audit entries) per projector write transaction on SQLite,
/// where every transaction holds the one write lock (a tenant's rows are never split).
pub(crate) const WRITE_ROWS_MAX: usize = 200;

/// `items` cut into consecutive parts of about [`WRITE_ROWS_MAX`] rows: a part closes
/// once it holds that many, so only a single item can take one past the bound.
pub(crate) fn write_parts<T>(items: &[T], rows: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut parts = Vec::new();
    let (mut start, mut held) = (0, 0);
    for (index, item) in items.iter().enumerate() {
        held += rows(item);
        if held >= WRITE_ROWS_MAX {
            parts.push(&items[start..=index]);
            (start, held) = (index + 1, 0);
        }
    }
    if start < items.len() {
        parts.push(&items[start..]);
    }
    parts
}

/// Events per page of a rebuild (all pages in one transaction).
pub(crate) const REBUILD_PAGE: u32 = 5_000;

/// A read answered from the projection: the rows, and the seq of the last event they
/// reflect (the cursor, read in the same snapshot as the rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reflected<T> {
    /// The cursor: every event up to it, and none after, is in `value`.
    pub seq: u64,
    /// The rows.
    pub value: T,
}

/// What one projector step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectStep {
    /// Folded `events` events; the cursor is now `to`.
    Advanced {
        /// The new cursor.
        to: u64,
        /// Events folded.
        events: usize,
    },
    /// No event after the cursor, which is at `seq`.
    CaughtUp {
        /// The cursor.
        seq: u64,
    },
    /// Another projector moved the cursor first: nothing was written.
    Lost,
}

/// `GET /v1/payouts` filters: in request order, after a requested seq.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayoutQuery {
    /// Only this status.
    pub status: Option<String>,
    /// Only this source account.
    pub account: Option<AccountId>,
    /// Only payouts requested after this seq (the page cursor).
    pub after: u64,
    /// At most this many (at most [`crate::PAGE_LIMIT_MAX`]).
    pub limit: u32,
}

/// `GET /v1/audit` filters: in seq order, after a seq.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this actor.
    pub actor: Option<PrincipalId>,
    /// Only this action (`payout.approve`, ...).
    pub action: Option<String>,
    /// Only accepted, or only denied.
    pub result: Option<Outcome>,
    /// At or after this time.
    pub from: Option<Timestamp>,
    /// Before this time.
    pub to: Option<Timestamp>,
    /// Only rows after this seq (the page cursor).
    pub after: u64,
    /// At most this many (at most [`crate::PAGE_LIMIT_MAX`]).
    pub limit: u32,
}

/// Every persisted row of one tenant's projection (for tests and tools: it is all of
/// it, in memory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectedRows {
    /// The cursor.
    pub seq: u64,
    /// The approval rules the payouts view folds with.
    pub policy: Vec<ApprovalRule>,
    /// Balances by account.
    pub balances: BTreeMap<AccountId, AccountBalance>,
    /// Payouts by id.
    pub payouts: BTreeMap<PayoutId, PayoutRow>,
    /// Audit rows in seq order.
    pub audit: Vec<AuditRow>,
}

impl ProjectedRows {
    /// The rows of a pure fold, for comparison.
    pub fn of(model: &ReadModel) -> Self {
        Self {
            seq: model.seq,
            policy: model.payouts.policy.clone(),
            balances: model.balances.accounts.clone(),
            payouts: model.payouts.payouts.clone(),
            audit: model.audit.rows.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The parts are the items in order, each closed as soon as it reaches the bound.
        #[test]
        fn write_parts_cut_in_order_at_the_bound(rows in proptest::collection::vec(0usize..450, 0..40)) {
            let parts = write_parts(&rows, |r| *r);
            let joined: Vec<usize> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            prop_assert_eq!(&joined, &rows);
            for (index, part) in parts.iter().enumerate() {
                prop_assert!(!part.is_empty());
                let total: usize = part.iter().sum();
                let before_last: usize = part[..part.len() - 1].iter().sum();
                prop_assert!(before_last < WRITE_ROWS_MAX, "closed late: {:?}", part);
                if index + 1 < parts.len() {
                    prop_assert!(total >= WRITE_ROWS_MAX, "closed early: {:?}", part);
                }
            }
        }
    }
}
