//! The workspace's invariants, held by a test (rust-analyzer style): dependencies point
//! one way, and ledger-core stays pure.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--all-features"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("metadata JSON")
}

fn name_of(id: &str, packages: &BTreeMap<String, String>) -> String {
    packages.get(id).cloned().unwrap_or_else(|| id.to_owned())
}

/// Normal (non-dev, non-build) dependencies of every package, by name.
fn normal_graph(meta: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let packages: BTreeMap<String, String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id").to_owned(),
                p["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect();
    let mut graph = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("nodes") {
        let from = name_of(node["id"].as_str().expect("id"), &packages);
        let deps: BTreeSet<String> = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .expect("kinds")
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| name_of(d["pkg"].as_str().expect("pkg"), &packages))
            .collect();
        graph.entry(from).or_insert_with(BTreeSet::new).extend(deps);
    }
    graph
}

/// ledger-core's own normal dependency tree, resolved for ledger-core alone (as it is
/// built for the auditor), so that other members' features do not leak in.
fn core_tree() -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args([
            "tree",
            "-p",
            "ledger-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn ledger_core_performs_no_io_and_reads_no_clock_or_randomness() {
    let deps = core_tree();
    for forbidden in [
        "tokio",
        "sqlx",
        "axum",
        "hyper",
        "reqwest",
        "async-nats",
        "tower",
        "mio",
        "socket2",
        "getrandom",
        "rand",
        "chrono",
        "rayon",
    ] {
        assert!(
            !deps.contains(forbidden),
            "ledger-core depends on {forbidden}"
        );
    }
    assert!(
        deps.contains("rust_decimal"),
        "sanity: the tree was read: {deps:?}"
    );
}

#[test]
fn dependencies_point_one_way() {
    let graph = normal_graph(&metadata());
    let members = [
        "ledger-core",
        "projections",
        "ledger-store",
        "ledger-api",
        "ledger-audit",
        // The tests' surroundings: a dev-dependency only, never a normal one.
        "test-support",
    ];
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("ledger-core", &[][..]),
        ("projections", &["ledger-core"][..]),
        ("ledger-store", &["ledger-core", "projections"][..]),
        (
            "ledger-api",
            &["ledger-core", "projections", "ledger-store"][..],
        ),
        ("ledger-audit", &["ledger-core", "ledger-store"][..]),
        ("test-support", &[][..]),
    ]);
    for member in members {
        let direct = &graph[member];
        for other in members {
            if direct.contains(other) {
                assert!(
                    allowed[member].contains(&other),
                    "{member} must not depend on {other}"
                );
            }
        }
    }
}
