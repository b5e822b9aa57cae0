//! Criterion benchmarks of the core: decide + apply + seal per command, export-line
//! parsing (canonical bytes + SHA-256), and single-threaded verification of whole
//! exports. Figures and commands: docs/PERFORMANCE.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ledger_core::money::{Currency, Money};
use ledger_core::testkit::{standard_tenant, Ledger};
use ledger_core::verify::{parse_line, verify_export};
use ledger_core::Command;

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect(s)
}

fn request(n: usize) -> Command {
    Command::RequestPayout {
        payout: id(&format!("po_{n}")),
        account: id("acct_ops"),
        payee: id("pay_lark"),
        money: Money::parse("12.34", Currency::Eur).expect("money"),
        reference: format!("inv-{n}"),
        metadata: None,
    }
}

/// Runs `payouts` full lifecycles: request, approve, authorize (2FA), execute (2FA),
/// release by the settlement service. Five events per payout, two with a proof.
fn lifecycles(ledger: &mut Ledger, first: usize, payouts: usize) {
    for n in first..first + payouts {
        let po = format!("po_{n}");
        ledger.execute("usr_ann", request(n)).expect("request");
        ledger
            .execute(
                "usr_bob",
                Command::ApprovePayout {
                    payout: id(&po),
                    batch: None,
                },
            )
            .expect("approve");
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
        let proof = ledger.proof("usr_dan", "payout.execute", &po);
        ledger
            .execute(
                "usr_dan",
                Command::ExecutePayout {
                    payout: id(&po),
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
                    payout: id(&po),
                    two_factor: None,
                    batch: None,
                },
            )
            .expect("release");
    }
}

/// Requests and approvals only: events without signatures.
fn plain(ledger: &mut Ledger, first: usize, payouts: usize) {
    for n in first..first + payouts {
        ledger.execute("usr_ann", request(n)).expect("request");
        ledger
            .execute(
                "usr_bob",
                Command::ApprovePayout {
                    payout: id(&format!("po_{n}")),
                    batch: None,
                },
            )
            .expect("approve");
    }
}

fn commands(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_apply_seal");
    group.throughput(Throughput::Elements(1));
    let base = standard_tenant("acme", 1, "100000000.00");
    group.bench_function("request", |b| {
        let mut ledger = standard_tenant("acme", 1, "100000000.00");
        ledger.forget_events();
        let mut n = 0;
        b.iter(|| {
            n += 1;
            black_box(ledger.execute("usr_ann", request(n)).expect("request"));
        });
    });
    group.bench_function("approve", |b| {
        b.iter_batched(
            || {
                let mut ledger = standard_tenant("acme", 1, "100000000.00");
                ledger.execute("usr_ann", request(0)).expect("request");
                ledger
            },
            |mut ledger| {
                black_box(
                    ledger
                        .execute(
                            "usr_bob",
                            Command::ApprovePayout {
                                payout: id("po_0"),
                                batch: None,
                            },
                        )
                        .expect("approve"),
                )
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("authorize_with_2fa_proof", |b| {
        b.iter_batched(
            || {
                let mut ledger = standard_tenant("acme", 1, "100000000.00");
                ledger.execute("usr_ann", request(0)).expect("request");
                ledger
                    .execute(
                        "usr_bob",
                        Command::ApprovePayout {
                            payout: id("po_0"),
                            batch: None,
                        },
                    )
                    .expect("approve");
                let proof = ledger.proof("usr_cat", "payout.authorize", "po_0");
                (ledger, proof)
            },
            |(mut ledger, proof)| {
                black_box(
                    ledger
                        .execute(
                            "usr_cat",
                            Command::AuthorizePayout {
                                payout: id("po_0"),
                                two_factor: Some(proof),
                                batch: None,
                            },
                        )
                        .expect("authorize"),
                )
            },
            BatchSize::SmallInput,
        );
    });
    drop(base);
    group.finish();
}

fn export_of(build: fn(&mut Ledger, usize, usize), payouts: usize) -> (String, Ledger) {
    let mut ledger = standard_tenant("acme", 1, "100000000.00");
    build(&mut ledger, 0, payouts);
    ledger.checkpoint();
    (ledger.export(), ledger)
}

fn verification(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify_single_thread");
    for (name, build, payouts) in [
        ("plain", plain as fn(&mut Ledger, usize, usize), 5_000),
        (
            "payout_heavy",
            lifecycles as fn(&mut Ledger, usize, usize),
            2_000,
        ),
    ] {
        let (text, ledger) = export_of(build, payouts);
        let events = ledger.head.seq;
        group.throughput(Throughput::Elements(events));
        group.sample_size(10);
        group.bench_function(format!("{name}_{events}_events"), |b| {
            b.iter(|| {
                let report =
                    verify_export(black_box(&text), Some(ledger.keys.clone())).expect("usable");
                assert!(report.is_intact());
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("parse_line");
    let (text, _) = export_of(lifecycles, 200);
    let event_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"type\":\"event\""))
        .collect();
    group.throughput(Throughput::Elements(event_lines.len() as u64));
    group.bench_function("event_lines_with_hash", |b| {
        b.iter(|| {
            for line in &event_lines {
                black_box(parse_line(line).expect("line"));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, commands, verification);
criterion_main!(benches);
