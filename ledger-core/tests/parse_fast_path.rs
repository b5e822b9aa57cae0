//! `parse_line` reads canonical event lines through a fast path (fields in place, the hash
//! over the line's own bytes). It must answer exactly what `parse_line_general` answers, on
//! every line: the lines the writer produces, the outside vectors re-encoded, and random
//! mutations of both (bytes replaced, deleted, inserted, spans repeated), which the fast
//! path must either decline or read identically.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use common::read_vector;
use ledger_core::testkit::{standard_tenant, Ledger};
use ledger_core::verify::{lines, parse_line, parse_line_general, ExportLine};
use ledger_core::{Command, Currency, Money};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

fn id<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    text.parse().expect(text)
}

fn must(result: Result<Vec<ledger_core::event::Event>, ledger_core::Rejection>) {
    result.expect("the writer accepts the command");
}

/// A log with every gate, a batch, metadata with escapes and non-ASCII, a rejection.
fn writer_log() -> Ledger {
    let mut ledger = standard_tenant("acme", 5, "100000.00");
    for n in 0..3 {
        let po = format!("po_{n}");
        let metadata = BTreeMap::from([
            ("note".to_owned(), "quote \" backslash \\ é 💶".to_owned()),
            ("k".to_owned(), "/<>&".to_owned()),
        ]);
        must(ledger.execute(
            "usr_ann",
            Command::RequestPayout {
                payout: id(&po),
                account: id("acct_ops"),
                payee: id("pay_lark"),
                money: Money::parse("10.50", Currency::Eur).expect("money"),
                reference: format!("inv \"{n}\""),
                metadata: (n == 0).then_some(metadata),
            },
        ));
        must(ledger.execute(
            "usr_bob",
            Command::ApprovePayout {
                payout: id(&po),
                batch: None,
            },
        ));
    }
    let batch: Vec<String> = vec!["po_0".into(), "po_1".into()];
    let proof = ledger.batch_proof("usr_cat", "payout.authorize", &batch);
    let commands: Vec<Command> = batch
        .iter()
        .map(|po| Command::AuthorizePayout {
            payout: id(po),
            two_factor: Some(proof.clone()),
            batch: Some(batch.clone()),
        })
        .collect();
    ledger
        .execute_batch("usr_cat", &commands)
        .expect("batch authorize");
    let proof = ledger.proof("usr_dan", "payout.execute", "po_0");
    must(ledger.execute(
        "usr_dan",
        Command::ExecutePayout {
            payout: id("po_0"),
            rail: Some("SEPA".into()),
            two_factor: Some(proof),
            batch: None,
        },
    ));
    must(ledger.execute(
        "svc_settlement",
        Command::ReleasePayout {
            payout: id("po_0"),
            two_factor: None,
            batch: None,
        },
    ));
    must(ledger.execute(
        "usr_ann",
        Command::CancelPayout {
            payout: id("po_2"),
            reason: "duplicate".into(),
        },
    ));
    // A denied attempt, kept as evidence.
    let denied = ledger.execute_or_record(
        "usr_ann",
        Command::ApprovePayout {
            payout: id("po_1"),
            batch: None,
        },
    );
    assert!(denied.is_err(), "the requester may not approve");
    ledger.checkpoint();
    ledger
}

/// Every line of the corpus: the writer's export, and the outside vectors' events written
/// again canonically (the vectors themselves are laid out with spaces).
fn corpus() -> &'static [String] {
    static CORPUS: OnceLock<Vec<String>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut lines: Vec<String> = writer_log().export_lines();
        let mut vectors = vec!["exports/sample.jsonl".to_owned()];
        for name in [
            "deleted-event",
            "edited-amount",
            "insider-2fa-replay",
            "insider-batch-smuggle",
            "insider-four-eyes",
            "insider-no-2fa",
            "insider-overdraw",
            "insider-proof-other-payout",
            "insider-unbalanced",
            "relinked-one",
            "rewritten-unsigned",
        ] {
            vectors.push(format!("exports/tampered/{name}.jsonl"));
        }
        for vector in vectors {
            for line in read_vector(&vector).lines() {
                lines.push(line.to_owned());
                if let Ok(ExportLine::Event(parsed)) = parse_line_general(line) {
                    lines.push(lines::event(&parsed.event).expect("canonical"));
                }
            }
        }
        lines
    })
}

fn same_answer(line: &str) -> Result<(), TestCaseError> {
    let fast = format!("{:?}", parse_line(line));
    let general = format!("{:?}", parse_line_general(line));
    prop_assert_eq!(fast, general, "line: {}", line);
    Ok(())
}

#[test]
fn the_corpus_reads_the_same_both_ways() {
    let corpus = corpus();
    assert!(corpus.len() > 100, "{}", corpus.len());
    for line in corpus {
        same_answer(line).map_err(|e| e.to_string()).expect("same");
    }
}

/// One change to a line.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(Index, u8),
    Delete(Index),
    Insert(Index, u8),
    Repeat(Index, Index),
}

/// Bytes that matter to the fast path's reading (structure, escapes, digits, hex).
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        proptest::sample::select(
            b"{}[]:,\"\\ 0123456789abcdefxyzAF-_.:tnu\t\n\x00\x1f\x7f".to_vec()
        ),
        0u8..0x80,
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Repeat(a, b)),
    ]
}

fn mutate(line: &str, mutations: &[Mutation]) -> String {
    let mut bytes = line.as_bytes().to_vec();
    for mutation in mutations {
        let len = bytes.len().max(1);
        match mutation {
            Mutation::Replace(i, b) => {
                if !bytes.is_empty() {
                    let at = i.index(len);
                    bytes[at] = *b;
                }
            }
            Mutation::Delete(i) => {
                if !bytes.is_empty() {
                    bytes.remove(i.index(len));
                }
            }
            Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
            Mutation::Repeat(a, b) => {
                let (a, b) = (a.index(len), b.index(len));
                let (start, end) = (a.min(b), a.max(b).min(start_plus(a.min(b), 80)));
                if end <= bytes.len() {
                    let span = bytes[start..end].to_vec();
                    bytes.splice(start..start, span);
                }
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn start_plus(start: usize, n: usize) -> usize {
    start.saturating_add(n)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_lines_read_the_same_both_ways(
        pick in any::<Index>(),
        mutations in vec(mutation(), 1..4),
    ) {
        let corpus = corpus();
        let line = &corpus[pick.index(corpus.len())];
        same_answer(&mutate(line, &mutations))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The typed data of requests, approvals, authorizations, executions and releases is
    /// read without serde on the fast path: mutations of just those lines (their data
    /// included) read the same both ways.
    #[test]
    fn mutated_payout_lines_read_the_same_both_ways(
        pick in any::<Index>(),
        mutations in vec(mutation(), 1..4),
    ) {
        let simple: Vec<&String> = corpus()
            .iter()
            .filter(|line| {
                [
                    "requested",
                    "approved",
                    "authorized",
                    "executed",
                    "released",
                ]
                .iter()
                .any(|kind| line.contains(&format!("\"kind\":\"payout.{kind}\"")))
            })
            .collect();
        prop_assert!(simple.len() > 4, "{}", simple.len());
        let line = simple[pick.index(simple.len())];
        same_answer(line)?;
        same_answer(&mutate(line, &mutations))?;
    }
}
