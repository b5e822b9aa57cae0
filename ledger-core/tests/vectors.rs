//! The outside vectors, used as they are, from the repository's byte-for-byte copy
//! (tests/vectors/), which is held equal to shared/vectors wherever that is beside the
//! checkout.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{read_vector, vectors_dir};
use ledger_core::canonical;
use ledger_core::crypto::{verify_strict, PublicKeyBytes, Sig};
use ledger_core::verify::{verify_export, BreakLocation};

#[test]
fn sample_export_is_intact() {
    let report = verify_export(&read_vector("exports/sample.jsonl"), None).expect("usable");
    assert_eq!(report.first_break, None, "{report:#?}");
    let summary = &report.summary;
    assert_eq!(summary.events, 32);
    assert_eq!(summary.checkpoints_verified, 2);
    assert_eq!(summary.money_movements_without_two_factor, 0);
    assert_eq!(summary.money_movements_with_two_factor, 10);
    assert_eq!(summary.money_movements_by_services, 3);
    assert_eq!(summary.payouts_by_status.get("released"), Some(&3));
    assert_eq!(summary.payouts_by_status.get("executed"), Some(&2));
    let released = summary
        .released
        .get(&ledger_core::Currency::Eur)
        .expect("EUR");
    assert_eq!(released.to_string(), "16159.02");
    assert!(!summary.keys_pinned);
}

#[test]
fn every_tampered_export_breaks_where_expected() {
    let expected = read_vector("exports/tampered/expected.tsv");
    let mut checked = 0;
    for row in expected.lines().filter(|l| !l.trim().is_empty()) {
        let (name, location) = row.split_once('\t').expect("name<TAB>location");
        let text = read_vector(&format!("exports/tampered/{name}.jsonl"));
        let report = verify_export(&text, None).expect("usable");
        let found = report
            .first_break
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: not detected"));
        match location {
            "checkpoint" => assert!(
                matches!(found.location, BreakLocation::Checkpoint { .. }),
                "{name}: expected a checkpoint break, got {found:?}"
            ),
            seq => {
                let seq: u64 = seq.parse().expect("seq");
                assert_eq!(
                    found.location,
                    BreakLocation::Event { seq },
                    "{name}: {found:?}"
                );
            }
        }
        checked += 1;
    }
    let files = std::fs::read_dir(vectors_dir().join("exports/tampered"))
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        })
        .count();
    assert_eq!(checked, files, "every tampered file has an expectation");
    assert!(checked >= 12);
}

#[test]
fn jcs_vectors() {
    let cases = read_vector("jcs.jsonl");
    let mut n = 0;
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).expect("case");
        let input = case["input"].as_str().expect("input");
        let expected = case["canonical"].as_str().expect("canonical");
        let value = canonical::parse_value(input).expect(input);
        let bytes = canonical::to_canonical_vec(&value).expect("canonical");
        assert_eq!(std::str::from_utf8(&bytes).expect("utf-8"), expected);
        n += 1;
    }
    assert!(n >= 7);
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

#[test]
fn rfc8032_ed25519() {
    let text = read_vector("crypto/rfc8032_ed25519.txt");
    let mut n = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split('|').collect();
        let [name, secret, public, message, signature] = fields[..] else {
            panic!("row {line}");
        };
        let key = ed25519_dalek::SigningKey::from_bytes(&unhex(secret).try_into().expect("32"));
        assert_eq!(
            ledger_core::crypto::public_key_of(&key).to_hex(),
            public,
            "{name}"
        );
        let sig = ledger_core::crypto::sign(&key, &[], &unhex(message));
        assert_eq!(sig.to_hex(), signature, "{name}");
        let public = PublicKeyBytes::parse(public).expect("public");
        assert_eq!(
            verify_strict(&public, &unhex(message), &sig),
            Ok(()),
            "{name}"
        );
        let mut tampered = unhex(message);
        tampered.push(0);
        assert!(verify_strict(&public, &tampered, &sig).is_err(), "{name}");
        n += 1;
    }
    assert_eq!(n, 5);
}

#[test]
fn wycheproof_ed25519() {
    let text = read_vector("crypto/wycheproof_ed25519_test.tsv");
    let (mut valid, mut invalid) = (0, 0);
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let (id, result, public, message, signature) =
            (fields[0], fields[1], fields[2], fields[3], fields[4]);
        let outcome = match (
            PublicKeyBytes::parse(public),
            <[u8; 64]>::try_from(unhex(signature).as_slice()),
        ) {
            (Ok(public), Ok(sig)) => {
                verify_strict(&public, &unhex(message), &Sig::from_bytes(sig)).is_ok()
            }
            _ => false,
        };
        match result {
            "valid" => {
                assert!(outcome, "tc {id} should verify");
                valid += 1;
            }
            "invalid" => {
                assert!(!outcome, "tc {id} should not verify");
                invalid += 1;
            }
            other => panic!("tc {id}: unexpected result {other}"),
        }
    }
    assert_eq!(valid + invalid, 151);
}

/// The checkpoints' signatures answered by the caller (the auditor spreads them over its
/// cores), or not answered at all, give the verdict `verify_export` gives.
#[test]
fn checkpoint_signatures_answered_by_the_caller_or_not_give_the_same_verdict() {
    use ledger_core::verify::{parse_line, signatures_in_order, SignatureCache, Verifier};
    let expected = read_vector("exports/tampered/expected.tsv");
    let mut names = vec!["exports/sample.jsonl".to_owned()];
    for row in expected.lines().filter(|l| !l.trim().is_empty()) {
        let (name, _) = row.split_once('\t').expect("name<TAB>location");
        names.push(format!("exports/tampered/{name}.jsonl"));
    }
    let mut checkpoint_breaks = 0;
    for name in names {
        let text = read_vector(&name);
        let reference = verify_export(&text, None).expect("usable");
        for answered in [true, false] {
            let mut verifier = Verifier::new(None);
            let cache = SignatureCache::new();
            for (index, line) in text.lines().enumerate() {
                if !line.trim().is_empty() {
                    let parsed = parse_line(line).expect("line");
                    verifier.push(index + 1, parsed, &cache).expect("push");
                }
            }
            let (report, _spent) = verifier.finish_keeping_state(|keys, checkpoints| {
                if answered {
                    signatures_in_order(keys, checkpoints)
                } else {
                    Vec::new()
                }
            });
            assert_eq!(
                report.expect("usable"),
                reference,
                "{name}, answered {answered}"
            );
        }
        if matches!(
            reference.first_break.map(|b| b.location),
            Some(BreakLocation::Checkpoint { .. })
        ) {
            checkpoint_breaks += 1;
        }
    }
    assert!(
        checkpoint_breaks >= 1,
        "a checkpoint break is among the vectors"
    );
}

/// Every file under `dir`, by its path relative to `dir`, with its bytes.
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).expect("under dir");
                let bytes = std::fs::read(&path).expect("read");
                files.insert(relative.display().to_string(), bytes);
            }
        }
    }
    files
}

/// The differences between two trees of files: the paths missing from either, and those
/// whose bytes differ.
fn differences(copy: &Path, original: &Path) -> Vec<String> {
    let copy = files_under(copy);
    let original = files_under(original);
    let mut differences = Vec::new();
    for (path, bytes) in &original {
        match copy.get(path) {
            None => differences.push(format!("{path}: missing from the copy")),
            Some(copied) if copied != bytes => differences.push(format!("{path}: bytes differ")),
            Some(_) => {}
        }
    }
    for path in copy.keys().filter(|path| !original.contains_key(*path)) {
        differences.push(format!("{path}: only in the copy"));
    }
    differences
}

#[test]
fn the_repository_copy_is_byte_for_byte_the_outside_vectors() {
    let copy = vectors_dir();
    assert!(
        files_under(&copy).len() > 10,
        "{}: too few files",
        copy.display()
    );
    match test_support::outside_vectors_dir() {
        Some(original) => {
            let differences = differences(&copy, &original);
            assert!(
                differences.is_empty(),
                "tests/vectors differs from {} (never edit either; copy the outside set \
                 again): {differences:#?}",
                original.display()
            );
        }
        None => eprintln!("no shared/vectors beside the checkout: only the copy is used"),
    }
}

#[test]
fn the_copy_check_notices_one_changed_byte() {
    let original = tempfile::tempdir().expect("tempdir");
    let copy = tempfile::tempdir().expect("tempdir");
    for dir in [original.path(), copy.path()] {
        std::fs::create_dir(dir.join("crypto")).expect("mkdir");
        std::fs::write(dir.join("crypto/a.txt"), b"abc").expect("write");
        std::fs::write(dir.join("b.txt"), b"xyz").expect("write");
    }
    assert_eq!(
        differences(copy.path(), original.path()),
        Vec::<String>::new()
    );
    std::fs::write(copy.path().join("crypto/a.txt"), b"abd").expect("write");
    std::fs::write(copy.path().join("c.txt"), b"new").expect("write");
    std::fs::remove_file(copy.path().join("b.txt")).expect("remove");
    let mut found = differences(copy.path(), original.path());
    found.sort();
    assert_eq!(
        found,
        [
            "b.txt: missing from the copy",
            "c.txt: only in the copy",
            "crypto/a.txt: bytes differ"
        ]
    );
}
