//! Pure read models folded from ledger-core events: balances per account, the payouts
//! view, and the audit view. Each is `apply(&mut self, &Event)` and nothing else: no IO,
//! no clock. A projector (in the store and the API) persists them with its cursor; a
//! rebuild is the same fold from seq 1, and the property tests hold the two equal.
//!
//! Persisting incrementally needs only the rows a page of events touches, never the
//! whole model: [`Keys::of`] names the account and payout rows an event reads and
//! writes, so the projector loads exactly those (and the tenant's approval rules) into a
//! partial [`ReadModel`], folds the page with [`ReadModel::apply_page`], and writes the
//! [`RowChanges`] it reports. Every `apply` reads and writes only the rows its event
//! names, which is why the partial fold equals the full one.

use std::collections::{BTreeMap, BTreeSet};

use ledger_core::event::{Event, EventBody, REQUEST_ID_FIELD};
use ledger_core::ids::{AccountId, PayeeId, PayoutId, PrincipalId};
use ledger_core::money::{Currency, Money};
use ledger_core::policy::{ApprovalPolicy, ApprovalRule};
use ledger_core::state::Bucket;
use ledger_core::time::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One account's balances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountBalance {
    /// The account's currency.
    pub currency: Currency,
    /// Spendable.
    pub available: Decimal,
    /// Held by authorized payouts.
    pub held: Decimal,
    /// Paid out to payees, all time.
    pub released: Decimal,
    /// Deposited, all time.
    pub deposited: Decimal,
}

/// Balances of every account, from the postings alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    /// By account.
    pub accounts: BTreeMap<AccountId, AccountBalance>,
}

impl Balances {
    /// Folds one event.
    pub fn apply(&mut self, event: &Event) {
        if let EventBody::AccountOpened(opened) = &event.body {
            self.accounts
                .entry(opened.account.clone())
                .or_insert(AccountBalance {
                    currency: opened.currency,
                    available: Decimal::ZERO,
                    held: Decimal::ZERO,
                    released: Decimal::ZERO,
                    deposited: Decimal::ZERO,
                });
        }
        let postings = event.body.postings();
        for posting in postings {
            let Ok(amount) = posting.amount.parse::<Decimal>() else {
                continue;
            };
            let Some(bucket) = Bucket::parse(&posting.account) else {
                continue;
            };
            let balance = match &bucket {
                Bucket::Available(account) | Bucket::Held(account) => {
                    self.accounts.get_mut(account)
                }
                Bucket::WorldFunding | Bucket::WorldPayees => None,
            };
            if let Some(balance) = balance {
                match bucket {
                    Bucket::Available(_) => balance.available += amount,
                    Bucket::Held(_) => balance.held += amount,
                    Bucket::WorldFunding | Bucket::WorldPayees => {}
                }
            }
        }
        // Deposits and releases, credited to the account they came into or left.
        if let EventBody::FundsDeposited(deposit) = &event.body {
            if let (Some(balance), Ok(amount)) = (
                self.accounts.get_mut(&deposit.account),
                deposit.amount.parse::<Decimal>(),
            ) {
                balance.deposited += amount;
            }
        }
        if let EventBody::PayoutReleased(_) = &event.body {
            for posting in postings {
                if let (Some(Bucket::Held(account)), Ok(amount)) = (
                    Bucket::parse(&posting.account),
                    posting.amount.parse::<Decimal>(),
                ) {
                    if let Some(balance) = self.accounts.get_mut(&account) {
                        balance.released -= amount;
                    }
                }
            }
        }
    }
}

/// Who acted at a gate, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    /// The principal.
    pub by: PrincipalId,
    /// When.
    pub at: Timestamp,
    /// The event's seq.
    pub seq: u64,
}

/// One payout as the payouts view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRow {
    /// The payout.
    pub payout: PayoutId,
    /// Its status (`requested`, `approved`, ..., `released`, `failed`, ...).
    pub status: String,
    /// Source account.
    pub account: AccountId,
    /// Payee.
    pub payee: PayeeId,
    /// Amount, at the currency's scale.
    pub amount: String,
    /// Currency.
    pub currency: Currency,
    /// Reference.
    pub reference: String,
    /// Requested.
    pub requested: Gate,
    /// Approvals, in order.
    pub approvals: Vec<Gate>,
    /// Authorized.
    pub authorized: Option<Gate>,
    /// Executed.
    pub executed: Option<Gate>,
    /// Released.
    pub released: Option<Gate>,
    /// Rejected, failed or cancelled, with the reason.
    pub ended: Option<(Gate, String)>,
    /// Distinct approvals needed (the policy when it was requested).
    pub approvals_required: u32,
}

/// Every payout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payouts {
    /// By payout id.
    pub payouts: BTreeMap<PayoutId, PayoutRow>,
    /// The approval policy in force (its rules, as `policy.updated` carries them).
    pub policy: Vec<ApprovalRule>,
}

fn approvals_required(rules: &[ApprovalRule], amount: &str, currency: Currency) -> u32 {
    match (
        ApprovalPolicy::from_rules(rules),
        Money::parse_exact(amount, currency),
    ) {
        (Ok(policy), Ok(money)) => policy.approvals_required(&money),
        _ => 1,
    }
}

impl Payouts {
    /// Folds one event.
    pub fn apply(&mut self, event: &Event) {
        let gate = || Gate {
            by: event.actor.clone(),
            at: event.at,
            seq: event.seq,
        };
        let mut update = |payout: &PayoutId, status: &str, f: &mut dyn FnMut(&mut PayoutRow)| {
            if let Some(row) = self.payouts.get_mut(payout) {
                row.status = status.to_owned();
                f(row);
            }
        };
        match &event.body {
            EventBody::PayoutRequested(d) => {
                self.payouts.insert(
                    d.payout.clone(),
                    PayoutRow {
                        payout: d.payout.clone(),
                        status: "requested".into(),
                        account: d.account.clone(),
                        payee: d.payee.clone(),
                        amount: d.amount.clone(),
                        currency: d.currency,
                        reference: d.reference.clone(),
                        requested: gate(),
                        approvals: Vec::new(),
                        authorized: None,
                        executed: None,
                        released: None,
                        ended: None,
                        approvals_required: approvals_required(&self.policy, &d.amount, d.currency),
                    },
                );
            }
            EventBody::PolicyUpdated(d) => self.policy = d.rules.clone(),
            EventBody::PayoutApproved(d) => {
                if let Some(row) = self.payouts.get_mut(&d.payout) {
                    row.approvals.push(gate());
                    if row.approvals.len() >= row.approvals_required as usize {
                        row.status = "approved".into();
                    }
                }
            }
            EventBody::PayoutRejected(d) => {
                update(&d.payout, "rejected", &mut |row| {
                    row.ended = Some((gate(), d.reason.clone()));
                });
            }
            EventBody::PayoutAuthorized(d) => {
                update(&d.payout, "authorized", &mut |row| {
                    row.authorized = Some(gate())
                });
            }
            EventBody::PayoutExecuted(d) => {
                update(&d.payout, "executed", &mut |row| {
                    row.executed = Some(gate())
                });
            }
            EventBody::PayoutReleased(d) => {
                update(&d.payout, "released", &mut |row| {
                    row.released = Some(gate())
                });
            }
            EventBody::PayoutFailed(d) => {
                update(&d.payout, "failed", &mut |row| {
                    row.ended = Some((gate(), d.reason.clone()));
                });
            }
            EventBody::PayoutCancelled(d) => {
                update(&d.payout, "cancelled", &mut |row| {
                    row.ended = Some((gate(), d.reason.clone()));
                });
            }
            EventBody::TenantCreated(_)
            | EventBody::UserAdded(_)
            | EventBody::RoleGranted(_)
            | EventBody::RoleRevoked(_)
            | EventBody::ApiKeyIssued(_)
            | EventBody::ApiKeyRevoked(_)
            | EventBody::AccountOpened(_)
            | EventBody::FundsDeposited(_)
            | EventBody::PayeeAdded(_)
            | EventBody::CommandRejected(_)
            | EventBody::AutopayRuleProposed(_)
            | EventBody::AutopayRuleEnabled(_)
            | EventBody::AutopayRuleDisabled(_)
            | EventBody::UserDeactivated(_)
            | EventBody::TotpRecovered(_)
            | EventBody::TenantSuspended(_)
            | EventBody::TenantResumed(_) => {}
        }
    }
}

/// Accepted or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The command's events were appended.
    Accepted,
    /// The command was denied and recorded as `command.rejected`.
    Denied,
}

impl Outcome {
    /// `accepted` or `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Denied => "denied",
        }
    }

    /// Reads [`Outcome::as_str`] back.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "accepted" => Some(Outcome::Accepted),
            "denied" => Some(Outcome::Denied),
            _ => None,
        }
    }
}

/// One decided command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    /// The event's seq.
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: PrincipalId,
    /// The action (`payout.approve`, ...).
    pub action: String,
    /// What it was about.
    pub subject: String,
    /// Accepted or denied.
    pub result: Outcome,
    /// The denial's reason code.
    pub reason: Option<String>,
    /// The id of the request that caused it, when the service recorded one in the
    /// event's data ([`REQUEST_ID_FIELD`]).
    pub request_id: Option<String>,
}

/// The command an event records, as (action, subject).
pub fn action_of(body: &EventBody) -> (String, String) {
    let (action, subject): (&str, String) = match body {
        EventBody::TenantCreated(_) => ("tenant.create", "tenant".into()),
        EventBody::UserAdded(d) => ("user.add", d.user.to_string()),
        EventBody::RoleGranted(d) => ("role.grant", format!("{}:{}", d.user, d.role.name())),
        EventBody::RoleRevoked(d) => ("role.revoke", format!("{}:{}", d.user, d.role.name())),
        EventBody::ApiKeyIssued(d) => ("apikey.issue", d.key.to_string()),
        EventBody::ApiKeyRevoked(d) => ("apikey.revoke", d.key.to_string()),
        EventBody::AccountOpened(d) => ("account.open", d.account.to_string()),
        EventBody::FundsDeposited(d) => ("funds.deposit", d.account.to_string()),
        EventBody::PayeeAdded(d) => ("payee.add", d.payee.to_string()),
        EventBody::PolicyUpdated(_) => ("policy.update", "policy:approvals".into()),
        EventBody::PayoutRequested(d) => ("payout.request", d.payout.to_string()),
        EventBody::PayoutApproved(d) => ("payout.approve", d.payout.to_string()),
        EventBody::PayoutRejected(d) => ("payout.reject", d.payout.to_string()),
        EventBody::PayoutAuthorized(d) => ("payout.authorize", d.payout.to_string()),
        EventBody::PayoutExecuted(d) => ("payout.execute", d.payout.to_string()),
        EventBody::PayoutReleased(d) => ("payout.release", d.payout.to_string()),
        EventBody::PayoutFailed(d) => ("payout.fail", d.payout.to_string()),
        EventBody::PayoutCancelled(d) => ("payout.cancel", d.payout.to_string()),
        EventBody::CommandRejected(d) => return (d.action.clone(), d.subject.clone()),
        EventBody::AutopayRuleProposed(d) => ("autopay.propose", d.rule.to_string()),
        EventBody::AutopayRuleEnabled(d) => ("autopay.enable", d.rule.to_string()),
        EventBody::AutopayRuleDisabled(d) => ("autopay.disable", d.rule.to_string()),
        EventBody::UserDeactivated(d) => ("user.deactivate", d.user.to_string()),
        EventBody::TotpRecovered(_) => ("totp.recover", "totp".into()),
        EventBody::TenantSuspended(_) => ("tenant.suspend", "tenant".into()),
        EventBody::TenantResumed(_) => ("tenant.resume", "tenant".into()),
    };
    (action.to_owned(), subject)
}

/// The audit view: one row per decided command (accepted or denied).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    /// In seq order.
    pub rows: Vec<AuditRow>,
}

impl Audit {
    /// Folds one event.
    pub fn apply(&mut self, event: &Event) {
        let (action, subject) = action_of(&event.body);
        let (result, reason) = if let EventBody::CommandRejected(d) = &event.body {
            (Outcome::Denied, Some(d.reason.clone()))
        } else {
            (Outcome::Accepted, None)
        };
        self.rows.push(AuditRow {
            seq: event.seq,
            at: event.at,
            actor: event.actor.clone(),
            action,
            subject,
            result,
            reason,
            request_id: event.data_string(REQUEST_ID_FIELD),
        });
    }
}

/// All three views of one tenant, and the seq they reflect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadModel {
    /// The last seq folded in.
    pub seq: u64,
    /// Balances.
    pub balances: Balances,
    /// Payouts.
    pub payouts: Payouts,
    /// The audit view.
    pub audit: Audit,
}

impl ReadModel {
    /// Folds one event (events must come in seq order; an old one is ignored, so a
    /// replayed page is harmless).
    pub fn apply(&mut self, event: &Event) {
        if event.seq <= self.seq {
            return;
        }
        self.balances.apply(event);
        self.payouts.apply(event);
        self.audit.apply(event);
        self.seq = event.seq;
    }

    /// The views of `events` from scratch.
    pub fn rebuild<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut model = Self::default();
        for event in events {
            model.apply(event);
        }
        model
    }

    /// A partial model to fold the next page into: the persisted seq and approval rules,
    /// and the persisted rows of (at least) the [`Keys`] of the page. Rows the page does
    /// not name may be left out; rows it names must be given when they exist.
    pub fn partial(
        seq: u64,
        policy: Vec<ApprovalRule>,
        accounts: impl IntoIterator<Item = (AccountId, AccountBalance)>,
        payouts: impl IntoIterator<Item = PayoutRow>,
    ) -> Self {
        Self {
            seq,
            balances: Balances {
                accounts: accounts.into_iter().collect(),
            },
            payouts: Payouts {
                payouts: payouts
                    .into_iter()
                    .map(|row| (row.payout.clone(), row))
                    .collect(),
                policy,
            },
            audit: Audit::default(),
        }
    }

    /// Folds `events` (in seq order; any at or below `self.seq` are ignored) and reports
    /// the rows they changed, to be written with the new cursor. The new audit rows are
    /// moved out of the model into the changes (they are only ever inserted).
    pub fn apply_page(&mut self, events: &[Event]) -> RowChanges {
        let audit_before = self.audit.rows.len();
        let policy_before = self.payouts.policy.clone();
        let mut touched = Keys::default();
        for event in events {
            if event.seq > self.seq {
                touched.add(event);
                self.apply(event);
            }
        }
        RowChanges {
            seq: self.seq,
            balances: touched
                .accounts
                .iter()
                .filter_map(|account| {
                    self.balances
                        .accounts
                        .get(account)
                        .map(|balance| (account.clone(), balance.clone()))
                })
                .collect(),
            payouts: touched
                .payouts
                .iter()
                .filter_map(|payout| self.payouts.payouts.get(payout).cloned())
                .collect(),
            audit: self.audit.rows.split_off(audit_before),
            policy: (self.payouts.policy != policy_before).then(|| self.payouts.policy.clone()),
        }
    }
}

/// The rows an event reads and writes, by key: the accounts whose balances it changes
/// (opened, deposited into, or named by a posting) and the payout it is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    /// Account rows.
    pub accounts: BTreeSet<AccountId>,
    /// Payout rows.
    pub payouts: BTreeSet<PayoutId>,
}

impl Keys {
    /// The keys of every event of `events`.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut keys = Self::default();
        for event in events {
            keys.add(event);
        }
        keys
    }

    /// Adds the keys of `event`.
    pub fn add(&mut self, event: &Event) {
        for posting in event.body.postings() {
            match Bucket::parse(&posting.account) {
                Some(Bucket::Available(account) | Bucket::Held(account)) => {
                    self.accounts.insert(account);
                }
                Some(Bucket::WorldFunding | Bucket::WorldPayees) | None => {}
            }
        }
        let payout = match &event.body {
            EventBody::AccountOpened(d) => {
                self.accounts.insert(d.account.clone());
                None
            }
            EventBody::FundsDeposited(d) => {
                self.accounts.insert(d.account.clone());
                None
            }
            EventBody::PayoutRequested(d) => Some(&d.payout),
            EventBody::PayoutApproved(d) => Some(&d.payout),
            EventBody::PayoutRejected(d) => Some(&d.payout),
            EventBody::PayoutAuthorized(d) => Some(&d.payout),
            EventBody::PayoutExecuted(d) => Some(&d.payout),
            EventBody::PayoutReleased(d) => Some(&d.payout),
            EventBody::PayoutFailed(d) | EventBody::PayoutCancelled(d) => Some(&d.payout),
            EventBody::TenantCreated(_)
            | EventBody::UserAdded(_)
            | EventBody::RoleGranted(_)
            | EventBody::RoleRevoked(_)
            | EventBody::ApiKeyIssued(_)
            | EventBody::ApiKeyRevoked(_)
            | EventBody::PayeeAdded(_)
            | EventBody::PolicyUpdated(_)
            | EventBody::CommandRejected(_)
            | EventBody::AutopayRuleProposed(_)
            | EventBody::AutopayRuleEnabled(_)
            | EventBody::AutopayRuleDisabled(_)
            | EventBody::UserDeactivated(_)
            | EventBody::TotpRecovered(_)
            | EventBody::TenantSuspended(_)
            | EventBody::TenantResumed(_) => None,
        };
        if let Some(payout) = payout {
            self.payouts.insert(payout.clone());
        }
    }
}

/// What folding a page changed: the rows to write, and the cursor to write with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowChanges {
    /// The last seq folded in (the new cursor).
    pub seq: u64,
    /// Account rows to insert or replace.
    pub balances: Vec<(AccountId, AccountBalance)>,
    /// Payout rows to insert or replace.
    pub payouts: Vec<PayoutRow>,
    /// Audit rows to insert, in seq order.
    pub audit: Vec<AuditRow>,
    /// The approval rules, when the page changed them.
    pub policy: Option<Vec<ApprovalRule>>,
}
