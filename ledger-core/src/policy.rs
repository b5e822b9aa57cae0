//! Roles, permissions (least privilege, DESIGN section 3) and the approval policy.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money, MoneyError};

/// Something a principal may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Add users.
    #[serde(rename = "user.manage")]
    UserManage,
    /// Grant and revoke roles.
    #[serde(rename = "role.manage")]
    RoleManage,
    /// Revoke other principals' API keys.
    #[serde(rename = "apikey.manage")]
    ApiKeyManage,
    /// Open accounts.
    #[serde(rename = "account.manage")]
    AccountManage,
    /// Add payees.
    #[serde(rename = "payee.manage")]
    PayeeManage,
    /// Change the approval policy.
    #[serde(rename = "policy.manage")]
    PolicyManage,
    /// Read balances, payouts and events.
    #[serde(rename = "ledger.read")]
    LedgerRead,
    /// Read the audit view.
    #[serde(rename = "audit.read")]
    AuditRead,
    /// Export the chain.
    #[serde(rename = "audit.export")]
    AuditExport,
    /// Request payouts.
    #[serde(rename = "payout.request")]
    PayoutRequest,
    /// Cancel payouts.
    #[serde(rename = "payout.cancel")]
    PayoutCancel,
    /// Read payees.
    #[serde(rename = "payee.read")]
    PayeeRead,
    /// Approve payouts (gate 1).
    #[serde(rename = "payout.approve")]
    PayoutApprove,
    /// Reject payouts.
    #[serde(rename = "payout.reject")]
    PayoutReject,
    /// Authorize payouts (gate 2).
    #[serde(rename = "payout.authorize")]
    PayoutAuthorize,
    /// Execute payouts (gate 3).
    #[serde(rename = "payout.execute")]
    PayoutExecute,
    /// Release payouts (settlement confirmed).
    #[serde(rename = "payout.release")]
    PayoutRelease,
    /// Mark executed payouts failed.
    #[serde(rename = "payout.fail")]
    PayoutFail,
    /// Deposit funds.
    #[serde(rename = "funds.deposit")]
    FundsDeposit,
    /// Subscribe webhooks to the tenant's events, list, delete and redeliver them.
    #[serde(rename = "webhook.manage")]
    WebhookManage,
    /// Propose, enable and disable auto-pay rules.
    #[serde(rename = "autopay.manage")]
    AutopayManage,
}

impl Permission {
    /// The permission's wire name, e.g. `payout.approve`.
    pub fn name(self) -> &'static str {
        match self {
            Permission::UserManage => "user.manage",
            Permission::RoleManage => "role.manage",
            Permission::ApiKeyManage => "apikey.manage",
            Permission::AccountManage => "account.manage",
            Permission::PayeeManage => "payee.manage",
            Permission::PolicyManage => "policy.manage",
            Permission::LedgerRead => "ledger.read",
            Permission::AuditRead => "audit.read",
            Permission::AuditExport => "audit.export",
            Permission::PayoutRequest => "payout.request",
            Permission::PayoutCancel => "payout.cancel",
            Permission::PayeeRead => "payee.read",
            Permission::PayoutApprove => "payout.approve",
            Permission::PayoutReject => "payout.reject",
            Permission::PayoutAuthorize => "payout.authorize",
            Permission::PayoutExecute => "payout.execute",
            Permission::PayoutRelease => "payout.release",
            Permission::PayoutFail => "payout.fail",
            Permission::FundsDeposit => "funds.deposit",
            Permission::WebhookManage => "webhook.manage",
            Permission::AutopayManage => "autopay.manage",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A role: a named set of permissions, granted by events in the tenant's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages people, roles, accounts, payees, policy and webhooks; moves no money.
    Admin,
    /// Requests and cancels payouts.
    Requester,
    /// Gate 1.
    Approver,
    /// Gate 2.
    Authorizer,
    /// Gate 3.
    Executor,
    /// Confirms settlement or failure.
    Releaser,
    /// Funds accounts.
    Treasurer,
    /// Reads and exports.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 8] = [
        Role::Admin,
        Role::Requester,
        Role::Approver,
        Role::Authorizer,
        Role::Executor,
        Role::Releaser,
        Role::Treasurer,
        Role::Auditor,
    ];

    /// The role table of DESIGN section 3.
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Admin => &[
                UserManage,
                RoleManage,
                ApiKeyManage,
                AccountManage,
                PayeeManage,
                PolicyManage,
                LedgerRead,
                AuditRead,
                WebhookManage,
                AutopayManage,
            ],
            Role::Requester => &[PayoutRequest, PayoutCancel, PayeeRead, LedgerRead],
            Role::Approver => &[PayoutApprove, PayoutReject, LedgerRead],
            Role::Authorizer => &[PayoutAuthorize, PayoutReject, LedgerRead],
            Role::Executor => &[PayoutExecute, LedgerRead],
            Role::Releaser => &[PayoutRelease, PayoutFail, LedgerRead],
            Role::Treasurer => &[FundsDeposit, AccountManage, LedgerRead],
            Role::Auditor => &[LedgerRead, AuditRead, AuditExport],
        }
    }

    /// Whether granting this role needs a 2FA proof: every role that can move money or
    /// change who can (all but `auditor`).
    pub fn grant_needs_two_factor(self) -> bool {
        !matches!(self, Role::Auditor)
    }

    /// The role's wire name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Requester => "requester",
            Role::Approver => "approver",
            Role::Authorizer => "authorizer",
            Role::Executor => "executor",
            Role::Releaser => "releaser",
            Role::Treasurer => "treasurer",
            Role::Auditor => "auditor",
        }
    }
}

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or(UnknownRole)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The text names no role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown role")]
pub struct UnknownRole;

/// Whether `roles` grant `permission`.
pub fn roles_allow(roles: &BTreeSet<Role>, permission: Permission) -> bool {
    roles.iter().any(|r| r.permissions().contains(&permission))
}

/// Most approvals any rule may demand.
pub const APPROVALS_MAX: u32 = 10;
/// Most rules in one policy.
pub const POLICY_RULES_MAX: usize = 64;

/// One approval rule: payouts in `currency` of at least `min_amount` need `approvals`
/// distinct approvers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    /// The currency the rule applies to.
    pub currency: Currency,
    /// The threshold, as exact amount text.
    pub min_amount: String,
    /// Distinct approvals needed, 1 to [`APPROVALS_MAX`].
    pub approvals: u32,
}

/// Why an approval policy is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// More than [`POLICY_RULES_MAX`] rules.
    #[error("too many rules")]
    TooManyRules,
    /// `approvals` outside 1..=APPROVALS_MAX.
    #[error("approvals must be between 1 and 10")]
    Approvals,
    /// A threshold that is not a valid amount of its currency.
    #[error("min_amount: {0}")]
    Amount(MoneyError),
}

/// The tenant's approval policy: how many distinct approvals an amount needs (default 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovalPolicy {
    rules: Vec<(Money, u32)>,
}

impl ApprovalPolicy {
    /// Validates rules (exact amounts at the currency's scale).
    pub fn from_rules(rules: &[ApprovalRule]) -> Result<Self, PolicyError> {
        if rules.len() > POLICY_RULES_MAX {
            return Err(PolicyError::TooManyRules);
        }
        let mut parsed = Vec::with_capacity(rules.len());
        for rule in rules {
            if rule.approvals == 0 || rule.approvals > APPROVALS_MAX {
                return Err(PolicyError::Approvals);
            }
            let min =
                Money::parse_exact(&rule.min_amount, rule.currency).map_err(PolicyError::Amount)?;
            parsed.push((min, rule.approvals));
        }
        Ok(Self { rules: parsed })
    }

    /// The rules, as `policy.updated` carries them.
    pub fn rules(&self) -> Vec<ApprovalRule> {
        self.rules
            .iter()
            .map(|(min, approvals)| ApprovalRule {
                currency: min.currency(),
                min_amount: min.to_text(),
                approvals: *approvals,
            })
            .collect()
    }

    /// Approvals `amount` needs: the highest of the matching rules, else 1.
    pub fn approvals_required(&self, amount: &Money) -> u32 {
        self.rules
            .iter()
            .filter(|(min, _)| {
                min.currency() == amount.currency() && amount.amount() >= min.amount()
            })
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_table_matches_the_design() {
        let check = |role: Role, allowed: &[&str]| {
            let mut names: Vec<&str> = role.permissions().iter().map(|p| p.name()).collect();
            names.sort_unstable();
            let mut expected = allowed.to_vec();
            expected.sort_unstable();
            assert_eq!(names, expected, "{role}");
        };
        check(
            Role::Admin,
            &[
                "user.manage",
                "role.manage",
                "apikey.manage",
                "account.manage",
                "payee.manage",
                "policy.manage",
                "ledger.read",
                "audit.read",
                "webhook.manage",
                "autopay.manage",
            ],
        );
        check(
            Role::Requester,
            &[
                "payout.request",
                "payout.cancel",
                "payee.read",
                "ledger.read",
            ],
        );
        check(
            Role::Approver,
            &["payout.approve", "payout.reject", "ledger.read"],
        );
        check(
            Role::Authorizer,
            &["payout.authorize", "payout.reject", "ledger.read"],
        );
        check(Role::Executor, &["payout.execute", "ledger.read"]);
        check(
            Role::Releaser,
            &["payout.release", "payout.fail", "ledger.read"],
        );
        check(
            Role::Treasurer,
            &["funds.deposit", "account.manage", "ledger.read"],
        );
        check(
            Role::Auditor,
            &["ledger.read", "audit.read", "audit.export"],
        );
    }

    #[test]
    fn thresholds_pick_the_highest_matching_rule() {
        let rule = |c: Currency, min: &str, n| ApprovalRule {
            currency: c,
            min_amount: min.into(),
            approvals: n,
        };
        let policy = ApprovalPolicy::from_rules(&[
            rule(Currency::Eur, "10000.00", 2),
            rule(Currency::Eur, "100000.00", 3),
            rule(Currency::Jpy, "1000000", 2),
        ])
        .expect("policy");
        let eur = |s| Money::parse(s, Currency::Eur).expect("eur");
        assert_eq!(policy.approvals_required(&eur("9999.99")), 1);
        assert_eq!(policy.approvals_required(&eur("10000.00")), 2);
        assert_eq!(policy.approvals_required(&eur("100000.00")), 3);
        assert_eq!(
            policy.approvals_required(&Money::parse("20000", Currency::Usd).expect("usd")),
            1
        );
        assert_eq!(
            ApprovalPolicy::from_rules(&[rule(Currency::Eur, "1.0", 2)]),
            Err(PolicyError::Amount(MoneyError::NotCanonical))
        );
        assert_eq!(
            ApprovalPolicy::from_rules(&[rule(Currency::Eur, "1.00", 0)]),
            Err(PolicyError::Approvals)
        );
        assert_eq!(
            ApprovalPolicy::from_rules(&[rule(Currency::Eur, "1.00", 11)]),
            Err(PolicyError::Approvals)
        );
    }
}
