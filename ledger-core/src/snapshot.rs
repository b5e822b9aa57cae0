//! A tenant's state at a seq, as data: what the store keeps so that loading a tenant
//! replays only the events after it. A snapshot is a cache: it names the seq and head
//! hash it was taken at, the loader checks that hash against the stored chain and
//! replays from scratch when they differ, and it can always be rebuilt from the chain.

use std::collections::{BTreeSet, HashMap};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::autopay::{AutopayRule, RuleStatus};
use crate::crypto::Hash;
use crate::event::ChainHead;
use crate::ids::{AccountId, ApiKeyId, AutopayRuleId, PayeeId, PayoutId, PrincipalId, TenantId};
use crate::money::{Currency, Money};
use crate::policy::{ApprovalPolicy, ApprovalRule, Role};
use crate::proof::TwoFactorProof;
use crate::state::{Account, OpenPayout, Payout, PayoutStatus, Principal, TenantState};

/// The snapshot format version.
pub const SNAPSHOT_VERSION: u32 = 2;

/// An open payout's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenRecord {
    status: PayoutStatus,
    account: AccountId,
    money: Money,
    payee: PayeeId,
    requester: PrincipalId,
    approvers: Vec<PrincipalId>,
    approvals_required: u32,
    authorizer: Option<PrincipalId>,
    executor: Option<PrincipalId>,
}

/// One payout: open with its actors, or just its final status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PayoutRecord {
    payout: PayoutId,
    closed: Option<PayoutStatus>,
    open: Option<OpenRecord>,
}

/// A tenant's state at `seq` (whose event hashes to `head`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Format version.
    pub v: u32,
    /// The tenant.
    pub tenant: TenantId,
    /// The seq the state reflects.
    pub seq: u64,
    /// The hash of the event at `seq`.
    pub head: Hash,
    created: bool,
    principals: Vec<(PrincipalId, bool, BTreeSet<Role>, bool)>,
    api_keys: Vec<(ApiKeyId, PrincipalId)>,
    accounts: Vec<(AccountId, Currency, Decimal, Decimal)>,
    payees: Vec<PayeeId>,
    payouts: Vec<PayoutRecord>,
    world: Vec<(Currency, bool, Decimal)>,
    policy: Vec<ApprovalRule>,
    last_proofs: Vec<(PrincipalId, TwoFactorProof)>,
    autopay_rules: Vec<RuleRecord>,
    just_requested: Option<PayoutId>,
    suspended: bool,
}

/// An auto-pay rule's terms and day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleRecord {
    rule: AutopayRuleId,
    account: AccountId,
    payees: Vec<PayeeId>,
    max_amount: Money,
    daily_limit: Money,
    proposer: PrincipalId,
    enabler: Option<PrincipalId>,
    status: RuleStatus,
    day: i64,
    day_total: Decimal,
}

/// Why a snapshot cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Another format version.
    #[error("snapshot version {0} is not supported")]
    Version(u32),
    /// A payout record is neither open nor closed, or both.
    #[error("payout {0}: neither open nor closed")]
    Payout(String),
    /// The policy does not validate.
    #[error("policy: {0}")]
    Policy(String),
    /// Not JSON of this shape.
    #[error("snapshot: {0}")]
    Decode(String),
}

fn sorted<K: Ord + Clone, V, S>(map: &HashMap<K, V, S>) -> Vec<(&K, &V)> {
    let mut entries: Vec<(&K, &V)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

impl Snapshot {
    /// The snapshot of `state` at `head` (deterministic: entries sorted by id).
    pub fn of(state: &TenantState, head: ChainHead) -> Snapshot {
        Snapshot {
            v: SNAPSHOT_VERSION,
            tenant: state.tenant.clone(),
            seq: head.seq,
            head: head.hash,
            created: state.created,
            principals: sorted(&state.principals)
                .into_iter()
                .map(|(id, p)| (id.clone(), p.added, p.roles.clone(), p.deactivated))
                .collect(),
            api_keys: sorted(&state.api_keys)
                .into_iter()
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect(),
            accounts: sorted(&state.accounts)
                .into_iter()
                .map(|(id, a)| (id.clone(), a.currency, a.available, a.held))
                .collect(),
            payees: sorted(&state.payees)
                .into_iter()
                .map(|(id, ())| id.clone())
                .collect(),
            payouts: sorted(&state.payouts)
                .into_iter()
                .map(|(id, payout)| match payout {
                    Payout::Closed(status) => PayoutRecord {
                        payout: id.clone(),
                        closed: Some(*status),
                        open: None,
                    },
                    Payout::Open(open) => PayoutRecord {
                        payout: id.clone(),
                        closed: None,
                        open: Some(OpenRecord {
                            status: open.status,
                            account: open.account.clone(),
                            payee: open.payee.clone(),
                            money: open.money,
                            requester: open.requester.clone(),
                            approvers: open.approvers.to_vec(),
                            approvals_required: open.approvals_required,
                            authorizer: open.authorizer.clone(),
                            executor: open.executor.clone(),
                        }),
                    },
                })
                .collect(),
            world: state
                .world
                .iter()
                .map(|((currency, payees), amount)| (*currency, *payees, *amount))
                .collect(),
            policy: state.policy.rules(),
            last_proofs: sorted(&state.last_proofs)
                .into_iter()
                .map(|(id, proof)| (id.clone(), proof.clone()))
                .collect(),
            autopay_rules: state
                .autopay_rules
                .iter()
                .map(|(id, rule)| RuleRecord {
                    rule: id.clone(),
                    account: rule.account.clone(),
                    payees: rule.payees.iter().cloned().collect(),
                    max_amount: rule.max_amount,
                    daily_limit: rule.daily_limit,
                    proposer: rule.proposer.clone(),
                    enabler: rule.enabler.clone(),
                    status: rule.status,
                    day: rule.day,
                    day_total: rule.day_total,
                })
                .collect(),
            just_requested: state.just_requested.clone(),
            suspended: state.suspended,
        }
    }

    /// The state and head the snapshot holds.
    pub fn restore(self) -> Result<(TenantState, ChainHead), SnapshotError> {
        if self.v != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(self.v));
        }
        let mut state = TenantState::new(self.tenant);
        state.created = self.created;
        state.principals = self
            .principals
            .into_iter()
            .map(|(id, added, roles, deactivated)| {
                (
                    id,
                    Principal {
                        added,
                        roles,
                        deactivated,
                    },
                )
            })
            .collect();
        state.api_keys = self.api_keys.into_iter().collect();
        state.accounts = self
            .accounts
            .into_iter()
            .map(|(id, currency, available, held)| {
                (
                    id,
                    Account {
                        currency,
                        available,
                        held,
                    },
                )
            })
            .collect();
        state.payees = self.payees.into_iter().map(|id| (id, ())).collect();
        for record in self.payouts {
            let payout = match (record.closed, record.open) {
                (Some(status), None) => Payout::Closed(status),
                (None, Some(open)) => Payout::Open(Box::new(OpenPayout {
                    status: open.status,
                    account: open.account,
                    payee: open.payee,
                    money: open.money,
                    requester: open.requester,
                    approvers: open.approvers.into(),
                    approvals_required: open.approvals_required,
                    authorizer: open.authorizer,
                    executor: open.executor,
                })),
                (Some(_), Some(_)) | (None, None) => {
                    return Err(SnapshotError::Payout(record.payout.to_string()))
                }
            };
            state.payouts.insert(record.payout, payout);
        }
        state.world = self
            .world
            .into_iter()
            .map(|(currency, payees, amount)| ((currency, payees), amount))
            .collect();
        state.policy = ApprovalPolicy::from_rules(&self.policy)
            .map_err(|e| SnapshotError::Policy(e.to_string()))?;
        state.last_proofs = self.last_proofs.into_iter().collect();
        state.autopay_rules = self
            .autopay_rules
            .into_iter()
            .map(|r| {
                (
                    r.rule,
                    AutopayRule {
                        account: r.account,
                        payees: r.payees.into_iter().collect(),
                        max_amount: r.max_amount,
                        daily_limit: r.daily_limit,
                        proposer: r.proposer,
                        enabler: r.enabler,
                        status: r.status,
                        day: r.day,
                        day_total: r.day_total,
                    },
                )
            })
            .collect();
        state.just_requested = self.just_requested;
        state.suspended = self.suspended;
        Ok((
            state,
            ChainHead {
                seq: self.seq,
                hash: self.head,
            },
        ))
    }

    /// The snapshot as JSON text.
    pub fn to_json(&self) -> String {
        match serde_json::to_string(self) {
            Ok(text) => text,
            Err(e) => unreachable!("a snapshot always serialises: {e}"),
        }
    }

    /// Parses [`Snapshot::to_json`]'s text.
    pub fn from_json(text: &str) -> Result<Snapshot, SnapshotError> {
        serde_json::from_str(text).map_err(|e| SnapshotError::Decode(e.to_string()))
    }
}
