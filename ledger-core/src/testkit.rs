//! An in-memory writer for tests, benchmarks, fuzz seeds and the export generator:
//! decides with the writer's rules, seals, checkpoints and exports. Deterministic: keys
//! come from fixed seeds, ids from a counter, time from a simulated clock.

use ed25519_dalek::SigningKey;

use crate::checkpoint::Checkpoint;
use crate::command::{Command, Context, Enforcement, Rejection};
use crate::crypto::{public_key_of, Algorithm, KeyPurpose, KeyRecord, KeySet};
use crate::decide::{decide, decide_batch, rejection_event};
use crate::event::{ChainHead, Event, EventBody, ExtraData, REQUEST_ID_FIELD};
use crate::ids::{EventId, PrincipalId, TenantId};
use crate::proof::{batch_subject, DirectCheck, TwoFactorProof, UnsignedProof};
use crate::state::TenantState;
use crate::time::Timestamp;
use crate::verify::{lines, Header, EXPORT_FORMAT};

/// 2026-11-22T09:00:00Z, where simulated clocks start.
pub const EPOCH_MICROS: i64 = 1_795_338_000_000_000;

fn id<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    match text.parse() {
        Ok(value) => value,
        Err(e) => panic!("testkit id {text:?}: {e:?}"),
    }
}

/// One tenant's chain, written in memory.
#[derive(Debug)]
pub struct Ledger {
    /// The tenant.
    pub tenant: TenantId,
    /// Its state.
    pub state: TenantState,
    /// Its head.
    pub head: ChainHead,
    /// Every event, in order.
    pub events: Vec<Event>,
    /// Checkpoints written.
    pub checkpoints: Vec<Checkpoint>,
    /// The public keys.
    pub keys: KeySet,
    /// The 2FA key.
    pub two_factor_key: SigningKey,
    /// The checkpoint key.
    pub checkpoint_key: SigningKey,
    /// Simulated time.
    pub clock: Timestamp,
    next_event: u128,
    next_step: u64,
    keep_events: bool,
    extra: ExtraData,
}

impl Ledger {
    /// A new, empty tenant with keys derived from `seed`.
    pub fn new(tenant: &str, seed: u8) -> Self {
        let two_factor_key = SigningKey::from_bytes(&[seed.wrapping_add(1); 32]);
        let checkpoint_key = SigningKey::from_bytes(&[seed.wrapping_add(101); 32]);
        let not_before = Timestamp::from_unix_micros(EPOCH_MICROS - 86_400_000_000);
        let mut keys = KeySet::new();
        for (key_id, purpose, key) in [
            ("2fa-1", KeyPurpose::TwoFactor, &two_factor_key),
            ("ckpt-1", KeyPurpose::Checkpoint, &checkpoint_key),
        ] {
            let record = KeyRecord {
                key_id: id(key_id),
                purpose,
                algorithm: Algorithm::Ed25519,
                public_key: public_key_of(key),
                not_before,
                not_after: None,
            };
            if let Err(e) = keys.insert(record) {
                unreachable!("distinct ids: {e}");
            }
        }
        let tenant: TenantId = id(tenant);
        Self {
            state: TenantState::new(tenant.clone()),
            tenant,
            head: ChainHead::GENESIS,
            events: Vec::new(),
            checkpoints: Vec::new(),
            keys,
            two_factor_key,
            checkpoint_key,
            clock: Timestamp::from_unix_micros(EPOCH_MICROS),
            next_event: u128::from(seed) << 64,
            next_step: 59_000_000,
            keep_events: true,
            extra: ExtraData::new(),
        }
    }

    /// Stops keeping events in memory (for generating very long chains as a stream).
    pub fn forget_events(&mut self) {
        self.keep_events = false;
        self.events.clear();
    }

    /// Records `request_id` in the data of the events sealed from now on (as the service
    /// does with the id of each request), or stops recording one.
    pub fn set_request_id(&mut self, request_id: Option<&str>) {
        match request_id {
            Some(id) => {
                self.extra
                    .insert(REQUEST_ID_FIELD.to_owned(), serde_json::Value::from(id));
            }
            None => {
                self.extra.remove(REQUEST_ID_FIELD);
            }
        }
    }

    /// Advances the clock.
    pub fn tick(&mut self, micros: i64) {
        self.clock = Timestamp::from_unix_micros(self.clock.unix_micros() + micros);
    }

    /// A fresh proof for `actor`, verified now, with the next TOTP step.
    pub fn proof(&mut self, actor: &str, action: &str, subject: &str) -> TwoFactorProof {
        self.next_step += 1;
        UnsignedProof {
            v: 1,
            tenant: self.tenant.clone(),
            actor: id(actor),
            action: action.to_owned(),
            subject: subject.to_owned(),
            step: self.next_step,
            verified_at: self.clock,
            key_id: id("2fa-1"),
        }
        .sign(&self.two_factor_key)
    }

    /// A fresh batch proof over `subjects`.
    pub fn batch_proof(
        &mut self,
        actor: &str,
        action: &str,
        subjects: &[String],
    ) -> TwoFactorProof {
        self.proof(actor, action, &batch_subject(subjects))
    }

    fn seal(&mut self, actor: &PrincipalId, body: EventBody) -> Event {
        self.next_event += 1;
        let event_id = EventId::from_uuid(uuid::Uuid::from_u128(self.next_event));
        let (event, _bytes) = match Event::seal_with(
            self.head,
            self.tenant.clone(),
            event_id,
            self.clock,
            actor.clone(),
            body,
            &self.extra,
        ) {
            Ok(sealed) => sealed,
            Err(e) => panic!("testkit: cannot seal: {e}"),
        };
        self.state.apply_mut(&event);
        self.head = event.head();
        event
    }

    fn append(&mut self, actor: &PrincipalId, bodies: Vec<EventBody>) -> Vec<Event> {
        self.tick(1_000);
        let sealed: Vec<Event> = bodies.into_iter().map(|b| self.seal(actor, b)).collect();
        if self.keep_events {
            self.events.extend(sealed.iter().cloned());
        }
        sealed
    }

    /// Decides `command` for `actor` with the writer's rules and appends its events.
    pub fn execute(&mut self, actor: &str, command: Command) -> Result<Vec<Event>, Rejection> {
        let actor: PrincipalId = id(actor);
        let keys = self.keys.clone();
        let signatures = DirectCheck(&keys);
        let at = Timestamp::from_unix_micros(self.clock.unix_micros() + 1_000);
        let ctx = Context {
            tenant: &self.tenant,
            actor: &actor,
            at,
            scopes: None,
            signatures: &signatures,
            enforcement: Enforcement::Writer,
        };
        let bodies = decide(&self.state, &command, &ctx)?;
        Ok(self.append(&actor, bodies))
    }

    /// Like [`Ledger::execute`], but a denial that is evidence is appended as
    /// `command.rejected`, as the API does.
    pub fn execute_or_record(
        &mut self,
        actor: &str,
        command: Command,
    ) -> Result<Vec<Event>, Rejection> {
        match self.execute(actor, command.clone()) {
            Ok(events) => Ok(events),
            Err(rejection) => {
                if rejection.is_evidence() {
                    let actor_id: PrincipalId = id(actor);
                    self.append(&actor_id, vec![rejection_event(&command, &rejection)]);
                }
                Err(rejection)
            }
        }
    }

    /// Decides a batch all or nothing and appends its events.
    pub fn execute_batch(
        &mut self,
        actor: &str,
        commands: &[Command],
    ) -> Result<Vec<Event>, (usize, Rejection)> {
        let actor: PrincipalId = id(actor);
        let keys = self.keys.clone();
        let signatures = DirectCheck(&keys);
        let at = Timestamp::from_unix_micros(self.clock.unix_micros() + 1_000);
        let ctx = Context {
            tenant: &self.tenant,
            actor: &actor,
            at,
            scopes: None,
            signatures: &signatures,
            enforcement: Enforcement::Writer,
        };
        let bodies = decide_batch(&self.state, commands, &ctx)?;
        Ok(self.append(&actor, bodies))
    }

    /// Signs a checkpoint of the current head.
    pub fn checkpoint(&mut self) -> Checkpoint {
        let checkpoint = Checkpoint::sign(
            self.tenant.clone(),
            self.head.seq,
            self.head.hash,
            self.clock,
            id("ckpt-1"),
            &self.checkpoint_key,
        );
        self.checkpoints.push(checkpoint.clone());
        checkpoint
    }

    /// The export header for the chain so far.
    pub fn header(&self) -> Header {
        Header {
            format: EXPORT_FORMAT.to_owned(),
            v: 1,
            tenant: self.tenant.clone(),
            from_seq: 1,
            to_seq: self.head.seq,
            exported_at: self.clock,
        }
    }

    /// The header and key lines.
    pub fn export_prologue(&self) -> Vec<String> {
        let mut out = vec![lines::header(&self.header())];
        out.extend(self.keys.iter().map(lines::key));
        out
    }

    /// The whole export (events kept in memory), one line per record.
    pub fn export_lines(&self) -> Vec<String> {
        let mut out = self.export_prologue();
        for event in &self.events {
            match lines::event(event) {
                Ok(line) => out.push(line),
                Err(e) => panic!("testkit: {e}"),
            }
        }
        out.extend(self.checkpoints.iter().map(lines::checkpoint));
        out
    }

    /// The whole export as text.
    pub fn export(&self) -> String {
        let mut text = self.export_lines().join("\n");
        text.push('\n');
        text
    }
}

/// The cast of a standard tenant: an admin, one person per role, a funded EUR account
/// and a payee. Names: `usr_admin`, `usr_ann` (requester), `usr_bob` and `usr_bea`
/// (approvers), `usr_cat` (authorizer), `usr_dan` (executor), `usr_rex` (releaser),
/// `usr_eve` (treasurer), `usr_aud` (auditor), `svc_settlement` (releaser).
pub fn standard_tenant(tenant: &str, seed: u8, deposit: &str) -> Ledger {
    use crate::money::{Currency, Money};
    use crate::policy::Role;
    let mut ledger = Ledger::new(tenant, seed);
    let must = |r: Result<Vec<Event>, Rejection>| {
        if let Err(e) = r {
            panic!("standard tenant: {e}");
        }
    };
    must(ledger.execute(
        "svc_operator",
        Command::CreateTenant {
            name: "Acme Marketplace".into(),
            admin: Some(id("usr_admin")),
        },
    ));
    for (user, role) in [
        ("usr_ann", Role::Requester),
        ("usr_bob", Role::Approver),
        ("usr_bea", Role::Approver),
        ("usr_cat", Role::Authorizer),
        ("usr_dan", Role::Executor),
        ("usr_rex", Role::Releaser),
        ("usr_eve", Role::Treasurer),
        ("usr_aud", Role::Auditor),
        ("svc_settlement", Role::Releaser),
    ] {
        if !ledger
            .state
            .principals
            .get(&id(user))
            .is_some_and(|p| p.added)
        {
            must(ledger.execute(
                "usr_admin",
                Command::AddUser {
                    user: id(user),
                    name: user.trim_start_matches("usr_").to_owned(),
                },
            ));
        }
        let proof = ledger.proof("usr_admin", "role.grant", &format!("{user}:{role}"));
        must(ledger.execute(
            "usr_admin",
            Command::GrantRole {
                user: id(user),
                role,
                two_factor: Some(proof),
                batch: None,
            },
        ));
    }
    must(ledger.execute(
        "usr_eve",
        Command::OpenAccount {
            account: id("acct_ops"),
            currency: Currency::Eur,
            name: Some("Operations".into()),
        },
    ));
    let money = match Money::parse(deposit, Currency::Eur) {
        Ok(money) => money,
        Err(e) => panic!("deposit {deposit}: {e}"),
    };
    must(ledger.execute(
        "usr_eve",
        Command::Deposit {
            account: id("acct_ops"),
            money,
            reference: Some("initial funding".into()),
        },
    ));
    must(ledger.execute(
        "usr_admin",
        Command::AddPayee {
            payee: id("pay_lark"),
            name: "Larkspur Ltd".into(),
            iban: "v1:k1:00ff".into(),
        },
    ));
    ledger
}

/// Who acts in [`play`], by index: the standard tenant's cast.
pub const CAST: [&str; 9] = [
    "usr_ann",
    "usr_bob",
    "usr_bea",
    "usr_cat",
    "usr_dan",
    "usr_rex",
    "svc_settlement",
    "usr_eve",
    "usr_admin",
];

/// One step of a random scenario for property tests: an action on payout
/// `po_<payout>` by `CAST[actor]`, for an amount of `cents` euro cents, recorded with a
/// request id when `request` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// 0 request, 1 approve, 2 authorize, 3 execute, 4 release, 5 fail, 6 cancel,
    /// 7 deposit, 8 approval policy update (always by the admin), 9 reject (modulo 10).
    pub action: u8,
    /// Which payout (`po_<n>`).
    pub payout: u8,
    /// Index into [`CAST`] (modulo its length).
    pub actor: u8,
    /// An amount in cents, from 1.
    pub cents: u32,
    /// Whether the step's events carry a request id (`req-<index>`).
    pub request: bool,
}

/// Plays `steps` on a [`standard_tenant`] ledger with the writer's rules, money movers
/// given fresh proofs, denials that are evidence recorded as `command.rejected`, and two
/// seconds between steps. Returns how many commands were decided (accepted, or denied
/// and recorded): each yields exactly one event.
pub fn play(ledger: &mut Ledger, steps: &[Step]) -> usize {
    use crate::money::{Currency, Money};
    use crate::policy::ApprovalRule;
    let mut decided = 0;
    for (index, step) in steps.iter().enumerate() {
        let mut actor = CAST[usize::from(step.actor) % CAST.len()];
        let po = format!("po_{}", step.payout);
        let cents = step.cents.max(1);
        let amount = format!("{}.{:02}", cents / 100, cents % 100);
        let money = match Money::parse(&amount, Currency::Eur) {
            Ok(money) => money,
            Err(e) => panic!("testkit amount {amount}: {e}"),
        };
        let proof = |ledger: &mut Ledger, actor: &str, action: &str, subject: &str| {
            Some(ledger.proof(actor, action, subject))
        };
        let command = match step.action % 10 {
            0 => Command::RequestPayout {
                payout: id(&po),
                account: id("acct_ops"),
                payee: id("pay_lark"),
                money,
                reference: format!("r{index}"),
                metadata: None,
            },
            1 => Command::ApprovePayout {
                payout: id(&po),
                batch: None,
            },
            2 => Command::AuthorizePayout {
                payout: id(&po),
                two_factor: proof(ledger, actor, "payout.authorize", &po),
                batch: None,
            },
            3 => Command::ExecutePayout {
                payout: id(&po),
                rail: None,
                two_factor: proof(ledger, actor, "payout.execute", &po),
                batch: None,
            },
            4 => Command::ReleasePayout {
                payout: id(&po),
                two_factor: if actor.starts_with("svc_") {
                    None
                } else {
                    proof(ledger, actor, "payout.release", &po)
                },
                batch: None,
            },
            5 => Command::FailPayout {
                payout: id(&po),
                reason: "bounced".into(),
            },
            6 => Command::CancelPayout {
                payout: id(&po),
                reason: "stop".into(),
            },
            7 => Command::Deposit {
                account: id("acct_ops"),
                money,
                reference: None,
            },
            8 => {
                actor = "usr_admin";
                Command::UpdatePolicy {
                    rules: vec![ApprovalRule {
                        currency: Currency::Eur,
                        min_amount: amount.clone(),
                        approvals: 1 + cents % 2,
                    }],
                    two_factor: proof(
                        ledger,
                        actor,
                        "policy.update",
                        crate::command::POLICY_SUBJECT,
                    ),
                }
            }
            _ => Command::RejectPayout {
                payout: id(&po),
                reason: "no".into(),
            },
        };
        let request_id = format!("req-{index}");
        ledger.set_request_id(step.request.then_some(request_id.as_str()));
        let before = ledger.events.len();
        let _ = ledger.execute_or_record(actor, command);
        decided += usize::from(ledger.events.len() > before);
        ledger.set_request_id(None);
        ledger.tick(2_000_000);
    }
    decided
}
