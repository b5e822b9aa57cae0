//! Given/when/then tables for every rule `decide` enforces (DESIGN section 3), driven
//! through the in-memory writer (`testkit::Ledger`) and, where a table needs a context the
//! writer does not build (API-key scopes, exact proof ages) or many `when`s on one `given`,
//! through `decide` itself.
//!
//! 1. Four-eyes on every gate of one payout; nobody grants or revokes their own roles.
//! 2. Every missing permission; API-key scopes only narrow the roles.
//! 3. Every 2FA failure on every command that needs a proof; services; batch proofs.
//! 4. Money: scale, sign, overdraft and returned holds, currency, approval thresholds.
//! 5. Lifecycle order: every payout command in every state.
//! 6. Denied attempts are evidence: one `command.rejected`, and the chain still verifies.
//!
//! Each table has one small `check` helper, so that a row is one line (rust-analyzer style;
//! the tables are `#[rustfmt::skip]` so that they stay tables).

use std::str::FromStr;

use ed25519_dalek::SigningKey;
use ledger_core::command::POLICY_SUBJECT;
use ledger_core::crypto::{public_key_of, Algorithm, KeyPurpose, KeyRecord, Sig};
use ledger_core::event::{CommandRejected, Event, EventBody};
use ledger_core::ids::PrincipalId;
use ledger_core::money::MoneyError;
use ledger_core::policy::{ApprovalRule, Permission, Role};
use ledger_core::proof::{batch_subject, DirectCheck, TwoFactorFailure, TwoFactorProof};
use ledger_core::state::{Bucket, PayoutStatus};
use ledger_core::testkit::{standard_tenant, Ledger, EPOCH_MICROS};
use ledger_core::time::Timestamp;
use ledger_core::verify::verify_export;
use ledger_core::{decide, Command, Context, Currency, Enforcement, Money, Rejection};
use rust_decimal::Decimal;

// ---------------------------------------------------------------------------------------
// Fixtures: the standard cast, one payout `po_1`, and commands to drive it
// ---------------------------------------------------------------------------------------

/// The payout the tables act on.
const PO: &str = "po_1";

/// Everyone who may try a command: the standard tenant's cast and `usr_zed`, who was never
/// added to the tenant.
const CAST: [&str; 11] = [
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
    "usr_zed",
];

/// Approvers in the order fixtures use them.
const APPROVERS: [&str; 2] = ["usr_bob", "usr_bea"];

const SECOND_MICROS: i64 = 1_000_000;
const HOUR_MICROS: i64 = 3_600 * SECOND_MICROS;
const DAY_MICROS: i64 = 24 * HOUR_MICROS;

fn id<T: FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    text.parse()
        .unwrap_or_else(|e| panic!("id {text:?}: {e:?}"))
}

fn money(amount: &str, currency: Currency) -> Money {
    Money::parse(amount, currency).unwrap_or_else(|e| panic!("{amount} {currency}: {e}"))
}

fn decimal(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn validation(detail: &str) -> Rejection {
    Rejection::Validation {
        detail: detail.to_owned(),
    }
}

fn invalid_state(detail: &str) -> Rejection {
    Rejection::InvalidState {
        detail: detail.to_owned(),
    }
}

fn is_person(actor: &str) -> bool {
    actor.starts_with("usr_")
}

/// Runs a `given` step: a refusal here is a broken fixture, not a finding.
fn given_ok(ledger: &mut Ledger, actor: &str, command: Command) -> Vec<Event> {
    let action = command.action();
    ledger
        .execute(actor, command)
        .unwrap_or_else(|e| panic!("given: {actor} {action}: {e}"))
}

/// When the writer decides its next command (`Ledger::execute` decides 1 ms after the clock).
fn writer_now(ledger: &Ledger) -> Timestamp {
    Timestamp::from_unix_micros(ledger.clock.unix_micros() + 1_000)
}

/// Decides `command` for `actor` exactly as `Ledger::execute` does, but with the credential
/// narrowed to `scopes`, and appends nothing.
fn decide_as(
    ledger: &Ledger,
    actor: &str,
    command: &Command,
    scopes: Option<&[Permission]>,
) -> Result<Vec<EventBody>, Rejection> {
    let actor: PrincipalId = id(actor);
    let signatures = DirectCheck(&ledger.keys);
    let ctx = Context {
        tenant: &ledger.tenant,
        actor: &actor,
        at: writer_now(ledger),
        scopes,
        signatures: &signatures,
        enforcement: Enforcement::Writer,
    };
    decide(&ledger.state, command, &ctx)
}

fn request(payout: &str, amount: &str) -> Command {
    request_with_reference(payout, amount, &format!("invoice {payout}"))
}

fn request_with_reference(payout: &str, amount: &str, reference: &str) -> Command {
    Command::RequestPayout {
        payout: id(payout),
        account: id("acct_ops"),
        payee: id("pay_lark"),
        money: money(amount, Currency::Eur),
        reference: reference.to_owned(),
        metadata: None,
    }
}

fn approve(payout: &str) -> Command {
    Command::ApprovePayout {
        payout: id(payout),
        batch: None,
    }
}

fn reject(payout: &str, reason: &str) -> Command {
    Command::RejectPayout {
        payout: id(payout),
        reason: reason.to_owned(),
    }
}

fn authorize(payout: &str, two_factor: Option<TwoFactorProof>) -> Command {
    Command::AuthorizePayout {
        payout: id(payout),
        two_factor,
        batch: None,
    }
}

fn execute(payout: &str, two_factor: Option<TwoFactorProof>) -> Command {
    Command::ExecutePayout {
        payout: id(payout),
        rail: Some("SEPA".into()),
        two_factor,
        batch: None,
    }
}

fn release(payout: &str, two_factor: Option<TwoFactorProof>) -> Command {
    Command::ReleasePayout {
        payout: id(payout),
        two_factor,
        batch: None,
    }
}

fn fail(payout: &str) -> Command {
    Command::FailPayout {
        payout: id(payout),
        reason: "returned by the bank".into(),
    }
}

fn cancel(payout: &str) -> Command {
    Command::CancelPayout {
        payout: id(payout),
        reason: "no longer owed".into(),
    }
}

fn add_user(user: &str) -> Command {
    Command::AddUser {
        user: id(user),
        name: user.trim_start_matches("usr_").to_owned(),
    }
}

fn grant(user: &str, role: Role, two_factor: Option<TwoFactorProof>) -> Command {
    Command::GrantRole {
        user: id(user),
        role,
        two_factor,
        batch: None,
    }
}

fn revoke(user: &str, role: Role) -> Command {
    Command::RevokeRole {
        user: id(user),
        role,
    }
}

fn issue_key(key: &str, two_factor: Option<TwoFactorProof>) -> Command {
    Command::IssueApiKey {
        key: id(key),
        scopes: vec![Permission::LedgerRead],
        expires_at: None,
        two_factor,
    }
}

fn revoke_key(key: &str) -> Command {
    Command::RevokeApiKey { key: id(key) }
}

fn deposit(account: &str, amount: &str, currency: Currency) -> Command {
    Command::Deposit {
        account: id(account),
        money: money(amount, currency),
        reference: None,
    }
}

/// An EUR approval rule.
fn rule(min_amount: &str, approvals: u32) -> ApprovalRule {
    ApprovalRule {
        currency: Currency::Eur,
        min_amount: min_amount.to_owned(),
        approvals,
    }
}

fn update_policy(rules: Vec<ApprovalRule>, two_factor: Option<TwoFactorProof>) -> Command {
    Command::UpdatePolicy { rules, two_factor }
}

/// Gives `user` a role the way `standard_tenant` does: the admin, with a 2FA proof (adding
/// the user first if needed). Nothing happens if they hold it already.
fn give_role(ledger: &mut Ledger, user: &str, role: Role) {
    let principal = ledger.state.principals.get(&id::<PrincipalId>(user));
    let added = principal.is_some_and(|p| p.added);
    let holds = principal.is_some_and(|p| p.roles.contains(&role));
    if !added {
        given_ok(ledger, "usr_admin", add_user(user));
    }
    if !holds {
        let proof = ledger.proof("usr_admin", "role.grant", &format!("{user}:{role}"));
        given_ok(ledger, "usr_admin", grant(user, role, Some(proof)));
    }
}

/// Where `po_1` stands when the `when` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Not requested yet.
    Unrequested,
    Requested,
    Approved,
    Authorized,
    Executed,
    Released,
    /// Rejected while requested.
    Rejected,
    /// Cancelled after authorization (the hold returned).
    Cancelled,
    /// Failed after execution (the hold returned).
    Failed,
}

impl Stage {
    const ALL: [Stage; 9] = [
        Stage::Unrequested,
        Stage::Requested,
        Stage::Approved,
        Stage::Authorized,
        Stage::Executed,
        Stage::Released,
        Stage::Rejected,
        Stage::Cancelled,
        Stage::Failed,
    ];

    /// The status name DESIGN gives the payout here (`None`: there is no payout).
    fn status_name(self) -> Option<&'static str> {
        match self {
            Stage::Unrequested => None,
            Stage::Requested => Some("requested"),
            Stage::Approved => Some("approved"),
            Stage::Authorized => Some("authorized"),
            Stage::Executed => Some("executed"),
            Stage::Released => Some("released"),
            Stage::Rejected => Some("rejected"),
            Stage::Cancelled => Some("cancelled"),
            Stage::Failed => Some("failed"),
        }
    }

    /// The acts that lead here.
    fn path(self) -> &'static [Act] {
        use Act::*;
        match self {
            Stage::Unrequested => &[],
            Stage::Requested => &[Request],
            Stage::Approved => &[Request, Approve],
            Stage::Authorized => &[Request, Approve, Authorize],
            Stage::Executed => &[Request, Approve, Authorize, Execute],
            Stage::Released => &[Request, Approve, Authorize, Execute, Release],
            Stage::Rejected => &[Request, Reject],
            Stage::Cancelled => &[Request, Approve, Authorize, Cancel],
            Stage::Failed => &[Request, Approve, Authorize, Execute, Fail],
        }
    }
}

/// Moves `payout` (requested by ann for `amount` EUR) along `stage`'s path: `approvals`
/// approvals by bob then bea, then each act by its standard actor.
fn drive(ledger: &mut Ledger, payout: &str, amount: &str, approvals: usize, stage: Stage) {
    for &act in stage.path() {
        if act == Act::Request {
            given_ok(ledger, "usr_ann", request(payout, amount));
        } else if act == Act::Approve {
            for approver in APPROVERS.iter().take(approvals) {
                given_ok(ledger, approver, approve(payout));
            }
        } else {
            let actor = act.standard_actor();
            let command = act.command(ledger, actor, payout, Tamper::Nothing);
            given_ok(ledger, actor, command);
        }
    }
}

/// The `given` of most tables: the standard tenant (EUR account `acct_ops`, payee
/// `pay_lark`), ann's first API key `key_ann`, an optional policy and role, then `po_1`.
#[derive(Debug, Clone, Copy)]
struct Given {
    deposit: &'static str,
    amount: &'static str,
    approvals: u32,
    grant: Option<(&'static str, Role)>,
}

impl Given {
    fn new() -> Self {
        Self {
            deposit: "1000.00",
            amount: "125.50",
            approvals: 1,
            grant: None,
        }
    }

    fn amount(self, amount: &'static str) -> Self {
        Self { amount, ..self }
    }

    /// A policy under which every EUR payout needs `approvals` distinct approvals.
    fn approvals(self, approvals: u32) -> Self {
        Self { approvals, ..self }
    }

    fn grant(self, user: &'static str, role: Role) -> Self {
        Self {
            grant: Some((user, role)),
            ..self
        }
    }

    fn at(self, stage: Stage) -> Ledger {
        let mut ledger = standard_tenant("acme", 1, self.deposit);
        given_ok(&mut ledger, "usr_ann", issue_key("key_ann", None));
        if self.approvals > 1 {
            let proof = ledger.proof("usr_admin", "policy.update", POLICY_SUBJECT);
            let rules = vec![rule("0.01", self.approvals)];
            given_ok(&mut ledger, "usr_admin", update_policy(rules, Some(proof)));
        }
        if let Some((user, role)) = self.grant {
            give_role(&mut ledger, user, role);
        }
        let approvals = usize::try_from(self.approvals).unwrap_or(usize::MAX);
        drive(&mut ledger, PO, self.amount, approvals, stage);
        ledger
    }
}

fn given(stage: Stage) -> Ledger {
    Given::new().at(stage)
}

/// One command of each kind `decide` checks a permission for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    AddUser,
    /// `usr_aud` gets `approver`.
    GrantRole,
    /// `usr_cat` loses `authorizer`.
    RevokeRole,
    /// `key_ann`, ann's key.
    RevokeOthersKey,
    OpenAccount,
    Deposit,
    AddPayee,
    UpdatePolicy,
    Request,
    Approve,
    Reject,
    Authorize,
    Execute,
    Release,
    Fail,
    Cancel,
}

impl Act {
    /// Who does this on the standard path.
    fn standard_actor(self) -> &'static str {
        match self {
            Act::AddUser
            | Act::GrantRole
            | Act::RevokeRole
            | Act::RevokeOthersKey
            | Act::AddPayee
            | Act::UpdatePolicy => "usr_admin",
            Act::OpenAccount | Act::Deposit => "usr_eve",
            Act::Request | Act::Cancel => "usr_ann",
            Act::Approve => "usr_bob",
            Act::Reject => "usr_bea",
            Act::Authorize => "usr_cat",
            Act::Execute => "usr_dan",
            Act::Release | Act::Fail => "usr_rex",
        }
    }

    /// Where the act is allowed for `po_1`.
    fn stage(self) -> Stage {
        match self {
            Act::AddUser
            | Act::GrantRole
            | Act::RevokeRole
            | Act::RevokeOthersKey
            | Act::OpenAccount
            | Act::Deposit
            | Act::AddPayee
            | Act::UpdatePolicy
            | Act::Request => Stage::Unrequested,
            Act::Approve | Act::Reject | Act::Cancel => Stage::Requested,
            Act::Authorize => Stage::Approved,
            Act::Execute => Stage::Authorized,
            Act::Release | Act::Fail => Stage::Executed,
        }
    }

    /// The command for `actor`, carrying a proof of `actor`'s (spoiled by `tamper`) where
    /// one is needed: a person's release carries one, a service's none.
    fn command(self, ledger: &mut Ledger, actor: &str, payout: &str, tamper: Tamper) -> Command {
        match self {
            Act::AddUser => add_user("usr_new"),
            Act::GrantRole => {
                let proof = signed(ledger, actor, "role.grant", "usr_aud:approver", tamper);
                grant("usr_aud", Role::Approver, proof)
            }
            Act::RevokeRole => revoke("usr_cat", Role::Authorizer),
            Act::RevokeOthersKey => revoke_key("key_ann"),
            Act::OpenAccount => Command::OpenAccount {
                account: id("acct_new"),
                currency: Currency::Eur,
                name: None,
            },
            Act::Deposit => deposit("acct_ops", "10.00", Currency::Eur),
            Act::AddPayee => Command::AddPayee {
                payee: id("pay_new"),
                name: "New payee".into(),
                iban: "v1:k1:00ff".into(),
            },
            Act::UpdatePolicy => {
                let proof = signed(ledger, actor, "policy.update", POLICY_SUBJECT, tamper);
                update_policy(vec![rule("10000.00", 2)], proof)
            }
            Act::Request => request(payout, "125.50"),
            Act::Approve => approve(payout),
            Act::Reject => reject(payout, "duplicate invoice"),
            Act::Authorize => authorize(
                payout,
                signed(ledger, actor, "payout.authorize", payout, tamper),
            ),
            Act::Execute => execute(
                payout,
                signed(ledger, actor, "payout.execute", payout, tamper),
            ),
            Act::Release => {
                let proof = if is_person(actor) {
                    signed(ledger, actor, "payout.release", payout, tamper)
                } else {
                    None
                };
                release(payout, proof)
            }
            Act::Fail => fail(payout),
            Act::Cancel => cancel(payout),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Proofs: a fresh one for the actor, or one spoiled in exactly one way
// ---------------------------------------------------------------------------------------

/// One way a proof can be wrong (or `Nothing`).
#[derive(Debug, Clone, Copy)]
enum Tamper {
    /// A fresh, valid proof.
    Nothing,
    /// No proof at all.
    Missing,
    /// Format version other than 1 (validly signed).
    Version(u32),
    /// One bit of the signature flipped (byte index).
    FlipSignatureByte(usize),
    /// The step changed after signing.
    EditAfterSigning,
    /// Signed by the 2FA key but naming a key id that is not in the key set.
    KeyId(&'static str),
    /// Under the right key id, signed by another key.
    ForeignSigner,
    /// Signed by the checkpoint key under its own id (a key of the wrong purpose).
    CheckpointKey,
    /// Signed by a listed 2FA key that was retired before the proof was made.
    RetiredKey,
    /// Signed by a second, currently valid 2FA key (rotation).
    RotatedKey,
    Tenant(&'static str),
    Actor(&'static str),
    /// Another money action than the command's.
    OtherAction,
    Subject(&'static str),
    /// The proof is made now, the command decided this much later (`Ledger::tick`).
    Wait(i64),
    /// `verified_at` this far after the clock.
    VerifiedAhead(i64),
    /// The step, relative to the step the actor used last.
    Step(i64),
}

/// Adds a 2FA key to the ledger's key set and returns its signing half.
fn install_two_factor_key(
    ledger: &mut Ledger,
    key_id: &str,
    seed: u8,
    not_after: Option<Timestamp>,
) -> SigningKey {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let record = KeyRecord {
        key_id: id(key_id),
        purpose: KeyPurpose::TwoFactor,
        algorithm: Algorithm::Ed25519,
        public_key: public_key_of(&key),
        not_before: Timestamp::from_unix_micros(EPOCH_MICROS - 2 * DAY_MICROS),
        not_after,
    };
    ledger
        .keys
        .insert(record)
        .unwrap_or_else(|e| panic!("install {key_id}: {e}"));
    key
}

fn last_step(ledger: &Ledger, actor: &str) -> u64 {
    match ledger.state.last_proofs.get(&id::<PrincipalId>(actor)) {
        Some(proof) => proof.step,
        None => panic!("fixture: {actor} has used no proof yet"),
    }
}

/// A proof for `actor` to do `action` on `subject`, spoiled by `tamper`.
fn signed(
    ledger: &mut Ledger,
    actor: &str,
    action: &str,
    subject: &str,
    tamper: Tamper,
) -> Option<TwoFactorProof> {
    let fresh = ledger.proof(actor, action, subject);
    let mut unsigned = fresh.unsigned();
    let mut key = ledger.two_factor_key.clone();
    match tamper {
        Tamper::Nothing => return Some(fresh),
        Tamper::Missing => return None,
        Tamper::Version(v) => unsigned.v = v,
        Tamper::FlipSignatureByte(index) => {
            let mut bytes = *fresh.sig.as_bytes();
            bytes[index] ^= 0x01;
            let sig = Sig::from_bytes(bytes);
            return Some(TwoFactorProof { sig, ..fresh });
        }
        Tamper::EditAfterSigning => {
            let step = fresh.step + 1;
            return Some(TwoFactorProof { step, ..fresh });
        }
        Tamper::KeyId(key_id) => unsigned.key_id = id(key_id),
        Tamper::ForeignSigner => key = SigningKey::from_bytes(&[0x5a; 32]),
        Tamper::CheckpointKey => {
            unsigned.key_id = id("ckpt-1");
            key = ledger.checkpoint_key.clone();
        }
        Tamper::RetiredKey => {
            let retired = Timestamp::from_unix_micros(EPOCH_MICROS - HOUR_MICROS);
            key = install_two_factor_key(ledger, "2fa-0", 0x60, Some(retired));
            unsigned.key_id = id("2fa-0");
        }
        Tamper::RotatedKey => {
            key = install_two_factor_key(ledger, "2fa-2", 0x61, None);
            unsigned.key_id = id("2fa-2");
        }
        Tamper::Tenant(tenant) => unsigned.tenant = id(tenant),
        Tamper::Actor(other) => unsigned.actor = id(other),
        Tamper::OtherAction => {
            let other = if action == "payout.authorize" {
                "payout.execute"
            } else {
                "payout.authorize"
            };
            unsigned.action = other.to_owned();
        }
        Tamper::Subject(other) => unsigned.subject = other.to_owned(),
        Tamper::Wait(micros) => {
            ledger.tick(micros);
            return Some(fresh);
        }
        Tamper::VerifiedAhead(micros) => {
            let at = ledger.clock.unix_micros() + micros;
            unsigned.verified_at = Timestamp::from_unix_micros(at);
        }
        Tamper::Step(delta) => {
            let last = last_step(ledger, actor);
            unsigned.step = last
                .checked_add_signed(delta)
                .unwrap_or_else(|| panic!("step {last} + {delta}"));
        }
    }
    Some(unsigned.sign(&key))
}

// ---------------------------------------------------------------------------------------
// 1. Four-eyes
// ---------------------------------------------------------------------------------------

/// Under a policy of two approvals, `po_1` has passed every gate before `gate` (for
/// `Approve`: bob has approved once); `actor` is given the gate's role and tries the gate.
/// `Err` holds the four-eyes detail.
fn check_four_eyes(gate: Act, actor: &str, expected: Result<(), &'static str>) {
    let given = Given::new().approvals(2);
    let (mut ledger, role) = match gate {
        Act::Approve => {
            let mut ledger = given.at(Stage::Requested);
            given_ok(&mut ledger, "usr_bob", approve(PO));
            (ledger, Role::Approver)
        }
        Act::Authorize => (given.at(Stage::Approved), Role::Authorizer),
        Act::Execute => (given.at(Stage::Authorized), Role::Executor),
        Act::Release => (given.at(Stage::Executed), Role::Releaser),
        Act::AddUser
        | Act::GrantRole
        | Act::RevokeRole
        | Act::RevokeOthersKey
        | Act::OpenAccount
        | Act::Deposit
        | Act::AddPayee
        | Act::UpdatePolicy
        | Act::Request
        | Act::Reject
        | Act::Fail
        | Act::Cancel => panic!("{gate:?} is not a gate"),
    };
    give_role(&mut ledger, actor, role);
    let command = gate.command(&mut ledger, actor, PO, Tamper::Nothing);
    let got = ledger.execute(actor, command);
    match expected {
        Ok(()) => {
            let events = got.unwrap_or_else(|e| panic!("{gate:?} by {actor}: {e}"));
            assert_eq!(events.len(), 1, "{gate:?} by {actor}");
        }
        Err(detail) => {
            let rejection = got.expect_err(actor);
            let four_eyes = Rejection::FourEyes { detail };
            assert_eq!(rejection, four_eyes, "{gate:?} by {actor}");
            assert_eq!(rejection.code(), "four_eyes");
        }
    }
}

#[rustfmt::skip]
#[test]
fn four_eyes_every_gate_refuses_every_earlier_actor_of_the_same_payout() {
    use Act::{Approve, Authorize, Execute, Release};
    let check = check_four_eyes;
    // Gate 1: not the requester; one approver counts once.
    check(Approve, "usr_ann", Err("the approver requested this payout"));
    check(Approve, "usr_bob", Err("this approver already approved this payout"));
    check(Approve, "usr_bea", Ok(()));
    // Gate 2: none of requester, approvers.
    check(Authorize, "usr_ann", Err("the authorizer requested this payout"));
    check(Authorize, "usr_bob", Err("the authorizer approved this payout"));
    check(Authorize, "usr_bea", Err("the authorizer approved this payout"));
    check(Authorize, "usr_cat", Ok(()));
    // Gate 3: none of requester, approvers, authorizer.
    check(Execute, "usr_ann", Err("the executor requested this payout"));
    check(Execute, "usr_bob", Err("the executor approved this payout"));
    check(Execute, "usr_bea", Err("the executor approved this payout"));
    check(Execute, "usr_cat", Err("the executor authorized this payout"));
    check(Execute, "usr_dan", Ok(()));
    // Release: only the executor is excluded (DESIGN: "the releaser is not the executor").
    check(Release, "usr_dan", Err("the releaser executed this payout"));
    check(Release, "usr_ann", Ok(()));
    check(Release, "usr_bob", Ok(()));
    check(Release, "usr_bea", Ok(()));
    check(Release, "usr_cat", Ok(()));
    check(Release, "usr_rex", Ok(()));
    check(Release, "svc_settlement", Ok(()));
}

#[test]
fn four_eyes_distinct_people_pass_every_gate_and_the_chain_verifies() {
    let mut ledger = Given::new().approvals(2).at(Stage::Released);
    let actors: Vec<String> = ledger
        .events
        .iter()
        .filter(|e| e.body.kind().starts_with("payout."))
        .map(|e| format!("{} {}", e.body.kind(), e.actor))
        .collect();
    assert_eq!(
        actors,
        [
            "payout.requested usr_ann",
            "payout.approved usr_bob",
            "payout.approved usr_bea",
            "payout.authorized usr_cat",
            "payout.executed usr_dan",
            "payout.released usr_rex",
        ]
    );
    ledger.checkpoint();
    let report = verify_export(&ledger.export(), Some(ledger.keys.clone())).expect("usable");
    assert_eq!(report.first_break, None);
    assert_eq!(report.summary.payouts_by_status.get("released"), Some(&1));
    assert_eq!(report.summary.money_movements_with_two_factor, 3);
    assert_eq!(report.summary.money_movements_without_two_factor, 0);
}

/// A role change.
#[derive(Debug, Clone, Copy)]
enum RoleChange {
    Grant(&'static str, Role),
    Revoke(&'static str, Role),
}

/// `actor` makes `change` in a tenant with a second admin, `usr_zoe`. `Err` holds the
/// four-eyes detail.
fn check_own_roles(actor: &str, change: RoleChange, expected: Result<(), &'static str>) {
    let mut ledger = given(Stage::Unrequested);
    give_role(&mut ledger, "usr_zoe", Role::Admin);
    let command = match change {
        RoleChange::Grant(user, role) => {
            let proof = ledger.proof(actor, "role.grant", &format!("{user}:{role}"));
            grant(user, role, Some(proof))
        }
        RoleChange::Revoke(user, role) => revoke(user, role),
    };
    let got = ledger.execute(actor, command).map(|_| ());
    let expected = expected.map_err(|detail| Rejection::FourEyes { detail });
    assert_eq!(got, expected, "{actor} {change:?}");
}

#[rustfmt::skip]
#[test]
fn four_eyes_nobody_grants_or_revokes_their_own_roles() {
    use RoleChange::{Grant, Revoke};
    let check = check_own_roles;
    let grants_own = Err("nobody grants their own roles");
    let revokes_own = Err("nobody revokes their own roles");
    check("usr_admin", Grant("usr_admin", Role::Approver), grants_own);
    check("usr_admin", Grant("usr_admin", Role::Admin), grants_own);
    check("usr_admin", Revoke("usr_admin", Role::Admin), revokes_own);
    check("usr_zoe", Grant("usr_zoe", Role::Executor), grants_own);
    check("usr_zoe", Revoke("usr_zoe", Role::Admin), revokes_own);
    check("usr_zoe", Grant("usr_admin", Role::Approver), Ok(()));
    check("usr_zoe", Revoke("usr_admin", Role::Admin), Ok(()));
    check("usr_admin", Revoke("usr_zoe", Role::Admin), Ok(()));
    check("usr_admin", Grant("usr_bob", Role::Authorizer), Ok(()));
}

// ---------------------------------------------------------------------------------------
// 2. Permissions and API-key scopes
// ---------------------------------------------------------------------------------------

/// `act`, in the stage where it is allowed, by everyone in the cast: `holders` succeed,
/// everyone else is refused for want of `permission` (with a valid proof where one is
/// needed, so that the permission is the only thing missing).
fn check_permission(act: Act, permission: Permission, holders: &[&str]) {
    let mut ledger = given(act.stage());
    for actor in CAST {
        let command = act.command(&mut ledger, actor, PO, Tamper::Nothing);
        let got = decide_as(&ledger, actor, &command, None).map(|_| ());
        if holders.contains(&actor) {
            assert_eq!(got, Ok(()), "{act:?} by {actor}");
        } else {
            let forbidden = Rejection::Forbidden { permission };
            assert_eq!(got, Err(forbidden), "{act:?} by {actor}");
            assert_eq!(got.map_err(|r| r.code()), Err("forbidden"));
        }
    }
}

#[rustfmt::skip]
#[test]
fn permissions_every_command_is_refused_to_whoever_lacks_its_permission() {
    use Permission::*;
    let check = check_permission;
    check(Act::AddUser, UserManage, &["usr_admin"]);
    check(Act::GrantRole, RoleManage, &["usr_admin"]);
    check(Act::RevokeRole, RoleManage, &["usr_admin"]);
    check(Act::RevokeOthersKey, ApiKeyManage, &["usr_admin", "usr_ann"]);
    check(Act::OpenAccount, AccountManage, &["usr_admin", "usr_eve"]);
    check(Act::Deposit, FundsDeposit, &["usr_eve"]);
    check(Act::AddPayee, PayeeManage, &["usr_admin"]);
    check(Act::UpdatePolicy, PolicyManage, &["usr_admin"]);
    check(Act::Request, PayoutRequest, &["usr_ann"]);
    check(Act::Approve, PayoutApprove, &["usr_bob", "usr_bea"]);
    check(Act::Reject, PayoutReject, &["usr_bob", "usr_bea", "usr_cat"]);
    check(Act::Authorize, PayoutAuthorize, &["usr_cat"]);
    check(Act::Execute, PayoutExecute, &["usr_dan"]);
    check(Act::Release, PayoutRelease, &["usr_rex", "svc_settlement"]);
    check(Act::Fail, PayoutFail, &["usr_rex", "svc_settlement"]);
    check(Act::Cancel, PayoutCancel, &["usr_ann"]);
}

#[test]
fn permissions_a_revoked_role_no_longer_allows() {
    let mut ledger = given(Stage::Requested);
    given_ok(&mut ledger, "usr_admin", revoke("usr_bob", Role::Approver));
    let got = ledger.execute("usr_bob", approve(PO)).map(|_| ());
    let permission = Permission::PayoutApprove;
    assert_eq!(got, Err(Rejection::Forbidden { permission }));
    assert_eq!(ledger.execute("usr_bea", approve(PO)).map(|_| ()), Ok(()));
}

#[test]
fn role_changes_name_a_user_of_the_tenant() {
    // A user the tenant never added (another tenant's, or none) is not found, both ways:
    // another tenant's object answers 404 (that nothing is recorded is checked in
    // `evidence_denied_attempts_are_appended_and_the_chain_verifies`).
    let mut ledger = given(Stage::Requested);
    for command in [
        grant("usr_stranger", Role::Approver, None),
        revoke("usr_stranger", Role::Approver),
    ] {
        let got = ledger.execute("usr_admin", command).map(|_| ());
        assert_eq!(got, Err(Rejection::NotFound { what: "user" }));
    }
    // A user of the tenant without the role is a state conflict, not an unknown user.
    let got = ledger
        .execute("usr_admin", revoke("usr_ann", Role::Approver))
        .map(|_| ());
    assert_eq!(got, Err(invalid_state("user does not have role approver")));
}

/// `act` by `actor` through an API key narrowed to `scopes` (`None`: not narrowed). `Err`
/// holds the permission refused.
fn check_scopes(
    act: Act,
    actor: &str,
    scopes: Option<&[Permission]>,
    expected: Result<(), Permission>,
) {
    let mut ledger = given(act.stage());
    let command = act.command(&mut ledger, actor, PO, Tamper::Nothing);
    let got = decide_as(&ledger, actor, &command, scopes).map(|_| ());
    let expected = expected.map_err(|permission| Rejection::Forbidden { permission });
    assert_eq!(got, expected, "{act:?} by {actor} with scopes {scopes:?}");
}

#[rustfmt::skip]
#[test]
fn permissions_api_key_scopes_only_narrow_the_roles() {
    use Permission::*;
    let check = check_scopes;
    check(Act::Approve, "usr_bob", None, Ok(()));
    check(Act::Approve, "usr_bob", Some(&[PayoutApprove]), Ok(()));
    check(Act::Approve, "usr_bob", Some(&[LedgerRead, PayoutApprove]), Ok(()));
    check(Act::Approve, "usr_bob", Some(&[LedgerRead]), Err(PayoutApprove));
    check(Act::Approve, "usr_bob", Some(&[PayoutReject]), Err(PayoutApprove));
    check(Act::Approve, "usr_bob", Some(&[]), Err(PayoutApprove));
    check(Act::Approve, "usr_cat", None, Err(PayoutApprove));
    check(Act::Approve, "usr_cat", Some(&[PayoutApprove]), Err(PayoutApprove));
    check(Act::Authorize, "usr_cat", Some(&[PayoutAuthorize]), Ok(()));
    check(Act::Authorize, "usr_cat", Some(&[PayoutReject, LedgerRead]), Err(PayoutAuthorize));
    check(Act::Execute, "usr_dan", Some(&[LedgerRead]), Err(PayoutExecute));
    check(Act::Release, "svc_settlement", Some(&[PayoutRelease]), Ok(()));
    check(Act::Release, "svc_settlement", Some(&[PayoutFail]), Err(PayoutRelease));
    check(Act::Fail, "svc_settlement", Some(&[PayoutRelease]), Err(PayoutFail));
    check(Act::Request, "usr_ann", Some(&[PayoutCancel, PayeeRead]), Err(PayoutRequest));
    check(Act::Cancel, "usr_ann", Some(&[PayoutRequest]), Err(PayoutCancel));
    check(Act::Deposit, "usr_eve", Some(&[AccountManage]), Err(FundsDeposit));
    check(Act::OpenAccount, "usr_eve", Some(&[FundsDeposit]), Err(AccountManage));
    check(Act::AddUser, "usr_admin", Some(&[RoleManage]), Err(UserManage));
    check(Act::GrantRole, "usr_admin", Some(&[UserManage]), Err(RoleManage));
    check(Act::RevokeOthersKey, "usr_admin", Some(&[RoleManage]), Err(ApiKeyManage));
    check(Act::UpdatePolicy, "usr_admin", Some(&[RoleManage]), Err(PolicyManage));
    check(Act::AddPayee, "usr_admin", Some(&[PayeeRead]), Err(PayeeManage));
}

// ---------------------------------------------------------------------------------------
// 3. 2FA proofs
// ---------------------------------------------------------------------------------------

/// The commands that need a proof, each in a scene where its actor has used a proof before
/// (so that the step rule has something to compare with).
#[derive(Debug, Clone, Copy)]
enum Gated {
    /// cat authorized `po_1`; now `po_2`.
    Authorize,
    /// dan executed `po_1`; now `po_2`.
    Execute,
    /// rex released `po_1`; now `po_2`.
    ReleaseByPerson,
    /// The admin grants `usr_zoe` the approver role.
    GrantRole,
    UpdatePolicy,
    /// The admin already holds `key_admin`; now `key_second`.
    IssueApiKey,
}

struct Scene {
    ledger: Ledger,
    actor: &'static str,
    action: &'static str,
    subject: String,
}

impl Gated {
    fn scene(self) -> Scene {
        let scene = |ledger, actor, action, subject: &str| Scene {
            ledger,
            actor,
            action,
            subject: subject.to_owned(),
        };
        match self {
            Gated::Authorize => {
                let mut ledger = given(Stage::Authorized);
                drive(&mut ledger, "po_2", "125.50", 1, Stage::Approved);
                scene(ledger, "usr_cat", "payout.authorize", "po_2")
            }
            Gated::Execute => {
                let mut ledger = given(Stage::Executed);
                drive(&mut ledger, "po_2", "125.50", 1, Stage::Authorized);
                scene(ledger, "usr_dan", "payout.execute", "po_2")
            }
            Gated::ReleaseByPerson => {
                let mut ledger = given(Stage::Released);
                drive(&mut ledger, "po_2", "125.50", 1, Stage::Executed);
                scene(ledger, "usr_rex", "payout.release", "po_2")
            }
            Gated::GrantRole => {
                let mut ledger = given(Stage::Unrequested);
                given_ok(&mut ledger, "usr_admin", add_user("usr_zoe"));
                scene(ledger, "usr_admin", "role.grant", "usr_zoe:approver")
            }
            Gated::UpdatePolicy => {
                let ledger = given(Stage::Unrequested);
                scene(ledger, "usr_admin", "policy.update", POLICY_SUBJECT)
            }
            Gated::IssueApiKey => {
                let mut ledger = given(Stage::Unrequested);
                given_ok(&mut ledger, "usr_admin", issue_key("key_admin", None));
                scene(ledger, "usr_admin", "apikey.issue", "key_second")
            }
        }
    }

    fn command(self, subject: &str, two_factor: Option<TwoFactorProof>) -> Command {
        match self {
            Gated::Authorize => authorize(subject, two_factor),
            Gated::Execute => execute(subject, two_factor),
            Gated::ReleaseByPerson => release(subject, two_factor),
            Gated::GrantRole => grant("usr_zoe", Role::Approver, two_factor),
            Gated::UpdatePolicy => update_policy(vec![rule("10000.00", 2)], two_factor),
            Gated::IssueApiKey => issue_key(subject, two_factor),
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Gated::Authorize => "payout.authorized",
            Gated::Execute => "payout.executed",
            Gated::ReleaseByPerson => "payout.released",
            Gated::GrantRole => "role.granted",
            Gated::UpdatePolicy => "policy.updated",
            Gated::IssueApiKey => "apikey.issued",
        }
    }
}

/// The reason code DESIGN gives a 2FA failure.
fn two_factor_code(failure: TwoFactorFailure) -> &'static str {
    if failure == TwoFactorFailure::Missing {
        "two_factor_required"
    } else {
        "two_factor_invalid"
    }
}

/// Every way to get a proof wrong, and the ways to get it right beside them.
#[rustfmt::skip]
const PROOF_ROWS: &[(Tamper, Result<(), TwoFactorFailure>)] = {
    use TwoFactorFailure::*;
    &[
        (Tamper::Nothing, Ok(())),
        (Tamper::Missing, Err(Missing)),
        (Tamper::Version(2), Err(Version)),
        (Tamper::Version(0), Err(Version)),
        (Tamper::FlipSignatureByte(0), Err(BadSignature)),
        (Tamper::FlipSignatureByte(40), Err(BadSignature)),
        (Tamper::FlipSignatureByte(63), Err(BadSignature)),
        (Tamper::EditAfterSigning, Err(BadSignature)),
        (Tamper::KeyId("2fa-9"), Err(UnknownKey)),
        (Tamper::ForeignSigner, Err(BadSignature)),
        (Tamper::CheckpointKey, Err(UnknownKey)),
        (Tamper::RetiredKey, Err(UnknownKey)),
        (Tamper::RotatedKey, Ok(())),
        (Tamper::Tenant("globex"), Err(OtherTenant)),
        (Tamper::Actor("usr_bob"), Err(OtherActor)),
        (Tamper::Actor("svc_settlement"), Err(OtherActor)),
        (Tamper::OtherAction, Err(OtherAction)),
        (Tamper::Subject("po_9"), Err(OtherSubject)),
        (Tamper::Wait(299 * SECOND_MICROS), Ok(())),
        (Tamper::Wait(300 * SECOND_MICROS), Err(Stale)), // 300 s and the writer's 1 ms
        (Tamper::Wait(DAY_MICROS), Err(Stale)),
        (Tamper::VerifiedAhead(SECOND_MICROS), Err(Stale)),
        (Tamper::Step(-1), Err(Replayed)),
        (Tamper::Step(0), Err(Replayed)),
        (Tamper::Step(1), Ok(())),
        (Tamper::Step(1_000_000), Ok(())),
    ]
};

/// Every row of [`PROOF_ROWS`] against `gated`'s scene: decided, or refused with exactly
/// the row's failure and its code. The rows share the scene: `decide` appends nothing, and
/// what a row changes (clock, key set) does not bear on the others.
fn check_every_proof_row(gated: Gated) {
    let Scene {
        mut ledger,
        actor,
        action,
        subject,
    } = gated.scene();
    for &(tamper, expected) in PROOF_ROWS {
        let proof = signed(&mut ledger, actor, action, &subject, tamper);
        let got = decide_as(&ledger, actor, &gated.command(&subject, proof), None);
        match expected {
            Ok(()) => {
                let bodies = got.unwrap_or_else(|e| panic!("{gated:?} {tamper:?}: {e}"));
                let kinds: Vec<&str> = bodies.iter().map(EventBody::kind).collect();
                assert_eq!(kinds, [gated.kind()], "{gated:?} {tamper:?}");
            }
            Err(failure) => {
                let rejection = got.expect_err(&format!("{gated:?} {tamper:?} is refused"));
                assert_eq!(
                    rejection,
                    Rejection::TwoFactor(failure),
                    "{gated:?} {tamper:?}"
                );
                assert_eq!(
                    rejection.code(),
                    two_factor_code(failure),
                    "{gated:?} {tamper:?}"
                );
            }
        }
    }
}

#[test]
fn two_factor_payout_authorize_refuses_every_bad_proof() {
    check_every_proof_row(Gated::Authorize);
}

#[test]
fn two_factor_payout_execute_refuses_every_bad_proof() {
    check_every_proof_row(Gated::Execute);
}

#[test]
fn two_factor_payout_release_by_a_person_refuses_every_bad_proof() {
    check_every_proof_row(Gated::ReleaseByPerson);
}

#[test]
fn two_factor_role_grant_refuses_every_bad_proof() {
    check_every_proof_row(Gated::GrantRole);
}

#[test]
fn two_factor_policy_update_refuses_every_bad_proof() {
    check_every_proof_row(Gated::UpdatePolicy);
}

#[test]
fn two_factor_apikey_issue_after_the_first_key_refuses_every_bad_proof() {
    check_every_proof_row(Gated::IssueApiKey);
}

/// A proof for `po_1`'s authorization was verified `age_micros` before the command.
fn check_proof_age(age_micros: i64, expected: Result<(), TwoFactorFailure>) {
    let mut ledger = given(Stage::Approved);
    let mut unsigned = ledger.proof("usr_cat", "payout.authorize", PO).unsigned();
    let verified_at = writer_now(&ledger).unix_micros() - age_micros;
    unsigned.verified_at = Timestamp::from_unix_micros(verified_at);
    let command = authorize(PO, Some(unsigned.sign(&ledger.two_factor_key)));
    let got = decide_as(&ledger, "usr_cat", &command, None).map(|_| ());
    assert_eq!(
        got,
        expected.map_err(Rejection::TwoFactor),
        "age {age_micros} µs"
    );
}

#[rustfmt::skip]
#[test]
fn two_factor_a_proof_is_fresh_for_exactly_300_seconds() {
    use TwoFactorFailure::Stale;
    let check = check_proof_age;
    check(0, Ok(()));
    check(1, Ok(()));
    check(300 * SECOND_MICROS, Ok(()));
    check(300 * SECOND_MICROS + 1, Err(Stale));
    check(-1, Err(Stale));
    check(-HOUR_MICROS, Err(Stale));
}

/// A command sent without a proof.
#[derive(Debug, Clone, Copy)]
enum Unproved {
    Grant(Role),
    FirstApiKey,
    SecondApiKey,
    /// ann revoked `key_ann`, her only key, and asks for another.
    ApiKeyAfterRevokingTheOnlyOne,
    ServiceSecondApiKey,
    PolicyUpdate,
    Authorize,
    Execute,
    ReleaseByPerson,
    ReleaseByService,
}

fn check_needs_proof(case: Unproved, needs_proof: bool) {
    let (mut ledger, actor, command) = match case {
        Unproved::Grant(role) => {
            let mut ledger = given(Stage::Unrequested);
            given_ok(&mut ledger, "usr_admin", add_user("usr_zoe"));
            (ledger, "usr_admin", grant("usr_zoe", role, None))
        }
        Unproved::FirstApiKey => (
            given(Stage::Unrequested),
            "usr_bob",
            issue_key("key_bob", None),
        ),
        Unproved::SecondApiKey => (
            given(Stage::Unrequested),
            "usr_ann",
            issue_key("key_two", None),
        ),
        Unproved::ApiKeyAfterRevokingTheOnlyOne => {
            let mut ledger = given(Stage::Unrequested);
            given_ok(&mut ledger, "usr_ann", revoke_key("key_ann"));
            (ledger, "usr_ann", issue_key("key_two", None))
        }
        Unproved::ServiceSecondApiKey => {
            let mut ledger = given(Stage::Unrequested);
            given_ok(&mut ledger, "svc_settlement", issue_key("key_svc", None));
            (ledger, "svc_settlement", issue_key("key_two", None))
        }
        Unproved::PolicyUpdate => {
            let command = update_policy(Vec::new(), None);
            (given(Stage::Unrequested), "usr_admin", command)
        }
        Unproved::Authorize => (given(Stage::Approved), "usr_cat", authorize(PO, None)),
        Unproved::Execute => (given(Stage::Authorized), "usr_dan", execute(PO, None)),
        Unproved::ReleaseByPerson => (given(Stage::Executed), "usr_rex", release(PO, None)),
        Unproved::ReleaseByService => {
            let command = release(PO, None);
            (given(Stage::Executed), "svc_settlement", command)
        }
    };
    let got = ledger.execute(actor, command).map(|_| ());
    let expected = if needs_proof {
        Err(Rejection::TwoFactor(TwoFactorFailure::Missing))
    } else {
        Ok(())
    };
    assert_eq!(got, expected, "{case:?}");
}

#[rustfmt::skip]
#[test]
fn two_factor_which_commands_need_a_proof() {
    let check = check_needs_proof;
    check(Unproved::Grant(Role::Admin), true);
    check(Unproved::Grant(Role::Requester), true);
    check(Unproved::Grant(Role::Approver), true);
    check(Unproved::Grant(Role::Authorizer), true);
    check(Unproved::Grant(Role::Executor), true);
    check(Unproved::Grant(Role::Releaser), true);
    check(Unproved::Grant(Role::Treasurer), true);
    check(Unproved::Grant(Role::Auditor), false);
    check(Unproved::FirstApiKey, false);
    check(Unproved::SecondApiKey, true);
    // A person with no active key has no credential to call the API with, so the key
    // that replaces a revoked only key is again a first key (issued by redeeming an
    // invite, which carries no code yet).
    check(Unproved::ApiKeyAfterRevokingTheOnlyOne, false);
    check(Unproved::ServiceSecondApiKey, false);
    check(Unproved::PolicyUpdate, true);
    check(Unproved::Authorize, true);
    check(Unproved::Execute, true);
    check(Unproved::ReleaseByPerson, true);
    check(Unproved::ReleaseByService, false);
}

/// A service confirming settlement needs no proof, but a proof it does carry is checked.
fn check_service_release(tamper: Option<Tamper>, expected: Result<(), TwoFactorFailure>) {
    let mut ledger = given(Stage::Executed);
    let actor = "svc_settlement";
    let proof = tamper.and_then(|t| signed(&mut ledger, actor, "payout.release", PO, t));
    let got = ledger.execute(actor, release(PO, proof)).map(|_| ());
    assert_eq!(got, expected.map_err(Rejection::TwoFactor), "{tamper:?}");
}

#[rustfmt::skip]
#[test]
fn two_factor_a_service_releases_without_a_proof() {
    use TwoFactorFailure::*;
    let check = check_service_release;
    check(None, Ok(()));
    check(Some(Tamper::Nothing), Ok(()));
    check(Some(Tamper::FlipSignatureByte(9)), Err(BadSignature));
    check(Some(Tamper::Actor("usr_rex")), Err(OtherActor));
    check(Some(Tamper::Wait(HOUR_MICROS)), Err(Stale));
}

/// Three payouts of 100.00 EUR, `po_1` .. `po_3`: the first two approved, the third at
/// `third`.
fn three_payouts(deposit: &str, third: Stage) -> Ledger {
    let mut ledger = standard_tenant("acme", 1, deposit);
    drive(&mut ledger, "po_1", "100.00", 1, Stage::Approved);
    drive(&mut ledger, "po_2", "100.00", 1, Stage::Approved);
    drive(&mut ledger, "po_3", "100.00", 1, third);
    ledger
}

fn batch_list(subjects: &[&str]) -> Vec<String> {
    subjects.iter().map(|s| (*s).to_owned()).collect()
}

fn authorize_in_batch(payout: &str, proof: Option<TwoFactorProof>, batch: &[String]) -> Command {
    Command::AuthorizePayout {
        payout: id(payout),
        two_factor: proof,
        batch: Some(batch.to_vec()),
    }
}

#[test]
fn two_factor_batch_subject_is_the_hash_of_the_sorted_list() {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(br#"["po_1","po_2","po_3"]"#);
    let expected = format!("batch:{}", hex::encode(digest));
    assert_eq!(batch_subject(&["po_3", "po_1", "po_2"]), expected);
    assert_eq!(batch_subject(&["po_1", "po_2", "po_3"]), expected);
}

/// What a batch proof is signed over.
#[derive(Debug, Clone, Copy)]
enum Over {
    Batch(&'static [&'static str]),
    Single(&'static str),
}

/// cat authorizes `po_1` on its own, carrying `list` as `data.batch` and a proof over
/// `over`.
fn check_batch_membership(
    list: Option<&[&str]>,
    over: Over,
    expected: Result<(), TwoFactorFailure>,
) {
    let mut ledger = three_payouts("1000.00", Stage::Approved);
    let subject = match over {
        Over::Batch(subjects) => batch_subject(subjects),
        Over::Single(subject) => subject.to_owned(),
    };
    let proof = ledger.proof("usr_cat", "payout.authorize", &subject);
    let command = Command::AuthorizePayout {
        payout: id(PO),
        two_factor: Some(proof),
        batch: list.map(batch_list),
    };
    let got = ledger.execute("usr_cat", command).map(|_| ());
    assert_eq!(
        got,
        expected.map_err(Rejection::TwoFactor),
        "{list:?} {over:?}"
    );
}

#[rustfmt::skip]
#[test]
fn two_factor_a_batch_proof_covers_only_its_own_batch() {
    use TwoFactorFailure::*;
    let check = check_batch_membership;
    check(Some(&["po_1", "po_2"]), Over::Batch(&["po_1", "po_2"]), Ok(()));
    check(Some(&["po_2", "po_1"]), Over::Batch(&["po_1", "po_2"]), Ok(()));
    check(Some(&["po_1"]), Over::Batch(&["po_1"]), Ok(()));
    check(Some(&["po_1", "po_2"]), Over::Batch(&["po_1", "po_3"]), Err(NotInBatch));
    check(Some(&["po_1", "po_2"]), Over::Batch(&["po_1", "po_2", "po_3"]), Err(NotInBatch));
    check(Some(&["po_1", "po_2", "po_3"]), Over::Batch(&["po_1", "po_2"]), Err(NotInBatch));
    check(Some(&["po_1", "po_2"]), Over::Single("po_1"), Err(NotInBatch));
    check(None, Over::Batch(&["po_1", "po_2"]), Err(OtherSubject));
}

#[test]
fn two_factor_one_batch_proof_authorizes_every_payout_of_its_batch() {
    let mut ledger = three_payouts("1000.00", Stage::Approved);
    let list = batch_list(&["po_1", "po_2", "po_3"]);
    let proof = ledger.batch_proof("usr_cat", "payout.authorize", &list);
    let commands: Vec<Command> = list
        .iter()
        .map(|po| authorize_in_batch(po, Some(proof.clone()), &list))
        .collect();
    let events = ledger
        .execute_batch("usr_cat", &commands)
        .unwrap_or_else(|(index, e)| panic!("batch command {index}: {e}"));
    assert_eq!(events.len(), 3);
    for (event, po) in events.iter().zip(&list) {
        let EventBody::PayoutAuthorized(data) = &event.body else {
            panic!("{po}: {}", event.body.kind());
        };
        assert_eq!(data.payout.as_str(), po);
        assert_eq!(data.two_factor.as_ref(), Some(&proof));
        assert_eq!(data.batch.as_ref(), Some(&list));
        let status = ledger.state.payouts[&id(po)].status();
        assert_eq!(status, PayoutStatus::Authorized, "{po}");
    }
    let account = &ledger.state.accounts[&id("acct_ops")];
    assert_eq!(account.held, decimal("300.00"));
    assert_eq!(account.available, decimal("700.00"));
    let report = verify_export(&ledger.export(), Some(ledger.keys.clone())).expect("usable");
    assert_eq!(report.first_break, None);
    assert_eq!(report.summary.money_movements_with_two_factor, 3);
}

/// One way to spoil a batch of three authorizations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spoil {
    Nothing,
    ThirdNotApproved,
    FundsForTwoOnly,
    SecondWithoutProof,
    SecondWithAnOlderProof,
    ThirdWithAProofForAnotherAction,
    ProofOverTheFirstTwo,
    FirstTwice,
}

/// cat authorizes `po_1` .. `po_3` in one batch under one proof, spoiled by `spoil`: all or
/// nothing.
fn check_all_or_nothing(spoil: Spoil, expected: Result<(), (usize, Rejection)>) {
    let deposit = if spoil == Spoil::FundsForTwoOnly {
        "250.00"
    } else {
        "1000.00"
    };
    let third = if spoil == Spoil::ThirdNotApproved {
        Stage::Requested
    } else {
        Stage::Approved
    };
    let mut ledger = three_payouts(deposit, third);
    let list = batch_list(&["po_1", "po_2", "po_3"]);
    let signed_over = if spoil == Spoil::ProofOverTheFirstTwo {
        &list[..2]
    } else {
        &list[..]
    };
    let proof = ledger.batch_proof("usr_cat", "payout.authorize", signed_over);
    let mut payouts = ["po_1", "po_2", "po_3"];
    let mut proofs = [
        Some(proof.clone()),
        Some(proof.clone()),
        Some(proof.clone()),
    ];
    match spoil {
        Spoil::SecondWithoutProof => proofs[1] = None,
        Spoil::SecondWithAnOlderProof => {
            let mut older = proof.unsigned();
            older.step -= 1;
            proofs[1] = Some(older.sign(&ledger.two_factor_key));
        }
        Spoil::ThirdWithAProofForAnotherAction => {
            proofs[2] = Some(ledger.batch_proof("usr_cat", "payout.execute", &list));
        }
        Spoil::FirstTwice => payouts[1] = "po_1",
        Spoil::Nothing
        | Spoil::ThirdNotApproved
        | Spoil::FundsForTwoOnly
        | Spoil::ProofOverTheFirstTwo => {}
    }
    let commands: Vec<Command> = payouts
        .iter()
        .zip(proofs)
        .map(|(po, proof)| authorize_in_batch(po, proof, &list))
        .collect();
    let state_before = ledger.state.clone();
    let head_before = ledger.head;
    let events_before = ledger.events.len();
    let got = ledger.execute_batch("usr_cat", &commands);
    match expected {
        Ok(()) => {
            let events = got.unwrap_or_else(|(index, e)| panic!("{spoil:?}: {index}: {e}"));
            assert_eq!(events.len(), 3, "{spoil:?}");
        }
        Err(expected) => {
            assert_eq!(got.map(|_| ()), Err(expected), "{spoil:?}");
            assert_eq!(
                ledger.events.len(),
                events_before,
                "{spoil:?}: nothing appended"
            );
            assert_eq!(ledger.head, head_before, "{spoil:?}");
            assert_eq!(ledger.state, state_before, "{spoil:?}");
        }
    }
}

#[rustfmt::skip]
#[test]
fn two_factor_a_batch_is_all_or_nothing() {
    use TwoFactorFailure::*;
    let check = check_all_or_nothing;
    let two_factor = Rejection::TwoFactor;
    check(Spoil::Nothing, Ok(()));
    check(Spoil::ThirdNotApproved, Err((2, invalid_state("payout is requested"))));
    check(Spoil::FundsForTwoOnly, Err((2, Rejection::InsufficientFunds)));
    check(Spoil::SecondWithoutProof, Err((1, two_factor(Missing))));
    check(Spoil::SecondWithAnOlderProof, Err((1, two_factor(Replayed))));
    check(Spoil::ThirdWithAProofForAnotherAction, Err((2, two_factor(OtherAction))));
    check(Spoil::ProofOverTheFirstTwo, Err((0, two_factor(NotInBatch))));
    check(Spoil::FirstTwice, Err((1, invalid_state("payout is authorized"))));
}

#[test]
fn two_factor_a_batch_proof_repeats_across_its_batch_but_a_new_proof_needs_a_greater_step() {
    let mut ledger = three_payouts("1000.00", Stage::Approved);
    let list = batch_list(&["po_1", "po_2"]);
    let proof = ledger.batch_proof("usr_cat", "payout.authorize", &list);
    // The same proof, in two separate commands of its own batch.
    given_ok(
        &mut ledger,
        "usr_cat",
        authorize_in_batch("po_1", Some(proof.clone()), &list),
    );
    given_ok(
        &mut ledger,
        "usr_cat",
        authorize_in_batch("po_2", Some(proof.clone()), &list),
    );
    // Outside its batch the same proof names another subject.
    let got = ledger.execute("usr_cat", authorize("po_3", Some(proof.clone())));
    let other_subject = Rejection::TwoFactor(TwoFactorFailure::OtherSubject);
    assert_eq!(got.map(|_| ()), Err(other_subject));
    // A new proof at the batch proof's step is a replay; a greater step passes.
    let mut same_step = proof.unsigned();
    same_step.subject = "po_3".into();
    let same_step = same_step.sign(&ledger.two_factor_key);
    let got = ledger.execute("usr_cat", authorize("po_3", Some(same_step)));
    let replayed = Rejection::TwoFactor(TwoFactorFailure::Replayed);
    assert_eq!(got.map(|_| ()), Err(replayed));
    let fresh = ledger.proof("usr_cat", "payout.authorize", "po_3");
    given_ok(&mut ledger, "usr_cat", authorize("po_3", Some(fresh)));
    let report = verify_export(&ledger.export(), Some(ledger.keys.clone())).expect("usable");
    assert_eq!(report.first_break, None);
    assert_eq!(report.summary.money_movements_with_two_factor, 3);
}

#[test]
fn two_factor_one_batch_proof_grants_several_roles() {
    let mut ledger = given(Stage::Unrequested);
    given_ok(&mut ledger, "usr_admin", add_user("usr_zoe"));
    let list = batch_list(&["usr_zoe:approver", "usr_zoe:releaser"]);
    let proof = ledger.batch_proof("usr_admin", "role.grant", &list);
    let commands: Vec<Command> = [Role::Approver, Role::Releaser]
        .into_iter()
        .map(|role| Command::GrantRole {
            user: id("usr_zoe"),
            role,
            two_factor: Some(proof.clone()),
            batch: Some(list.clone()),
        })
        .collect();
    let events = ledger
        .execute_batch("usr_admin", &commands)
        .unwrap_or_else(|(index, e)| panic!("grant {index}: {e}"));
    assert_eq!(events.len(), 2);
    let roles = ledger
        .state
        .roles_of(&id("usr_zoe"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        roles.into_iter().collect::<Vec<_>>(),
        [Role::Approver, Role::Releaser]
    );
    let report = verify_export(&ledger.export(), Some(ledger.keys.clone())).expect("usable");
    assert_eq!(report.first_break, None);
}

// ---------------------------------------------------------------------------------------
// 4. Money
// ---------------------------------------------------------------------------------------

fn check_amount(text: &str, currency: Currency, expected: Result<&str, MoneyError>) {
    let got = Money::parse(text, currency).map(|m| m.to_text());
    assert_eq!(
        got.as_deref().map_err(|e| *e),
        expected,
        "{text} {currency}"
    );
}

#[rustfmt::skip]
#[test]
fn money_amounts_have_the_currency_scale_and_are_positive() {
    use Currency::{Eur, Huf, Jpy, Kwd};
    use MoneyError::*;
    let check = check_amount;
    check("125.50", Eur, Ok("125.50"));
    check("125.5", Eur, Ok("125.50"));
    check("125.505", Eur, Err(TooManyDecimals));
    check("0.001", Eur, Err(TooManyDecimals));
    check("1200", Jpy, Ok("1200"));
    check("1200.5", Jpy, Err(TooManyDecimals));
    check("1200.0", Jpy, Err(TooManyDecimals));
    check("1.234", Kwd, Ok("1.234"));
    check("1.5", Kwd, Ok("1.500"));
    check("1.2345", Kwd, Err(TooManyDecimals));
    check("12.345", Huf, Err(TooManyDecimals));
    check("0", Eur, Err(NotPositive));
    check("0.00", Eur, Err(NotPositive));
    check("0", Jpy, Err(NotPositive));
    check("0.000", Kwd, Err(NotPositive));
    check("-1.00", Eur, Err(NotPositive));
    check("-1", Jpy, Err(NotPositive));
}

/// A deposit command as a client sends it, with `amount` as the JSON value of the amount.
fn check_command_amount(amount: &str, expected: Option<&str>) {
    let text = format!(
        r#"{{"command":"deposit","account":"acct_ops","money":{{"amount":{amount},"currency":"EUR"}},"reference":null}}"#
    );
    let got = Command::from_json(&text).ok().map(|command| {
        if let Command::Deposit { money, .. } = command {
            money.to_text()
        } else {
            panic!("{amount}: decoded as {}", command.action())
        }
    });
    assert_eq!(got.as_deref(), expected, "{amount}");
}

#[rustfmt::skip]
#[test]
fn money_commands_cannot_carry_a_bad_amount() {
    let check = check_command_amount;
    check(r#""5.5""#, Some("5.50"));
    check(r#""5.00""#, Some("5.00"));
    check(r#""-5.00""#, None);
    check(r#""0.00""#, None);
    check(r#""0""#, None);
    check(r#""5.001""#, None);
    check(r#""5e2""#, None);
    check("5.5", None);
    check("5", None);
}

/// `amount` EUR is authorized from an account funded with `deposit`, after `held_before`
/// was authorized (held) for an earlier payout.
fn check_overdraft(
    deposit: &str,
    held_before: Option<&str>,
    amount: &str,
    expected: Result<(), Rejection>,
) {
    let mut ledger = standard_tenant("acme", 1, deposit);
    if let Some(held) = held_before {
        drive(&mut ledger, "po_0", held, 1, Stage::Authorized);
    }
    drive(&mut ledger, PO, amount, 1, Stage::Approved);
    let before = ledger.state.accounts[&id("acct_ops")].clone();
    let proof = ledger.proof("usr_cat", "payout.authorize", PO);
    let got = ledger
        .execute("usr_cat", authorize(PO, Some(proof)))
        .map(|_| ());
    assert_eq!(got, expected, "{deposit} {held_before:?} {amount}");
    let after = &ledger.state.accounts[&id("acct_ops")];
    if got.is_ok() {
        assert_eq!(after.available, before.available - decimal(amount));
        assert_eq!(after.held, before.held + decimal(amount));
        assert!(after.available >= Decimal::ZERO);
    } else {
        assert_eq!(after, &before, "a refused authorization moves nothing");
    }
}

#[rustfmt::skip]
#[test]
fn money_authorize_never_overdraws_the_available_balance() {
    let check = check_overdraft;
    let short = || Err(Rejection::InsufficientFunds);
    check("100.00", None, "100.00", Ok(()));
    check("100.00", None, "99.99", Ok(()));
    check("100.00", None, "100.01", short());
    check("100.00", None, "1000000.00", short());
    check("100.00", Some("60.00"), "40.00", Ok(()));
    check("100.00", Some("60.00"), "40.01", short());
    check("100.00", Some("100.00"), "0.01", short());
}

/// The balances of `acct_ops` (funded with 1000.00) and of `world:payees` when `po_1`
/// (125.50) is at `stage`.
fn check_balances(stage: Stage, available: &str, held: &str, paid_out: &str) {
    let ledger = given(stage);
    let account = &ledger.state.accounts[&id("acct_ops")];
    assert_eq!(account.available, decimal(available), "{stage:?} available");
    assert_eq!(account.held, decimal(held), "{stage:?} held");
    let payees = ledger.state.balance(&Bucket::WorldPayees, Currency::Eur);
    assert_eq!(payees, decimal(paid_out), "{stage:?} world:payees");
}

#[rustfmt::skip]
#[test]
fn money_holds_move_with_the_lifecycle_and_return_on_fail_and_cancel() {
    let check = check_balances;
    check(Stage::Unrequested, "1000.00", "0", "0");
    check(Stage::Requested, "1000.00", "0", "0");
    check(Stage::Approved, "1000.00", "0", "0");
    check(Stage::Rejected, "1000.00", "0", "0");
    check(Stage::Authorized, "874.50", "125.50", "0");
    check(Stage::Executed, "874.50", "125.50", "0");
    check(Stage::Released, "874.50", "0", "125.50");
    check(Stage::Cancelled, "1000.00", "0", "0");
    check(Stage::Failed, "1000.00", "0", "0");
}

#[test]
fn money_a_returned_hold_restores_the_balances_exactly() {
    let account = id("acct_ops");
    let approved = given(Stage::Approved);
    for (end, kind) in [
        (Stage::Cancelled, "payout.cancelled"),
        (Stage::Failed, "payout.failed"),
    ] {
        let ended = given(end);
        assert_eq!(
            ended.state.accounts[&account],
            approved.state.accounts[&account]
        );
        let last = ended.events.last().expect("an event");
        assert_eq!(last.body.kind(), kind);
        let postings: Vec<(&str, &str)> = last
            .body
            .postings()
            .iter()
            .map(|p| (p.account.as_str(), p.amount.as_str()))
            .collect();
        let returned = [
            ("acct_ops:held", "-125.50"),
            ("acct_ops:available", "125.50"),
        ];
        assert_eq!(postings, returned, "{end:?}");
    }
}

/// A command that names an account and an amount.
#[derive(Debug, Clone, Copy)]
enum MoneyAct {
    Deposit,
    Request,
}

/// `act` names `account` (`acct_ops` is EUR, `acct_yen` JPY) with `amount` in `currency`.
fn check_currency(
    act: MoneyAct,
    account: &str,
    amount: &str,
    currency: Currency,
    expected: Result<(), Rejection>,
) {
    let mut ledger = given(Stage::Unrequested);
    let open = Command::OpenAccount {
        account: id("acct_yen"),
        currency: Currency::Jpy,
        name: None,
    };
    given_ok(&mut ledger, "usr_eve", open);
    given_ok(
        &mut ledger,
        "usr_eve",
        deposit("acct_yen", "1000000", Currency::Jpy),
    );
    let (actor, command) = match act {
        MoneyAct::Deposit => ("usr_eve", deposit(account, amount, currency)),
        MoneyAct::Request => (
            "usr_ann",
            Command::RequestPayout {
                payout: id(PO),
                account: id(account),
                payee: id("pay_lark"),
                money: money(amount, currency),
                reference: "invoice".into(),
                metadata: None,
            },
        ),
    };
    let got = ledger.execute(actor, command).map(|_| ());
    assert_eq!(got, expected, "{act:?} {account} {amount} {currency}");
}

#[rustfmt::skip]
#[test]
fn money_an_account_holds_one_currency() {
    use Currency::{Eur, Gbp, Jpy, Kwd, Usd};
    use MoneyAct::{Deposit, Request};
    let check = check_currency;
    let differs = || Err(validation("currency differs from the account's"));
    check(Deposit, "acct_ops", "10.00", Eur, Ok(()));
    check(Deposit, "acct_ops", "10.00", Usd, differs());
    check(Deposit, "acct_ops", "1000", Jpy, differs());
    check(Deposit, "acct_yen", "1000", Jpy, Ok(()));
    check(Deposit, "acct_yen", "10.00", Eur, differs());
    check(Request, "acct_ops", "10.00", Eur, Ok(()));
    check(Request, "acct_ops", "10.00", Gbp, differs());
    check(Request, "acct_ops", "10.000", Kwd, differs());
    check(Request, "acct_yen", "1000", Jpy, Ok(()));
    check(Request, "acct_yen", "10.00", Usd, differs());
}

/// Under a policy of EUR `rules` (minimum, approvals), a payout of `amount` approved by
/// `approvers` (given the role if needed) is authorized by cat.
fn check_threshold(
    rules: &[(&str, u32)],
    amount: &str,
    approvers: &[&str],
    expected: Result<(), Rejection>,
) {
    let mut ledger = standard_tenant("acme", 1, "50000.00");
    if !rules.is_empty() {
        let rules = rules.iter().map(|&(min, n)| rule(min, n)).collect();
        let proof = ledger.proof("usr_admin", "policy.update", POLICY_SUBJECT);
        given_ok(&mut ledger, "usr_admin", update_policy(rules, Some(proof)));
    }
    for approver in approvers {
        give_role(&mut ledger, approver, Role::Approver);
    }
    given_ok(&mut ledger, "usr_ann", request(PO, amount));
    for approver in approvers {
        given_ok(&mut ledger, approver, approve(PO));
    }
    let proof = ledger.proof("usr_cat", "payout.authorize", PO);
    let got = ledger
        .execute("usr_cat", authorize(PO, Some(proof)))
        .map(|_| ());
    assert_eq!(got, expected, "{rules:?} {amount} {approvers:?}");
}

#[rustfmt::skip]
#[test]
fn money_approval_thresholds_need_distinct_approvals() {
    let check = check_threshold;
    let short = || Err(invalid_state("payout is requested"));
    let two: &[(&str, u32)] = &[("10000.00", 2)];
    let two_three: &[(&str, u32)] = &[("10000.00", 2), ("20000.00", 3)];
    let three_two: &[(&str, u32)] = &[("20000.00", 3), ("10000.00", 2)];
    check(&[], "125.50", &["usr_bob"], Ok(()));
    check(&[], "49999.99", &["usr_bob"], Ok(()));
    check(two, "9999.99", &["usr_bob"], Ok(()));
    check(two, "10000.00", &["usr_bob"], short());
    check(two, "10000.00", &["usr_bob", "usr_bea"], Ok(()));
    check(two_three, "19999.99", &["usr_bob", "usr_bea"], Ok(()));
    check(two_three, "20000.00", &["usr_bob", "usr_bea"], short());
    check(two_three, "20000.00", &["usr_bob", "usr_bea", "usr_zoe"], Ok(()));
    check(three_two, "25000.00", &["usr_bob", "usr_bea"], short());
    check(three_two, "25000.00", &["usr_bob", "usr_bea", "usr_zoe"], Ok(()));
}

// ---------------------------------------------------------------------------------------
// 5. Lifecycle order
// ---------------------------------------------------------------------------------------

/// `act`, by its standard actor, on `po_1` in every stage (`ledgers`, one per stage, in
/// `Stage::ALL` order): decided in `allowed`, refused as `InvalidState` elsewhere, and as
/// `NotFound` before the payout exists.
fn check_lifecycle(ledgers: &mut [Ledger], act: Act, allowed: &[Stage]) {
    for (stage, ledger) in Stage::ALL.into_iter().zip(ledgers.iter_mut()) {
        let actor = act.standard_actor();
        let command = act.command(ledger, actor, PO, Tamper::Nothing);
        let got = decide_as(ledger, actor, &command, None).map(|_| ());
        let expected = match (allowed.contains(&stage), stage.status_name()) {
            (true, _) => Ok(()),
            (false, None) => Err(Rejection::NotFound { what: "payout" }),
            (false, Some(_)) if act == Act::Request => Err(invalid_state("payout already exists")),
            (false, Some(status)) => Err(invalid_state(&format!("payout is {status}"))),
        };
        assert_eq!(got, expected, "{act:?} when {stage:?}");
    }
}

#[rustfmt::skip]
#[test]
fn lifecycle_every_payout_command_in_every_state() {
    use Stage::*;
    let mut ledgers: Vec<Ledger> = Stage::ALL.into_iter().map(given).collect();
    let mut check = |act, allowed: &[Stage]| check_lifecycle(&mut ledgers, act, allowed);
    check(Act::Request, &[Unrequested]);
    check(Act::Approve, &[Requested]);
    check(Act::Reject, &[Requested, Approved]);
    check(Act::Authorize, &[Approved]);
    check(Act::Execute, &[Authorized]);
    check(Act::Release, &[Executed]);
    check(Act::Fail, &[Executed]);
    check(Act::Cancel, &[Requested, Approved, Authorized]);
}

// ---------------------------------------------------------------------------------------
// 6. Denied attempts are evidence
// ---------------------------------------------------------------------------------------

/// The `when` of an evidence row: the command `actor` sends.
type When = Box<dyn FnOnce(&mut Ledger, &str) -> Command>;

/// `act` on `po_1`, its proof spoiled by `tamper`.
fn act(act: Act, tamper: Tamper) -> When {
    Box::new(move |ledger: &mut Ledger, actor: &str| act.command(ledger, actor, PO, tamper))
}

/// A command that needs nothing from the ledger.
fn send(command: Command) -> When {
    Box::new(move |_: &mut Ledger, _: &str| command)
}

/// `actor` grants themselves the approver role, with a valid proof.
fn grant_self() -> When {
    Box::new(|ledger: &mut Ledger, actor: &str| {
        let proof = ledger.proof(actor, "role.grant", &format!("{actor}:approver"));
        grant(actor, Role::Approver, Some(proof))
    })
}

/// `actor` sends `when`'s command through `execute_or_record`: refused with `code`, and one
/// `command.rejected` (action, subject, reason) appended when `recorded`, none otherwise;
/// the state is unchanged, and the whole chain, checkpointed, still verifies.
fn check_evidence(mut ledger: Ledger, actor: &str, when: When, code: &str, recorded: bool) {
    let command = when(&mut ledger, actor);
    let action = command.action();
    let state_before = ledger.state.clone();
    let events_before = ledger.events.len();
    let rejection = ledger
        .execute_or_record(actor, command.clone())
        .expect_err(&format!("{actor} {action} is refused"));
    assert_eq!(rejection.code(), code, "{actor} {action}: {rejection}");
    let appended = &ledger.events[events_before..];
    if recorded {
        assert_eq!(appended.len(), 1, "{rejection}");
        assert_eq!(appended[0].actor, id::<PrincipalId>(actor));
        let EventBody::CommandRejected(CommandRejected {
            action: recorded_action,
            subject,
            reason,
            ..
        }) = &appended[0].body
        else {
            panic!("appended {}", appended[0].body.kind());
        };
        assert_eq!(recorded_action, action);
        assert_eq!(subject, &command.subject());
        assert_eq!(reason, code);
    } else {
        assert!(appended.is_empty(), "{rejection}: appended {appended:?}");
    }
    assert_eq!(ledger.state, state_before, "{rejection}");
    ledger.checkpoint();
    let report = verify_export(&ledger.export(), Some(ledger.keys.clone())).expect("usable");
    assert_eq!(report.first_break, None, "{rejection}");
    let rejected = u64::from(recorded);
    assert_eq!(report.summary.commands_rejected, rejected, "{rejection}");
}

#[rustfmt::skip]
#[test]
fn evidence_denied_attempts_are_appended_and_the_chain_verifies() {
    use Act::*;
    use Stage::*;
    use Tamper::Nothing;
    let check = check_evidence;
    let ann_approves = Given::new().grant("usr_ann", Role::Approver);
    let too_big = Given::new().amount("5000.00");
    let long = "x".repeat(141);
    // Forbidden.
    check(given(Requested), "usr_cat", act(Approve, Nothing), "forbidden", true);
    check(given(Requested), "usr_zed", act(Approve, Nothing), "forbidden", true);
    check(given(Unrequested), "usr_admin", act(Deposit, Nothing), "forbidden", true);
    check(given(Executed), "usr_dan", act(Release, Nothing), "forbidden", true);
    // Four-eyes.
    check(ann_approves.at(Requested), "usr_ann", act(Approve, Nothing), "four_eyes", true);
    check(given(Unrequested), "usr_admin", grant_self(), "four_eyes", true);
    // 2FA.
    check(given(Approved), "usr_cat", act(Authorize, Tamper::Missing), "two_factor_required", true);
    check(given(Authorized), "usr_dan", act(Execute, Tamper::Missing), "two_factor_required", true);
    check(given(Executed), "usr_rex", act(Release, Tamper::Missing), "two_factor_required", true);
    check(given(Unrequested), "usr_admin", act(UpdatePolicy, Tamper::Missing), "two_factor_required", true);
    check(given(Approved), "usr_cat", act(Authorize, Tamper::FlipSignatureByte(7)), "two_factor_invalid", true);
    check(given(Approved), "usr_cat", act(Authorize, Tamper::Wait(HOUR_MICROS)), "two_factor_invalid", true);
    check(given(Approved), "usr_cat", act(Authorize, Tamper::Actor("usr_bob")), "two_factor_invalid", true);
    check(given(Unrequested), "usr_admin", act(GrantRole, Tamper::Step(0)), "two_factor_invalid", true);
    // Funds.
    check(too_big.at(Approved), "usr_cat", act(Authorize, Nothing), "insufficient_funds", true);
    // State.
    check(given(Requested), "usr_dan", act(Execute, Nothing), "invalid_state", true);
    check(given(Released), "usr_ann", act(Cancel, Nothing), "invalid_state", true);
    check(given(Rejected), "usr_bob", act(Approve, Nothing), "invalid_state", true);
    check(given(Authorized), "usr_rex", act(Fail, Nothing), "invalid_state", true);
    check(given(Requested), "usr_ann", act(Request, Nothing), "invalid_state", true);
    check(given(Unrequested), "usr_admin", send(add_user("usr_bob")), "invalid_state", true);
    // Unknown objects and bad values are answered, not recorded.
    check(given(Unrequested), "usr_bob", act(Approve, Nothing), "not_found", false);
    check(given(Unrequested), "usr_eve", send(deposit("acct_void", "5.00", Currency::Eur)), "not_found", false);
    check(given(Unrequested), "usr_admin", send(grant("usr_nobody", Role::Auditor, None)), "not_found", false);
    check(given(Unrequested), "usr_admin", send(revoke("usr_nobody", Role::Approver)), "not_found", false);
    check(given(Unrequested), "usr_eve", send(deposit("acct_ops", "5.00", Currency::Usd)), "validation", false);
    check(given(Requested), "usr_bob", send(reject(PO, " ")), "validation", false);
    check(given(Unrequested), "usr_ann", send(request_with_reference(PO, "1.00", &long)), "validation", false);
}

#[test]
fn evidence_many_denials_then_a_payout_verify_as_one_chain() {
    let mut ledger = given(Stage::Requested);
    let mut denied = 0;
    for actor in ["usr_ann", "usr_cat", "usr_dan", "usr_aud", "usr_zed"] {
        let got = ledger.execute_or_record(actor, approve(PO));
        denied += u64::from(got.is_err());
    }
    given_ok(&mut ledger, "usr_bob", approve(PO));
    for actor in ["usr_bob", "usr_cat"] {
        let got = ledger.execute_or_record(actor, authorize(PO, None));
        denied += u64::from(got.is_err());
    }
    let proof = ledger.proof("usr_cat", "payout.authorize", PO);
    given_ok(&mut ledger, "usr_cat", authorize(PO, Some(proof)));
    assert_eq!(
        ledger.state.payouts[&id(PO)].status(),
        PayoutStatus::Authorized
    );
    ledger.checkpoint();
    let report = verify_export(&ledger.export(), Some(ledger.keys.clone())).expect("usable");
    assert_eq!(report.first_break, None);
    assert_eq!(denied, 7);
    assert_eq!(report.summary.commands_rejected, denied);
}
