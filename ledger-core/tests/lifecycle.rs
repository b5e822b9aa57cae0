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

/// Events whose data carries the request id as an extra field (as the service writes
/// them) verify like any other: the field is hashed, the typed bodies the verifier
/// re-decides are unchanged, and an edit of the field breaks the chain at its seq.
#[test]
fn request_ids_in_the_data_verify_and_are_covered_by_the_hash() {
    use ledger_core::event::REQUEST_ID_FIELD;
    use ledger_core::verify::BreakLocation;

    let mut ledger = standard_tenant("acme", 1, "1000.00");
    let po = "po_1";
    ledger.set_request_id(Some("req-request"));
    ledger
        .execute(
            "usr_ann",
            Command::RequestPayout {
                payout: id(po),
                account: id("acct_ops"),
                payee: id("pay_lark"),
                money: Money::parse("10.00", Currency::Eur).expect("money"),
                reference: "inv-1".into(),
                metadata: None,
            },
        )
        .expect("request");
    // A denied attempt, recorded as evidence, carries its request id too.
    ledger.set_request_id(Some("req-denied"));
    let denied = ledger.execute_or_record(
        "usr_ann",
        Command::ApprovePayout {
            payout: id(po),
            batch: None,
        },
    );
    assert!(denied.is_err());
    ledger.set_request_id(Some("req-approve"));
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
    ledger.set_request_id(Some("req-authorize"));
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
    ledger.checkpoint();

    let tail: Vec<Option<String>> = ledger.events[ledger.events.len() - 4..]
        .iter()
        .map(|e| e.data_string(REQUEST_ID_FIELD))
        .collect();
    assert_eq!(
        tail,
        ["req-request", "req-denied", "req-approve", "req-authorize"].map(|s| Some(s.to_owned()))
    );
    let export = ledger.export();
    let report = verify_export(&export, Some(ledger.keys.clone())).expect("usable");
    assert_eq!(report.first_break, None, "{report:#?}");
    assert_eq!(report.summary.money_movements_with_two_factor, 1);

    let edited = export.replacen(
        "\"request_id\":\"req-approve\"",
        "\"request_id\":\"req-forged\"",
        1,
    );
    assert_ne!(edited, export);
    let report = verify_export(&edited, Some(ledger.keys.clone())).expect("usable");
    let approve_seq = ledger.events[ledger.events.len() - 2].seq;
    assert_eq!(
        report.first_break.map(|b| b.location),
        Some(BreakLocation::Event { seq: approve_seq })
    );
}
