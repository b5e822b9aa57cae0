//! The seed corpus: checks that the generated fixtures are what the targets expect, writes
//! the seeds (with `LEDGER_FUZZ_WRITE_SEEDS=1`), and replays every committed seed and
//! fuzz regression through the targets' code.
//!
//! Regenerate the seeds: `cd fuzz && LEDGER_FUZZ_WRITE_SEEDS=1 cargo test --test seeds`.

use std::path::{Path, PathBuf};

use ledger_core::verify::verify_export;
use ledger_fuzz::http_request::{http_request, seeds::seeds, Plan, STEPS_MAX, WORDS};
use ledger_fuzz::webhook_target::{self, webhook_target, POLICIES, SEED_URLS};
use ledger_fuzz::{
    command_decode, decide_fixture, export_mutate, export_verify, sample_ledger, seed_commands,
    testkit_keys,
};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The repository's copy of the outside vectors (tests/vectors/ at the root).
fn vectors_dir() -> PathBuf {
    fuzz_dir().join("..").join("tests").join("vectors")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn the_generated_export_verifies_intact() {
    let ledger = sample_ledger();
    let text = ledger.export();
    for pinned in [None, Some(testkit_keys().clone())] {
        let report = verify_export(&text, pinned).expect("usable");
        assert_eq!(report.first_break, None, "{report:#?}");
        assert_eq!(report.summary.checkpoints_verified, 2);
        assert_eq!(report.summary.commands_rejected, 1);
        assert_eq!(report.summary.money_movements_without_two_factor, 0);
    }
}

#[test]
fn every_seed_command_is_accepted_by_some_actor() {
    let mut ledger = sample_ledger();
    assert_eq!(
        ledger.head,
        decide_fixture().ledger.head,
        "deterministic fixture"
    );
    for (name, command) in seed_commands(&mut ledger) {
        let json = serde_json::to_string(&command).expect("json");
        let outcome = command_decode(json.as_bytes());
        if name == "create_tenant" {
            assert_eq!(outcome.accepted, 0, "{name}");
        } else {
            assert!(outcome.accepted > 0, "{name}: {json}");
        }
        assert_eq!(outcome.unsealable, 0, "{name}");
    }
}

#[test]
fn unmutated_and_resealed_exports_run() {
    export_mutate(&[]);
    export_mutate(&[1]);
    // Replace a value in line 20, then reseal.
    export_mutate(&[7, 0, 20, 2, 5, 1, 1, 1, 1]);
}

#[test]
fn every_http_seed_reads_back_and_gets_its_statuses() {
    assert!(WORDS.len() <= 256, "a word is one byte");
    for seed in seeds() {
        assert!(seed.plan.steps.len() <= STEPS_MAX, "{}", seed.name);
        assert_eq!(seed.plan.steps.len(), seed.expect.len(), "{}", seed.name);
        let bytes = seed.plan.encode();
        assert_eq!(
            Plan::decode(&bytes),
            seed.plan,
            "{}: encode/decode",
            seed.name
        );
        let exchanges = http_request(&bytes);
        for (n, (exchange, expect)) in exchanges.iter().zip(&seed.expect).enumerate() {
            assert!(
                exchange
                    .status
                    .is_some_and(|status| expect.contains(&status)),
                "{} request {}: {exchange:?}, expected one of {expect:?}",
                seed.name,
                n + 1
            );
        }
    }
}

#[test]
fn webhook_seeds_are_refused_or_accepted_as_the_module_says() {
    let accepted = |url: &str| webhook_target(&webhook_target::encode(0, 0, url));
    assert!(accepted("https://hooks.example.com/in?x=1"));
    assert!(accepted("https://93.184.216.34/"));
    for refused in [
        "http://127.0.0.1:9/",
        "http://0x7f.1/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[fd00:ec2::254]/",
        "https://user:pw@example.com/",
    ] {
        assert!(!accepted(refused), "{refused}");
    }
    // Allowed networks open 127.0.0.1, never the metadata endpoint.
    assert!(webhook_target(&webhook_target::encode(
        1,
        0,
        "http://127.0.0.1:9/"
    )));
    assert!(!webhook_target(&webhook_target::encode(
        2,
        0,
        "http://169.254.169.254/"
    )));
    // As a host, as an IPv6 literal.
    assert!(!webhook_target(&webhook_target::encode(0, 1, "10.1.2.3")));
    assert!(!webhook_target(&webhook_target::encode(0, 2, "::1")));
}

/// Writes the seeds when `LEDGER_FUZZ_WRITE_SEEDS=1`.
#[test]
fn write_seeds() {
    if std::env::var_os("LEDGER_FUZZ_WRITE_SEEDS").is_none() {
        return;
    }
    let export_dir = fuzz_dir().join("seeds").join("export_verify");
    let command_dir = fuzz_dir().join("seeds").join("command_decode");
    let http_dir = fuzz_dir().join("seeds").join("http_request");
    let webhook_dir = fuzz_dir().join("seeds").join("webhook_target");
    for dir in [&export_dir, &command_dir, &http_dir, &webhook_dir] {
        std::fs::create_dir_all(dir).expect("mkdir");
        for file in files(dir) {
            std::fs::remove_file(file).expect("rm");
        }
    }
    let write = |dir: &Path, name: &str, text: &str| {
        std::fs::write(dir.join(name), text).expect("write seed");
    };

    // Generated exports.
    let ledger = sample_ledger();
    let lines = ledger.export_lines();
    write(&export_dir, "generated-full.jsonl", &ledger.export());
    let standard = ledger_core::testkit::standard_tenant("acme", 1, "1000.00");
    write(
        &export_dir,
        "generated-standard-tenant.jsonl",
        &standard.export(),
    );
    let mut small = ledger_core::testkit::standard_tenant("acme", 1, "1000.00");
    small.checkpoint();
    let small_lines = small.export_lines();
    write(
        &export_dir,
        "generated-prologue-only.jsonl",
        &(small_lines[..3].join("\n") + "\n"),
    );
    write(
        &export_dir,
        "generated-small-checkpointed.jsonl",
        &(small_lines.join("\n") + "\n"),
    );
    // One line of each kind on its own (parse_line's inputs).
    let mut seen = std::collections::BTreeSet::new();
    for line in &lines {
        let kind = match ledger_core::verify::parse_line(line).expect("parse") {
            ledger_core::verify::ExportLine::Header(_) => "header".to_owned(),
            ledger_core::verify::ExportLine::Key(_) => "key".to_owned(),
            ledger_core::verify::ExportLine::Checkpoint(_) => "checkpoint".to_owned(),
            ledger_core::verify::ExportLine::Event(e) => format!("event-{}", e.kind),
        };
        if seen.insert(kind.clone()) {
            write(&export_dir, &format!("line-{kind}.json"), line);
        }
    }

    // The shared conformance vectors.
    let vectors = vectors_dir();
    let exports = vectors.join("exports");
    // Read and written (not copied): the vectors are read-only, the seeds need not be.
    let copy = |from: &Path, to: PathBuf| {
        std::fs::write(to, std::fs::read(from).expect("read vector")).expect("write seed");
    };
    copy(
        &exports.join("sample.jsonl"),
        export_dir.join("vector-sample.jsonl"),
    );
    for file in files(&exports.join("tampered")) {
        if file.extension().is_some_and(|x| x == "jsonl") {
            let name = file.file_name().and_then(|n| n.to_str()).expect("name");
            copy(&file, export_dir.join(format!("vector-tampered-{name}")));
        }
    }

    // Commands.
    let mut ledger = sample_ledger();
    for (name, command) in seed_commands(&mut ledger) {
        let json = serde_json::to_string(&command).expect("json");
        write(&command_dir, &format!("{name}.json"), &json);
    }

    // Requests: plans of the http_request target (binary: `Plan::encode`).
    for seed in seeds() {
        std::fs::write(
            http_dir.join(format!("{}.bin", seed.name)),
            seed.plan.encode(),
        )
        .expect("write seed");
    }

    // Webhook URLs: each under every fixed policy, as it is; hosts and IPv6 literals.
    for (n, url) in SEED_URLS.iter().enumerate() {
        for policy in 0..POLICIES.len() {
            let bytes = webhook_target::encode(policy as u8, 0, url);
            std::fs::write(
                webhook_dir.join(format!("url-{n:02}-policy-{policy}")),
                bytes,
            )
            .expect("write seed");
        }
    }
    for (mode, host) in [
        (1, "10.0.0.1"),
        (1, "[::1]:8080"),
        (2, "::ffff:a9fe:a9fe"),
        (3, "example.com"),
    ] {
        let bytes = webhook_target::encode(0, mode as u8, host);
        std::fs::write(
            webhook_dir.join(format!(
                "mode-{mode}-{}",
                host.replace(['[', ']', ':'], "_")
            )),
            bytes,
        )
        .expect("write seed");
    }
}

/// Every committed seed and regression input goes through its target without a panic
/// (each is run; the failures are listed by file).
#[test]
fn committed_inputs_replay() {
    if std::env::var_os("LEDGER_FUZZ_WRITE_SEEDS").is_some() {
        return; // write_seeds is rewriting them in parallel
    }
    let mut replayed = 0;
    let mut failed = Vec::new();
    for (sub, target) in [
        ("export_verify", export_verify as fn(&[u8])),
        ("export_mutate", export_mutate as fn(&[u8])),
        ("command_decode", |data: &[u8]| {
            command_decode(data);
        }),
        ("http_request", |data: &[u8]| {
            http_request(data);
        }),
        ("webhook_target", |data: &[u8]| {
            webhook_target(data);
        }),
    ] {
        for root in ["seeds", "regressions"] {
            for file in files(&fuzz_dir().join(root).join(sub)) {
                let data = std::fs::read(&file).expect("read");
                if std::panic::catch_unwind(|| target(&data)).is_err() {
                    failed.push(file.display().to_string());
                }
                replayed += 1;
            }
        }
    }
    assert!(
        replayed > 0,
        "no seeds: regenerate them (see the top of this file)"
    );
    assert!(
        failed.is_empty(),
        "{} inputs fail (each panic is printed above):\n{}",
        failed.len(),
        failed.join("\n")
    );
}
