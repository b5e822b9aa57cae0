//! Properties of the read models over random command sequences decided by the writer's
//! own rules (`testkit::Ledger`): a rebuild equals the incrementally built (and
//! persisted) model, balances equal the sum of postings and the core's state, the
//! payouts view agrees with the core, and the audit view has one row per decided
//! command, accepted or denied.

use ledger_core::command::Command;
use ledger_core::event::Event;
use ledger_core::money::{Currency, Money};
use ledger_core::state::Bucket;
use ledger_core::testkit::{standard_tenant, Ledger};
use projections::{Outcome, ReadModel};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect(s)
}

fn eur(cents: u32) -> Money {
    Money::parse(
        &format!("{}.{:02}", cents / 100, cents % 100),
        Currency::Eur,
    )
    .expect("money")
}

/// One step: an action on payout `n` by `actor`.
#[derive(Debug, Clone)]
struct Step {
    action: u8,
    payout: u8,
    actor: u8,
    cents: u32,
}

const ACTORS: [&str; 8] = [
    "usr_ann",
    "usr_bob",
    "usr_bea",
    "usr_cat",
    "usr_dan",
    "usr_rex",
    "svc_settlement",
    "usr_eve",
];

fn step() -> impl Strategy<Value = Step> {
    (0u8..8, 0u8..6, 0u8..8, 1u32..5_000_000).prop_map(|(action, payout, actor, cents)| Step {
        action,
        payout,
        actor,
        cents,
    })
}

/// Runs the steps; returns the number of commands decided (accepted, or denied and
/// recorded).
fn run(ledger: &mut Ledger, steps: &[Step]) -> usize {
    let mut decided = 0;
    for (i, s) in steps.iter().enumerate() {
        let actor = ACTORS[usize::from(s.actor)];
        let po = format!("po_{}", s.payout);
        let proof = |ledger: &mut Ledger, action: &str| Some(ledger.proof(actor, action, &po));
        let command = match s.action {
            0 => Command::RequestPayout {
                payout: id(&po),
                account: id("acct_ops"),
                payee: id("pay_lark"),
                money: eur(s.cents),
                reference: format!("r{i}"),
                metadata: None,
            },
            1 => Command::ApprovePayout {
                payout: id(&po),
                batch: None,
            },
            2 => Command::AuthorizePayout {
                payout: id(&po),
                two_factor: proof(ledger, "payout.authorize"),
                batch: None,
            },
            3 => Command::ExecutePayout {
                payout: id(&po),
                rail: None,
                two_factor: proof(ledger, "payout.execute"),
                batch: None,
            },
            4 => Command::ReleasePayout {
                payout: id(&po),
                two_factor: if actor.starts_with("svc_") {
                    None
                } else {
                    proof(ledger, "payout.release")
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
            _ => Command::Deposit {
                account: id("acct_ops"),
                money: eur(s.cents),
                reference: None,
            },
        };
        let before = ledger.events.len();
        let _ = ledger.execute_or_record(actor, command);
        decided += usize::from(ledger.events.len() > before);
        ledger.tick(2_000_000);
    }
    decided
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn read_models_agree_with_the_chain(steps in prop::collection::vec(step(), 1..120), split in 0usize..200) {
        let mut ledger = standard_tenant("acme", 5, "100000.00");
        let setup = ledger.events.len();
        let decided = run(&mut ledger, &steps);
        let events: &[Event] = &ledger.events;

        // Incremental, persisted between two pages (as the projector does), equals a rebuild.
        let cut = split.min(events.len());
        let mut incremental = ReadModel::rebuild(&events[..cut]);
        let stored = serde_json::to_string(&incremental).expect("serialise");
        incremental = serde_json::from_str(&stored).expect("deserialise");
        for event in &events[cut.saturating_sub(3)..] {
            incremental.apply(event); // a replayed overlap is ignored
        }
        let rebuilt = ReadModel::rebuild(events);
        prop_assert_eq!(&incremental, &rebuilt);
        prop_assert_eq!(rebuilt.seq, ledger.head.seq);

        // Balances: the core's state and the sum of postings per bucket.
        for (account, balance) in &rebuilt.balances.accounts {
            let core = &ledger.state.accounts[account];
            prop_assert_eq!(balance.available, core.available);
            prop_assert_eq!(balance.held, core.held);
            let sum = |bucket: Bucket| -> Decimal {
                events
                    .iter()
                    .flat_map(|e| e.body.postings())
                    .filter(|p| p.account == bucket.to_text())
                    .map(|p| p.amount.parse::<Decimal>().expect("amount"))
                    .sum()
            };
            prop_assert_eq!(balance.available, sum(Bucket::Available(account.clone())));
            prop_assert_eq!(balance.held, sum(Bucket::Held(account.clone())));
            prop_assert!(balance.available >= Decimal::ZERO && balance.held >= Decimal::ZERO);
            // One account: everything paid out came from it.
            prop_assert_eq!(balance.released, sum(Bucket::WorldPayees));
        }

        // Payouts: the same status as the core.
        for (payout, row) in &rebuilt.payouts.payouts {
            prop_assert_eq!(row.status.as_str(), ledger.state.payouts[payout].status().name());
        }
        prop_assert_eq!(rebuilt.payouts.payouts.len(), ledger.state.payouts.len());

        // Audit: one row per decided command (each of these commands yields one event).
        prop_assert_eq!(rebuilt.audit.rows.len(), setup + decided);
        let denied = rebuilt.audit.rows.iter().filter(|r| r.result == Outcome::Denied).count();
        let rejected = events.iter().filter(|e| e.body.kind() == "command.rejected").count();
        prop_assert_eq!(denied, rejected);
        prop_assert!(rebuilt.audit.rows.iter().all(|r| (r.result == Outcome::Denied) == r.reason.is_some()));
    }
}

/// A payout through every gate, and a denied attempt: every view shows it.
#[test]
fn one_payout_through_every_gate() {
    let mut ledger = standard_tenant("acme", 5, "100000.00");
    let steps: Vec<Step> = [(0, 0), (1, 1), (2, 3), (3, 4), (4, 6), (1, 0)]
        .iter()
        .map(|&(action, actor)| Step {
            action,
            payout: 0,
            actor,
            cents: 125_050,
        })
        .collect();
    let decided = run(&mut ledger, &steps);
    assert_eq!(decided, 6);
    let model = ReadModel::rebuild(&ledger.events);
    let row = &model.payouts.payouts[&id("po_0")];
    assert_eq!(row.status, "released");
    assert_eq!(row.amount, "1250.50");
    assert_eq!(row.requested.by.as_str(), "usr_ann");
    assert_eq!(row.approvals.len(), 1);
    assert_eq!(
        row.authorized.as_ref().map(|g| g.by.as_str()),
        Some("usr_cat")
    );
    assert_eq!(
        row.executed.as_ref().map(|g| g.by.as_str()),
        Some("usr_dan")
    );
    assert_eq!(
        row.released.as_ref().map(|g| g.by.as_str()),
        Some("svc_settlement")
    );
    let balance = &model.balances.accounts[&id("acct_ops")];
    assert_eq!(balance.released.to_string(), "1250.50");
    assert_eq!(balance.deposited.to_string(), "100000.00");
    assert_eq!(balance.available.to_string(), "98749.50");
    let last = model.audit.rows.last().expect("rows");
    assert_eq!(
        (last.action.as_str(), last.result),
        ("payout.approve", Outcome::Denied)
    );
    assert_eq!(last.actor.as_str(), "usr_ann");
}
