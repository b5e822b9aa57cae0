//! The bodies of the fuzz targets, and the fixtures they share with the seed generator
//! (`tests/seeds.rs`). Kept in a library so that a crash found by the fuzzer can be
//! replayed with `cargo test` and the same code path.
//!
//! Every function here must return normally for any input: a panic is a finding.
//!
//! The ledger-core targets are below; the service's are in their modules:
//! [`http_request`] (requests to the real `ledger_api::app`) and [`webhook_target`] (the
//! SSRF rules of webhook URLs).

pub mod http_request;
pub mod webhook_target;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use ledger_core::checkpoint::Checkpoint;
use ledger_core::command::POLICY_SUBJECT;
use ledger_core::crypto::{Hash, KeySet};
use ledger_core::event::{ChainHead, Event};
use ledger_core::ids::{EventId, PrincipalId};
use ledger_core::money::{Currency, Money};
use ledger_core::policy::{ApprovalRule, Permission, Role};
use ledger_core::proof::DirectCheck;
use ledger_core::testkit::{standard_tenant, Ledger};
use ledger_core::time::Timestamp;
use ledger_core::verify::{
    lines, parse_line, precheck_signatures, verify_export, ExportLine, LineError, Report,
    UsageError, Verifier,
};
use ledger_core::{decide, Command, Context, Enforcement};

/// The tenant of every generated export.
pub const TENANT: &str = "acme";
/// The testkit seed of every generated export (keys derive from it).
pub const SEED: u8 = 1;

fn id<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    match text.parse() {
        Ok(value) => value,
        Err(e) => panic!("fixture id {text:?}: {e:?}"),
    }
}

fn eur(amount: &str) -> Money {
    match Money::parse(amount, Currency::Eur) {
        Ok(money) => money,
        Err(e) => panic!("fixture amount {amount}: {e}"),
    }
}

fn run(ledger: &mut Ledger, actor: &str, command: Command) {
    let what = format!("{actor} {}", command.action());
    if let Err(e) = ledger.execute(actor, command) {
        panic!("fixture: {what}: {e}");
    }
}

fn request(ledger: &mut Ledger, payout: &str, amount: &str) {
    let mut metadata = BTreeMap::new();
    metadata.insert("order".to_owned(), format!("ord-{payout}"));
    run(
        ledger,
        "usr_ann",
        Command::RequestPayout {
            payout: id(payout),
            account: id("acct_ops"),
            payee: id("pay_lark"),
            money: eur(amount),
            reference: format!("inv-{payout}"),
            metadata: Some(metadata),
        },
    );
}

fn approve(ledger: &mut Ledger, payout: &str, approver: &str) {
    run(
        ledger,
        approver,
        Command::ApprovePayout {
            payout: id(payout),
            batch: None,
        },
    );
}

fn authorize(ledger: &mut Ledger, payout: &str) {
    let proof = ledger.proof("usr_cat", "payout.authorize", payout);
    run(
        ledger,
        "usr_cat",
        Command::AuthorizePayout {
            payout: id(payout),
            two_factor: Some(proof),
            batch: None,
        },
    );
}

fn execute(ledger: &mut Ledger, payout: &str) {
    let proof = ledger.proof("usr_dan", "payout.execute", payout);
    run(
        ledger,
        "usr_dan",
        Command::ExecutePayout {
            payout: id(payout),
            rail: Some("SEPA".into()),
            two_factor: Some(proof),
            batch: None,
        },
    );
}

fn release_by_person(ledger: &mut Ledger, payout: &str) {
    let proof = ledger.proof("usr_rex", "payout.release", payout);
    run(
        ledger,
        "usr_rex",
        Command::ReleasePayout {
            payout: id(payout),
            two_factor: Some(proof),
            batch: None,
        },
    );
}

/// A standard tenant (see `ledger_core::testkit::standard_tenant`) and then: a policy
/// update, an API key, a JPY account, and payouts through every ending (released by a
/// person and by a service, cancelled after authorization, rejected, failed), a denied
/// approval kept as `command.rejected`, batch approval and authorization under one
/// proof, and payouts left open in each open status (requested, approved, authorized,
/// executed); with checkpoints in the middle and at the end.
pub fn sample_ledger() -> Ledger {
    let mut ledger = standard_tenant(TENANT, SEED, "100000.00");
    let proof = ledger.proof("usr_admin", "policy.update", POLICY_SUBJECT);
    run(
        &mut ledger,
        "usr_admin",
        Command::UpdatePolicy {
            rules: vec![ApprovalRule {
                currency: Currency::Eur,
                min_amount: "5000.00".into(),
                approvals: 2,
            }],
            two_factor: Some(proof),
        },
    );
    run(
        &mut ledger,
        "usr_ann",
        Command::IssueApiKey {
            key: id("key_ann1"),
            scopes: vec![Permission::PayoutRequest, Permission::PayoutCancel],
            expires_at: None,
            two_factor: None,
        },
    );
    run(
        &mut ledger,
        "usr_eve",
        Command::OpenAccount {
            account: id("acct_yen"),
            currency: Currency::Jpy,
            name: Some("Tokyo".into()),
        },
    );
    let yen = match Money::parse("250000", Currency::Jpy) {
        Ok(money) => money,
        Err(e) => panic!("fixture: {e}"),
    };
    run(
        &mut ledger,
        "usr_eve",
        Command::Deposit {
            account: id("acct_yen"),
            money: yen,
            reference: None,
        },
    );
    run(
        &mut ledger,
        "usr_admin",
        Command::AddPayee {
            payee: id("pay_wren"),
            name: "Wren GmbH".into(),
            iban: "v1:k1:0a1b2c".into(),
        },
    );

    // po_1: every gate, released by a person.
    request(&mut ledger, "po_1", "125.5");
    approve(&mut ledger, "po_1", "usr_bob");
    authorize(&mut ledger, "po_1");
    execute(&mut ledger, "po_1");
    release_by_person(&mut ledger, "po_1");
    ledger.checkpoint();

    // po_2: two approvals (policy), released by the settlement service without 2FA.
    request(&mut ledger, "po_2", "7500.00");
    approve(&mut ledger, "po_2", "usr_bob");
    approve(&mut ledger, "po_2", "usr_bea");
    authorize(&mut ledger, "po_2");
    execute(&mut ledger, "po_2");
    run(
        &mut ledger,
        "svc_settlement",
        Command::ReleasePayout {
            payout: id("po_2"),
            two_factor: None,
            batch: None,
        },
    );

    // po_3: cancelled after authorization (the hold returns).
    request(&mut ledger, "po_3", "10.00");
    approve(&mut ledger, "po_3", "usr_bea");
    authorize(&mut ledger, "po_3");
    run(
        &mut ledger,
        "usr_ann",
        Command::CancelPayout {
            payout: id("po_3"),
            reason: "duplicate invoice".into(),
        },
    );

    // po_4: rejected.
    request(&mut ledger, "po_4", "20.00");
    run(
        &mut ledger,
        "usr_bob",
        Command::RejectPayout {
            payout: id("po_4"),
            reason: "unknown invoice".into(),
        },
    );

    // po_5: failed at settlement.
    request(&mut ledger, "po_5", "30.00");
    approve(&mut ledger, "po_5", "usr_bob");
    authorize(&mut ledger, "po_5");
    execute(&mut ledger, "po_5");
    run(
        &mut ledger,
        "usr_rex",
        Command::FailPayout {
            payout: id("po_5"),
            reason: "rail returned AC04".into(),
        },
    );

    // po_6: the requester tries to approve her own payout (kept as evidence), then a
    // real approver approves: left approved.
    request(&mut ledger, "po_6", "40.00");
    if ledger
        .execute_or_record(
            "usr_ann",
            Command::ApprovePayout {
                payout: id("po_6"),
                batch: None,
            },
        )
        .is_ok()
    {
        panic!("fixture: a requester approved her own payout");
    }
    approve(&mut ledger, "po_6", "usr_bob");

    // po_7, po_8: approved and authorized as batches under one proof: left authorized.
    request(&mut ledger, "po_7", "50.00");
    request(&mut ledger, "po_8", "60.00");
    let batch: Vec<String> = vec!["po_7".into(), "po_8".into()];
    let approvals: Vec<Command> = batch
        .iter()
        .map(|p| Command::ApprovePayout {
            payout: id(p),
            batch: Some(batch.clone()),
        })
        .collect();
    if let Err((index, e)) = ledger.execute_batch("usr_bea", &approvals) {
        panic!("fixture: batch approval {index}: {e}");
    }
    let proof = ledger.batch_proof("usr_cat", "payout.authorize", &batch);
    let authorizations: Vec<Command> = batch
        .iter()
        .map(|p| Command::AuthorizePayout {
            payout: id(p),
            two_factor: Some(proof.clone()),
            batch: Some(batch.clone()),
        })
        .collect();
    if let Err((index, e)) = ledger.execute_batch("usr_cat", &authorizations) {
        panic!("fixture: batch authorization {index}: {e}");
    }

    // po_9: left requested. po_10: left executed.
    request(&mut ledger, "po_9", "70.00");
    request(&mut ledger, "po_10", "80.00");
    approve(&mut ledger, "po_10", "usr_bob");
    authorize(&mut ledger, "po_10");
    execute(&mut ledger, "po_10");
    ledger.checkpoint();
    ledger
}

/// The lines of [`sample_ledger`]'s export, built once.
pub fn sample_export_lines() -> &'static [String] {
    static LINES: OnceLock<Vec<String>> = OnceLock::new();
    LINES.get_or_init(|| sample_ledger().export_lines())
}

/// The public keys of the testkit ledger (tenant `acme`, seed 1), built once.
pub fn testkit_keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| Ledger::new(TENANT, SEED).keys)
}

/// The auditor's other way through an export: parse every line first, precheck the
/// proof signatures in one batch, keep only the hashes the checkpoints name, then push.
/// It must reach exactly the verdict of [`verify_export`].
fn verify_two_pass(text: &str, pinned: Option<KeySet>) -> Result<Report, UsageError> {
    // Pass 1 (in parallel in a real auditor): parse every line, keeping its error.
    let parsed: Vec<(usize, Result<ExportLine, LineError>)> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| (index + 1, parse_line(line)))
        .collect();
    let mut keys = pinned.clone().unwrap_or_default();
    if pinned.is_none() {
        for (_, line) in &parsed {
            if let Ok(ExportLine::Key(record)) = line {
                let _ = keys.insert(record.clone());
            }
        }
    }
    let proofs: Vec<_> = parsed
        .iter()
        .filter_map(|(_, line)| match line {
            Ok(ExportLine::Event(event)) if event.body_error.is_none() => {
                event.event.body.two_factor()
            }
            Ok(_) | Err(_) => None,
        })
        .collect();
    let cache = precheck_signatures(&keys, &proofs);
    let checkpoint_seqs: Vec<u64> = parsed
        .iter()
        .filter_map(|(_, line)| match line {
            Ok(ExportLine::Checkpoint(checkpoint)) => Some(checkpoint.seq),
            Ok(_) | Err(_) => None,
        })
        .collect();
    // Pass 2: push in order; the first unusable line, in file order, ends it.
    let mut verifier = Verifier::new(pinned);
    verifier.expect_checkpoints(checkpoint_seqs);
    for (line, line_parsed) in parsed {
        let line_parsed = line_parsed.map_err(|error| UsageError::Line { line, error })?;
        verifier.push(line, line_parsed, &cache)?;
    }
    verifier.finish()
}

/// Verifies `text` every way the crate offers and checks that they agree.
pub fn check_export_text(text: &str) {
    for line in text.lines() {
        let _ = parse_line(line);
    }
    for pinned in [None, Some(testkit_keys().clone())] {
        let single = verify_export(text, pinned.clone());
        if let Ok(report) = &single {
            // The auditor prints the report as JSON.
            if let Err(e) = serde_json::to_string(report) {
                panic!("report does not serialise: {e}");
            }
        }
        let two_pass = verify_two_pass(text, pinned);
        assert_eq!(
            single, two_pass,
            "verify_export and the two-pass (batch-prechecked) verifier disagree"
        );
    }
}

/// `export_verify`: the bytes as an export.
pub fn export_verify(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check_export_text(text);
    }
}

/// Reads the fuzz input as a little program of edits.
struct Edits<'a> {
    data: &'a [u8],
}

impl Edits<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(first)
    }

    fn index(&mut self, len: usize) -> Option<usize> {
        if len == 0 {
            return None;
        }
        let hi = usize::from(self.byte()?);
        let lo = usize::from(self.byte()?);
        Some(((hi << 8) | lo) % len)
    }

    fn chunk(&mut self) -> Option<&[u8]> {
        let len = usize::from(self.byte()? % 32);
        let len = len.min(self.data.len());
        let (chunk, rest) = self.data.split_at(len);
        self.data = rest;
        Some(chunk)
    }
}

/// Tokens worth splicing into JSON: they reach the parsers' corners faster than bytes.
#[rustfmt::skip]
const TOKENS: &[&str] = &[
    "\"", "\\", "{", "}", "[", "]", ":", ",", "null", "true", "-", "0", "1.5", "1e3",
    "9007199254740991", "9007199254740992", "18446744073709551616", "-0", "\\u0000",
    "\\u00e9", "\\ud800", "é", " ", "\"\":1,", "\"x\":{},", "0.00", "-1.00", "999999999999999.99",
    "2026-11-22T09:00:00.000000Z", "9999-12-31T23:59:59.999999Z", "0000-01-01T00:00:00.000000Z",
    "usr_", "svc_", "po_", "acct_ops", "acct_yen", "pay_lark", "EUR", "JPY", "KWD",
    "world:funding", "world:payees", ":available", ":held", "payout.", "batch:", "2fa-1",
    "ckpt-1",
];

/// Replaces the JSON value at a path-like choice inside a line with `with`: each input
/// byte picks a member (high bit clear: descend further; set: replace it).
fn replace_in_json(
    value: &mut serde_json::Value,
    edits: &mut Edits<'_>,
    with: serde_json::Value,
    depth: usize,
) {
    let choice = if depth < 6 { edits.byte() } else { None };
    let Some(choice) = choice else {
        *value = with;
        return;
    };
    let child = match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            let len = map.len();
            map.values_mut().nth(usize::from(choice) % len)
        }
        serde_json::Value::Array(items) if !items.is_empty() => {
            let len = items.len();
            items.get_mut(usize::from(choice) % len)
        }
        _ => None,
    };
    match child {
        Some(child) if choice & 0x80 == 0 => replace_in_json(child, edits, with, depth + 1),
        Some(child) => *child = with,
        None => *value = with,
    }
}

/// Re-hashes every event and re-links the chain, then replaces the checkpoints by one
/// fresh checkpoint of the head, signed with the testkit key: an insider's rewrite, so
/// that only the rules can catch the edit.
fn reseal(lines_in: &mut Vec<String>) {
    let signer = sample_signer();
    let mut prev = Hash::ZERO;
    let mut head: Option<(u64, Hash)> = None;
    let mut out = Vec::with_capacity(lines_in.len() + 1);
    for line in lines_in.drain(..) {
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&line) else {
            out.push(line);
            continue;
        };
        let kind = value
            .get("type")
            .and_then(|t| t.as_str())
            .map(str::to_owned);
        match kind.as_deref() {
            Some("checkpoint") => continue,
            Some("event") => {
                if let Some(event) = value.get_mut("event").and_then(|e| e.as_object_mut()) {
                    event.insert("prev".into(), prev.to_hex().into());
                }
                let text = value.to_string();
                if let Ok(ExportLine::Event(parsed)) = parse_line(&text) {
                    if let Some(event) = value.get_mut("event").and_then(|e| e.as_object_mut()) {
                        event.insert("hash".into(), parsed.computed_hash.to_hex().into());
                    }
                    prev = parsed.computed_hash;
                    head = Some((parsed.event.seq, parsed.computed_hash));
                }
                out.push(value.to_string());
            }
            _ => out.push(line),
        }
    }
    if let Some((seq, hash)) = head {
        let checkpoint = Checkpoint::sign(
            id(TENANT),
            seq,
            hash,
            signer.clock,
            id("ckpt-1"),
            &signer.checkpoint_key,
        );
        out.push(lines::checkpoint(&checkpoint));
    }
    *lines_in = out;
}

fn sample_signer() -> &'static Ledger {
    static SIGNER: OnceLock<Ledger> = OnceLock::new();
    SIGNER.get_or_init(|| Ledger::new(TENANT, SEED))
}

/// `export_mutate`: a valid generated export, edited as the input says, then verified.
///
/// The input is a sequence of edits, each starting with an opcode byte: overwrite,
/// insert or delete bytes of a line, splice a JSON token, drop, duplicate or swap
/// lines, or replace a JSON value inside a line (by a fuzz string, number or token).
/// If the last byte's low bit is set the chain is re-hashed and re-signed afterwards
/// (an insider's edit).
pub fn export_mutate(data: &[u8]) {
    let base = sample_export_lines();
    let mut lines: Vec<String> = base.to_vec();
    let reseal_after = data.last().is_some_and(|b| b & 1 == 1);
    let mut edits = Edits { data };
    let mut steps = 0;
    while let Some(op) = edits.byte() {
        steps += 1;
        if steps > 16 {
            break;
        }
        let Some(line_index) = edits.index(lines.len()) else {
            break;
        };
        match op % 10 {
            0 => {
                // Overwrite bytes.
                let Some(at) = edits.index(lines[line_index].len().max(1)) else {
                    break;
                };
                let Some(chunk) = edits.chunk() else { break };
                let mut bytes = lines[line_index].clone().into_bytes();
                for (offset, &b) in chunk.iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + offset) {
                        *slot = b;
                    }
                }
                lines[line_index] = String::from_utf8_lossy(&bytes).into_owned();
            }
            1 => {
                // Insert bytes.
                let Some(at) = edits.index(lines[line_index].len() + 1) else {
                    break;
                };
                let Some(chunk) = edits.chunk() else { break };
                let mut bytes = lines[line_index].clone().into_bytes();
                bytes.splice(at..at, chunk.iter().copied());
                lines[line_index] = String::from_utf8_lossy(&bytes).into_owned();
            }
            2 => {
                // Delete bytes.
                let Some(at) = edits.index(lines[line_index].len().max(1)) else {
                    break;
                };
                let Some(len) = edits.byte() else { break };
                let mut bytes = lines[line_index].clone().into_bytes();
                let end = (at + usize::from(len)).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
                lines[line_index] = String::from_utf8_lossy(&bytes).into_owned();
            }
            3 => {
                // Splice a token.
                let Some(at) = edits.index(lines[line_index].len() + 1) else {
                    break;
                };
                let Some(token) = edits.byte() else { break };
                let token = TOKENS[usize::from(token) % TOKENS.len()];
                let mut bytes = lines[line_index].clone().into_bytes();
                bytes.splice(at..at, token.bytes());
                lines[line_index] = String::from_utf8_lossy(&bytes).into_owned();
            }
            4 => {
                lines.remove(line_index);
            }
            5 => {
                let copy = lines[line_index].clone();
                let Some(to) = edits.index(lines.len() + 1) else {
                    break;
                };
                lines.insert(to, copy);
            }
            6 => {
                let Some(other) = edits.index(lines.len()) else {
                    break;
                };
                lines.swap(line_index, other);
            }
            7..=9 => {
                // Replace a JSON value inside the line.
                let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&lines[line_index])
                else {
                    continue;
                };
                let Some(kind) = edits.byte() else { break };
                let with = match kind % 6 {
                    0 => {
                        let Some(chunk) = edits.chunk() else { break };
                        serde_json::Value::String(String::from_utf8_lossy(chunk).into_owned())
                    }
                    1 => {
                        let Some(chunk) = edits.chunk() else { break };
                        let mut n = [0u8; 8];
                        for (slot, b) in n.iter_mut().zip(chunk) {
                            *slot = *b;
                        }
                        serde_json::Value::from(i64::from_le_bytes(n))
                    }
                    2 => {
                        let Some(token) = edits.byte() else { break };
                        serde_json::Value::String(
                            TOKENS[usize::from(token) % TOKENS.len()].to_owned(),
                        )
                    }
                    3 => serde_json::Value::Null,
                    4 => serde_json::Value::Array(Vec::new()),
                    _ => serde_json::Value::Object(serde_json::Map::new()),
                };
                replace_in_json(&mut value, &mut edits, with, 0);
                lines[line_index] = value.to_string();
            }
            _ => unreachable!("op % 10"),
        }
    }
    if reseal_after {
        reseal(&mut lines);
    }
    let mut text = lines.join("\n");
    text.push('\n');
    check_export_text(&text);
}

/// What `command_decode` decides against: the state of [`sample_ledger`] (payouts open
/// in every open status), its head, and the decision time right after its last event.
pub struct DecideFixture {
    /// The written ledger.
    pub ledger: Ledger,
    /// Decision time: the ledger's clock + 1 ms, as `Ledger::execute` uses.
    pub at: Timestamp,
    /// Every principal tried as the actor.
    pub actors: Vec<PrincipalId>,
}

/// The actors `command_decode` tries: every role of the standard tenant, a service that
/// holds a role, one that holds none, and a stranger.
pub const ACTORS: &[&str] = &[
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
    "svc_operator",
    "usr_nobody",
];

/// The fixture, built once.
pub fn decide_fixture() -> &'static DecideFixture {
    static FIXTURE: OnceLock<DecideFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ledger = sample_ledger();
        let at = Timestamp::from_unix_micros(ledger.clock.unix_micros() + 1_000);
        DecideFixture {
            ledger,
            at,
            actors: ACTORS.iter().map(|a| id(a)).collect(),
        }
    })
}

/// Valid command JSONs for the fixture's state, one or more per command kind, with
/// fresh proofs where a gate needs one (`ledger` must be [`sample_ledger`]'s, fresh).
pub fn seed_commands(ledger: &mut Ledger) -> Vec<(&'static str, Command)> {
    let mut metadata = BTreeMap::new();
    metadata.insert("order".to_owned(), "ord-77".to_owned());
    let grant_proof = ledger.proof("usr_admin", "role.grant", "usr_fay:approver");
    let policy_proof = ledger.proof("usr_admin", "policy.update", POLICY_SUBJECT);
    let key_proof = ledger.proof("usr_ann", "apikey.issue", "key_ann2");
    let authorize_proof = ledger.proof("usr_cat", "payout.authorize", "po_6");
    let execute_proof = ledger.proof("usr_dan", "payout.execute", "po_7");
    let release_proof = ledger.proof("usr_rex", "payout.release", "po_10");
    let batch = vec!["po_7".to_owned(), "po_8".to_owned()];
    let batch_proof = ledger.batch_proof("usr_dan", "payout.execute", &batch);
    vec![
        (
            "create_tenant",
            Command::CreateTenant {
                name: "Other".into(),
                admin: Some(id("usr_admin")),
            },
        ),
        (
            "add_user",
            Command::AddUser {
                user: id("usr_fay"),
                name: "Fay".into(),
            },
        ),
        (
            "grant_role",
            Command::GrantRole {
                user: id("usr_fay"),
                role: Role::Approver,
                two_factor: Some(grant_proof),
                batch: None,
            },
        ),
        (
            "revoke_role",
            Command::RevokeRole {
                user: id("usr_aud"),
                role: Role::Auditor,
            },
        ),
        (
            "issue_api_key",
            Command::IssueApiKey {
                key: id("key_ann2"),
                scopes: vec![Permission::PayoutRequest],
                expires_at: Timestamp::parse("2027-01-01T00:00:00.000000Z").ok(),
                two_factor: Some(key_proof),
            },
        ),
        (
            "revoke_api_key",
            Command::RevokeApiKey {
                key: id("key_ann1"),
            },
        ),
        (
            "open_account",
            Command::OpenAccount {
                account: id("acct_kwd"),
                currency: Currency::Kwd,
                name: Some("Kuwait".into()),
            },
        ),
        (
            "deposit",
            Command::Deposit {
                account: id("acct_ops"),
                money: eur("12.3"),
                reference: Some("top-up".into()),
            },
        ),
        (
            "add_payee",
            Command::AddPayee {
                payee: id("pay_finch"),
                name: "Finch".into(),
                iban: "v1:k1:beef".into(),
            },
        ),
        (
            "update_policy",
            Command::UpdatePolicy {
                rules: vec![
                    ApprovalRule {
                        currency: Currency::Eur,
                        min_amount: "1000.00".into(),
                        approvals: 2,
                    },
                    ApprovalRule {
                        currency: Currency::Jpy,
                        min_amount: "100000".into(),
                        approvals: 3,
                    },
                ],
                two_factor: Some(policy_proof),
            },
        ),
        (
            "request_payout",
            Command::RequestPayout {
                payout: id("po_77"),
                account: id("acct_ops"),
                payee: id("pay_lark"),
                money: eur("99.99"),
                reference: "inv-77".into(),
                metadata: Some(metadata),
            },
        ),
        (
            "approve_payout",
            Command::ApprovePayout {
                payout: id("po_9"),
                batch: None,
            },
        ),
        (
            "reject_payout",
            Command::RejectPayout {
                payout: id("po_9"),
                reason: "no invoice".into(),
            },
        ),
        (
            "authorize_payout",
            Command::AuthorizePayout {
                payout: id("po_6"),
                two_factor: Some(authorize_proof),
                batch: None,
            },
        ),
        (
            "execute_payout",
            Command::ExecutePayout {
                payout: id("po_7"),
                rail: Some("SEPA".into()),
                two_factor: Some(execute_proof),
                batch: None,
            },
        ),
        (
            "execute_payout_batch",
            Command::ExecutePayout {
                payout: id("po_8"),
                rail: None,
                two_factor: Some(batch_proof),
                batch: Some(batch),
            },
        ),
        (
            "release_payout",
            Command::ReleasePayout {
                payout: id("po_10"),
                two_factor: Some(release_proof),
                batch: None,
            },
        ),
        (
            "release_payout_service",
            Command::ReleasePayout {
                payout: id("po_10"),
                two_factor: None,
                batch: None,
            },
        ),
        (
            "fail_payout",
            Command::FailPayout {
                payout: id("po_10"),
                reason: "rail returned AC01".into(),
            },
        ),
        (
            "cancel_payout",
            Command::CancelPayout {
                payout: id("po_8"),
                reason: "customer asked".into(),
            },
        ),
    ]
}

/// What one decoded command did against the fixture (for the seed test's checks).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecideOutcome {
    /// Decisions that produced events (over every actor and both enforcements).
    pub accepted: usize,
    /// Decisions that produced events that could not be sealed.
    pub unsealable: usize,
}

/// `command_decode`: the bytes as command JSON; when it decodes, decide it for every
/// actor in both enforcements and apply whatever it produces.
pub fn command_decode(data: &[u8]) -> DecideOutcome {
    let mut outcome = DecideOutcome::default();
    let Ok(text) = std::str::from_utf8(data) else {
        return outcome;
    };
    let Ok(command) = Command::from_json(text) else {
        return outcome;
    };
    // A decoded command encodes to JSON that decodes to the same command.
    let encoded = match serde_json::to_string(&command) {
        Ok(encoded) => encoded,
        Err(e) => panic!("a decoded command does not encode: {e}"),
    };
    match Command::from_json(&encoded) {
        Ok(again) => assert_eq!(again, command, "command JSON round trip"),
        Err(e) => panic!("a decoded command's own JSON does not decode: {e} in {encoded}"),
    }
    let _ = command.subject();
    let fixture = decide_fixture();
    let ledger = &fixture.ledger;
    let signatures = DirectCheck(&ledger.keys);
    for actor in &fixture.actors {
        for enforcement in [Enforcement::Writer, Enforcement::Audit] {
            let ctx = Context {
                tenant: &ledger.tenant,
                actor,
                at: fixture.at,
                scopes: None,
                signatures: &signatures,
                enforcement,
            };
            let Ok(bodies) = decide(&ledger.state, &command, &ctx) else {
                continue;
            };
            outcome.accepted += 1;
            let mut state = ledger.state.clone();
            let mut head: ChainHead = ledger.head;
            for (n, body) in bodies.into_iter().enumerate() {
                let event_id =
                    match EventId::parse(&format!("00000000-0000-4000-8000-{:012x}", 0xf000 + n)) {
                        Ok(event_id) => event_id,
                        Err(e) => unreachable!("a valid uuid: {e}"),
                    };
                let sealed = Event::seal(
                    head,
                    ledger.tenant.clone(),
                    event_id,
                    fixture.at,
                    actor.clone(),
                    body,
                );
                let event = match sealed {
                    Ok((event, _bytes)) => event,
                    Err(_) => {
                        outcome.unsealable += 1;
                        break;
                    }
                };
                state.apply_mut(&event);
                head = event.head();
                // The writer's line reads back as the same event, with its hash.
                let line = match lines::event(&event) {
                    Ok(line) => line,
                    Err(e) => panic!("a sealed event does not export: {e}"),
                };
                match parse_line(&line) {
                    Ok(ExportLine::Event(parsed)) => {
                        assert_eq!(parsed.body_error, None, "exported event data: {line}");
                        assert_eq!(parsed.computed_hash, event.hash, "hash: {line}");
                        assert_eq!(parsed.event, event, "event round trip: {line}");
                    }
                    Ok(other) => panic!("an event line parsed as {other:?}"),
                    Err(e) => panic!("an exported event line does not parse: {e}: {line}"),
                }
            }
        }
    }
    outcome
}
