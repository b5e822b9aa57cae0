//! The auditors' CLI, run as a process: verdicts and exit codes on the outside vectors
//! (used as they are), on generated exports, and on unusable input; and the streaming
//! pipeline held to the core's single-threaded `verify_export` on every input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ledger_audit::generate::{generate, Profile};
use ledger_audit::{verify_file, Options};
use ledger_core::verify::{verify_export, BreakLocation};

fn exports() -> PathBuf {
    test_support::vectors_dir().join("exports")
}

fn audit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger-audit"))
        .args(args)
        .env_remove("LEDGER_AUDIT_PROGRESS_MIN_BYTES")
        .output()
        .expect("run ledger-audit")
}

fn verify(path: &Path, extra: &[&str]) -> Output {
    let path = path.to_str().expect("utf-8 path");
    let mut args = vec!["verify", path];
    args.extend_from_slice(extra);
    audit(&args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("utf-8 stderr")
}

fn tampered() -> Vec<(String, String)> {
    let table = std::fs::read_to_string(exports().join("tampered/expected.tsv")).expect("tsv");
    table
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|row| {
            let (name, at) = row.split_once('\t').expect("name<TAB>location");
            (name.to_owned(), at.to_owned())
        })
        .collect()
}

#[test]
fn the_sample_export_is_intact_and_summarised() {
    let output = verify(&exports().join("sample.jsonl"), &[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    assert!(
        text.starts_with("INTACT: export of tenant acme\n"),
        "{text}"
    );
    for expected in [
        "events               32 (0 command.rejected)",
        "payouts              5: executed 2, released 3",
        "released             16159.02 EUR",
        "money movements      10 with 2FA, 3 by services (no 2FA needed), 0 without 2FA",
        "checkpoints          2 verified",
        "keys used            2fa-1, ckpt-1",
        "NOT PINNED",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn json_verdict_of_the_sample() {
    let output = verify(&exports().join("sample.jsonl"), &["--json"]);
    assert_eq!(output.status.code(), Some(0));
    let verdict: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    assert_eq!(verdict["intact"], true);
    assert_eq!(verdict["break"], serde_json::Value::Null);
    assert_eq!(verdict["summary"]["events"], 32);
    assert_eq!(verdict["summary"]["released"]["EUR"], "16159.02");
    assert_eq!(verdict["summary"]["keys_pinned"], false);
}

#[test]
fn every_tampered_export_exits_1_naming_its_break() {
    let cases = tampered();
    assert!(cases.len() >= 12);
    for (name, at) in cases {
        let path = exports().join(format!("tampered/{name}.jsonl"));
        let output = verify(&path, &[]);
        let (out, err) = (stdout(&output), stderr(&output));
        assert_eq!(output.status.code(), Some(1), "{name}: {out}{err}");
        assert!(out.starts_with("BROKEN"), "{name}: {out}");
        let json = verify(&path, &["--json"]);
        assert_eq!(json.status.code(), Some(1), "{name}");
        let verdict: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("json");
        assert_eq!(verdict["intact"], false, "{name}");
        if at == "checkpoint" {
            assert_eq!(verdict["break"]["at"], "checkpoint", "{name}: {verdict}");
            let seq = verdict["break"]["seq"].as_u64().expect("seq");
            assert!(
                err.contains(&format!("the checkpoint at seq {seq}")),
                "{name}: {err}"
            );
        } else {
            assert_eq!(verdict["break"]["at"], "event", "{name}: {verdict}");
            assert_eq!(verdict["break"]["seq"].to_string(), at, "{name}: {verdict}");
            assert!(
                err.contains(&format!("broken at seq {at},")),
                "{name}: {err}"
            );
        }
    }
}

/// The key lines of an export, as `GET /v1/ledger/keys` would give them.
fn keys_json(export: &str) -> String {
    let keys: Vec<serde_json::Value> = export
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "key")
        .map(|v| v["key"].clone())
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

#[test]
fn pinned_keys_are_used_and_said_so_and_foreign_keys_break_the_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sample = exports().join("sample.jsonl");
    let text = std::fs::read_to_string(&sample).expect("sample");

    let own = dir.path().join("own.json");
    std::fs::write(&own, keys_json(&text)).expect("write");
    let output = verify(&sample, &["--keys", own.to_str().expect("path")]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(
        out.contains("keys                 pinned (--keys)"),
        "{out}"
    );
    assert!(!out.contains("NOT PINNED"), "{out}");

    // Keys the auditor obtained elsewhere (another deployment's): the export's own key
    // lines must not be trusted over them, so no checkpoint and no proof verifies.
    let foreign_export = dir.path().join("foreign.jsonl");
    generate(&foreign_export, 30, Profile::Payouts).expect("generate");
    let foreign = dir.path().join("foreign-keys.json");
    let foreign_text = std::fs::read_to_string(&foreign_export).expect("read");
    std::fs::write(&foreign, keys_json(&foreign_text)).expect("write");
    let output = verify(
        &sample,
        &["--keys", foreign.to_str().expect("path"), "--json"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let verdict: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    assert_eq!(verdict["summary"]["keys_pinned"], true);
    assert_eq!(verdict["break"]["at"], "checkpoint", "{verdict}");
    assert_eq!(verdict["summary"]["checkpoints_verified"], 0, "{verdict}");
    assert_eq!(
        verdict["also_rule_break"]["code"], "two_factor_invalid",
        "{verdict}"
    );
}

#[test]
fn unusable_input_exits_2_and_says_which_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sample = std::fs::read_to_string(exports().join("sample.jsonl")).expect("sample");
    let lines: Vec<&str> = sample.lines().collect();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    };
    let with_line_7 = |replacement: &[u8]| {
        let mut out = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if i == 6 {
                out.extend_from_slice(replacement);
            } else {
                out.extend_from_slice(line.as_bytes());
            }
            out.push(b'\n');
        }
        out
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (dir.path().join("absent.jsonl"), "cannot read"),
        (write("empty.jsonl", b""), "empty input"),
        (write("prose.txt", b"Dear auditor,\n"), "line 1:"),
        (
            write("truncated.jsonl", &with_line_7(b"{\"event\":{\"seq\":")),
            "line 7:",
        ),
        (
            write("latin1.jsonl", &with_line_7(b"{\"caf\xe9\":1}")),
            "line 7: not UTF-8",
        ),
        (
            write("no-header.jsonl", lines[1..].join("\n").as_bytes()),
            "line 1:",
        ),
    ];
    for (path, says) in cases {
        for extra in [&[][..], &["--json"][..]] {
            let output = verify(&path, extra);
            let err = stderr(&output);
            assert_eq!(output.status.code(), Some(2), "{}: {err}", path.display());
            assert!(
                err.contains(says),
                "{}: {err:?} lacks {says:?}",
                path.display()
            );
            if !extra.is_empty() {
                let verdict: serde_json::Value =
                    serde_json::from_str(&stdout(&output)).expect("json");
                assert_eq!(verdict["intact"], serde_json::Value::Null);
            }
        }
    }
    let bad_keys = write("keys.json", b"{\"keys\":[{\"key_id\":\"k\"}]}");
    let output = verify(
        &exports().join("sample.jsonl"),
        &["--keys", bad_keys.to_str().expect("path")],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("keys file"), "{}", stderr(&output));
    assert_eq!(audit(&["verify"]).status.code(), Some(2), "missing FILE");
}

/// Rewrites the event line of `seq` with `edit`, or drops it when `edit` returns `None`.
fn edit_event(text: &str, seq: u64, edit: impl Fn(&str) -> Option<String>) -> String {
    let needle = format!("\"seq\":{seq},");
    let mut out = String::new();
    let mut found = false;
    for line in text.lines() {
        if line.starts_with("{\"event\":") && line.contains(&needle) {
            found = true;
            if let Some(new) = edit(line) {
                out.push_str(&new);
                out.push('\n');
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(found, "no event at seq {seq}");
    out
}

#[test]
fn generated_exports_verify_and_a_single_edit_is_found_at_its_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    for profile in [Profile::Plain, Profile::Payouts] {
        let path = dir.path().join(format!("{profile:?}.jsonl"));
        let written = generate(&path, 2_500, profile).expect("generate");
        assert!(written >= 2_500);
        let output = verify(&path, &["--json"]);
        assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
        let verdict: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
        assert_eq!(verdict["summary"]["events"], written);
        assert_eq!(verdict["summary"]["checkpoints_verified"], 3);
        let text = std::fs::read_to_string(&path).expect("read");
        let edited = dir.path().join("edited.jsonl");
        std::fs::write(
            &edited,
            edit_event(&text, 1_777, |l| {
                Some(l.replacen("\"at\":\"2026-11-22T", "\"at\":\"2026-11-23T", 1))
            }),
        )
        .expect("write");
        let output = verify(&edited, &[]);
        assert_eq!(output.status.code(), Some(1), "{profile:?}");
        assert!(
            stderr(&output).contains("broken at seq 1777, "),
            "{profile:?}: {}",
            stderr(&output)
        );
    }
}

/// The streaming, parallel pipeline must give exactly the core's verdict on the same
/// text: same break, same summary, with chunks that cut the file anywhere.
#[test]
fn the_pipeline_agrees_with_verify_export_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files: Vec<PathBuf> = vec![exports().join("sample.jsonl")];
    files.extend(
        tampered()
            .into_iter()
            .map(|(name, _)| exports().join(format!("tampered/{name}.jsonl"))),
    );
    let generated = dir.path().join("generated.jsonl");
    generate(&generated, 1_200, Profile::Payouts).expect("generate");
    let text = std::fs::read_to_string(&generated).expect("read");
    files.push(generated);
    let lines: Vec<&str> = text.lines().collect();
    let proof_line = (900..lines.len())
        .find(|&i| lines[i].contains("\"two_factor\":{"))
        .expect("an event with a proof");
    let mut mutated: Vec<(&str, Vec<String>)> = Vec::new();
    let owned = || {
        lines
            .iter()
            .map(|l| (*l).to_owned())
            .collect::<Vec<String>>()
    };
    let mut deleted = owned();
    deleted.remove(900);
    mutated.push(("deleted", deleted));
    let mut swapped = owned();
    swapped.swap(700, 701);
    mutated.push(("swapped", swapped));
    let mut bad_sig = owned();
    let at = bad_sig[proof_line].find("\"sig\":\"").expect("sig") + 7;
    let flipped = if &bad_sig[proof_line][at..=at] == "0" {
        "1"
    } else {
        "0"
    };
    bad_sig[proof_line].replace_range(at..=at, flipped);
    mutated.push(("bad-sig", bad_sig));
    for (name, lines) in mutated {
        let path = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&path, lines.join("\n")).expect("write");
        files.push(path);
    }
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        let expected = verify_export(&text, None).expect("usable");
        // One pass (every hash kept), and two (pass 1 called in after a few events).
        for hashes_pending_max in [ledger_audit::pipeline::HASHES_PENDING_MAX, 3] {
            for chunk_bytes in [97, 4096, ledger_audit::pipeline::CHUNK_BYTES] {
                let report = verify_file(
                    &path,
                    Options {
                        chunk_bytes,
                        hashes_pending_max,
                        ..Options::default()
                    },
                )
                .expect("usable");
                assert_eq!(
                    report,
                    expected,
                    "{} with {chunk_bytes}-byte chunks, pass 1 after {hashes_pending_max} hashes",
                    path.display()
                );
            }
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if ["deleted.jsonl", "swapped.jsonl", "bad-sig.jsonl"].contains(&name) {
            let found = expected.first_break.expect("mutation detected");
            assert!(
                matches!(found.location, BreakLocation::Event { .. }),
                "{name}: {found:?}"
            );
        }
    }
}

#[test]
fn a_progress_bar_only_on_a_terminal() {
    let path = exports().join("sample.jsonl");
    let bin = env!("CARGO_BIN_EXE_ledger-audit");
    // `script` gives the child a terminal and copies what it draws.
    let on_tty = Command::new("script")
        .args([
            "-qec",
            &format!("{bin} verify {}", path.display()),
            "/dev/null",
        ])
        .env("LEDGER_AUDIT_PROGRESS_MIN_BYTES", "0")
        .output()
        .expect("script(1) from util-linux");
    assert_eq!(on_tty.status.code(), Some(0), "{}", stdout(&on_tty));
    assert!(stdout(&on_tty).contains("verifying"), "{}", stdout(&on_tty));
    let piped = Command::new(bin)
        .args(["verify", path.to_str().expect("path")])
        .env("LEDGER_AUDIT_PROGRESS_MIN_BYTES", "0")
        .output()
        .expect("run");
    assert_eq!(piped.status.code(), Some(0));
    assert!(!stderr(&piped).contains("verifying"), "{}", stderr(&piped));
}

/// Events carrying extra data fields (the service's `request_id`) verify with the CLI as
/// with the core, and the summary is that of the same chain without them.
#[test]
fn request_ids_in_event_data_verify() {
    use ledger_core::money::{Currency, Money};
    use ledger_core::testkit::standard_tenant;
    use ledger_core::Command;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut summaries = Vec::new();
    for with_ids in [false, true] {
        let mut ledger = standard_tenant("acme", 3, "500.00");
        for n in 0..5 {
            if with_ids {
                ledger.set_request_id(Some(&format!("req-{n}")));
            }
            let po = format!("po_{n}");
            ledger
                .execute(
                    "usr_ann",
                    Command::RequestPayout {
                        payout: po.parse().expect("payout"),
                        account: "acct_ops".parse().expect("account"),
                        payee: "pay_lark".parse().expect("payee"),
                        money: Money::parse("1.00", Currency::Eur).expect("money"),
                        reference: po.clone(),
                        metadata: None,
                    },
                )
                .expect("request");
        }
        ledger.checkpoint();
        let text = ledger.export();
        assert_eq!(text.contains("\"request_id\":\"req-4\""), with_ids);
        let path = dir.path().join(format!("ids-{with_ids}.jsonl"));
        std::fs::write(&path, &text).expect("write");
        let output = verify(&path, &["--json"]);
        assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
        let verdict: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
        summaries.push(verdict["summary"].clone());
        let core = verify_export(&text, None).expect("usable");
        assert_eq!(core.first_break, None);
    }
    assert_eq!(summaries[0], summaries[1]);
}
