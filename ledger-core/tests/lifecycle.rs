//! Given/when/then over the whole lifecycle, written by the in-memory writer and read
//! back by the verifier: the writer and the auditor agree.

use ledger_core::money::{Currency, Money};
use ledger_core::testkit::standard_tenant;
use ledger_core::verify::verify_export;
use ledger_core::Command;

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect(s)
}

#[test]
fn a_payout_through_every_gate_verifies_and_moves_the_money() {
    let mut ledger = standard_tenant("acme", 1, "1000.00");
    let po = "po_1";
    ledger
        .execute(
            "usr_ann",
            Command::RequestPayout {
                payout: id(po),
                account: id("acct_ops"),
                payee: id("pay_lark"),
                money: Money::parse("125.5", Currency::Eur).expect("money"),
                reference: "inv-1".into(),
                metadata: None,
            },
        )
        .expect("request");
    ledger
        .execute(
            "usr_bob",
            Command::ApprovePayout {
                payout: id(po),
                batch: None,
            },
        )
        .expect("approve");
    let proof = ledger.proof("usr_cat", "payout.authorize", po);
    ledger
        .execute(
            "usr_cat",
            Command::AuthorizePayout {
                payout: id(po),
                two_factor: Some(proof),
                batch: None,
            },
        )
        .expect("authorize");
    let account = &ledger.state.accounts[&id("acct_ops")];
    assert_eq!(account.available.to_string(), "874.50");
    assert_eq!(account.held.to_string(), "125.50");
    let proof = ledger.proof("usr_dan", "payout.execute", po);
    ledger
        .execute(
            "usr_dan",
            Command::ExecutePayout {
                payout: id(po),
                rail: Some("SEPA".into()),
                two_factor: Some(proof),
                batch: None,
            },
        )
        .expect("execute");
    let proof = ledger.proof("usr_rex", "payout.release", po);
    ledger
        .execute(
            "usr_rex",
            Command::ReleasePayout {
                payout: id(po),
                two_factor: Some(proof),
                batch: None,
            },
        )
        .expect("release");
    let account = &ledger.state.accounts[&id("acct_ops")];
    assert_eq!(account.available.to_string(), "874.50");
    assert_eq!(account.held.to_string(), "0.00");
    ledger.checkpoint();

    let report = verify_export(&ledger.export(), Some(ledger.keys.clone())).expect("usable");
    assert_eq!(report.first_break, None);
    assert!(report.summary.keys_pinned);
    assert_eq!(report.summary.money_movements_with_two_factor, 3);
    assert_eq!(
        report.summary.released[&Currency::Eur].to_string(),
        "125.50"
    );
    assert_eq!(report.summary.checkpoints_verified, 1);
}
