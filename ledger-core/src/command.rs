//! Commands (imperative), the decision context, and rejections.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{AccountId, ApiKeyId, AutopayRuleId, PayeeId, PayoutId, PrincipalId, TenantId};
use crate::money::{Currency, Money};
use crate::policy::{ApprovalRule, Permission, Role};
use crate::proof::{SignatureCheck, TwoFactorFailure, TwoFactorProof};
use crate::time::Timestamp;

/// Money in a command: `{"amount":"125.50","currency":"EUR"}`, normalised on decoding.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyWire {
    amount: String,
    currency: Currency,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        MoneyWire {
            amount: self.to_text(),
            currency: self.currency(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = MoneyWire::deserialize(deserializer)?;
        Money::parse(&wire.amount, wire.currency).map_err(serde::de::Error::custom)
    }
}

/// Every command the ledger decides. Exhaustive: no wildcard arm anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Start a tenant's chain and name its first administrator.
    CreateTenant {
        /// Display name.
        name: String,
        /// First administrator (required by the writer).
        admin: Option<PrincipalId>,
    },
    /// Add a user (their credentials live outside the chain).
    AddUser {
        /// New user id.
        user: PrincipalId,
        /// Display name.
        name: String,
    },
    /// Grant a role.
    GrantRole {
        /// Grantee.
        user: PrincipalId,
        /// Role.
        role: Role,
        /// The admin's 2FA proof.
        two_factor: Option<TwoFactorProof>,
        /// Batch subjects (`usr_x:role`) when granting several under one proof.
        batch: Option<Vec<String>>,
    },
    /// Revoke a role.
    RevokeRole {
        /// The principal.
        user: PrincipalId,
        /// Role.
        role: Role,
    },
    /// Issue an API key to the actor itself.
    IssueApiKey {
        /// The key's public id.
        key: ApiKeyId,
        /// Scopes narrowing the actor's roles.
        scopes: Vec<Permission>,
        /// Expiry.
        expires_at: Option<Timestamp>,
        /// 2FA proof (not for a user's first key).
        two_factor: Option<TwoFactorProof>,
    },
    /// Revoke an API key.
    RevokeApiKey {
        /// The key.
        key: ApiKeyId,
    },
    /// Open an account.
    OpenAccount {
        /// New account id.
        account: AccountId,
        /// Its currency.
        currency: Currency,
        /// Display name.
        name: Option<String>,
    },
    /// Deposit funds into an account.
    Deposit {
        /// The account.
        account: AccountId,
        /// Amount.
        money: Money,
        /// Reference.
        reference: Option<String>,
    },
    /// Add a payee; the IBAN arrives already encrypted by the shell.
    AddPayee {
        /// New payee id.
        payee: PayeeId,
        /// Display name.
        name: String,
        /// Encryption envelope `v1:<key_id>:<hex>`.
        iban: String,
    },
    /// Replace the approval policy.
    UpdatePolicy {
        /// The new rules.
        rules: Vec<ApprovalRule>,
        /// 2FA proof.
        two_factor: Option<TwoFactorProof>,
    },
    /// Request a payout.
    RequestPayout {
        /// New payout id.
        payout: PayoutId,
        /// Source account.
        account: AccountId,
        /// Payee.
        payee: PayeeId,
        /// Amount.
        money: Money,
        /// Reference.
        reference: String,
        /// Client metadata.
        metadata: Option<BTreeMap<String, String>>,
    },
    /// Gate 1.
    ApprovePayout {
        /// The payout.
        payout: PayoutId,
        /// Batch list.
        batch: Option<Vec<String>>,
    },
    /// Reject before authorization.
    RejectPayout {
        /// The payout.
        payout: PayoutId,
        /// Why.
        reason: String,
    },
    /// Gate 2: hold the funds.
    AuthorizePayout {
        /// The payout.
        payout: PayoutId,
        /// 2FA proof.
        two_factor: Option<TwoFactorProof>,
        /// Batch list.
        batch: Option<Vec<String>>,
    },
    /// Gate 3: send to the rail.
    ExecutePayout {
        /// The payout.
        payout: PayoutId,
        /// Rail.
        rail: Option<String>,
        /// 2FA proof.
        two_factor: Option<TwoFactorProof>,
        /// Batch list.
        batch: Option<Vec<String>>,
    },
    /// Settlement confirmed: the held funds leave.
    ReleasePayout {
        /// The payout.
        payout: PayoutId,
        /// 2FA proof (persons).
        two_factor: Option<TwoFactorProof>,
        /// Batch list.
        batch: Option<Vec<String>>,
    },
    /// Settlement failed: the hold returns.
    FailPayout {
        /// The payout.
        payout: PayoutId,
        /// Why.
        reason: String,
    },
    /// Cancel before execution (the hold returns if authorized).
    CancelPayout {
        /// The payout.
        payout: PayoutId,
        /// Why.
        reason: String,
    },
    /// Propose an auto-pay rule (it approves nothing until another admin enables it).
    ProposeAutopayRule {
        /// New rule id.
        rule: AutopayRuleId,
        /// The one source account.
        account: AccountId,
        /// The payees it covers.
        payees: Vec<PayeeId>,
        /// Ceiling per payout (its currency is the rule's).
        max_amount: Money,
        /// Total per UTC day.
        daily_limit: Money,
    },
    /// Enable a proposed rule: another admin, with 2FA.
    EnableAutopayRule {
        /// The rule.
        rule: AutopayRuleId,
        /// 2FA proof (action `autopay.enable`, subject the rule).
        two_factor: Option<TwoFactorProof>,
    },
    /// Disable a rule, for good; no code (making things safer never needs one).
    DisableAutopayRule {
        /// The rule.
        rule: AutopayRuleId,
        /// Why.
        reason: String,
    },
    /// Gate 1 passed by an auto-pay rule, in the batch of the request it matches. The
    /// writer produces it from [`Command::RequestPayout`]; the verifier re-decides it.
    ApprovePayoutByRule {
        /// The payout.
        payout: PayoutId,
        /// The rule (the actor is `rule:<id>`).
        rule: AutopayRuleId,
    },
    /// Deactivate a user: their keys stop working, their roles stop counting.
    DeactivateUser {
        /// The user.
        user: PrincipalId,
        /// Why.
        reason: String,
    },
    /// The actor spent a recovery code and enrols a new TOTP secret.
    RecoverTotp {},
    /// The operator suspends the tenant.
    SuspendTenant {
        /// Why.
        reason: String,
    },
    /// The operator resumes the tenant.
    ResumeTenant {
        /// Why.
        reason: String,
    },
}

/// Longest command text accepted by [`Command::from_json`].
pub const COMMAND_JSON_LENGTH_MAX: usize = 64 * 1024;

/// Why command JSON cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandDecodeError {
    /// Over [`COMMAND_JSON_LENGTH_MAX`].
    #[error("command too large")]
    TooLarge,
    /// Not a command.
    #[error("invalid command: {0}")]
    Invalid(String),
}

impl Command {
    /// Decodes a command from JSON (unknown fields and floats refused).
    pub fn from_json(text: &str) -> Result<Command, CommandDecodeError> {
        if text.len() > COMMAND_JSON_LENGTH_MAX {
            return Err(CommandDecodeError::TooLarge);
        }
        let value = crate::canonical::parse_value(text)
            .map_err(|e| CommandDecodeError::Invalid(e.to_string()))?;
        Command::deserialize(value).map_err(|e| CommandDecodeError::Invalid(e.to_string()))
    }

    /// The action name, as proofs, permissions and `command.rejected` spell it.
    pub fn action(&self) -> &'static str {
        match self {
            Command::CreateTenant { .. } => "tenant.create",
            Command::AddUser { .. } => "user.add",
            Command::GrantRole { .. } => "role.grant",
            Command::RevokeRole { .. } => "role.revoke",
            Command::IssueApiKey { .. } => "apikey.issue",
            Command::RevokeApiKey { .. } => "apikey.revoke",
            Command::OpenAccount { .. } => "account.open",
            Command::Deposit { .. } => "funds.deposit",
            Command::AddPayee { .. } => "payee.add",
            Command::UpdatePolicy { .. } => "policy.update",
            Command::RequestPayout { .. } => "payout.request",
            Command::ApprovePayout { .. } => "payout.approve",
            Command::RejectPayout { .. } => "payout.reject",
            Command::AuthorizePayout { .. } => "payout.authorize",
            Command::ExecutePayout { .. } => "payout.execute",
            Command::ReleasePayout { .. } => "payout.release",
            Command::FailPayout { .. } => "payout.fail",
            Command::CancelPayout { .. } => "payout.cancel",
            Command::ProposeAutopayRule { .. } => "autopay.propose",
            Command::EnableAutopayRule { .. } => "autopay.enable",
            Command::DisableAutopayRule { .. } => "autopay.disable",
            Command::ApprovePayoutByRule { .. } => "payout.approve",
            Command::DeactivateUser { .. } => "user.deactivate",
            Command::RecoverTotp {} => "totp.recover",
            Command::SuspendTenant { .. } => "tenant.suspend",
            Command::ResumeTenant { .. } => "tenant.resume",
        }
    }

    /// The subject: what the command acts on (and what a proof must name).
    pub fn subject(&self) -> String {
        match self {
            Command::CreateTenant { .. } => "tenant".to_owned(),
            Command::AddUser { user, .. } => user.to_string(),
            Command::GrantRole { user, role, .. } | Command::RevokeRole { user, role } => {
                role_subject(user, *role)
            }
            Command::IssueApiKey { key, .. } | Command::RevokeApiKey { key } => key.to_string(),
            Command::OpenAccount { account, .. } | Command::Deposit { account, .. } => {
                account.to_string()
            }
            Command::AddPayee { payee, .. } => payee.to_string(),
            Command::UpdatePolicy { .. } => POLICY_SUBJECT.to_owned(),
            Command::RequestPayout { payout, .. }
            | Command::ApprovePayout { payout, .. }
            | Command::RejectPayout { payout, .. }
            | Command::AuthorizePayout { payout, .. }
            | Command::ExecutePayout { payout, .. }
            | Command::ReleasePayout { payout, .. }
            | Command::FailPayout { payout, .. }
            | Command::CancelPayout { payout, .. }
            | Command::ApprovePayoutByRule { payout, .. } => payout.to_string(),
            Command::ProposeAutopayRule { rule, .. }
            | Command::EnableAutopayRule { rule, .. }
            | Command::DisableAutopayRule { rule, .. } => rule.to_string(),
            Command::DeactivateUser { user, .. } => user.to_string(),
            Command::RecoverTotp {} => "totp".to_owned(),
            Command::SuspendTenant { .. } | Command::ResumeTenant { .. } => "tenant".to_owned(),
        }
    }
}

/// The subject of a role grant: `usr_x:role`.
pub fn role_subject(user: &PrincipalId, role: Role) -> String {
    format!("{user}:{role}")
}

/// The subject of a policy update's proof.
pub const POLICY_SUBJECT: &str = "policy:approvals";

/// Which rules `decide` enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// The writer: every rule, including permissions (roles and key scopes), principal
    /// existence and 2FA on administrative commands.
    Writer,
    /// The auditor re-deciding an export: the rules an export can prove on its own
    /// (DESIGN section 4, "What verification checks"): lifecycle, four-eyes, money 2FA,
    /// postings and balances; administrative proofs are checked when present. Roles are
    /// not checked: an export need not contain the grants that predate it.
    Audit,
}

/// What the shell hands to `decide`: who, when, with which credential narrowing, and how
/// to check proof signatures. Nothing here reads a clock or a file.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The tenant of the credential.
    pub tenant: &'a TenantId,
    /// The principal of the credential.
    pub actor: &'a PrincipalId,
    /// Decision time.
    pub at: Timestamp,
    /// API-key scopes; `None` for no narrowing.
    pub scopes: Option<&'a [Permission]>,
    /// Proof signature checking.
    pub signatures: &'a dyn SignatureCheck,
    /// Which rules apply.
    pub enforcement: Enforcement,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("tenant", self.tenant)
            .field("actor", self.actor)
            .field("at", &self.at)
            .field("scopes", &self.scopes)
            .field("enforcement", &self.enforcement)
            .finish_non_exhaustive()
    }
}

/// Why a command is refused. `code()` is the stable reason code of `command.rejected`
/// and of the API's problem documents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The actor lacks the permission (roles, or the key's scopes).
    #[error("forbidden: requires {permission}")]
    Forbidden {
        /// The permission needed.
        permission: Permission,
    },
    /// Four-eyes: the actor already acted on this payout in a conflicting role.
    #[error("four eyes: {detail}")]
    FourEyes {
        /// Which earlier act conflicts.
        detail: &'static str,
    },
    /// A 2FA proof is missing or does not check out.
    #[error("two factor: {0}")]
    TwoFactor(TwoFactorFailure),
    /// The object is not in a state that allows the command.
    #[error("invalid state: {detail}")]
    InvalidState {
        /// Why.
        detail: String,
    },
    /// The account's available balance is short.
    #[error("insufficient funds")]
    InsufficientFunds,
    /// The object does not exist in this tenant.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: &'static str,
    },
    /// The command's values break a rule (scale, currency, lengths, ...).
    #[error("validation: {detail}")]
    Validation {
        /// Why.
        detail: String,
    },
    /// An auto-pay rule approval the rule does not give (only the verifier meets it: the
    /// writer produces rule approvals only where the rule matches).
    #[error("auto-pay: {0}")]
    Autopay(crate::autopay::NoMatch),
    /// The tenant is suspended by the operator: nothing but resuming it is decided.
    #[error("tenant suspended")]
    TenantSuspended,
    /// The actor was deactivated: it acts no more.
    #[error("forbidden: the principal is deactivated")]
    Deactivated,
}

impl Rejection {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Forbidden { .. } => "forbidden",
            Rejection::FourEyes { .. } => "four_eyes",
            Rejection::TwoFactor(TwoFactorFailure::Missing) => "two_factor_required",
            Rejection::TwoFactor(TwoFactorFailure::Locked) => "two_factor_locked",
            Rejection::TwoFactor(_) => "two_factor_invalid",
            Rejection::InvalidState { .. } => "invalid_state",
            Rejection::InsufficientFunds => "insufficient_funds",
            Rejection::NotFound { .. } => "not_found",
            Rejection::Validation { .. } => "validation",
            Rejection::TenantSuspended => "tenant_suspended",
            Rejection::Autopay(reason) => reason.code(),
            Rejection::Deactivated => "forbidden",
        }
    }

    /// Whether the denial is evidence to append as `command.rejected` (DESIGN section 3):
    /// forbidden, four-eyes, 2FA, funds and state; not unknown objects or bad values.
    pub fn is_evidence(&self) -> bool {
        match self {
            Rejection::Forbidden { .. }
            | Rejection::FourEyes { .. }
            | Rejection::TwoFactor(_)
            | Rejection::InvalidState { .. }
            | Rejection::InsufficientFunds
            | Rejection::Deactivated => true,
            Rejection::NotFound { .. }
            | Rejection::Validation { .. }
            | Rejection::TenantSuspended
            | Rejection::Autopay(_) => false,
        }
    }

    pub(crate) fn validation(detail: impl Into<String>) -> Rejection {
        Rejection::Validation {
            detail: detail.into(),
        }
    }

    pub(crate) fn state(detail: impl Into<String>) -> Rejection {
        Rejection::InvalidState {
            detail: detail.into(),
        }
    }
}
