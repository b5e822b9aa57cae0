//! `ledger-audit`: verify an export offline. Exit codes follow ripgrep's split between a
//! verdict and a failure to reach one: 0 intact, 1 broken, 2 unusable input.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ledger_audit::generate::{generate, Profile};
use ledger_audit::{report, verify_file, Error, Options};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Files smaller than this verify too fast for a progress bar to help. The environment
/// variable `LEDGER_AUDIT_PROGRESS_MIN_BYTES` overrides it (the tests use it).
const PROGRESS_BAR_MIN_BYTES: u64 = 64 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "ledger-audit",
    version,
    about = "Verify a payout-ledger export offline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify an export file, or a ledger database: exit 0 intact, 1 broken, 2 unusable.
    Verify {
        /// The export (JSON Lines, DESIGN section 4).
        #[arg(
            required_unless_present = "database_url",
            conflicts_with = "database_url"
        )]
        file: Option<PathBuf>,
        /// Verify the chains stored in this database instead (`sqlite:…`, `postgres://…`).
        #[arg(long, value_name = "URL", requires = "keys")]
        database_url: Option<String>,
        /// With --database-url: only this tenant (default: every tenant visible).
        #[arg(long, requires = "database_url")]
        tenant: Option<String>,
        /// Print the verdict as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Pin the public keys: the JSON of `GET /v1/ledger/keys`, obtained out of band.
        #[arg(long, value_name = "FILE")]
        keys: Option<PathBuf>,
    },
    /// Write one stored tenant's export (DESIGN section 4).
    Export {
        /// The ledger database (`sqlite:…`, `postgres://…`).
        #[arg(long, value_name = "URL")]
        database_url: String,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The public keys to list in the export (the JSON of `GET /v1/ledger/keys`).
        #[arg(long, value_name = "FILE")]
        keys: Option<PathBuf>,
        /// Where to write it (default: standard output).
        #[arg(long, value_name = "FILE", default_value = "-")]
        out: PathBuf,
    },
    /// Write a large valid export for benchmarks.
    #[command(hide = true)]
    Generate {
        /// At least this many events (whole payouts).
        #[arg(long)]
        events: u64,
        /// What the log is made of.
        #[arg(long, value_enum, default_value = "plain")]
        profile: Profile,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

fn print(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

fn fail(error: &Error, json: bool) -> ExitCode {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if json {
        let value = serde_json::json!({"intact": null, "error": message});
        let _ = print(&format!("{value}\n"));
    }
    eprintln!("ledger-audit: unusable input: {message}");
    ExitCode::from(2)
}

fn progress_bar(file: &std::path::Path) -> Option<indicatif::ProgressBar> {
    let size = std::fs::metadata(file).ok()?.len();
    let min = std::env::var("LEDGER_AUDIT_PROGRESS_MIN_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PROGRESS_BAR_MIN_BYTES);
    if size < min || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(size);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} verifying [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.tick();
    Some(bar)
}

fn verify(file: PathBuf, json: bool, keys: Option<PathBuf>) -> ExitCode {
    let pinned = match keys.as_deref().map(report::read_keys).transpose() {
        Ok(pinned) => pinned,
        Err(e) => return fail(&e, json),
    };
    let progress = progress_bar(&file);
    let result = verify_file(
        &file,
        Options {
            pinned,
            progress: progress.clone(),
            ..Options::default()
        },
    );
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let report = match result {
        Ok(report) => report,
        Err(e) => return fail(&e, json),
    };
    let printed = if json {
        print(&format!("{}\n", report::json(&report)))
    } else {
        print(&report::human(&report))
    };
    if printed != ExitCode::SUCCESS {
        return printed;
    }
    match report::first_break_line(&report) {
        None => ExitCode::SUCCESS,
        Some(line) => {
            eprintln!("ledger-audit: {line}");
            ExitCode::from(1)
        }
    }
}

/// Verifies every tenant of a database; the exit code is the worst verdict.
fn verify_database(
    url: &str,
    tenant: Option<String>,
    json: bool,
    keys: &std::path::Path,
) -> ExitCode {
    let pinned = match report::read_keys(keys) {
        Ok(pinned) => pinned,
        Err(e) => return fail(&e, json),
    };
    let tenant = match tenant
        .map(|t| t.parse::<ledger_core::ids::TenantId>())
        .transpose()
    {
        Ok(tenant) => tenant,
        Err(e) => return fail(&Error::Database(format!("--tenant: {e}")), json),
    };
    let reports = match ledger_audit::database::verify(url, tenant.as_ref(), &pinned) {
        Ok(reports) => reports,
        Err(e) => return fail(&e, json),
    };
    let mut broken = false;
    for (tenant, report) in &reports {
        let printed = if json {
            print(&format!("{}\n", report::json(report)))
        } else {
            print(&report::human(report))
        };
        if printed != ExitCode::SUCCESS {
            return printed;
        }
        if let Some(line) = report::first_break_line(report) {
            eprintln!("ledger-audit: tenant {tenant}: {line}");
            broken = true;
        }
    }
    if broken {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn export(url: &str, tenant: &str, keys: Option<PathBuf>, out: &std::path::Path) -> ExitCode {
    let records: Vec<ledger_core::crypto::KeyRecord> =
        match keys.as_deref().map(report::read_keys).transpose() {
            Ok(set) => set.map(|s| s.iter().cloned().collect()).unwrap_or_default(),
            Err(e) => return fail(&e, false),
        };
    let tenant: ledger_core::ids::TenantId = match tenant.parse() {
        Ok(tenant) => tenant,
        Err(e) => return fail(&Error::Database(format!("--tenant: {e}")), false),
    };
    match ledger_audit::database::export(url, &tenant, &records, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, false),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify {
            file,
            database_url,
            tenant,
            json,
            keys,
        } => match (file, database_url, keys) {
            (_, Some(url), Some(keys)) => verify_database(&url, tenant, json, &keys),
            (Some(file), None, keys) => verify(file, json, keys),
            (None, _, _) | (_, Some(_), None) => fail(
                &Error::Database("give FILE, or --database-url with --keys".into()),
                json,
            ),
        },
        Command::Export {
            database_url,
            tenant,
            keys,
            out,
        } => export(&database_url, &tenant, keys, &out),
        Command::Generate {
            events,
            profile,
            out,
        } => match generate(&out, events, profile) {
            Ok(written) => {
                eprintln!("ledger-audit: wrote {written} events to {}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, false),
        },
    }
}
