//! Property tests of the ledger's invariants (STYLE "Tests"; DESIGN sections 3 and 4).
//!
//! 1. Random command programs over several tenants, driven through the in-memory writer
//!    (`Ledger::execute_or_record`), with the invariants checked after every step and at
//!    the end: postings sum to zero, tenant buckets never below zero, four-eyes on every
//!    payout, replay determinism, balances equal the sum of postings, and verification
//!    accepts the log.
//! 2. Tamper detection: any one change to a valid export (edit, delete, reorder, insert) is
//!    reported; an insider who re-hashes and re-links the chain is caught by a checkpoint.
//! 3. Canonical encoding and money text round-trips.
//!
//! Programs are vectors of small enums holding indices into actor and payout pools, so that
//! proptest shrinks a failure to a short program. Failing inputs are printed, not persisted.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use ledger_core::canonical;
use ledger_core::crypto::{Hash, KeySet, Sig, EVENT_HASH_PREFIX};
use ledger_core::event::{Event, EventBody};
use ledger_core::ids::{KeyId, PayoutId, PrincipalId, PrincipalKind, TenantId};
use ledger_core::money::{MoneyError, SignedAmount, AMOUNT_MAJOR_UNITS_MAX};
use ledger_core::policy::{roles_allow, ApprovalRule, Permission, Role};
use ledger_core::proof::TwoFactorProof;
use ledger_core::state::{Payout, PayoutStatus};
use ledger_core::testkit::{standard_tenant, Ledger};
use ledger_core::time::Timestamp;
use ledger_core::verify::{
    parse_line, precheck_signatures, verify_export, BreakKind, BreakLocation, Report,
    SignatureCache, UsageError, Verifier,
};
use ledger_core::{apply, Command, Currency, Money, Rejection, TenantState};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rust_decimal::Decimal;
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------
// Pools and fixtures
// ---------------------------------------------------------------------------------------

/// Tenants: name, key seed, initial EUR deposit of `standard_tenant`.
const TENANTS: [(&str, u8, &str); 3] = [
    ("acme", 1, "2500.00"),
    ("globex", 2, "20000.00"),
    ("initech", 3, "40.00"),
];

/// Everyone who may try a command. `usr_max` holds every payout role (so four-eyes is the
/// only thing between them and a payout), `usr_zed` was never added, `usr_aud` only reads.
const ACTORS: [&str; 12] = [
    "usr_admin",
    "usr_ann",
    "usr_bob",
    "usr_bea",
    "usr_cat",
    "usr_dan",
    "usr_rex",
    "usr_eve",
    "usr_aud",
    "svc_settlement",
    "usr_max",
    "usr_zed",
];

/// Accounts commands may name: EUR, JPY, and one that does not exist.
const ACCOUNTS: [(&str, Currency); 3] = [
    ("acct_ops", Currency::Eur),
    ("acct_yen", Currency::Jpy),
    ("acct_void", Currency::Eur),
];

/// Payout ids `po_0` .. `po_5` (few, so that commands meet on the same payouts).
const PAYOUTS: usize = 6;

/// The roles `usr_max` gets on top of the standard cast.
const MAX_ROLES: [Role; 5] = [
    Role::Requester,
    Role::Approver,
    Role::Authorizer,
    Role::Executor,
    Role::Releaser,
];

fn id<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    match text.parse() {
        Ok(value) => value,
        Err(e) => panic!("test id {text:?}: {e:?}"),
    }
}

fn must(result: Result<Vec<Event>, Rejection>, what: &str) {
    if let Err(e) = result {
        panic!("fixture {what}: {e}");
    }
}

/// `minor_units` of `currency` as amount text at the currency's scale ("125.50", "1200").
fn amount_text(minor_units: u64, currency: Currency) -> String {
    let scale = currency.minor_units();
    if scale == 0 {
        return minor_units.to_string();
    }
    let unit = 10u64.pow(scale);
    format!(
        "{}.{:0width$}",
        minor_units / unit,
        minor_units % unit,
        width = scale as usize
    )
}

fn money(minor_units: u64, currency: Currency) -> Money {
    let text = amount_text(minor_units, currency);
    match Money::parse(&text, currency) {
        Ok(money) => money,
        Err(e) => panic!("money {text} {currency}: {e}"),
    }
}

/// A standard tenant plus `usr_max` (every payout role) and a funded JPY account.
fn build_template(name: &str, seed: u8, deposit: &str) -> Ledger {
    let mut ledger = standard_tenant(name, seed, deposit);
    must(
        ledger.execute(
            "usr_admin",
            Command::AddUser {
                user: id("usr_max"),
                name: "Max".into(),
            },
        ),
        "add usr_max",
    );
    for role in MAX_ROLES {
        let proof = ledger.proof("usr_admin", "role.grant", &format!("usr_max:{role}"));
        must(
            ledger.execute(
                "usr_admin",
                Command::GrantRole {
                    user: id("usr_max"),
                    role,
                    two_factor: Some(proof),
                    batch: None,
                },
            ),
            "grant usr_max",
        );
    }
    must(
        ledger.execute(
            "usr_eve",
            Command::OpenAccount {
                account: id("acct_yen"),
                currency: Currency::Jpy,
                name: Some("Yen float".into()),
            },
        ),
        "open acct_yen",
    );
    must(
        ledger.execute(
            "usr_eve",
            Command::Deposit {
                account: id("acct_yen"),
                money: money(500_000, Currency::Jpy),
                reference: None,
            },
        ),
        "fund acct_yen",
    );
    ledger
}

/// The tenants' set-up chains, written once: in debug builds every 2FA signature check
/// costs milliseconds, and every case starts from the same cast.
fn templates() -> &'static [Ledger] {
    static TEMPLATES: OnceLock<Vec<Ledger>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        TENANTS
            .iter()
            .map(|(name, seed, deposit)| build_template(name, *seed, deposit))
            .collect()
    })
}

/// A writer that continues the chain of `templates()[tenant]`: same tenant, keys, events,
/// state and clock; event ids from another seed's range, and TOTP steps past every step
/// the template used (so its proofs are never replays of the template's).
fn fork(tenant: usize) -> Ledger {
    let template = &templates()[tenant];
    let (_, seed, _) = TENANTS[tenant];
    let mut ledger = Ledger::new(template.tenant.as_str(), seed.wrapping_add(100));
    ledger.state = template.state.clone();
    ledger.head = template.head;
    ledger.events = template.events.clone();
    ledger.checkpoints = template.checkpoints.clone();
    ledger.keys = template.keys.clone();
    ledger.two_factor_key = template.two_factor_key.clone();
    ledger.checkpoint_key = template.checkpoint_key.clone();
    ledger.clock = template.clock;
    let used = template
        .state
        .last_proofs
        .values()
        .map(|proof| proof.step)
        .max()
        .unwrap_or(0);
    while ledger.proof("usr_admin", "steps.burn", "none").step <= used {}
    ledger
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------
// Programs
// ---------------------------------------------------------------------------------------

/// Who attempts a command: someone whose roles fit it (index into the fitting actors), or
/// anyone at all (index into `ACTORS`).
#[derive(Debug, Clone, Copy)]
enum Who {
    Fitting(usize),
    Anyone(usize),
}

/// The 2FA proof a command carries.
#[derive(Debug, Clone, Copy)]
enum ProofKind {
    /// Fresh and bound to the command.
    Fresh,
    /// None.
    Missing,
    /// Bound to another actor (`ACTORS` index; may happen to be the right one).
    OtherActor(usize),
    /// Bound to another payout (may happen to be the right one).
    OtherSubject(usize),
    /// Bound to another action.
    OtherAction,
    /// Bound to another tenant, signed with this tenant's key.
    OtherTenant,
    /// Signed by a key the tenant does not know.
    ForeignKey,
    /// One bit of the signature flipped.
    BadSignature,
    /// Verified 301 s before the command.
    Stale,
    /// Verified after the command.
    FromFuture,
    /// Reuses the step the actor used last.
    Replayed,
}

#[derive(Debug, Clone)]
enum Op {
    Request {
        who: Who,
        payout: usize,
        account: usize,
        minor_units: u64,
        foreign_currency: bool,
    },
    Approve {
        who: Who,
        payout: usize,
    },
    Reject {
        who: Who,
        payout: usize,
    },
    Authorize {
        who: Who,
        payout: usize,
        proof: ProofKind,
    },
    Execute {
        who: Who,
        payout: usize,
        proof: ProofKind,
    },
    Release {
        who: Who,
        payout: usize,
        proof: ProofKind,
    },
    Fail {
        who: Who,
        payout: usize,
    },
    Cancel {
        who: Who,
        payout: usize,
    },
    Deposit {
        who: Who,
        account: usize,
        minor_units: u64,
    },
    Policy {
        who: Who,
        threshold_minor_units: u64,
        approvals: u32,
        yen_rule: bool,
        proof: ProofKind,
    },
    Checkpoint,
    /// The next gate of the payout as it stands (request, approve, authorize, execute,
    /// then release or fail), so that programs get payouts through the lifecycle.
    Advance {
        who: Who,
        payout: usize,
        account: usize,
        minor_units: u64,
        proof: ProofKind,
        settle: bool,
    },
}

#[derive(Debug, Clone)]
struct Step {
    /// Index into the program's tenants (modulo their number).
    tenant: usize,
    op: Op,
}

#[derive(Debug, Clone)]
struct Program {
    /// How many tenants (2 or 3) take part.
    tenants: usize,
    /// A first deposit into each tenant's `acct_ops`, in cents (0: none).
    deposits: Vec<u64>,
    steps: Vec<Step>,
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        3 => (0..8usize).prop_map(Who::Fitting),
        1 => (0..ACTORS.len()).prop_map(Who::Anyone),
    ]
}

fn proof_kind() -> BoxedStrategy<ProofKind> {
    prop_oneof![
        30 => Just(ProofKind::Fresh),
        2 => Just(ProofKind::Missing),
        1 => (0..ACTORS.len()).prop_map(ProofKind::OtherActor),
        1 => (0..PAYOUTS).prop_map(ProofKind::OtherSubject),
        1 => Just(ProofKind::OtherAction),
        1 => Just(ProofKind::OtherTenant),
        1 => Just(ProofKind::ForeignKey),
        1 => Just(ProofKind::BadSignature),
        1 => Just(ProofKind::Stale),
        1 => Just(ProofKind::FromFuture),
        2 => Just(ProofKind::Replayed),
    ]
    .boxed()
}

/// Minor units: mostly small, sometimes more than any balance holds.
fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 1..=60_000u64, 1 => 60_001..=5_000_000u64]
}

/// A payout index, mostly `po_0` or `po_1`, so that some payouts get far.
fn focus() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 0..2usize, 1 => 0..PAYOUTS]
}

fn op() -> BoxedStrategy<Op> {
    let payout = || 0..PAYOUTS;
    prop_oneof![
        2 => (who(), payout(), 0..ACCOUNTS.len(), amount(), prop::bool::weighted(0.2))
            .prop_map(|(who, payout, account, minor_units, foreign_currency)| Op::Request {
                who,
                payout,
                account,
                minor_units,
                foreign_currency,
            })
            .boxed(),
        3 => (who(), payout()).prop_map(|(who, payout)| Op::Approve { who, payout }).boxed(),
        1 => (who(), payout()).prop_map(|(who, payout)| Op::Reject { who, payout }).boxed(),
        2 => (who(), payout(), proof_kind())
            .prop_map(|(who, payout, proof)| Op::Authorize { who, payout, proof })
            .boxed(),
        2 => (who(), payout(), proof_kind())
            .prop_map(|(who, payout, proof)| Op::Execute { who, payout, proof })
            .boxed(),
        2 => (who(), payout(), proof_kind())
            .prop_map(|(who, payout, proof)| Op::Release { who, payout, proof })
            .boxed(),
        1 => (who(), payout()).prop_map(|(who, payout)| Op::Fail { who, payout }).boxed(),
        1 => (who(), payout()).prop_map(|(who, payout)| Op::Cancel { who, payout }).boxed(),
        1 => (who(), 0..ACCOUNTS.len(), amount())
            .prop_map(|(who, account, minor_units)| Op::Deposit { who, account, minor_units })
            .boxed(),
        1 => (who(), 1..=200_000u64, 0..=3u32, any::<bool>(), proof_kind())
            .prop_map(|(who, threshold_minor_units, approvals, yen_rule, proof)| Op::Policy {
                who,
                threshold_minor_units,
                approvals,
                yen_rule,
                proof,
            })
            .boxed(),
        1 => Just(Op::Checkpoint).boxed(),
        20 => (who(), focus(), 0..2usize, amount(), proof_kind(), prop::bool::weighted(0.75))
            .prop_map(|(who, payout, account, minor_units, proof, settle)| Op::Advance {
                who,
                payout,
                account,
                minor_units,
                proof,
                settle,
            })
            .boxed(),
    ]
    .boxed()
}

fn program(steps: std::ops::Range<usize>) -> impl Strategy<Value = Program> {
    (
        2..=3usize,
        vec(prop_oneof![1 => Just(0u64), 3 => amount()], 3),
        vec(
            (0..3usize, op()).prop_map(|(tenant, op)| Step { tenant, op }),
            steps,
        ),
    )
        .prop_map(|(tenants, deposits, steps)| Program {
            tenants,
            deposits,
            steps,
        })
}

/// The actors whose roles fit a command (by its permission).
fn fitting(permission: Permission) -> &'static [&'static str] {
    match permission {
        Permission::PayoutRequest | Permission::PayoutCancel => &["usr_ann", "usr_max"],
        Permission::PayoutApprove => &["usr_bob", "usr_bea", "usr_max"],
        Permission::PayoutReject => &["usr_bob", "usr_bea", "usr_cat", "usr_max"],
        Permission::PayoutAuthorize => &["usr_cat", "usr_max"],
        Permission::PayoutExecute => &["usr_dan", "usr_max"],
        Permission::PayoutRelease | Permission::PayoutFail => {
            &["usr_rex", "svc_settlement", "usr_max"]
        }
        Permission::FundsDeposit | Permission::AccountManage => &["usr_eve"],
        Permission::UserManage
        | Permission::RoleManage
        | Permission::ApiKeyManage
        | Permission::PayeeManage
        | Permission::PolicyManage
        | Permission::WebhookManage
        | Permission::AutopayManage => &["usr_admin"],
        Permission::LedgerRead
        | Permission::AuditRead
        | Permission::AuditExport
        | Permission::PayeeRead => &["usr_aud"],
    }
}

fn resolve(who: Who, permission: Permission) -> &'static str {
    match who {
        Who::Fitting(i) => {
            let pool = fitting(permission);
            pool[i % pool.len()]
        }
        Who::Anyone(i) => ACTORS[i % ACTORS.len()],
    }
}

fn payout_id(index: usize) -> String {
    format!("po_{index}")
}

/// A proof of `kind` for `actor` doing `action` on `subject`, minted by the tenant's 2FA key.
fn proof_for(
    ledger: &mut Ledger,
    kind: ProofKind,
    actor: &str,
    action: &str,
    subject: &str,
) -> Option<TwoFactorProof> {
    let resign = |ledger: &mut Ledger, edit: &dyn Fn(&mut ledger_core::proof::UnsignedProof)| {
        let mut unsigned = ledger.proof(actor, action, subject).unsigned();
        edit(&mut unsigned);
        unsigned.sign(&ledger.two_factor_key)
    };
    let proof = match kind {
        // What an honest client sends: a proof for a person, none for a service.
        ProofKind::Fresh if actor.starts_with("svc_") => return None,
        ProofKind::Fresh => ledger.proof(actor, action, subject),
        ProofKind::Missing => return None,
        ProofKind::OtherActor(i) => ledger.proof(ACTORS[i % ACTORS.len()], action, subject),
        ProofKind::OtherSubject(i) => ledger.proof(actor, action, &payout_id(i)),
        ProofKind::OtherAction => {
            let other = if action == "payout.execute" {
                "payout.authorize"
            } else {
                "payout.execute"
            };
            ledger.proof(actor, other, subject)
        }
        ProofKind::OtherTenant => {
            let own = ledger.tenant.as_str().to_owned();
            let other = TENANTS
                .iter()
                .map(|(name, _, _)| *name)
                .find(|name| *name != own)
                .unwrap_or("other");
            resign(ledger, &|p| p.tenant = id::<TenantId>(other))
        }
        ProofKind::ForeignKey => {
            let mut unsigned = ledger.proof(actor, action, subject).unsigned();
            unsigned.key_id = id::<KeyId>("2fa-9");
            unsigned.sign(&SigningKey::from_bytes(&[0xab; 32]))
        }
        ProofKind::BadSignature => {
            let mut proof = ledger.proof(actor, action, subject);
            let mut bytes = *proof.sig.as_bytes();
            bytes[17] ^= 0x04;
            proof.sig = Sig::from_bytes(bytes);
            proof
        }
        ProofKind::Stale => {
            let at = Timestamp::from_unix_micros(ledger.clock.unix_micros() - 301_000_000);
            resign(ledger, &|p| p.verified_at = at)
        }
        ProofKind::FromFuture => {
            let at = Timestamp::from_unix_micros(ledger.clock.unix_micros() + 5_000_000);
            resign(ledger, &|p| p.verified_at = at)
        }
        ProofKind::Replayed => {
            let actor_id: PrincipalId = id(actor);
            let last = ledger.state.last_proofs.get(&actor_id).map(|p| p.step);
            match last {
                Some(step) => resign(ledger, &|p| p.step = step),
                None => ledger.proof(actor, action, subject),
            }
        }
    };
    Some(proof)
}

/// `Op::Advance` as the command it stands for now; any other op as it is.
fn concrete(state: &TenantState, op: &Op) -> Op {
    let Op::Advance {
        who,
        payout,
        account,
        minor_units,
        proof,
        settle,
    } = *op
    else {
        return op.clone();
    };
    let status = state
        .payouts
        .get(&id::<PayoutId>(&payout_id(payout)))
        .map(Payout::status);
    match status {
        None => Op::Request {
            who,
            payout,
            account,
            minor_units,
            foreign_currency: false,
        },
        Some(PayoutStatus::Requested) => Op::Approve { who, payout },
        Some(PayoutStatus::Approved) => Op::Authorize { who, payout, proof },
        Some(PayoutStatus::Authorized) => Op::Execute { who, payout, proof },
        Some(PayoutStatus::Executed) if settle => Op::Release { who, payout, proof },
        Some(PayoutStatus::Executed) => Op::Fail { who, payout },
        Some(
            PayoutStatus::Released
            | PayoutStatus::Rejected
            | PayoutStatus::Cancelled
            | PayoutStatus::Failed,
        ) => Op::Cancel { who, payout },
    }
}

/// The command a step attempts, with its actor and permission; `None` for a checkpoint.
fn command_of(ledger: &mut Ledger, op: &Op) -> Option<(&'static str, Permission, Command)> {
    let op = &concrete(&ledger.state, op);
    let payout_command = |who: Who, permission: Permission, payout: usize| {
        (resolve(who, permission), permission, payout_id(payout))
    };
    let gate = |ledger: &mut Ledger, who, permission, action, payout, kind| {
        let (actor, permission, payout) = payout_command(who, permission, payout);
        let proof = proof_for(ledger, kind, actor, action, &payout);
        (actor, permission, id(&payout), proof)
    };
    let found = match op {
        Op::Request {
            who,
            payout,
            account,
            minor_units,
            foreign_currency,
        } => {
            let (actor, permission, payout) =
                payout_command(*who, Permission::PayoutRequest, *payout);
            let (account, currency) = ACCOUNTS[account % ACCOUNTS.len()];
            let currency = if *foreign_currency {
                Currency::Kwd
            } else {
                currency
            };
            let command = Command::RequestPayout {
                reference: format!("inv-{payout}"),
                payout: id(&payout),
                account: id(account),
                payee: id("pay_lark"),
                money: money(*minor_units, currency),
                metadata: None,
            };
            (actor, permission, command)
        }
        Op::Approve { who, payout } => {
            let (actor, permission, payout) =
                payout_command(*who, Permission::PayoutApprove, *payout);
            let command = Command::ApprovePayout {
                payout: id(&payout),
                batch: None,
            };
            (actor, permission, command)
        }
        Op::Reject { who, payout } => {
            let (actor, permission, payout) =
                payout_command(*who, Permission::PayoutReject, *payout);
            let command = Command::RejectPayout {
                payout: id(&payout),
                reason: "not this month".into(),
            };
            (actor, permission, command)
        }
        Op::Authorize { who, payout, proof } => {
            let (actor, permission, payout, two_factor) = gate(
                ledger,
                *who,
                Permission::PayoutAuthorize,
                "payout.authorize",
                *payout,
                *proof,
            );
            let command = Command::AuthorizePayout {
                payout,
                two_factor,
                batch: None,
            };
            (actor, permission, command)
        }
        Op::Execute { who, payout, proof } => {
            let (actor, permission, payout, two_factor) = gate(
                ledger,
                *who,
                Permission::PayoutExecute,
                "payout.execute",
                *payout,
                *proof,
            );
            let command = Command::ExecutePayout {
                payout,
                rail: Some("SEPA".into()),
                two_factor,
                batch: None,
            };
            (actor, permission, command)
        }
        Op::Release { who, payout, proof } => {
            let (actor, permission, payout, two_factor) = gate(
                ledger,
                *who,
                Permission::PayoutRelease,
                "payout.release",
                *payout,
                *proof,
            );
            let command = Command::ReleasePayout {
                payout,
                two_factor,
                batch: None,
            };
            (actor, permission, command)
        }
        Op::Fail { who, payout } => {
            let (actor, permission, payout) = payout_command(*who, Permission::PayoutFail, *payout);
            let command = Command::FailPayout {
                payout: id(&payout),
                reason: "rail returned the payment".into(),
            };
            (actor, permission, command)
        }
        Op::Cancel { who, payout } => {
            let (actor, permission, payout) =
                payout_command(*who, Permission::PayoutCancel, *payout);
            let command = Command::CancelPayout {
                payout: id(&payout),
                reason: "changed our mind".into(),
            };
            (actor, permission, command)
        }
        Op::Deposit {
            who,
            account,
            minor_units,
        } => {
            let actor = resolve(*who, Permission::FundsDeposit);
            let (account, currency) = ACCOUNTS[account % ACCOUNTS.len()];
            let command = Command::Deposit {
                account: id(account),
                money: money(*minor_units, currency),
                reference: Some("top-up".into()),
            };
            (actor, Permission::FundsDeposit, command)
        }
        Op::Policy {
            who,
            threshold_minor_units,
            approvals,
            yen_rule,
            proof,
        } => {
            let actor = resolve(*who, Permission::PolicyManage);
            let mut rules = vec![ApprovalRule {
                currency: Currency::Eur,
                min_amount: amount_text(*threshold_minor_units, Currency::Eur),
                approvals: *approvals,
            }];
            if *yen_rule {
                rules.push(ApprovalRule {
                    currency: Currency::Jpy,
                    min_amount: amount_text(*threshold_minor_units, Currency::Jpy),
                    approvals: 2,
                });
            }
            let two_factor = proof_for(ledger, *proof, actor, "policy.update", "policy:approvals");
            let command = Command::UpdatePolicy { rules, two_factor };
            (actor, Permission::PolicyManage, command)
        }
        Op::Checkpoint | Op::Advance { .. } => return None,
    };
    Some(found)
}

// ---------------------------------------------------------------------------------------
// The model: what the events say, recomputed from the events alone
// ---------------------------------------------------------------------------------------

/// Everyone who acted on one payout, from its events.
#[derive(Debug, Default)]
struct Acts {
    requester: Option<PrincipalId>,
    approvers: Vec<PrincipalId>,
    authorizer: Option<PrincipalId>,
    executor: Option<PrincipalId>,
    releaser: Option<PrincipalId>,
}

impl Acts {
    fn involves(&self, actor: &PrincipalId) -> bool {
        self.requester.as_ref() == Some(actor)
            || self.approvers.contains(actor)
            || self.authorizer.as_ref() == Some(actor)
            || self.executor.as_ref() == Some(actor)
    }

    /// DESIGN: requester, every approver, the authorizer and the executor are pairwise
    /// distinct, and the releaser is not the executor.
    fn four_eyes_holds(&self) -> bool {
        let gates: Vec<&PrincipalId> = self
            .requester
            .iter()
            .chain(self.approvers.iter())
            .chain(self.authorizer.iter())
            .chain(self.executor.iter())
            .collect();
        let distinct: HashSet<&PrincipalId> = gates.iter().copied().collect();
        distinct.len() == gates.len()
            && (self.releaser.is_none() || self.releaser.as_ref() != self.executor.as_ref())
    }
}

/// Which act on which payout an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Request,
    Approve,
    Authorize,
    Execute,
    Release,
    End,
}

fn act_of(body: &EventBody) -> Option<(String, Act)> {
    let (payout, act) = match body {
        EventBody::PayoutRequested(d) => (&d.payout, Act::Request),
        EventBody::PayoutApproved(d) => (&d.payout, Act::Approve),
        EventBody::PayoutAuthorized(d) => (&d.payout, Act::Authorize),
        EventBody::PayoutExecuted(d) => (&d.payout, Act::Execute),
        EventBody::PayoutReleased(d) => (&d.payout, Act::Release),
        EventBody::PayoutRejected(d) => (&d.payout, Act::End),
        EventBody::PayoutFailed(d) | EventBody::PayoutCancelled(d) => (&d.payout, Act::End),
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
        | EventBody::CommandRejected(_)
        | EventBody::AutopayRuleProposed(_)
        | EventBody::AutopayRuleEnabled(_)
        | EventBody::AutopayRuleDisabled(_)
        | EventBody::UserDeactivated(_)
        | EventBody::TotpRecovered(_)
        | EventBody::TenantSuspended(_)
        | EventBody::TenantResumed(_) => return None,
    };
    Some((payout.to_string(), act))
}

type BucketKey = (String, Currency);

/// One tenant's chain as read from its events: the fold, the buckets, the payouts' actors.
#[derive(Debug)]
struct Model {
    replayed: TenantState,
    absorbed: usize,
    buckets: BTreeMap<BucketKey, Decimal>,
    payouts: BTreeMap<String, Acts>,
}

impl Model {
    fn new(tenant: &TenantId) -> Self {
        Self {
            replayed: TenantState::new(tenant.clone()),
            absorbed: 0,
            buckets: BTreeMap::new(),
            payouts: BTreeMap::new(),
        }
    }

    /// Reads the events the model has not seen yet, checking each, then compares with the
    /// ledger's live state.
    fn absorb(&mut self, ledger: &Ledger) -> Result<(), TestCaseError> {
        for event in &ledger.events[self.absorbed..] {
            self.absorb_event(ledger, event)?;
        }
        self.absorbed = ledger.events.len();
        self.compare(ledger)
    }

    fn absorb_event(&mut self, ledger: &Ledger, event: &Event) -> Result<(), TestCaseError> {
        prop_assert_eq!(&event.tenant, &ledger.tenant, "event of another tenant");
        let mut sums: BTreeMap<Currency, Decimal> = BTreeMap::new();
        for posting in event.body.postings() {
            let amount = SignedAmount::parse_exact(&posting.amount, posting.currency)
                .map_err(|e| TestCaseError::fail(format!("posting amount: {e}")))?;
            *sums.entry(posting.currency).or_default() += amount.amount();
            let balance = self
                .buckets
                .entry((posting.account.clone(), posting.currency))
                .or_default();
            *balance += amount.amount();
            let is_world = posting.account.starts_with("world:");
            prop_assert!(
                is_world || *balance >= Decimal::ZERO,
                "seq {}: {} goes below zero ({})",
                event.seq,
                posting.account,
                balance
            );
        }
        for (currency, sum) in &sums {
            prop_assert!(
                sum.is_zero(),
                "seq {} ({}): postings sum to {} {}",
                event.seq,
                event.body.kind(),
                sum,
                currency
            );
        }
        if let Some((payout, act)) = act_of(&event.body) {
            let acts = self.payouts.entry(payout.clone()).or_default();
            let actor = Some(event.actor.clone());
            match act {
                Act::Request => {
                    prop_assert!(acts.requester.is_none(), "{payout} requested twice");
                    acts.requester = actor;
                }
                Act::Approve => acts.approvers.push(event.actor.clone()),
                Act::Authorize => {
                    prop_assert!(acts.authorizer.is_none(), "{payout} authorized twice");
                    acts.authorizer = actor;
                }
                Act::Execute => {
                    prop_assert!(acts.executor.is_none(), "{payout} executed twice");
                    acts.executor = actor;
                }
                Act::Release => {
                    prop_assert!(acts.releaser.is_none(), "{payout} released twice");
                    acts.releaser = actor;
                }
                Act::End => {}
            }
            prop_assert!(
                acts.four_eyes_holds(),
                "seq {}: four-eyes broken on {}: {:?}",
                event.seq,
                payout,
                acts
            );
        }
        let state = std::mem::replace(&mut self.replayed, TenantState::new(ledger.tenant.clone()));
        self.replayed = apply(state, event);
        Ok(())
    }

    /// Replay determinism, non-negative accounts, balances equal the sum of postings.
    fn compare(&self, ledger: &Ledger) -> Result<(), TestCaseError> {
        prop_assert!(
            self.replayed == ledger.state,
            "folding the events does not give the live state"
        );
        let balance = |bucket: String, currency: Currency| {
            self.buckets
                .get(&(bucket, currency))
                .copied()
                .unwrap_or_default()
        };
        for (account, state) in &ledger.state.accounts {
            prop_assert!(
                state.available >= Decimal::ZERO && state.held >= Decimal::ZERO,
                "{} below zero: available {}, held {}",
                account,
                state.available,
                state.held
            );
            let available = balance(format!("{account}:available"), state.currency);
            let held = balance(format!("{account}:held"), state.currency);
            prop_assert_eq!(state.available, available, "{} available", account);
            prop_assert_eq!(state.held, held, "{} held", account);
        }
        for ((bucket, currency), amount) in &self.buckets {
            let known = match bucket.as_str() {
                "world:funding" => {
                    ledger
                        .state
                        .balance(&ledger_core::state::Bucket::WorldFunding, *currency)
                        == *amount
                }
                "world:payees" => {
                    ledger
                        .state
                        .balance(&ledger_core::state::Bucket::WorldPayees, *currency)
                        == *amount
                }
                other => ledger_core::state::Bucket::parse(other).is_some_and(|b| {
                    b.is_tenant() && ledger.state.balance(&b, *currency) == *amount
                }),
            };
            prop_assert!(
                known,
                "bucket {} {} = {} disagrees with the state",
                bucket,
                currency,
                amount
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Running a program
// ---------------------------------------------------------------------------------------

/// What the programs reached, so that a generator that stops reaching it fails the test.
type Coverage = BTreeMap<String, u64>;

fn note(coverage: Option<&RefCell<Coverage>>, key: String) {
    if let Some(coverage) = coverage {
        *coverage.borrow_mut().entry(key).or_default() += 1;
    }
}

struct World {
    ledgers: Vec<Ledger>,
    models: Vec<Model>,
}

/// Runs `program`, checking the invariants after every step.
fn run(program: &Program, coverage: Option<&RefCell<Coverage>>) -> Result<World, TestCaseError> {
    let mut ledgers: Vec<Ledger> = (0..program.tenants).map(fork).collect();
    let mut models = Vec::with_capacity(ledgers.len());
    for ledger in &ledgers {
        let mut model = Model::new(&ledger.tenant);
        model.absorb(ledger)?;
        models.push(model);
    }
    for (tenant, cents) in program.deposits.iter().take(program.tenants).enumerate() {
        if *cents > 0 {
            let deposit = Op::Deposit {
                who: Who::Fitting(0),
                account: 0,
                minor_units: *cents,
            };
            run_step(&mut ledgers, &mut models, tenant, &deposit, None)?;
        }
    }
    for step in &program.steps {
        let tenant = step.tenant % program.tenants;
        run_step(&mut ledgers, &mut models, tenant, &step.op, coverage)?;
    }
    Ok(World { ledgers, models })
}

fn run_step(
    ledgers: &mut [Ledger],
    models: &mut [Model],
    tenant: usize,
    op: &Op,
    coverage: Option<&RefCell<Coverage>>,
) -> Result<(), TestCaseError> {
    let ledger = &mut ledgers[tenant];
    let model = &mut models[tenant];
    let Some((actor, permission, command)) = command_of(ledger, op) else {
        let checkpoint = ledger.checkpoint();
        prop_assert_eq!(checkpoint.seq, ledger.head.seq);
        prop_assert_eq!(checkpoint.head, ledger.head.hash);
        return Ok(());
    };
    let actor_id: PrincipalId = id(actor);
    let allowed = ledger
        .state
        .roles_of(&actor_id)
        .is_some_and(|roles| roles_allow(roles, permission));
    let before = ledger.events.len();
    let result = ledger.execute_or_record(actor, command.clone());
    let appended = &ledger.events[before..];
    match &result {
        Ok(events) => {
            prop_assert_eq!(events.len(), 1);
            prop_assert_eq!(appended, events.as_slice());
            prop_assert!(allowed, "{} succeeded without {}", actor, permission);
            note(coverage, format!("event:{}", events[0].body.kind()));
            if actor_id.kind() == PrincipalKind::Service {
                note(coverage, format!("by_service:{}", events[0].body.kind()));
            }
        }
        Err(rejection) => {
            note(coverage, format!("reject:{}", rejection.code()));
            if let Rejection::TwoFactor(failure) = rejection {
                note(coverage, format!("2fa:{failure:?}"));
            }
            if rejection.is_evidence() {
                prop_assert_eq!(appended.len(), 1, "a denial that is evidence is appended");
                let EventBody::CommandRejected(recorded) = &appended[0].body else {
                    return Err(TestCaseError::fail("the evidence is not command.rejected"));
                };
                prop_assert_eq!(&recorded.reason, rejection.code());
                prop_assert_eq!(recorded.action.as_str(), command.action());
                prop_assert_eq!(&recorded.subject, &command.subject());
                prop_assert_eq!(&appended[0].actor, &actor_id);
            } else {
                prop_assert!(appended.is_empty(), "{} appended an event", rejection);
            }
            let forbidden = matches!(rejection, Rejection::Forbidden { .. });
            prop_assert_eq!(
                forbidden,
                !allowed,
                "{} {} for {}: {}",
                actor,
                command.action(),
                permission,
                rejection
            );
            if let Rejection::FourEyes { detail } = rejection {
                let acts = model.payouts.get(&command.subject());
                prop_assert!(
                    acts.is_some_and(|acts| acts.involves(&actor_id)),
                    "four-eyes refusal ({}) though {} never acted on {}",
                    detail,
                    actor,
                    command.subject()
                );
            }
        }
    }
    model.absorb(ledger)
}

/// The end-of-program checks: everything again from the events alone, then the verifier.
fn check_world(world: &World) -> Result<(), TestCaseError> {
    let mut seen_tenants = BTreeSet::new();
    for (ledger, live_model) in world.ledgers.iter().zip(&world.models) {
        prop_assert!(
            seen_tenants.insert(ledger.tenant.clone()),
            "tenants are distinct"
        );
        let mut model = Model::new(&ledger.tenant);
        model.absorb(ledger)?;
        let folded = ledger
            .events
            .iter()
            .fold(TenantState::new(ledger.tenant.clone()), apply);
        prop_assert!(folded == ledger.state, "replay of the whole chain differs");
        prop_assert_eq!(&model.buckets, &live_model.buckets);
        let report = verify(ledger)?;
        let summary = &report.summary;
        prop_assert_eq!(summary.events, ledger.events.len() as u64);
        prop_assert_eq!(summary.money_movements_without_two_factor, 0);
        prop_assert_eq!(
            summary.checkpoints_verified,
            ledger.checkpoints.len() as u64
        );
        let rejected = ledger
            .events
            .iter()
            .filter(|e| e.body.kind() == "command.rejected")
            .count();
        prop_assert_eq!(summary.commands_rejected, rejected as u64);
    }
    Ok(())
}

/// The set-up proofs' signatures, checked once (as the auditor's CLI does ahead of the
/// stream with `precheck_signatures`): in a debug build one Ed25519 check costs about 10 ms
/// and every tenant starts with 14 proofs.
fn template_signatures() -> &'static SignatureCache {
    static CACHE: OnceLock<SignatureCache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let mut cache = SignatureCache::new();
        for template in templates() {
            let proofs: Vec<&TwoFactorProof> = template
                .events
                .iter()
                .filter_map(|event| event.body.two_factor())
                .collect();
            cache.extend(precheck_signatures(&template.keys, &proofs));
        }
        cache
    })
}

/// `verify_export`, line for line, with the set-up proofs' signatures answered from
/// [`template_signatures`]; every other proof is checked on the spot, as there.
fn verify_text(text: &str, keys: &KeySet) -> Result<Report, UsageError> {
    let mut verifier = Verifier::new(Some(keys.clone()));
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = parse_line(line).map_err(|error| UsageError::Line {
            line: index + 1,
            error,
        })?;
        verifier.push(index + 1, parsed, template_signatures())?;
    }
    verifier.finish()
}

fn verify(ledger: &Ledger) -> Result<Report, TestCaseError> {
    let report = verify_text(&ledger.export(), &ledger.keys)
        .map_err(|e| TestCaseError::fail(format!("{}: export unusable: {e}", ledger.tenant)))?;
    prop_assert!(
        report.first_break.is_none(),
        "{}: the verifier refuses what decide wrote: {:?}",
        ledger.tenant,
        report.first_break
    );
    Ok(report)
}

/// `verify_text` answers as `verify_export` does: the cache only holds results the
/// verifier would compute itself.
#[test]
fn cached_verification_agrees_with_verify_export() {
    for template in templates() {
        let text = template.export();
        let direct = verify_export(&text, Some(template.keys.clone()));
        let cached = verify_text(&text, &template.keys);
        assert_eq!(cached, direct, "{}", template.tenant);
        assert_eq!(direct.map(|report| report.first_break), Ok(None));
    }
}

/// Property 1, with its coverage: random programs keep every invariant, and across the
/// cases the programs reach every gate and every kind of refusal.
#[test]
fn random_programs_keep_every_invariant() {
    let coverage = RefCell::new(Coverage::new());
    let mut runner = TestRunner::new(config(64));
    let result = runner.run(&program(1..120), |program| {
        let world = run(&program, Some(&coverage))?;
        check_world(&world)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let coverage = coverage.into_inner();
    let missing: Vec<&str> = [
        "event:payout.requested",
        "event:payout.approved",
        "event:payout.rejected",
        "event:payout.authorized",
        "event:payout.executed",
        "event:payout.released",
        "event:payout.failed",
        "event:payout.cancelled",
        "event:funds.deposited",
        "event:policy.updated",
        "by_service:payout.released",
        "reject:forbidden",
        "reject:four_eyes",
        "reject:two_factor_required",
        "reject:two_factor_invalid",
        "reject:invalid_state",
        "reject:insufficient_funds",
        "reject:not_found",
        "reject:validation",
    ]
    .into_iter()
    .filter(|key| !coverage.contains_key(*key))
    .collect();
    assert!(
        missing.is_empty(),
        "the programs never reached {missing:?}; reached {coverage:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Tamper detection
// ---------------------------------------------------------------------------------------

/// One change to one event envelope.
#[derive(Debug, Clone)]
enum Edit {
    /// Change one value inside `data` (an amount, a payout id, a proof field, ...).
    DataLeaf(Index),
    /// Add a field to `data`.
    AddDataField,
    /// Remove a field from `data`.
    RemoveDataField(Index),
    /// Another actor.
    Actor(Index),
    /// Another time, this many microseconds away.
    At(i64),
    /// Another event id.
    Id(u128),
    /// Another kind.
    Kind(Index),
    /// `seq` one up (true) or down.
    Seq(bool),
    /// Another tenant.
    Tenant,
    /// One hex digit of `prev`.
    Prev(Index),
}

/// One change to an export's event lines.
#[derive(Debug, Clone)]
enum Tamper {
    /// Edit one event in place.
    Edit { event: Index, edit: Edit },
    /// Delete one event line.
    Delete { event: Index },
    /// Swap two event lines.
    Swap { first: Index, second: Index },
    /// Insert a copy of an event line before the event at `before` (or at the end).
    Duplicate { event: Index, before: Index },
    /// Insert a forged event, correctly hashed and linked to its predecessor, before the
    /// event at `before` (or at the end).
    Forge {
        event: Index,
        before: Index,
        edit: Edit,
    },
}

/// Edits an insider could make and then re-hash and re-link the chain after (they keep
/// `seq`, `tenant` and `prev` for the re-chaining to set).
fn insider_edit() -> BoxedStrategy<Edit> {
    prop_oneof![
        6 => any::<Index>().prop_map(Edit::DataLeaf),
        1 => Just(Edit::AddDataField),
        1 => any::<Index>().prop_map(Edit::RemoveDataField),
        2 => any::<Index>().prop_map(Edit::Actor),
        2 => prop_oneof![1..=600_000_000i64, -600_000_000..=-1i64].prop_map(Edit::At),
        1 => any::<u128>().prop_map(Edit::Id),
        1 => any::<Index>().prop_map(Edit::Kind),
    ]
    .boxed()
}

fn any_edit() -> BoxedStrategy<Edit> {
    prop_oneof![
        8 => insider_edit(),
        1 => any::<bool>().prop_map(Edit::Seq),
        1 => Just(Edit::Tenant),
        1 => any::<Index>().prop_map(Edit::Prev),
    ]
    .boxed()
}

fn tamper() -> BoxedStrategy<Tamper> {
    prop_oneof![
        4 => (any::<Index>(), any_edit()).prop_map(|(event, edit)| Tamper::Edit { event, edit }),
        1 => any::<Index>().prop_map(|event| Tamper::Delete { event }),
        1 => (any::<Index>(), any::<Index>())
            .prop_map(|(first, second)| Tamper::Swap { first, second }),
        1 => (any::<Index>(), any::<Index>())
            .prop_map(|(event, before)| Tamper::Duplicate { event, before }),
        1 => (any::<Index>(), any::<Index>(), insider_edit())
            .prop_map(|(event, before, edit)| Tamper::Forge { event, before, edit }),
    ]
    .boxed()
}

/// A single tenant's log: the set-up chain and up to 40 random steps.
fn tamper_log() -> impl Strategy<Value = Program> {
    (amount(), vec(op(), 0..40)).prop_map(|(deposit, ops)| Program {
        tenants: 1,
        deposits: vec![deposit],
        steps: ops.into_iter().map(|op| Step { tenant: 0, op }).collect(),
    })
}

/// Where the event lines of an export are: header, key lines, events, checkpoints.
fn event_lines(lines: &[String]) -> std::ops::Range<usize> {
    let is_event = |line: &String| line.starts_with("{\"event\":");
    let start = lines.iter().position(is_event).unwrap_or(lines.len());
    let count = lines[start..]
        .iter()
        .take_while(|line| is_event(line))
        .count();
    start..start + count
}

fn event_of(line: &str) -> Result<Map<String, Value>, TestCaseError> {
    let value = canonical::parse_value(line)
        .map_err(|e| TestCaseError::fail(format!("export line: {e}")))?;
    if let Value::Object(mut map) = value {
        if let Some(Value::Object(event)) = map.remove("event") {
            return Ok(event);
        }
    }
    Err(TestCaseError::fail("not an event line"))
}

fn event_line(event: Map<String, Value>) -> String {
    let mut line = Map::new();
    line.insert("event".into(), Value::Object(event));
    line.insert("type".into(), Value::from("event"));
    let bytes = match canonical::to_canonical_vec(&Value::Object(line)) {
        Ok(bytes) => bytes,
        Err(e) => panic!("an edited event stays in the canonical domain: {e}"),
    };
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sets `hash` to the hash of the envelope's canonical bytes (without `hash`).
fn rehash(event: &mut Map<String, Value>) -> String {
    event.remove("hash");
    let bytes = match canonical::to_canonical_vec(&Value::Object(event.clone())) {
        Ok(bytes) => bytes,
        Err(e) => panic!("an edited event stays in the canonical domain: {e}"),
    };
    let hash = Hash::of(EVENT_HASH_PREFIX, &bytes).to_hex();
    event.insert("hash".into(), Value::from(hash.clone()));
    hash
}

fn text_field(event: &Map<String, Value>, field: &str) -> String {
    event
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The number of leaves (scalars, empty arrays and objects) of a JSON value.
fn leaves(value: &Value) -> usize {
    match value {
        Value::Array(items) if !items.is_empty() => items.iter().map(leaves).sum(),
        Value::Object(map) if !map.is_empty() => map.values().map(leaves).sum(),
        Value::Null
        | Value::Bool(_)
        | Value::Number(_)
        | Value::String(_)
        | Value::Array(_)
        | Value::Object(_) => 1,
    }
}

/// Changes the `n`th leaf of `value`; true once done.
fn edit_leaf(value: &mut Value, n: &mut usize) -> bool {
    let container = match &*value {
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => false,
    };
    if container {
        return match value {
            Value::Array(items) => items.iter_mut().any(|item| edit_leaf(item, n)),
            Value::Object(map) => map.values_mut().any(|item| edit_leaf(item, n)),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => false,
        };
    }
    if *n > 0 {
        *n -= 1;
        return false;
    }
    *value = match &*value {
        Value::Null => Value::Bool(false),
        Value::Bool(b) => Value::Bool(!b),
        Value::Number(number) => {
            Value::from(
                number
                    .as_i64()
                    .map_or(0, |i| if i > 0 { i - 1 } else { i + 1 }),
            )
        }
        Value::String(text) => Value::String(tweak_text(text)),
        Value::Array(_) => Value::Null,
        Value::Object(_) => Value::Array(Vec::new()),
    };
    true
}

/// Another text of the same shape where possible: the last digit or hex letter moves on
/// ("125.50" -> "125.51", "po_3" -> "po_4"); otherwise a letter is appended.
fn tweak_text(text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    if let Some(last) = chars.last_mut() {
        if last.is_ascii_digit() {
            *last = if *last == '9' {
                '0'
            } else {
                char::from(*last as u8 + 1)
            };
            return chars.into_iter().collect();
        }
        if ('a'..='f').contains(last) {
            *last = if *last == 'f' {
                'a'
            } else {
                char::from(*last as u8 + 1)
            };
            return chars.into_iter().collect();
        }
    }
    format!("{text}x")
}

fn apply_edit(event: &mut Map<String, Value>, edit: &Edit) -> Result<(), TestCaseError> {
    let Some(Value::Object(data)) = event.get_mut("data") else {
        return Err(TestCaseError::fail("event without a data object"));
    };
    match edit {
        Edit::DataLeaf(index) => {
            let mut data = Value::Object(std::mem::take(data));
            let mut n = index.index(leaves(&data));
            edit_leaf(&mut data, &mut n);
            event.insert("data".into(), data);
        }
        Edit::AddDataField => {
            data.insert("note_added_later".into(), Value::from("approved by phone"));
        }
        Edit::RemoveDataField(index) => {
            let keys: Vec<String> = data.keys().cloned().collect();
            if keys.is_empty() {
                data.insert("note_added_later".into(), Value::Null);
            } else {
                data.remove(&keys[index.index(keys.len())]);
            }
        }
        Edit::Actor(index) => {
            let current = text_field(event, "actor");
            let mut pick = index.index(ACTORS.len());
            if ACTORS[pick] == current {
                pick = (pick + 1) % ACTORS.len();
            }
            event.insert("actor".into(), Value::from(ACTORS[pick]));
        }
        Edit::At(micros) => {
            let at = Timestamp::parse(&text_field(event, "at"))
                .map_err(|e| TestCaseError::fail(format!("at: {e}")))?;
            let moved = Timestamp::from_unix_micros(at.unix_micros() + micros);
            event.insert("at".into(), Value::from(moved.to_string()));
        }
        Edit::Id(bits) => {
            let current = text_field(event, "id");
            let mut id = uuid::Uuid::from_u128(*bits).to_string();
            if id == current {
                id = uuid::Uuid::from_u128(bits ^ 1).to_string();
            }
            event.insert("id".into(), Value::from(id));
        }
        Edit::Kind(index) => {
            let current = text_field(event, "kind");
            let kinds = EventBody::KINDS;
            let mut pick = index.index(kinds.len());
            if kinds[pick] == current {
                pick = (pick + 1) % kinds.len();
            }
            event.insert("kind".into(), Value::from(kinds[pick]));
        }
        Edit::Seq(up) => {
            let seq = event.get("seq").and_then(Value::as_u64).unwrap_or(1);
            let moved = if *up || seq <= 1 { seq + 1 } else { seq - 1 };
            event.insert("seq".into(), Value::from(moved));
        }
        Edit::Tenant => {
            let other = if text_field(event, "tenant") == "globex" {
                "acme"
            } else {
                "globex"
            };
            event.insert("tenant".into(), Value::from(other));
        }
        Edit::Prev(index) => {
            let mut prev: Vec<char> = text_field(event, "prev").chars().collect();
            if prev.is_empty() {
                return Err(TestCaseError::fail("event without prev"));
            }
            let at = index.index(prev.len());
            prev[at] = if prev[at] == '0' { '1' } else { '0' };
            event.insert(
                "prev".into(),
                Value::from(prev.into_iter().collect::<String>()),
            );
        }
    }
    Ok(())
}

/// Applies `tamper` to the event lines; returns the lines and where the verifier must
/// report the first break.
fn apply_tamper(
    lines: &[String],
    tamper: &Tamper,
) -> Result<(Vec<String>, BreakLocation), TestCaseError> {
    let range = event_lines(lines);
    let (start, count) = (range.start, range.len());
    prop_assert!(count >= 2, "a log has events");
    let mut out = lines.to_vec();
    let at_seq = |index: usize| BreakLocation::Event {
        seq: index as u64 + 1,
    };
    let expected = match tamper {
        Tamper::Edit { event, edit } => {
            let i = event.index(count);
            let mut envelope = event_of(&lines[start + i])?;
            let original = envelope.clone();
            apply_edit(&mut envelope, edit)?;
            prop_assert_ne!(&envelope, &original, "the edit changes the event");
            out[start + i] = event_line(envelope);
            at_seq(i)
        }
        Tamper::Delete { event } => {
            let i = event.index(count);
            out.remove(start + i);
            at_seq(i)
        }
        Tamper::Swap { first, second } => {
            let a = first.index(count);
            let mut b = second.index(count);
            if a == b {
                b = (a + 1) % count;
            }
            out.swap(start + a, start + b);
            at_seq(a.min(b))
        }
        Tamper::Duplicate { event, before } => {
            let j = event.index(count);
            let p = before.index(count + 1);
            out.insert(start + p, lines[start + j].clone());
            // A copy of the very event it precedes links correctly; its original then
            // repeats the seq.
            if j == p {
                at_seq(p + 1)
            } else {
                at_seq(p)
            }
        }
        Tamper::Forge {
            event,
            before,
            edit,
        } => {
            let j = event.index(count);
            let p = before.index(count + 1);
            let mut forged = event_of(&lines[start + j])?;
            apply_edit(&mut forged, edit)?;
            let prev = if p == 0 {
                Hash::ZERO.to_hex()
            } else {
                text_field(&event_of(&lines[start + p - 1])?, "hash")
            };
            forged.insert("seq".into(), Value::from(p as u64 + 1));
            forged.insert("prev".into(), Value::from(prev));
            rehash(&mut forged);
            out.insert(start + p, event_line(forged));
            // Accepted at its seq; the original holder of that seq then repeats it, or,
            // at the end, the forged seq lies beyond the header's range.
            if p == count {
                at_seq(p)
            } else {
                at_seq(p + 1)
            }
        }
    };
    Ok((out, expected))
}

/// Re-hashes the event at `from` and re-links and re-hashes every event after it.
fn rechain(lines: &mut [String], from: usize) -> Result<(), TestCaseError> {
    let range = event_lines(lines);
    let mut prev = if from == 0 {
        Hash::ZERO.to_hex()
    } else {
        text_field(&event_of(&lines[range.start + from - 1])?, "hash")
    };
    for line in &mut lines[range.start + from..range.end] {
        let mut event = event_of(line)?;
        event.insert("prev".into(), Value::from(prev));
        prev = rehash(&mut event);
        *line = event_line(event);
    }
    Ok(())
}

fn is_integrity(kind: &BreakKind) -> bool {
    match kind {
        BreakKind::Sequence
        | BreakKind::Link
        | BreakKind::Hash
        | BreakKind::Tenant
        | BreakKind::Checkpoint => true,
        BreakKind::Data | BreakKind::Postings | BreakKind::Rule => false,
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Property 2: an edit, a deletion, a reordering or an insertion of event lines is
    /// reported (or makes the export unusable), at the first seq it touches.
    #[test]
    fn any_single_change_to_an_export_is_detected(log in tamper_log(), change in tamper()) {
        let world = run(&log, None)?;
        let ledger = &world.ledgers[0];
        let lines = ledger.export_lines();
        for line in &lines[event_lines(&lines)] {
            prop_assert_eq!(&event_line(event_of(line)?), line, "export lines are canonical");
        }
        let (tampered, expected) = apply_tamper(&lines, &change)?;
        prop_assert_ne!(&tampered, &lines);
        let mut text = tampered.join("\n");
        text.push('\n');
        match verify_text(&text, &ledger.keys) {
            Err(_unusable) => {}
            Ok(report) => {
                let Some(found) = report.first_break else {
                    return Err(TestCaseError::fail("a tampered export verified intact"));
                };
                prop_assert!(is_integrity(&found.kind), "{:?}", found);
                prop_assert_eq!(&found.location, &expected, "{:?}", found);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Property 2, stronger: an insider edits one event, re-hashes it and re-links and
    /// re-hashes the whole chain after it; without the checkpoint key, the checkpoint of
    /// the head catches it (hashes and links all check out).
    #[test]
    fn a_rechained_edit_is_caught_by_the_checkpoint(
        log in tamper_log(),
        event in any::<Index>(),
        edit in insider_edit(),
    ) {
        let mut world = run(&log, None)?;
        let ledger = &mut world.ledgers[0];
        ledger.checkpoint();
        let lines = ledger.export_lines();
        let range = event_lines(&lines);
        let i = event.index(range.len());
        let mut tampered = lines.clone();
        let mut envelope = event_of(&lines[range.start + i])?;
        let original = envelope.clone();
        apply_edit(&mut envelope, &edit)?;
        prop_assert_ne!(&envelope, &original, "the edit changes the event");
        tampered[range.start + i] = event_line(envelope);
        rechain(&mut tampered, i)?;

        // The forgery is a consistent chain: every hash and link checks out.
        let mut prev = Hash::ZERO;
        for (index, line) in tampered[range.clone()].iter().enumerate() {
            let envelope = event_of(line)?;
            let text = String::from_utf8_lossy(
                &canonical::to_canonical_vec(&Value::Object(envelope))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?,
            )
            .into_owned();
            let parsed = Event::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed.computed_hash, parsed.event.hash);
            prop_assert_eq!(parsed.event.prev, prev);
            prop_assert_eq!(parsed.event.seq, index as u64 + 1);
            prev = parsed.event.hash;
        }
        prop_assert_ne!(prev, ledger.head.hash, "the head moved");

        let edited_seq = i as u64 + 1;
        let covering = ledger
            .checkpoints
            .iter()
            .map(|c| c.seq)
            .filter(|seq| *seq >= edited_seq)
            .min();
        let mut text = tampered.join("\n");
        text.push('\n');
        let report = verify_text(&text, &ledger.keys)
            .map_err(|e| TestCaseError::fail(format!("unusable: {e}")))?;
        let Some(found) = report.first_break else {
            return Err(TestCaseError::fail("a re-chained edit verified intact"));
        };
        prop_assert_eq!(&found.kind, &BreakKind::Checkpoint, "{:?}", found);
        prop_assert_eq!(
            Some(found.location.clone()),
            covering.map(|seq| BreakLocation::Checkpoint { seq }),
            "{:?}",
            found
        );
    }
}

// ---------------------------------------------------------------------------------------
// 3. Canonical encoding and money
// ---------------------------------------------------------------------------------------

const INTEGER_MAX: i64 = canonical::INTEGER_MAGNITUDE_MAX as i64;

fn json_char() -> BoxedStrategy<char> {
    prop_oneof![
        4 => proptest::char::range(' ', '~'),
        2 => proptest::char::range('\u{0}', '\u{1f}'),
        2 => any::<char>(),
        1 => prop::sample::select(vec![
            '"', '\\', '/', '\u{7f}', '\u{80}', '\u{2028}', '\u{2029}', '\u{feff}', '\u{fffd}',
            'é', '€', '𝄞', '😀', '\u{10ffff}',
        ]),
    ]
    .boxed()
}

fn json_string() -> impl Strategy<Value = String> {
    vec(json_char(), 0..10).prop_map(|chars| chars.into_iter().collect())
}

fn json_key() -> impl Strategy<Value = String> {
    vec(proptest::char::range('\u{0}', '\u{7f}'), 0..6)
        .prop_map(|chars| chars.into_iter().collect())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            -1000..=1000i64,
            -INTEGER_MAX..=INTEGER_MAX,
            Just(INTEGER_MAX),
            Just(-INTEGER_MAX),
        ]
        .prop_map(Value::from),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(json_key(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// RFC 8785 for the ledger's domain, written independently of `canonical`: keys sorted by
/// UTF-16 code units, no whitespace, integers as integers, strings escaped minimally.
fn jcs(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => jcs_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                jcs(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                jcs_string(key, out);
                out.push(':');
                jcs(item, out);
            }
            out.push('}');
        }
    }
}

fn jcs_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Choices for writing the same value another way, consumed in turn.
struct Noise<'a> {
    bytes: &'a [u8],
    next: usize,
}

impl Noise<'_> {
    fn pick(&mut self, n: usize) -> usize {
        if self.bytes.is_empty() {
            return 0;
        }
        let byte = self.bytes[self.next % self.bytes.len()];
        self.next += 1;
        usize::from(byte) % n
    }

    fn space(&mut self, out: &mut String) {
        out.push_str(["", "", " ", "\n", "\t", "\r\n", "   "][self.pick(7)]);
    }
}

/// Writes `value` as valid JSON with other whitespace, another key order and other string
/// escapes (`\uXXXX` in either case, `\/`, surrogate pairs).
fn render(value: &Value, noise: &mut Noise<'_>, out: &mut String) {
    noise.space(out);
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => render_string(s, noise, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render(item, noise, out);
            }
            noise.space(out);
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if !entries.is_empty() {
                let turn = noise.pick(entries.len());
                entries.rotate_left(turn);
            }
            if noise.pick(2) == 1 {
                entries.reverse();
            }
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                noise.space(out);
                render_string(key, noise, out);
                noise.space(out);
                out.push(':');
                render(item, noise, out);
            }
            noise.space(out);
            out.push('}');
        }
    }
    noise.space(out);
}

fn render_string(s: &str, noise: &mut Noise<'_>, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        let escape = noise.pick(3) == 0 || c == '"' || c == '\\' || u32::from(c) < 0x20;
        if !escape {
            out.push(c);
            continue;
        }
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            '\u{8}' => Some("\\b"),
            '\t' => Some("\\t"),
            '\n' => Some("\\n"),
            '\u{c}' => Some("\\f"),
            '\r' => Some("\\r"),
            _ => None,
        };
        if let Some(short) = short.filter(|_| noise.pick(2) == 0) {
            out.push_str(short);
            continue;
        }
        let upper = noise.pick(2) == 0;
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            if upper {
                out.push_str(&format!("\\u{unit:04X}"));
            } else {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out.push('"');
}

fn canonical_text(value: &Value) -> Result<String, TestCaseError> {
    let bytes =
        canonical::to_canonical_vec(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| TestCaseError::fail(e.to_string()))
}

/// Money text of `minor_units` with the fraction's trailing zeros (and point) dropped.
fn short_form(text: &str) -> String {
    if !text.contains('.') {
        return text.to_owned();
    }
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn currency_and_units() -> impl Strategy<Value = (Currency, u64)> {
    prop::sample::select(Currency::ALL.to_vec()).prop_flat_map(|currency| {
        let max = max_minor_units(currency);
        (
            Just(currency),
            prop_oneof![1..=1_000u64, 1..=max, (max - 1_000)..=max],
        )
    })
}

fn max_minor_units(currency: Currency) -> u64 {
    AMOUNT_MAJOR_UNITS_MAX as u64 * 10u64.pow(currency.minor_units())
}

proptest! {
    #![proptest_config(config(1024))]

    /// Canonical bytes parse back to the same value and re-encode to the same bytes, and
    /// they are the RFC 8785 bytes of an independent encoder.
    #[test]
    fn canonical_bytes_round_trip(value in json_value()) {
        let text = canonical_text(&value)?;
        let mut expected = String::new();
        jcs(&value, &mut expected);
        prop_assert_eq!(&text, &expected);
        let parsed = canonical::parse_value(&text)
            .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(&parsed, &value);
        prop_assert_eq!(canonical_text(&parsed)?, text);
    }

    /// Key order, whitespace and string escapes of the input do not change the bytes.
    #[test]
    fn canonical_bytes_ignore_layout(value in json_value(), noise in vec(any::<u8>(), 0..64)) {
        let mut written = String::new();
        render(&value, &mut Noise { bytes: &noise, next: 0 }, &mut written);
        let parsed = canonical::parse_value(&written)
            .map_err(|e| TestCaseError::fail(format!("{e}: {written}")))?;
        prop_assert_eq!(&parsed, &value);
        prop_assert_eq!(canonical_text(&parsed)?, canonical_text(&value)?);
    }

    /// Integers of 2^53 and more in magnitude are outside the domain.
    #[test]
    fn canonical_refuses_large_integers(
        n in (INTEGER_MAX + 1)..=i64::MAX,
        negative in any::<bool>(),
    ) {
        let text = if negative { format!("-{n}") } else { n.to_string() };
        prop_assert!(canonical::parse_value(&text).is_err(), "{} accepted", text);
        let value = Value::from(if negative { -n } else { n });
        prop_assert!(canonical::to_canonical_vec(&value).is_err(), "{} encoded", text);
    }

    /// For every currency and any number of minor units in range, the exact text round-trips,
    /// the short client form normalises to it, and one decimal too many is refused.
    #[test]
    fn money_text_round_trips(
        (currency, minor_units) in currency_and_units(),
        digit in 0..10u8,
    ) {
        let text = amount_text(minor_units, currency);
        let parsed = Money::parse(&text, currency).map(|m| m.to_text());
        prop_assert_eq!(parsed.as_deref(), Ok(text.as_str()));
        let exact = Money::parse_exact(&text, currency).map(|m| m.to_text());
        prop_assert_eq!(exact.as_deref(), Ok(text.as_str()));
        let short = short_form(&text);
        let normalised = Money::parse(&short, currency).map(|m| m.to_text());
        prop_assert_eq!(normalised.as_deref(), Ok(text.as_str()), "from {}", short);
        let negative = format!("-{text}");
        let debit = SignedAmount::parse_exact(&negative, currency).map(|a| a.to_text());
        prop_assert_eq!(debit.as_deref(), Ok(negative.as_str()));
        prop_assert_eq!(Money::parse(&negative, currency), Err(MoneyError::NotPositive));

        let too_precise = if currency.minor_units() == 0 {
            format!("{text}.{digit}")
        } else {
            format!("{text}{digit}")
        };
        let refused = Err(MoneyError::TooManyDecimals);
        prop_assert_eq!(Money::parse(&too_precise, currency), refused);
        prop_assert_eq!(Money::parse_exact(&too_precise, currency), refused);
    }

    /// Zero and amounts beyond the limit are refused.
    #[test]
    fn money_out_of_range_is_refused(
        currency in prop::sample::select(Currency::ALL.to_vec()),
        over in 1..=1_000_000u64,
    ) {
        let max = max_minor_units(currency);
        let text = amount_text(max + over, currency);
        prop_assert_eq!(Money::parse(&text, currency), Err(MoneyError::TooLarge));
        let zero = amount_text(0, currency);
        prop_assert_eq!(Money::parse(&zero, currency), Err(MoneyError::NotPositive));
    }
}

// ---------------------------------------------------------------------------------------
// The verifier's fast path for payout.requested and payout.approved
// ---------------------------------------------------------------------------------------

fn verify_text_general(text: &str, keys: &KeySet) -> Result<Report, UsageError> {
    let mut verifier = Verifier::new(Some(keys.clone())).without_fast_paths();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = parse_line(line).map_err(|error| UsageError::Line {
            line: index + 1,
            error,
        })?;
        verifier.push(index + 1, parsed, template_signatures())?;
    }
    verifier.finish()
}

proptest! {
    #![proptest_config(config(256))]

    /// The verifier's fast path for `payout.requested` and `payout.approved` (no command,
    /// no decided body) gives the very report the general `decide` path gives: on random
    /// logs, and on the same logs with one insider edit of a request or an approval (a
    /// data leaf, the actor, the time, the kind...), re-hashed and re-linked so that the
    /// rules, not the integrity checks, have to find it.
    #[test]
    fn the_fast_path_agrees_with_decide(
        log in tamper_log(),
        event in any::<Index>(),
        edit in insider_edit(),
    ) {
        let world = run(&log, None)?;
        let ledger = &world.ledgers[0];
        let lines = ledger.export_lines();
        let mut text = lines.join("\n");
        text.push('\n');
        prop_assert_eq!(
            verify_text(&text, &ledger.keys),
            verify_text_general(&text, &ledger.keys)
        );
        let range = event_lines(&lines);
        let fast: Vec<usize> = range
            .clone()
            .filter(|&i| {
                lines[i].contains("\"kind\":\"payout.requested\"")
                    || lines[i].contains("\"kind\":\"payout.approved\"")
            })
            .collect();
        let i = if fast.is_empty() {
            range.start + event.index(range.len())
        } else {
            fast[event.index(fast.len())]
        };
        let mut tampered = lines.clone();
        let mut envelope = event_of(&lines[i])?;
        apply_edit(&mut envelope, &edit)?;
        tampered[i] = event_line(envelope);
        rechain(&mut tampered, i - range.start)?;
        let mut text = tampered.join("\n");
        text.push('\n');
        prop_assert_eq!(
            verify_text(&text, &ledger.keys),
            verify_text_general(&text, &ledger.keys)
        );
    }
}
