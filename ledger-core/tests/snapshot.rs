//! Snapshots: at every seq of a varied chain, the state survives JSON and restores
//! exactly, and a restored snapshot plus the tail equals the whole replay.

use ledger_core::command::Command;
use ledger_core::event::ChainHead;
use ledger_core::money::{Currency, Money};
use ledger_core::policy::ApprovalRule;
use ledger_core::snapshot::{Snapshot, SnapshotError};
use ledger_core::state::TenantState;
use ledger_core::testkit::{standard_tenant, Ledger};

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect(s)
}

fn request(ledger: &mut Ledger, po: &str, amount: &str) {
    ledger
        .execute(
            "usr_ann",
            Command::RequestPayout {
                payout: id(po),
                account: id("acct_ops"),
                payee: id("pay_lark"),
                money: Money::parse(amount, Currency::Eur).expect("money"),
                reference: po.into(),
                metadata: None,
            },
        )
        .expect("request");
}

/// A chain with every kind of state: open and closed payouts, holds, a policy, proofs,
/// a denied attempt.
fn chain() -> Ledger {
    let mut ledger = standard_tenant("acme", 4, "50000.00");
    let proof = ledger.proof("usr_admin", "policy.update", "policy:approvals");
    ledger
        .execute(
            "usr_admin",
            Command::UpdatePolicy {
                rules: vec![ApprovalRule {
                    currency: Currency::Eur,
                    min_amount: "10000.00".into(),
                    approvals: 2,
                }],
                two_factor: Some(proof),
            },
        )
        .expect("policy");
    for (n, amount) in ["12.00", "15000.00", "7.50"].iter().enumerate() {
        let po = format!("po_{n}");
        request(&mut ledger, &po, amount);
        for approver in ["usr_bob", "usr_bea"] {
            let _ = ledger.execute(
                approver,
                Command::ApprovePayout {
                    payout: id(&po),
                    batch: None,
                },
            );
        }
        let proof = ledger.proof("usr_cat", "payout.authorize", &po);
        ledger
            .execute(
                "usr_cat",
                Command::AuthorizePayout {
                    payout: id(&po),
                    two_factor: Some(proof),
                    batch: None,
                },
            )
            .expect("authorize");
    }
    let proof = ledger.proof("usr_dan", "payout.execute", "po_0");
    ledger
        .execute(
            "usr_dan",
            Command::ExecutePayout {
                payout: id("po_0"),
                rail: None,
                two_factor: Some(proof),
                batch: None,
            },
        )
        .expect("execute");
    ledger
        .execute(
            "svc_settlement",
            Command::ReleasePayout {
                payout: id("po_0"),
                two_factor: None,
                batch: None,
            },
        )
        .expect("release");
    ledger
        .execute(
            "usr_ann",
            Command::CancelPayout {
                payout: id("po_2"),
                reason: "dup".into(),
            },
        )
        .expect("cancel");
    let _ = ledger.execute_or_record(
        "usr_ann",
        Command::ApprovePayout {
            payout: id("po_1"),
            batch: None,
        },
    );
    ledger
}

fn replay(ledger: &Ledger, upto: usize) -> (TenantState, ChainHead) {
    let mut state = TenantState::new(ledger.tenant.clone());
    let mut head = ChainHead::GENESIS;
    for event in &ledger.events[..upto] {
        state.apply_mut(event);
        head = event.head();
    }
    (state, head)
}

#[test]
fn every_prefix_round_trips_and_snapshot_plus_tail_equals_replay() {
    let ledger = chain();
    assert!(ledger.events.len() > 30);
    let closed = ledger
        .state
        .payouts
        .values()
        .filter(|p| matches!(p, ledger_core::state::Payout::Closed(_)))
        .count();
    assert_eq!(
        (closed, ledger.state.payouts.len()),
        (2, 3),
        "open and closed payouts"
    );
    let (full, full_head) = replay(&ledger, ledger.events.len());
    assert_eq!(full, ledger.state);
    for upto in 0..=ledger.events.len() {
        let (state, head) = replay(&ledger, upto);
        let text = Snapshot::of(&state, head).to_json();
        let restored = Snapshot::from_json(&text)
            .expect("parse")
            .restore()
            .expect("restore");
        assert_eq!(restored, (state.clone(), head), "at seq {upto}");
        // Deterministic bytes: the same state always gives the same snapshot.
        assert_eq!(Snapshot::of(&restored.0, restored.1).to_json(), text);
        let (mut resumed, mut resumed_head) = restored;
        for event in &ledger.events[upto..] {
            resumed.apply_mut(event);
            resumed_head = event.head();
        }
        assert_eq!(
            (resumed, resumed_head),
            (full.clone(), full_head),
            "resumed at {upto}"
        );
    }
}

#[test]
fn a_malformed_snapshot_is_refused() {
    let ledger = chain();
    let text = Snapshot::of(&ledger.state, ledger.head).to_json();
    assert!(matches!(
        Snapshot::from_json(&text.replacen("\"v\":2", "\"v\":3", 1))
            .expect("parse")
            .restore(),
        Err(SnapshotError::Version(3))
    ));
    assert!(Snapshot::from_json("{}").is_err());
    assert!(
        Snapshot::from_json(&text.replacen("\"created\"", "\"extra\":1,\"created\"", 1)).is_err()
    );
}
