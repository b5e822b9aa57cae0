//! Properties of the read models over random command sequences decided by the writer's
//! own rules (`testkit::play`): a rebuild equals the incrementally built (and
//! persisted) model, row by row when only the touched rows are loaded for each chunk;
//! balances equal the sum of postings and the core's state, the payouts view agrees
//! with the core, and the audit view has one row per decided command, accepted or
//! denied, with the request id its events carry.

use std::collections::BTreeMap;

use ledger_core::event::{Event, REQUEST_ID_FIELD};
use ledger_core::ids::{AccountId, PayoutId};
use ledger_core::policy::ApprovalRule;
use ledger_core::state::Bucket;
use ledger_core::testkit::{play, standard_tenant, Step};
use projections::{AccountBalance, AuditRow, Keys, Outcome, PayoutRow, ReadModel};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect(s)
}

fn step() -> impl Strategy<Value = Step> {
    (0u8..10, 0u8..6, 0u8..9, 1u32..5_000_000, any::<bool>()).prop_map(
        |(action, payout, actor, cents, request)| Step {
            action,
            payout,
            actor,
            cents,
            request,
        },
    )
}

/// The persisted rows, as a store keeps them: a cursor with the approval rules, one row
/// per account and payout, the audit rows.
#[derive(Debug, Default)]
struct Rows {
    seq: u64,
    policy: Vec<ApprovalRule>,
    balances: BTreeMap<AccountId, AccountBalance>,
    payouts: BTreeMap<PayoutId, PayoutRow>,
    audit: Vec<AuditRow>,
}

impl Rows {
    /// One projector step: load only the rows the page names, fold, write the changes.
    fn project(&mut self, page: &[Event]) {
        let keys = Keys::of(page);
        let mut model = ReadModel::partial(
            self.seq,
            self.policy.clone(),
            keys.accounts
                .iter()
                .filter_map(|a| self.balances.get(a).map(|b| (a.clone(), b.clone()))),
            keys.payouts
                .iter()
                .filter_map(|p| self.payouts.get(p).cloned()),
        );
        let changes = model.apply_page(page);
        self.seq = changes.seq;
        if let Some(policy) = changes.policy {
            self.policy = policy;
        }
        self.balances.extend(changes.balances);
        for row in changes.payouts {
            self.payouts.insert(row.payout.clone(), row);
        }
        self.audit.extend(changes.audit);
    }

    fn same_as(&self, model: &ReadModel) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.seq, model.seq);
        prop_assert_eq!(&self.policy, &model.payouts.policy);
        prop_assert_eq!(&self.balances, &model.balances.accounts);
        prop_assert_eq!(&self.payouts, &model.payouts.payouts);
        prop_assert_eq!(&self.audit, &model.audit.rows);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn read_models_agree_with_the_chain(steps in prop::collection::vec(step(), 1..120), split in 0usize..200) {
        let mut ledger = standard_tenant("acme", 5, "100000.00");
        let setup = ledger.events.len();
        let decided = play(&mut ledger, &steps);
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
            // One account: everything paid out came from it, everything paid in went to it.
            prop_assert_eq!(balance.released, sum(Bucket::WorldPayees));
            prop_assert_eq!(balance.deposited, -sum(Bucket::WorldFunding));
        }

        // Payouts: the same status as the core.
        for (payout, row) in &rebuilt.payouts.payouts {
            prop_assert_eq!(row.status.as_str(), ledger.state.payouts[payout].status().name());
        }
        prop_assert_eq!(rebuilt.payouts.payouts.len(), ledger.state.payouts.len());

        // Audit: one row per decided command (each of these commands yields one event),
        // in seq order, with the event's request id.
        prop_assert_eq!(rebuilt.audit.rows.len(), setup + decided);
        prop_assert_eq!(rebuilt.audit.rows.len(), events.len());
        for (row, event) in rebuilt.audit.rows.iter().zip(events) {
            prop_assert_eq!(row.seq, event.seq);
            prop_assert_eq!(&row.actor, &event.actor);
            prop_assert_eq!(row.request_id.clone(), event.data_string(REQUEST_ID_FIELD));
        }
        let requested = steps.iter().filter(|s| s.request).count();
        let with_ids = rebuilt.audit.rows.iter().filter(|r| r.request_id.is_some()).count();
        prop_assert!(with_ids <= requested);
        let denied = rebuilt.audit.rows.iter().filter(|r| r.result == Outcome::Denied).count();
        let rejected = events.iter().filter(|e| e.body.kind() == "command.rejected").count();
        prop_assert_eq!(denied, rejected);
        prop_assert!(rebuilt.audit.rows.iter().all(|r| (r.result == Outcome::Denied) == r.reason.is_some()));
    }

    /// The projector's way: rows persisted after every chunk of arbitrary length, each
    /// chunk folded into a model holding only the rows it names (a chunk may start
    /// before the cursor: replays are ignored), equal the full fold and a rebuild.
    #[test]
    fn rows_built_in_chunks_equal_the_fold(
        steps in prop::collection::vec(step(), 1..120),
        chunks in prop::collection::vec((1usize..40, 0usize..3), 1..60),
    ) {
        let mut ledger = standard_tenant("acme", 6, "100000.00");
        play(&mut ledger, &steps);
        let events: &[Event] = &ledger.events;
        let mut rows = Rows::default();
        let mut at = 0;
        for (length, overlap) in chunks.iter().cycle() {
            if at >= events.len() {
                break;
            }
            let from = at.saturating_sub(*overlap);
            let to = (at + length).min(events.len());
            rows.project(&events[from..to]);
            at = to;
        }
        let fold = ReadModel::rebuild(events);
        rows.same_as(&fold)?;
        let mut rebuilt = Rows::default();
        rebuilt.project(events);
        rebuilt.same_as(&fold)?;
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
            request: true,
        })
        .collect();
    let decided = play(&mut ledger, &steps);
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
    assert_eq!(last.request_id.as_deref(), Some("req-5"));
    assert_eq!(
        model.audit.rows[model.audit.rows.len() - 6]
            .request_id
            .as_deref(),
        Some("req-0")
    );
}

/// The rows a page changes are exactly the rows its events name.
#[test]
fn a_page_reports_the_rows_it_touched() {
    let mut ledger = standard_tenant("acme", 5, "100000.00");
    let steps: Vec<Step> = [(0, 0, 0), (0, 1, 0), (1, 0, 1), (7, 0, 7)]
        .iter()
        .map(|&(action, payout, actor)| Step {
            action,
            payout,
            actor,
            cents: 1_000,
            request: false,
        })
        .collect();
    play(&mut ledger, &steps);
    let (before, page) = ledger.events.split_at(ledger.events.len() - 4);
    let mut model = ReadModel::rebuild(before);
    let changes = model.apply_page(page);
    assert_eq!(changes.seq, ledger.head.seq);
    let payouts: Vec<&str> = changes.payouts.iter().map(|p| p.payout.as_str()).collect();
    assert_eq!(payouts, ["po_0", "po_1"]);
    let accounts: Vec<&str> = changes.balances.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(accounts, ["acct_ops"]);
    assert_eq!(changes.audit.len(), 4);
    assert_eq!(changes.policy, None);
    // The audit rows moved out; a replay of the same page changes nothing.
    let again = model.apply_page(page);
    assert_eq!(again.audit.len(), 0);
    assert!(again.payouts.is_empty() && again.balances.is_empty());
}
