//! Tenant state, folded from events by `apply`. `apply` trusts its input: every event it
//! sees was produced by `decide` (the writer) or re-decided by the verifier first.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rust_decimal::Decimal;

use crate::autopay::{AutopayRule, RuleStatus};
use crate::event::{Event, EventBody, Posting};
use crate::ids::{AccountId, ApiKeyId, AutopayRuleId, PayeeId, PayoutId, PrincipalId, TenantId};
use crate::money::{Currency, Money};
use crate::policy::{ApprovalPolicy, Role};
use crate::proof::TwoFactorProof;
use crate::time::Timestamp;

/// The core's hash maps keyed by its own ids: foldhash with a fixed seed (fast on short
/// keys, and no random seed: the core draws no randomness, and a run is the same every
/// time). Build one with `IdMap::default()`.
pub type IdMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// The set of [`IdMap`].
pub type IdSet<T> = std::collections::HashSet<T, foldhash::fast::FixedState>;

/// Where a posting lands.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    /// `acct_X:available`
    Available(AccountId),
    /// `acct_X:held`
    Held(AccountId),
    /// `world:funding`, where deposits come from.
    WorldFunding,
    /// `world:payees`, where released funds go.
    WorldPayees,
}

impl Bucket {
    /// Parses a posting's `account` text.
    pub fn parse(s: &str) -> Option<Bucket> {
        match s {
            "world:funding" => Some(Bucket::WorldFunding),
            "world:payees" => Some(Bucket::WorldPayees),
            _ => {
                let (account, part) = s.rsplit_once(':')?;
                let account = AccountId::parse(account).ok()?;
                match part {
                    "available" => Some(Bucket::Available(account)),
                    "held" => Some(Bucket::Held(account)),
                    _ => None,
                }
            }
        }
    }

    /// The posting text.
    pub fn to_text(&self) -> String {
        match self {
            Bucket::Available(a) => format!("{a}:available"),
            Bucket::Held(a) => format!("{a}:held"),
            Bucket::WorldFunding => "world:funding".to_owned(),
            Bucket::WorldPayees => "world:payees".to_owned(),
        }
    }

    /// Whether the bucket belongs to the tenant (and so may never go below zero).
    pub fn is_tenant(&self) -> bool {
        matches!(self, Bucket::Available(_) | Bucket::Held(_))
    }
}

/// Builds `[from -amount, to +amount]`.
pub fn transfer(from: Bucket, to: Bucket, money: &Money) -> Vec<Posting> {
    vec![
        Posting {
            account: from.to_text(),
            amount: money.debit().to_text(),
            currency: money.currency(),
        },
        Posting {
            account: to.to_text(),
            amount: money.credit().to_text(),
            currency: money.currency(),
        },
    ]
}

/// A principal known to the tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// Whether `user.added` (or `tenant.created` for the admin) introduced them.
    pub added: bool,
    /// Roles held now.
    pub roles: BTreeSet<Role>,
    /// Deactivated (`user.deactivated`): acts no more, roles count no more.
    pub deactivated: bool,
}

/// An account and its balances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its only currency.
    pub currency: Currency,
    /// Free to pay out.
    pub available: Decimal,
    /// Held by authorized payouts.
    pub held: Decimal,
}

/// Where a payout stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PayoutStatus {
    /// Awaiting approvals.
    Requested,
    /// Enough approvals.
    Approved,
    /// Funds held.
    Authorized,
    /// Sent to the rail.
    Executed,
    /// Left the ledger.
    Released,
    /// Rejected before authorization.
    Rejected,
    /// Cancelled before execution.
    Cancelled,
    /// Failed after execution; hold returned.
    Failed,
}

impl PayoutStatus {
    /// Every status.
    pub const ALL: [PayoutStatus; 8] = [
        PayoutStatus::Requested,
        PayoutStatus::Approved,
        PayoutStatus::Authorized,
        PayoutStatus::Executed,
        PayoutStatus::Released,
        PayoutStatus::Rejected,
        PayoutStatus::Cancelled,
        PayoutStatus::Failed,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            PayoutStatus::Requested => "requested",
            PayoutStatus::Approved => "approved",
            PayoutStatus::Authorized => "authorized",
            PayoutStatus::Executed => "executed",
            PayoutStatus::Released => "released",
            PayoutStatus::Rejected => "rejected",
            PayoutStatus::Cancelled => "cancelled",
            PayoutStatus::Failed => "failed",
        }
    }

    /// Whether nothing can happen to the payout any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PayoutStatus::Released
                | PayoutStatus::Rejected
                | PayoutStatus::Cancelled
                | PayoutStatus::Failed
        )
    }
}

/// An open payout's distinct approvers, in order: two inline (most policies ask for one
/// or two), more on the heap.
pub type Approvers = smallvec::SmallVec<[PrincipalId; 2]>;

/// An open payout, with everyone who acted on it (for four-eyes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPayout {
    /// Status (never final).
    pub status: PayoutStatus,
    /// Source account.
    pub account: AccountId,
    /// Payee.
    pub payee: PayeeId,
    /// Amount.
    pub money: Money,
    /// Who requested.
    pub requester: PrincipalId,
    /// Distinct approvers, in order.
    pub approvers: Approvers,
    /// Approvals needed (policy at request time).
    pub approvals_required: u32,
    /// Who authorized.
    pub authorizer: Option<PrincipalId>,
    /// Who executed.
    pub executor: Option<PrincipalId>,
}

/// A payout: open with its actors, or closed with only its final status (so a long
/// chain's memory grows with its open payouts, not with its history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payout {
    /// Still moving through the gates.
    Open(Box<OpenPayout>),
    /// Final.
    Closed(PayoutStatus),
}

impl Payout {
    /// The status.
    pub fn status(&self) -> PayoutStatus {
        match self {
            Payout::Open(open) => open.status,
            Payout::Closed(status) => *status,
        }
    }
}

/// One tenant's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantState {
    /// The tenant.
    pub tenant: TenantId,
    /// Whether `tenant.created` happened.
    pub created: bool,
    /// Principals seen (added, granted, or acting).
    pub principals: IdMap<PrincipalId, Principal>,
    /// API keys and their owners.
    pub api_keys: IdMap<ApiKeyId, PrincipalId>,
    /// Accounts.
    pub accounts: IdMap<AccountId, Account>,
    /// Payees.
    pub payees: IdMap<PayeeId, ()>,
    /// Payouts.
    pub payouts: IdMap<PayoutId, Payout>,
    /// World buckets per currency (funding is negative, payees positive).
    pub world: BTreeMap<(Currency, bool), Decimal>,
    /// The approval policy.
    pub policy: ApprovalPolicy,
    /// The last proof each principal used (the step rule).
    pub last_proofs: IdMap<PrincipalId, TwoFactorProof>,
    /// Auto-pay rules, in id order (the writer tries them in this order).
    pub autopay_rules: BTreeMap<AutopayRuleId, AutopayRule>,
    /// The payout the last event requested, if the last event was a request: an
    /// auto-pay approval follows its request in the same batch.
    pub just_requested: Option<PayoutId>,
    /// Suspended by the operator (`tenant.suspended`).
    pub suspended: bool,
}

impl TenantState {
    /// The state before `tenant.created`.
    pub fn new(tenant: TenantId) -> Self {
        Self {
            tenant,
            created: false,
            principals: IdMap::default(),
            api_keys: IdMap::default(),
            accounts: IdMap::default(),
            payees: IdMap::default(),
            payouts: IdMap::default(),
            world: BTreeMap::new(),
            policy: ApprovalPolicy::default(),
            last_proofs: IdMap::default(),
            autopay_rules: BTreeMap::new(),
            just_requested: None,
            suspended: false,
        }
    }

    /// Roles of `principal` (none once deactivated: they count no more).
    pub fn roles_of(&self, principal: &PrincipalId) -> Option<&BTreeSet<Role>> {
        self.principals
            .get(principal)
            .filter(|p| !p.deactivated)
            .map(|p| &p.roles)
    }

    /// Whether `principal` was deactivated.
    pub fn is_deactivated(&self, principal: &PrincipalId) -> bool {
        self.principals
            .get(principal)
            .is_some_and(|p| p.deactivated)
    }

    /// The balance of a bucket (zero when unknown).
    pub fn balance(&self, bucket: &Bucket, currency: Currency) -> Decimal {
        match bucket {
            Bucket::Available(a) => self.accounts.get(a).map_or(Decimal::ZERO, |a| a.available),
            Bucket::Held(a) => self.accounts.get(a).map_or(Decimal::ZERO, |a| a.held),
            Bucket::WorldFunding => self
                .world
                .get(&(currency, false))
                .copied()
                .unwrap_or_default(),
            Bucket::WorldPayees => self
                .world
                .get(&(currency, true))
                .copied()
                .unwrap_or_default(),
        }
    }

    fn balance_mut(&mut self, bucket: &Bucket, currency: Currency) -> &mut Decimal {
        match bucket {
            Bucket::Available(a) => &mut self.account_mut(a).available,
            Bucket::Held(a) => &mut self.account_mut(a).held,
            Bucket::WorldFunding => self.world.entry((currency, false)).or_default(),
            Bucket::WorldPayees => self.world.entry((currency, true)).or_default(),
        }
    }

    fn account_mut(&mut self, account: &AccountId) -> &mut Account {
        match self.accounts.get_mut(account) {
            Some(account) => account,
            None => panic!("invariant: posting to unknown account {account}"),
        }
    }

    fn open_payout_mut(&mut self, payout: &PayoutId) -> &mut OpenPayout {
        match self.payouts.get_mut(payout) {
            Some(Payout::Open(open)) => open,
            Some(Payout::Closed(_)) | None => panic!("invariant: {payout} is not open"),
        }
    }

    fn close_payout(&mut self, payout: &PayoutId, status: PayoutStatus) {
        self.payouts.insert(payout.clone(), Payout::Closed(status));
    }

    fn principal_mut(&mut self, principal: &PrincipalId) -> &mut Principal {
        self.principals.entry(principal.clone()).or_default()
    }

    fn apply_postings(&mut self, postings: &[Posting]) {
        for posting in postings {
            let bucket = match Bucket::parse(&posting.account) {
                Some(bucket) => bucket,
                None => panic!("invariant: bad bucket {:?}", posting.account),
            };
            let amount =
                match crate::money::SignedAmount::parse_exact(&posting.amount, posting.currency) {
                    Ok(amount) => amount.amount(),
                    Err(e) => panic!("invariant: bad posting amount: {e}"),
                };
            let balance = self.balance_mut(&bucket, posting.currency);
            *balance = match balance.checked_add(amount) {
                Some(sum) => sum,
                None => panic!("invariant: balance overflow"),
            };
            assert!(
                !bucket.is_tenant() || !balance.is_sign_negative() || balance.is_zero(),
                "invariant: tenant bucket below zero"
            );
        }
    }

    /// Applies one event (in place).
    pub fn apply_mut(&mut self, event: &Event) {
        self.apply_body(&event.actor, event.at, &event.body);
    }

    fn rule_mut(&mut self, rule: &AutopayRuleId) -> &mut AutopayRule {
        match self.autopay_rules.get_mut(rule) {
            Some(rule) => rule,
            None => panic!("invariant: unknown auto-pay rule {rule}"),
        }
    }

    /// Applies an event body decided for `actor` at `at` (before it is sealed).
    pub fn apply_body(&mut self, actor: &PrincipalId, at: Timestamp, body: &EventBody) {
        // A denial recorded as evidence changes no state (and never falls inside a batch).
        if let EventBody::CommandRejected(_) = body {
            return;
        }
        self.just_requested = if let EventBody::PayoutRequested(d) = body {
            Some(d.payout.clone())
        } else {
            None
        };
        if let Some(proof) = body.two_factor() {
            self.last_proofs.insert(actor.clone(), proof.clone());
        }
        self.apply_postings(body.postings());
        match body {
            EventBody::TenantCreated(d) => {
                self.created = true;
                if let Some(admin) = &d.admin {
                    let principal = self.principal_mut(admin);
                    principal.added = true;
                    principal.roles.insert(Role::Admin);
                }
            }
            EventBody::UserAdded(d) => self.principal_mut(&d.user).added = true,
            EventBody::RoleGranted(d) => {
                self.principal_mut(&d.user).roles.insert(d.role);
            }
            EventBody::RoleRevoked(d) => {
                self.principal_mut(&d.user).roles.remove(&d.role);
            }
            EventBody::ApiKeyIssued(d) => {
                self.api_keys.insert(d.key.clone(), d.user.clone());
            }
            EventBody::ApiKeyRevoked(d) => {
                self.api_keys.remove(&d.key);
            }
            EventBody::AccountOpened(d) => {
                self.accounts.insert(
                    d.account.clone(),
                    Account {
                        currency: d.currency,
                        available: Decimal::ZERO,
                        held: Decimal::ZERO,
                    },
                );
            }
            EventBody::FundsDeposited(_) => {}
            EventBody::PayeeAdded(d) => {
                self.payees.insert(d.payee.clone(), ());
            }
            EventBody::PolicyUpdated(d) => {
                self.policy = match ApprovalPolicy::from_rules(&d.rules) {
                    Ok(policy) => policy,
                    Err(e) => panic!("invariant: policy event with invalid rules: {e}"),
                };
            }
            EventBody::PayoutRequested(d) => {
                let money = match Money::parse_exact(&d.amount, d.currency) {
                    Ok(money) => money,
                    Err(e) => panic!("invariant: payout amount: {e}"),
                };
                let approvals_required = self.policy.approvals_required(&money);
                self.payouts.insert(
                    d.payout.clone(),
                    Payout::Open(Box::new(OpenPayout {
                        status: PayoutStatus::Requested,
                        account: d.account.clone(),
                        payee: d.payee.clone(),
                        money,
                        requester: actor.clone(),
                        approvers: Approvers::new(),
                        approvals_required,
                        authorizer: None,
                        executor: None,
                    })),
                );
            }
            EventBody::PayoutApproved(d) => {
                let payout = self.open_payout_mut(&d.payout);
                payout.approvers.push(actor.clone());
                if payout.approvers.len() >= payout.approvals_required as usize {
                    payout.status = PayoutStatus::Approved;
                }
                let money = payout.money;
                if let Some(rule) = &d.rule {
                    self.rule_mut(rule).count(&money, at);
                }
            }
            EventBody::PayoutRejected(d) => self.close_payout(&d.payout, PayoutStatus::Rejected),
            EventBody::PayoutAuthorized(d) => {
                let payout = self.open_payout_mut(&d.payout);
                payout.status = PayoutStatus::Authorized;
                payout.authorizer = Some(actor.clone());
            }
            EventBody::PayoutExecuted(d) => {
                let payout = self.open_payout_mut(&d.payout);
                payout.status = PayoutStatus::Executed;
                payout.executor = Some(actor.clone());
            }
            EventBody::PayoutReleased(d) => self.close_payout(&d.payout, PayoutStatus::Released),
            EventBody::PayoutFailed(d) => self.close_payout(&d.payout, PayoutStatus::Failed),
            EventBody::PayoutCancelled(d) => self.close_payout(&d.payout, PayoutStatus::Cancelled),
            EventBody::CommandRejected(_) | EventBody::TotpRecovered(_) => {}
            EventBody::AutopayRuleProposed(d) => {
                let parse = |text: &str| match Money::parse_exact(text, d.currency) {
                    Ok(money) => money,
                    Err(e) => panic!("invariant: auto-pay rule amount: {e}"),
                };
                self.autopay_rules.insert(
                    d.rule.clone(),
                    AutopayRule {
                        account: d.account.clone(),
                        payees: d.payees.iter().cloned().collect(),
                        max_amount: parse(&d.max_amount),
                        daily_limit: parse(&d.daily_limit),
                        proposer: actor.clone(),
                        enabler: None,
                        status: RuleStatus::Proposed,
                        day: i64::MIN,
                        day_total: Decimal::ZERO,
                    },
                );
            }
            EventBody::AutopayRuleEnabled(d) => {
                let rule = self.rule_mut(&d.rule);
                rule.status = RuleStatus::Enabled;
                rule.enabler = Some(actor.clone());
            }
            EventBody::AutopayRuleDisabled(d) => {
                self.rule_mut(&d.rule).status = RuleStatus::Disabled
            }
            EventBody::UserDeactivated(d) => self.principal_mut(&d.user).deactivated = true,
            EventBody::TenantSuspended(_) => self.suspended = true,
            EventBody::TenantResumed(_) => self.suspended = false,
        }
    }
}

/// `apply(state, event) -> state`.
pub fn apply(mut state: TenantState, event: &Event) -> TenantState {
    state.apply_mut(event);
    state
}
