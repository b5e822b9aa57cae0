//! `decide(&State, &Command, &Context) -> Result<Vec<EventBody>, Rejection>`: every rule
//! of DESIGN section 3 in one place. The verifier calls this very function on each event
//! of an export, so the writer and the auditor cannot disagree.

use std::collections::BTreeSet;

use crate::autopay::{self, NoMatch, RuleStatus, RULE_PAYEES_MAX};
use crate::command::{role_subject, Command, Context, Enforcement, Rejection, POLICY_SUBJECT};
use crate::event::{
    AccountOpened, ApiKeyIssued, ApiKeyRevoked, AutopayRuleDisabled, AutopayRuleEnabled,
    AutopayRuleProposed, EventBody, FundsDeposited, PayeeAdded, PayoutApproved, PayoutAuthorized,
    PayoutEnded, PayoutExecuted, PayoutRejected, PayoutReleased, PayoutRequested, PolicyUpdated,
    RoleGranted, RoleRevoked, TenantCreated, TenantStatusChanged, TotpRecovered, UserAdded,
    UserDeactivated,
};
use crate::ids::{AutopayRuleId, PayoutId, PrincipalId, PrincipalKind};
use crate::money::Money;
use crate::policy::{roles_allow, ApprovalPolicy, Permission};
use crate::proof::{check_proof, Binding, TwoFactorProof};
use crate::state::{transfer, Bucket, OpenPayout, Payout, PayoutStatus, TenantState};

/// Longest display name.
pub const NAME_LENGTH_MAX: usize = 200;
/// Longest payout or deposit reference.
pub const REFERENCE_LENGTH_MAX: usize = 140;
/// Longest reason text.
pub const REASON_LENGTH_MAX: usize = 500;
/// Longest rail name.
pub const RAIL_LENGTH_MAX: usize = 32;
/// Most metadata entries on a payout.
pub const METADATA_ENTRIES_MAX: usize = 20;
/// Longest metadata key.
pub const METADATA_KEY_LENGTH_MAX: usize = 40;
/// Longest metadata value.
pub const METADATA_VALUE_LENGTH_MAX: usize = 500;
/// Most scopes on one API key.
pub const SCOPES_MAX: usize = 32;
/// Longest encrypted field envelope.
pub const ENVELOPE_LENGTH_MAX: usize = 1024;

fn text(field: &str, value: &str, max: usize, required: bool) -> Result<(), Rejection> {
    if required && value.trim().is_empty() {
        return Err(Rejection::validation(format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(Rejection::validation(format!(
            "{field} is longer than {max} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Rejection::validation(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// An encrypted-field envelope `v1:<key_id>:<hex>`: the chain never holds a plain IBAN.
fn envelope(field: &str, value: &str) -> Result<(), Rejection> {
    let mut parts = value.splitn(3, ':');
    let well_formed = value.len() <= ENVELOPE_LENGTH_MAX
        && parts.next() == Some("v1")
        && parts
            .next()
            .is_some_and(|k| crate::ids::KeyId::parse(k).is_ok())
        && parts.next().is_some_and(|h| {
            !h.is_empty()
                && h.len() % 2 == 0
                && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
    if well_formed {
        Ok(())
    } else {
        Err(Rejection::validation(format!(
            "{field} must be an encryption envelope v1:<key_id>:<hex>"
        )))
    }
}

fn require_permission(
    state: &TenantState,
    ctx: &Context<'_>,
    permission: Permission,
) -> Result<(), Rejection> {
    match ctx.enforcement {
        Enforcement::Audit => Ok(()),
        Enforcement::Writer => {
            let by_roles = state
                .roles_of(ctx.actor)
                .is_some_and(|roles| roles_allow(roles, permission));
            let by_scopes = ctx.scopes.is_none_or(|scopes| scopes.contains(&permission));
            if by_roles && by_scopes {
                Ok(())
            } else {
                Err(Rejection::Forbidden { permission })
            }
        }
    }
}

/// Checks a proof that the writer requires and the auditor checks whenever present.
fn administrative_proof(
    state: &TenantState,
    ctx: &Context<'_>,
    required: bool,
    proof: Option<&TwoFactorProof>,
    action: &str,
    subject: &str,
    batch: Option<&[String]>,
) -> Result<(), Rejection> {
    let needed = match ctx.enforcement {
        Enforcement::Writer => required,
        Enforcement::Audit => proof.is_some(),
    };
    if !needed {
        return Ok(());
    }
    money_proof(state, ctx, proof, action, subject, batch)
}

fn money_proof(
    state: &TenantState,
    ctx: &Context<'_>,
    proof: Option<&TwoFactorProof>,
    action: &str,
    subject: &str,
    batch: Option<&[String]>,
) -> Result<(), Rejection> {
    let binding = Binding {
        tenant: ctx.tenant,
        actor: ctx.actor,
        action,
        subject,
        batch,
        at: ctx.at,
    };
    check_proof(
        proof,
        binding,
        state.last_proofs.get(ctx.actor),
        ctx.signatures,
    )
    .map_err(Rejection::TwoFactor)
}

fn open_payout<'s>(
    state: &'s TenantState,
    payout: &PayoutId,
    expected: &[PayoutStatus],
) -> Result<&'s OpenPayout, Rejection> {
    let entry = state
        .payouts
        .get(payout)
        .ok_or(Rejection::NotFound { what: "payout" })?;
    match entry {
        Payout::Open(open) if expected.contains(&open.status) => Ok(open),
        Payout::Open(_) | Payout::Closed(_) => Err(Rejection::state(format!(
            "payout is {}",
            entry.status().name()
        ))),
    }
}

fn four_eyes(condition: bool, detail: &'static str) -> Result<(), Rejection> {
    if condition {
        Err(Rejection::FourEyes { detail })
    } else {
        Ok(())
    }
}

fn batch_member(batch: Option<&Vec<String>>, subject: &str) -> Result<(), Rejection> {
    match batch {
        None => Ok(()),
        Some(list) => {
            let unique: BTreeSet<&String> = list.iter().collect();
            if list.is_empty()
                || list.len() > crate::proof::BATCH_SUBJECTS_MAX
                || unique.len() != list.len()
                || !list.iter().any(|s| s == subject)
            {
                Err(Rejection::validation(
                    "batch list must be unique and contain the subject",
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// Decides one command against the state: the events it produces, or why not.
pub fn decide(
    state: &TenantState,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<Vec<EventBody>, Rejection> {
    let body = decide_one(state, command, ctx)?;
    if let Command::RequestPayout {
        payout,
        account,
        payee,
        money,
        ..
    } = command
    {
        let request = autopay::Request {
            account,
            payee,
            money,
            requester: ctx.actor,
            at: ctx.at,
        };
        let matching = state
            .autopay_rules
            .iter()
            .find(|(_, rule)| rule.approves(&request).is_ok());
        if let Some((rule, _)) = matching {
            return Ok(vec![
                body,
                EventBody::PayoutApproved(PayoutApproved {
                    payout: payout.clone(),
                    rule: Some(rule.clone()),
                    batch: None,
                }),
            ]);
        }
    }
    Ok(vec![body])
}

/// What every command after `tenant.created` must pass: the tenant not suspended (but
/// for the operator's own suspend and resume), the actor still active, and a rule's
/// principal doing nothing but approve by rule.
fn may_act(
    state: &TenantState,
    ctx: &Context<'_>,
    operator_command: bool,
    by_rule: bool,
) -> Result<(), Rejection> {
    if state.suspended && !operator_command {
        return Err(Rejection::TenantSuspended);
    }
    if state.is_deactivated(ctx.actor) {
        return Err(Rejection::Deactivated);
    }
    if by_rule != (ctx.actor.kind() == PrincipalKind::Rule) {
        return Err(Rejection::validation(
            "an auto-pay rule approves, and only a rule approves by rule",
        ));
    }
    Ok(())
}

fn rule_of<'s>(
    state: &'s TenantState,
    rule: &AutopayRuleId,
) -> Result<&'s autopay::AutopayRule, Rejection> {
    state.autopay_rules.get(rule).ok_or(Rejection::NotFound {
        what: "auto-pay rule",
    })
}

fn no_match(reason: NoMatch) -> Rejection {
    Rejection::Autopay(reason)
}

/// [`decide`] for the one event every command produces (the verifier's form: no vector).
pub(crate) fn decide_one(
    state: &TenantState,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<EventBody, Rejection> {
    tenant_matches(state, ctx)?;
    if let Command::CreateTenant { name, admin } = command {
        if state.created {
            return Err(Rejection::state("tenant already exists"));
        }
        text("name", name, NAME_LENGTH_MAX, true)?;
        if ctx.enforcement == Enforcement::Writer && admin.is_none() {
            return Err(Rejection::validation(
                "a tenant needs a first administrator",
            ));
        }
        return Ok(EventBody::TenantCreated(TenantCreated {
            name: name.clone(),
            admin: admin.clone(),
        }));
    }
    tenant_created(state)?;
    may_act(
        state,
        ctx,
        matches!(
            command,
            Command::SuspendTenant { .. } | Command::ResumeTenant { .. }
        ),
        matches!(command, Command::ApprovePayoutByRule { .. }),
    )?;
    let body = match command {
        Command::CreateTenant { .. } => unreachable!("handled above"),
        Command::AddUser { user, name } => {
            require_permission(state, ctx, Permission::UserManage)?;
            text("name", name, NAME_LENGTH_MAX, true)?;
            if state.principals.get(user).is_some_and(|p| p.added) {
                return Err(Rejection::state("user already exists"));
            }
            EventBody::UserAdded(UserAdded {
                user: user.clone(),
                name: name.clone(),
            })
        }
        Command::GrantRole {
            user,
            role,
            two_factor,
            batch,
        } => {
            require_permission(state, ctx, Permission::RoleManage)?;
            four_eyes(user == ctx.actor, "nobody grants their own roles")?;
            let principal = state.principals.get(user);
            if ctx.enforcement == Enforcement::Writer && !principal.is_some_and(|p| p.added) {
                return Err(Rejection::NotFound { what: "user" });
            }
            if principal.is_some_and(|p| p.roles.contains(role)) {
                return Err(Rejection::state(format!("user already has role {role}")));
            }
            let subject = role_subject(user, *role);
            batch_member(batch.as_ref(), &subject)?;
            administrative_proof(
                state,
                ctx,
                role.grant_needs_two_factor(),
                two_factor.as_ref(),
                command.action(),
                &subject,
                batch.as_deref(),
            )?;
            EventBody::RoleGranted(RoleGranted {
                user: user.clone(),
                role: *role,
                two_factor: two_factor.clone(),
                batch: batch.clone(),
            })
        }
        Command::RevokeRole { user, role } => {
            require_permission(state, ctx, Permission::RoleManage)?;
            four_eyes(user == ctx.actor, "nobody revokes their own roles")?;
            let known = state.principals.get(user).is_some_and(|p| p.added);
            if ctx.enforcement == Enforcement::Writer && !known {
                return Err(Rejection::NotFound { what: "user" });
            }
            if !state
                .roles_of(user)
                .is_some_and(|roles| roles.contains(role))
            {
                return Err(Rejection::state(format!("user does not have role {role}")));
            }
            EventBody::RoleRevoked(RoleRevoked {
                user: user.clone(),
                role: *role,
            })
        }
        Command::IssueApiKey {
            key,
            scopes,
            expires_at,
            two_factor,
        } => {
            if state.api_keys.contains_key(key) {
                return Err(Rejection::state("api key id already exists"));
            }
            let unique: BTreeSet<&Permission> = scopes.iter().collect();
            if scopes.len() > SCOPES_MAX || unique.len() != scopes.len() {
                return Err(Rejection::validation("scopes must be unique, at most 32"));
            }
            if expires_at.is_some_and(|end| end <= ctx.at) {
                return Err(Rejection::validation("expires_at must be in the future"));
            }
            let first_key = !state.api_keys.values().any(|owner| owner == ctx.actor);
            let is_person = ctx.actor.kind() == PrincipalKind::User;
            administrative_proof(
                state,
                ctx,
                is_person && !first_key,
                two_factor.as_ref(),
                command.action(),
                key.as_str(),
                None,
            )?;
            EventBody::ApiKeyIssued(ApiKeyIssued {
                key: key.clone(),
                user: ctx.actor.clone(),
                scopes: scopes.clone(),
                expires_at: *expires_at,
                two_factor: two_factor.clone(),
            })
        }
        Command::RevokeApiKey { key } => {
            let owner = state
                .api_keys
                .get(key)
                .ok_or(Rejection::NotFound { what: "api key" })?;
            if owner != ctx.actor {
                require_permission(state, ctx, Permission::ApiKeyManage)?;
            }
            EventBody::ApiKeyRevoked(ApiKeyRevoked { key: key.clone() })
        }
        Command::OpenAccount {
            account,
            currency,
            name,
        } => {
            require_permission(state, ctx, Permission::AccountManage)?;
            if let Some(name) = name {
                text("name", name, NAME_LENGTH_MAX, false)?;
            }
            if state.accounts.contains_key(account) {
                return Err(Rejection::state("account already exists"));
            }
            EventBody::AccountOpened(AccountOpened {
                account: account.clone(),
                currency: *currency,
                name: name.clone(),
            })
        }
        Command::Deposit {
            account,
            money,
            reference,
        } => {
            require_permission(state, ctx, Permission::FundsDeposit)?;
            if let Some(reference) = reference {
                text("reference", reference, REFERENCE_LENGTH_MAX, false)?;
            }
            let target = state
                .accounts
                .get(account)
                .ok_or(Rejection::NotFound { what: "account" })?;
            if target.currency != money.currency() {
                return Err(Rejection::validation("currency differs from the account's"));
            }
            EventBody::FundsDeposited(FundsDeposited {
                account: account.clone(),
                amount: money.to_text(),
                currency: money.currency(),
                reference: reference.clone(),
                postings: transfer(
                    Bucket::WorldFunding,
                    Bucket::Available(account.clone()),
                    money,
                ),
            })
        }
        Command::AddPayee { payee, name, iban } => {
            require_permission(state, ctx, Permission::PayeeManage)?;
            text("name", name, NAME_LENGTH_MAX, true)?;
            envelope("iban", iban)?;
            if state.payees.contains_key(payee) {
                return Err(Rejection::state("payee already exists"));
            }
            EventBody::PayeeAdded(PayeeAdded {
                payee: payee.clone(),
                name: name.clone(),
                iban: iban.clone(),
            })
        }
        Command::UpdatePolicy { rules, two_factor } => {
            require_permission(state, ctx, Permission::PolicyManage)?;
            ApprovalPolicy::from_rules(rules).map_err(|e| Rejection::validation(e.to_string()))?;
            administrative_proof(
                state,
                ctx,
                true,
                two_factor.as_ref(),
                command.action(),
                POLICY_SUBJECT,
                None,
            )?;
            EventBody::PolicyUpdated(PolicyUpdated {
                rules: rules.clone(),
                two_factor: two_factor.clone(),
            })
        }
        Command::RequestPayout {
            payout,
            account,
            payee,
            money,
            reference,
            metadata,
        } => {
            require_permission(state, ctx, Permission::PayoutRequest)?;
            request_rules(
                state,
                payout,
                account,
                payee,
                money,
                reference,
                metadata.as_ref(),
            )?;
            EventBody::PayoutRequested(PayoutRequested {
                payout: payout.clone(),
                account: account.clone(),
                payee: payee.clone(),
                amount: money.to_text(),
                currency: money.currency(),
                reference: reference.clone(),
                metadata: metadata.clone(),
            })
        }
        Command::ApprovePayout { payout, batch } => {
            require_permission(state, ctx, Permission::PayoutApprove)?;
            approve_rules(state, ctx, payout, batch.as_ref())?;
            EventBody::PayoutApproved(PayoutApproved {
                payout: payout.clone(),
                rule: None,
                batch: batch.clone(),
            })
        }
        Command::RejectPayout { payout, reason } => {
            require_permission(state, ctx, Permission::PayoutReject)?;
            text("reason", reason, REASON_LENGTH_MAX, true)?;
            open_payout(
                state,
                payout,
                &[PayoutStatus::Requested, PayoutStatus::Approved],
            )?;
            EventBody::PayoutRejected(PayoutRejected {
                payout: payout.clone(),
                reason: reason.clone(),
            })
        }
        Command::AuthorizePayout {
            payout,
            two_factor,
            batch,
        } => {
            require_permission(state, ctx, Permission::PayoutAuthorize)?;
            let open = open_payout(state, payout, &[PayoutStatus::Approved])?;
            four_eyes(
                &open.requester == ctx.actor,
                "the authorizer requested this payout",
            )?;
            four_eyes(
                open.approvers.contains(ctx.actor),
                "the authorizer approved this payout",
            )?;
            batch_member(batch.as_ref(), payout.as_str())?;
            money_proof(
                state,
                ctx,
                two_factor.as_ref(),
                command.action(),
                payout.as_str(),
                batch.as_deref(),
            )?;
            let available = Bucket::Available(open.account.clone());
            if state.balance(&available, open.money.currency()) < open.money.amount() {
                return Err(Rejection::InsufficientFunds);
            }
            EventBody::PayoutAuthorized(PayoutAuthorized {
                payout: payout.clone(),
                two_factor: two_factor.clone(),
                postings: transfer(available, Bucket::Held(open.account.clone()), &open.money),
                batch: batch.clone(),
            })
        }
        Command::ExecutePayout {
            payout,
            rail,
            two_factor,
            batch,
        } => {
            require_permission(state, ctx, Permission::PayoutExecute)?;
            if let Some(rail) = rail {
                text("rail", rail, RAIL_LENGTH_MAX, true)?;
            }
            let open = open_payout(state, payout, &[PayoutStatus::Authorized])?;
            four_eyes(
                &open.requester == ctx.actor,
                "the executor requested this payout",
            )?;
            four_eyes(
                open.approvers.contains(ctx.actor),
                "the executor approved this payout",
            )?;
            four_eyes(
                open.authorizer.as_ref() == Some(ctx.actor),
                "the executor authorized this payout",
            )?;
            batch_member(batch.as_ref(), payout.as_str())?;
            money_proof(
                state,
                ctx,
                two_factor.as_ref(),
                command.action(),
                payout.as_str(),
                batch.as_deref(),
            )?;
            EventBody::PayoutExecuted(PayoutExecuted {
                payout: payout.clone(),
                rail: rail.clone(),
                two_factor: two_factor.clone(),
                batch: batch.clone(),
            })
        }
        Command::ReleasePayout {
            payout,
            two_factor,
            batch,
        } => {
            require_permission(state, ctx, Permission::PayoutRelease)?;
            let open = open_payout(state, payout, &[PayoutStatus::Executed])?;
            four_eyes(
                open.executor.as_ref() == Some(ctx.actor),
                "the releaser executed this payout",
            )?;
            batch_member(batch.as_ref(), payout.as_str())?;
            let person = ctx.actor.kind() == PrincipalKind::User;
            if person || two_factor.is_some() {
                money_proof(
                    state,
                    ctx,
                    two_factor.as_ref(),
                    command.action(),
                    payout.as_str(),
                    batch.as_deref(),
                )?;
            }
            EventBody::PayoutReleased(PayoutReleased {
                payout: payout.clone(),
                two_factor: two_factor.clone(),
                postings: transfer(
                    Bucket::Held(open.account.clone()),
                    Bucket::WorldPayees,
                    &open.money,
                ),
                batch: batch.clone(),
            })
        }
        Command::FailPayout { payout, reason } => {
            require_permission(state, ctx, Permission::PayoutFail)?;
            text("reason", reason, REASON_LENGTH_MAX, true)?;
            let open = open_payout(state, payout, &[PayoutStatus::Executed])?;
            EventBody::PayoutFailed(PayoutEnded {
                payout: payout.clone(),
                reason: reason.clone(),
                postings: return_hold(open),
            })
        }
        Command::CancelPayout { payout, reason } => {
            require_permission(state, ctx, Permission::PayoutCancel)?;
            text("reason", reason, REASON_LENGTH_MAX, true)?;
            let open = open_payout(
                state,
                payout,
                &[
                    PayoutStatus::Requested,
                    PayoutStatus::Approved,
                    PayoutStatus::Authorized,
                ],
            )?;
            let postings = if open.status == PayoutStatus::Authorized {
                return_hold(open)
            } else {
                Vec::new()
            };
            EventBody::PayoutCancelled(PayoutEnded {
                payout: payout.clone(),
                reason: reason.clone(),
                postings,
            })
        }
        Command::ProposeAutopayRule {
            rule,
            account,
            payees,
            max_amount,
            daily_limit,
        } => {
            require_permission(state, ctx, Permission::AutopayManage)?;
            if state.autopay_rules.contains_key(rule) {
                return Err(Rejection::state("auto-pay rule already exists"));
            }
            let unique: BTreeSet<&crate::ids::PayeeId> = payees.iter().collect();
            if payees.is_empty() || payees.len() > RULE_PAYEES_MAX || unique.len() != payees.len() {
                return Err(Rejection::validation(format!(
                    "payees must be 1 to {RULE_PAYEES_MAX} distinct payees"
                )));
            }
            if max_amount.currency() != daily_limit.currency() {
                return Err(Rejection::validation(
                    "max_amount and daily_limit must have one currency",
                ));
            }
            if max_amount.amount() > daily_limit.amount() {
                return Err(Rejection::validation(
                    "max_amount must not be over daily_limit",
                ));
            }
            let source = state
                .accounts
                .get(account)
                .ok_or(Rejection::NotFound { what: "account" })?;
            if source.currency != max_amount.currency() {
                return Err(Rejection::validation("currency differs from the account's"));
            }
            if payees.iter().any(|p| !state.payees.contains_key(p)) {
                return Err(Rejection::NotFound { what: "payee" });
            }
            EventBody::AutopayRuleProposed(AutopayRuleProposed {
                rule: rule.clone(),
                account: account.clone(),
                payees: payees.clone(),
                currency: max_amount.currency(),
                max_amount: max_amount.to_text(),
                daily_limit: daily_limit.to_text(),
            })
        }
        Command::EnableAutopayRule { rule, two_factor } => {
            require_permission(state, ctx, Permission::AutopayManage)?;
            let found = rule_of(state, rule)?;
            if found.status != RuleStatus::Proposed {
                return Err(Rejection::state(format!(
                    "auto-pay rule is {}",
                    found.status.name()
                )));
            }
            four_eyes(
                &found.proposer == ctx.actor,
                "the proposer of a rule cannot enable it",
            )?;
            money_proof(
                state,
                ctx,
                two_factor.as_ref(),
                command.action(),
                rule.as_str(),
                None,
            )?;
            EventBody::AutopayRuleEnabled(AutopayRuleEnabled {
                rule: rule.clone(),
                two_factor: two_factor.clone(),
            })
        }
        Command::DisableAutopayRule { rule, reason } => {
            require_permission(state, ctx, Permission::AutopayManage)?;
            text("reason", reason, REASON_LENGTH_MAX, true)?;
            if rule_of(state, rule)?.status == RuleStatus::Disabled {
                return Err(Rejection::state("auto-pay rule is disabled"));
            }
            EventBody::AutopayRuleDisabled(AutopayRuleDisabled {
                rule: rule.clone(),
                reason: reason.clone(),
            })
        }
        Command::ApprovePayoutByRule { payout, rule } => {
            if ctx.actor != &PrincipalId::of_rule(rule) {
                return Err(Rejection::validation(
                    "an auto-pay approval's actor is its rule",
                ));
            }
            let open = open_payout(state, payout, &[PayoutStatus::Requested])?;
            if state.just_requested.as_ref() != Some(payout) || !open.approvers.is_empty() {
                return Err(Rejection::Autopay(NoMatch::NotInRequestBatch));
            }
            let request = autopay::Request {
                account: &open.account,
                payee: &open.payee,
                money: &open.money,
                requester: &open.requester,
                at: ctx.at,
            };
            rule_of(state, rule)?.approves(&request).map_err(no_match)?;
            EventBody::PayoutApproved(PayoutApproved {
                payout: payout.clone(),
                rule: Some(rule.clone()),
                batch: None,
            })
        }
        Command::DeactivateUser { user, reason } => {
            require_permission(state, ctx, Permission::UserManage)?;
            text("reason", reason, REASON_LENGTH_MAX, true)?;
            four_eyes(user == ctx.actor, "nobody deactivates themselves")?;
            if user.kind() != PrincipalKind::User {
                return Err(Rejection::validation("only users are deactivated here"));
            }
            let known = state.principals.get(user).is_some_and(|p| p.added);
            if ctx.enforcement == Enforcement::Writer && !known {
                return Err(Rejection::NotFound { what: "user" });
            }
            if state.is_deactivated(user) {
                return Err(Rejection::state("user is already deactivated"));
            }
            EventBody::UserDeactivated(UserDeactivated {
                user: user.clone(),
                reason: reason.clone(),
            })
        }
        Command::RecoverTotp {} => {
            if ctx.actor.kind() != PrincipalKind::User {
                return Err(Rejection::validation("only people enrol TOTP"));
            }
            let known = state.principals.get(ctx.actor).is_some_and(|p| p.added);
            if ctx.enforcement == Enforcement::Writer && !known {
                return Err(Rejection::NotFound { what: "user" });
            }
            EventBody::TotpRecovered(TotpRecovered {
                user: ctx.actor.clone(),
            })
        }
        Command::SuspendTenant { reason } | Command::ResumeTenant { reason } => {
            if ctx.actor != &PrincipalId::operator() {
                return Err(Rejection::validation(
                    "only the operator suspends or resumes a tenant",
                ));
            }
            text("reason", reason, REASON_LENGTH_MAX, true)?;
            let suspend = matches!(command, Command::SuspendTenant { .. });
            if suspend == state.suspended {
                return Err(Rejection::state(if suspend {
                    "tenant is already suspended"
                } else {
                    "tenant is not suspended"
                }));
            }
            let data = TenantStatusChanged {
                reason: reason.clone(),
            };
            if suspend {
                EventBody::TenantSuspended(data)
            } else {
                EventBody::TenantResumed(data)
            }
        }
    };
    Ok(body)
}

fn tenant_matches(state: &TenantState, ctx: &Context<'_>) -> Result<(), Rejection> {
    if ctx.tenant != &state.tenant {
        return Err(Rejection::NotFound { what: "tenant" });
    }
    Ok(())
}

fn tenant_created(state: &TenantState) -> Result<(), Rejection> {
    if !state.created {
        return Err(Rejection::NotFound { what: "tenant" });
    }
    Ok(())
}

/// The rules of a payout request (after its permission), shared by [`decide_one`] and
/// the verifier's fast path.
fn request_rules(
    state: &TenantState,
    payout: &PayoutId,
    account: &crate::ids::AccountId,
    payee: &crate::ids::PayeeId,
    money: &Money,
    reference: &str,
    metadata: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<(), Rejection> {
    text("reference", reference, REFERENCE_LENGTH_MAX, true)?;
    if let Some(metadata) = metadata {
        if metadata.len() > METADATA_ENTRIES_MAX {
            return Err(Rejection::validation("too many metadata entries"));
        }
        for (key, value) in metadata {
            text("metadata key", key, METADATA_KEY_LENGTH_MAX, true)?;
            text("metadata value", value, METADATA_VALUE_LENGTH_MAX, false)?;
        }
    }
    if state.payouts.contains_key(payout) {
        return Err(Rejection::state("payout already exists"));
    }
    let source = state
        .accounts
        .get(account)
        .ok_or(Rejection::NotFound { what: "account" })?;
    if !state.payees.contains_key(payee) {
        return Err(Rejection::NotFound { what: "payee" });
    }
    if source.currency != money.currency() {
        return Err(Rejection::validation("currency differs from the account's"));
    }
    Ok(())
}

/// The rules of an approval (after its permission), shared by [`decide_one`] and the
/// verifier's fast path.
fn approve_rules(
    state: &TenantState,
    ctx: &Context<'_>,
    payout: &PayoutId,
    batch: Option<&Vec<String>>,
) -> Result<(), Rejection> {
    let open = open_payout(state, payout, &[PayoutStatus::Requested])?;
    four_eyes(
        &open.requester == ctx.actor,
        "the approver requested this payout",
    )?;
    four_eyes(
        open.approvers.contains(ctx.actor),
        "this approver already approved this payout",
    )?;
    batch_member(batch, payout.as_str())
}

/// Whether `text` is exactly `money.to_text()`, without allocating.
fn is_money_text(money: &Money, text: &str) -> bool {
    struct Compare<'a> {
        rest: &'a [u8],
        equal: bool,
    }
    impl std::fmt::Write for Compare<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            match self.rest.strip_prefix(s.as_bytes()) {
                Some(rest) => self.rest = rest,
                None => self.equal = false,
            }
            Ok(())
        }
    }
    let mut compare = Compare {
        rest: text.as_bytes(),
        equal: true,
    };
    if std::fmt::Write::write_fmt(&mut compare, format_args!("{}", money.amount())).is_err() {
        return false;
    }
    compare.equal && compare.rest.is_empty()
}

/// The verifier's fast path ([`Enforcement::Audit`]) for the commonest kinds,
/// `payout.requested` and `payout.approved`: what re-deciding the command the event
/// records gives, without building the command or the decided body. `None` for any other
/// kind (or enforcement); else `Ok(true)` when `decide` produces exactly `body`,
/// `Ok(false)` when it produces another body, `Err` with the rejection `decide` (or
/// reading the command from the event) gives. A property test holds it equal to the
/// general path.
pub(crate) fn audit_fast_path(
    state: &TenantState,
    body: &EventBody,
    ctx: &Context<'_>,
) -> Option<Result<bool, Rejection>> {
    if ctx.enforcement != Enforcement::Audit {
        return None;
    }
    match body {
        EventBody::PayoutRequested(d) => Some((|| {
            let money = exact_money(&d.amount, d.currency)?;
            tenant_matches(state, ctx)?;
            tenant_created(state)?;
            may_act(state, ctx, false, false)?;
            request_rules(
                state,
                &d.payout,
                &d.account,
                &d.payee,
                &money,
                &d.reference,
                d.metadata.as_ref(),
            )?;
            Ok(money.currency() == d.currency && is_money_text(&money, &d.amount))
        })()),
        EventBody::PayoutApproved(d) if d.rule.is_none() => Some((|| {
            tenant_matches(state, ctx)?;
            tenant_created(state)?;
            may_act(state, ctx, false, false)?;
            approve_rules(state, ctx, &d.payout, d.batch.as_ref())?;
            Ok(true)
        })()),
        EventBody::TenantCreated(_)
        | EventBody::UserAdded(_)
        | EventBody::RoleGranted(_)
        | EventBody::RoleRevoked(_)
        | EventBody::ApiKeyIssued(_)
        | EventBody::ApiKeyRevoked(_)
        | EventBody::AccountOpened(_)
        | EventBody::FundsDeposited(_)
        | EventBody::PayeeAdded(_)
        | EventBody::PolicyUpdated(_)
        | EventBody::PayoutRejected(_)
        | EventBody::PayoutAuthorized(_)
        | EventBody::PayoutExecuted(_)
        | EventBody::PayoutReleased(_)
        | EventBody::PayoutFailed(_)
        | EventBody::PayoutCancelled(_)
        | EventBody::CommandRejected(_)
        | EventBody::PayoutApproved(_)
        | EventBody::AutopayRuleProposed(_)
        | EventBody::AutopayRuleEnabled(_)
        | EventBody::AutopayRuleDisabled(_)
        | EventBody::UserDeactivated(_)
        | EventBody::TotpRecovered(_)
        | EventBody::TenantSuspended(_)
        | EventBody::TenantResumed(_) => None,
    }
}

fn return_hold(open: &OpenPayout) -> Vec<crate::event::Posting> {
    transfer(
        Bucket::Held(open.account.clone()),
        Bucket::Available(open.account.clone()),
        &open.money,
    )
}

/// Decides a batch all or nothing: each command sees the state left by the ones before
/// it; the first rejection rejects the whole batch (with the index of the culprit).
pub fn decide_batch(
    state: &TenantState,
    commands: &[Command],
    ctx: &Context<'_>,
) -> Result<Vec<EventBody>, (usize, Rejection)> {
    let mut scratch = state.clone();
    let mut bodies = Vec::with_capacity(commands.len());
    for (index, command) in commands.iter().enumerate() {
        let produced = decide(&scratch, command, ctx).map_err(|r| (index, r))?;
        for body in produced {
            scratch.apply_body(&body.sealed_actor(ctx.actor), ctx.at, &body);
            bodies.push(body);
        }
    }
    Ok(bodies)
}

/// The rejected command as evidence for the chain.
pub fn rejection_event(command: &Command, rejection: &Rejection) -> EventBody {
    EventBody::CommandRejected(crate::event::CommandRejected {
        action: command.action().to_owned(),
        subject: command.subject(),
        reason: rejection.code().to_owned(),
        detail: Some(rejection.to_string()),
    })
}

/// Parses a payout amount as events carry it (used when re-deciding an export).
pub(crate) fn exact_money(
    amount: &str,
    currency: crate::money::Currency,
) -> Result<Money, Rejection> {
    Money::parse_exact(amount, currency).map_err(|e| Rejection::validation(format!("amount: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    /// The allocation-free comparison against `to_text`, on amounts and on texts that
    /// differ from them in every way (shorter, longer, another digit).
    #[test]
    fn money_text_comparison_agrees_with_to_text() {
        for (text, currency) in [
            ("0.01", Currency::Eur),
            ("12.34", Currency::Eur),
            ("1000000000000.00", Currency::Eur),
            ("1200", Currency::Jpy),
        ] {
            let money = Money::parse_exact(text, currency).expect("amount");
            let canonical = money.to_text();
            assert!(is_money_text(&money, &canonical), "{canonical}");
            let mut longer = canonical.clone();
            longer.push('0');
            let shorter = &canonical[..canonical.len() - 1];
            let mut other = canonical.clone().into_bytes();
            let last = other.len() - 1;
            other[last] = if other[last] == b'9' {
                b'8'
            } else {
                other[last] + 1
            };
            let other = String::from_utf8(other).expect("ascii");
            for wrong in [longer.as_str(), shorter, other.as_str(), "", "-1"] {
                assert!(!is_money_text(&money, wrong), "{wrong} vs {canonical}");
            }
        }
    }
}
