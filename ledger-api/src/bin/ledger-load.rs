//! The load generator: drives a running `ledger-api serve` with many concurrent HTTP
//! clients over many tenants (or one hot tenant) and reports commands per second and
//! latency percentiles. It sets its tenants up itself: `ledger-api tenant create` (with
//! the same storage flags as the server), then invites, roles, an account, a payee and
//! funds over the API. The commands measured need no 2FA: payout requests and
//! approvals by a second person (each approval right after its request), as the bulk of
//! a payments team's traffic.
//!
//! Every measured command carries an `Idempotency-Key`. A command that meets a
//! connection error, a timeout, a 502/503/504, a 429 or a 409 `idempotency_in_progress`
//! is sent again with the same key (after its Retry-After, at most one second) for up to
//! `--retry-seconds`, so that a retry across a database failover either replays the
//! first answer or applies once. With `--acknowledged FILE`, every 2xx answer is written
//! down (one tab-separated line: when the answering attempt was sent and answered, in
//! Unix ms; the tenant; `payout.requested` or `payout.approved`; the payout; the
//! `Ledger-Seq` header, `-` on a replay), for a check against the chain afterwards
//! (deploy/ha/failover-test).
//!
//! Example: see docs/PERFORMANCE.md.

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "Load generator for ledger-api")]
struct Args {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    /// The `ledger-api` binary (for `tenant create`).
    #[arg(long, default_value = "target/release/ledger-api")]
    ledger_api: String,
    /// Storage flags for `tenant create`, as the server was started with.
    #[arg(
        long,
        allow_hyphen_values = true,
        default_value = "--data-dir ./ledger-data"
    )]
    storage: String,
    /// Tenants to spread the load over.
    #[arg(long, default_value_t = 100)]
    tenants: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Tenant slug prefix (unique per run).
    #[arg(long, default_value = "load")]
    prefix: String,
    /// Tenants whose event stream (`GET /v1/events/stream`, SSE) is followed during the
    /// load, to measure how long an event takes to reach a subscriber.
    #[arg(long, default_value_t = 0)]
    sse_tenants: usize,
    /// How long a measured command is retried (same Idempotency-Key) after a connection
    /// error, a timeout, 502/503/504, 429 or 409 `idempotency_in_progress`.
    #[arg(long, default_value_t = 60)]
    retry_seconds: u64,
    /// Per-attempt timeout of a measured command, in seconds.
    #[arg(long, default_value_t = 10)]
    attempt_seconds: u64,
    /// Write every acknowledged (2xx) command to this file, one line each.
    #[arg(long)]
    acknowledged: Option<std::path::PathBuf>,
    /// PEM CA certificate to trust for an `https://` base (a server under a private CA).
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
}

/// Unix time in milliseconds.
fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// A 2xx answer to a measured command.
struct Acknowledged {
    body: Value,
    /// The `Ledger-Seq` header (absent on an idempotent replay).
    seq: Option<u64>,
    /// When the attempt that got the answer was sent, Unix ms.
    sent_ms: u128,
    /// When it was answered, Unix ms.
    answered_ms: u128,
}

/// Whether an answer is worth the same request again: the service (or the balancer)
/// could not serve it now, and nothing in it says the command was refused.
fn retryable(status: reqwest::StatusCode, body: &Value) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
        || (status.as_u16() == 409 && body["code"] == "idempotency_in_progress")
}

/// Posts a measured command under `idempotency_key`, retrying as the module says.
#[allow(clippy::too_many_arguments)]
async fn post_retried(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
    body: &Value,
    idempotency_key: &str,
    attempt: Duration,
    retry: Duration,
    retries: &AtomicUsize,
) -> anyhow::Result<Acknowledged> {
    let deadline = Instant::now() + retry;
    loop {
        let sent_ms = unix_ms();
        let sent = client
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .header("Idempotency-Key", idempotency_key)
            .timeout(attempt)
            .json(body)
            .send()
            .await;
        let wait = match sent {
            Err(error) => {
                if Instant::now() >= deadline {
                    bail!("{path}: {error}");
                }
                Duration::from_millis(200)
            }
            Ok(response) => {
                let status = response.status();
                let seq = response
                    .headers()
                    .get("ledger-seq")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let answer: Value = match response.json().await {
                    Ok(answer) => answer,
                    // The answer was cut off: whether it was a 2xx is unknown; ask again.
                    Err(_) if Instant::now() < deadline => {
                        retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    Err(error) => bail!("{path}: {status} {error}"),
                };
                if status.is_success() {
                    return Ok(Acknowledged {
                        body: answer,
                        seq,
                        sent_ms,
                        answered_ms: unix_ms(),
                    });
                }
                if !retryable(status, &answer) || Instant::now() >= deadline {
                    bail!("{path}: {status} {answer}");
                }
                Duration::from_millis(retry_after.map_or(200, |s| s.saturating_mul(1000)))
                    .min(Duration::from_secs(1))
            }
        };
        retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
    }
}

/// The `--acknowledged` file, shared by the clients.
type AckFile = Arc<Mutex<std::io::BufWriter<std::fs::File>>>;

fn write_ack(file: Option<&AckFile>, slug: &str, kind: &str, payout: &str, ack: &Acknowledged) {
    let Some(file) = file else { return };
    let seq = ack.seq.map_or_else(|| "-".to_owned(), |s| s.to_string());
    if let Ok(mut file) = file.lock() {
        let _ = writeln!(
            file,
            "{}\t{}\t{slug}\t{kind}\t{payout}\t{seq}",
            ack.sent_ms, ack.answered_ms
        );
    }
}

/// Opens one tenant's SSE stream at its head: only events committed from now count.
async fn subscribe(
    client: &reqwest::Client,
    base: &str,
    key: &str,
) -> anyhow::Result<reqwest::Response> {
    let feed: Value = client
        .get(format!("{base}/v1/events?limit=1"))
        .bearer_auth(key)
        .send()
        .await?
        .json()
        .await?;
    let head = feed["head"].as_u64().context("head")?;
    let response = client
        .get(format!("{base}/v1/events/stream?after={head}"))
        .bearer_auth(key)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("stream: {}", response.status());
    }
    Ok(response)
}

/// Follows an SSE stream until `deadline`; for every event, the time from its `at`
/// (when the writer decided it, just before its commit) to its arrival here, in µs.
async fn follow(mut response: reqwest::Response, deadline: Instant) -> anyhow::Result<Vec<u64>> {
    let mut latencies = Vec::new();
    let mut buffer = String::new();
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = match tokio::time::timeout(left, response.chunk()).await {
            Err(_elapsed) => break,
            Ok(chunk) => chunk?,
        };
        let Some(chunk) = chunk else { break };
        let arrived = ledger_api::util::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let event: Value = serde_json::from_str(data.trim())?;
            let at = event["at"].as_str().context("at")?;
            let at =
                ledger_core::time::Timestamp::parse(at).map_err(|e| anyhow::anyhow!("at: {e}"))?;
            latencies.push(u64::try_from(arrived.micros_since(at)).unwrap_or(0));
        }
    }
    Ok(latencies)
}

struct Tenant {
    slug: String,
    requester: String,
    approver: String,
    account: String,
    payee: String,
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let mut request = client.post(format!("{base}{path}")).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{path}: {status} {body}");
    }
    Ok(body)
}

/// How long to wait, at Unix time `seconds`, before computing a TOTP code: in a step's
/// last two seconds, until the next step begins. A code for the previous step computed
/// then could reach the server in the next step, outside its ±1 window (this once failed
/// a set-up).
fn wait_before_code(seconds: i64) -> Duration {
    let into_step = seconds.rem_euclid(30);
    if into_step >= 28 {
        Duration::from_secs(u64::try_from(30 - into_step).unwrap_or(0))
    } else {
        Duration::ZERO
    }
}

async fn code(secret_b32: &str, offset: i64) -> anyhow::Result<String> {
    let secret = totp_rs::Secret::Encoded(secret_b32.to_owned())
        .to_bytes()
        .map_err(|e| anyhow::anyhow!("secret: {e:?}"))?;
    tokio::time::sleep(wait_before_code(ledger_api::util::now().unix_seconds())).await;
    let step = u64::try_from(ledger_api::util::now().unix_seconds() / 30 + offset)?;
    Ok(ledger_api::totp::code_at_step(&secret, step)?)
}

async fn person(
    client: &reqwest::Client,
    base: &str,
    invite: &str,
) -> anyhow::Result<(String, String, String)> {
    let redeemed = post(
        client,
        base,
        None,
        "/v1/invites/redeem",
        json!({ "invite": invite }),
    )
    .await?;
    let key = redeemed["api_key"].as_str().context("api_key")?.to_owned();
    let secret = redeemed["totp_secret"]
        .as_str()
        .context("secret")?
        .to_owned();
    post(
        client,
        base,
        Some(&key),
        "/v1/me/totp/confirm",
        json!({ "code": code(&secret, -1).await? }),
    )
    .await?;
    Ok((
        redeemed["user"].as_str().context("user")?.to_owned(),
        key,
        secret,
    ))
}

async fn setup(args: &Args, client: &reqwest::Client, n: usize) -> anyhow::Result<Tenant> {
    let slug = format!("{}-{n}", args.prefix);
    let mut command = std::process::Command::new(&args.ledger_api);
    command.args(args.storage.split_whitespace());
    let output = command
        .args([
            "tenant", "create", &slug, "--name", &slug, "--admin", "Admin",
        ])
        .output()
        .context("ledger-api tenant create")?;
    if !output.status.success() {
        bail!("tenant create: {}", String::from_utf8_lossy(&output.stderr));
    }
    let created: Value = serde_json::from_slice(&output.stdout)?;
    let base = args.base.as_str();
    let (_, admin, admin_secret) =
        person(client, base, created["invite"].as_str().context("invite")?).await?;
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for name in ["ann", "bob", "eve"] {
        let user = post(
            client,
            base,
            Some(&admin),
            "/v1/users",
            json!({ "name": name }),
        )
        .await?;
        let (id, key, _) = person(client, base, user["invite"].as_str().context("invite")?).await?;
        ids.push(id);
        keys.push(key);
    }
    let grants = json!({"otp": code(&admin_secret, 0).await?, "grants": [
        {"user": ids[0], "role": "requester"},
        {"user": ids[1], "role": "approver"},
        {"user": ids[2], "role": "treasurer"}]});
    post(client, base, Some(&admin), "/v1/roles", grants).await?;
    let account = post(
        client,
        base,
        Some(&keys[2]),
        "/v1/accounts",
        json!({"currency": "EUR", "name": "Ops"}),
    )
    .await?;
    let account = account["account"].as_str().context("account")?.to_owned();
    post(
        client,
        base,
        Some(&keys[2]),
        &format!("/v1/accounts/{account}/deposits"),
        json!({"amount": "1000000.00"}),
    )
    .await?;
    let payee = post(
        client,
        base,
        Some(&admin),
        "/v1/payees",
        json!({"name": "L", "iban": "DE89370400440532013000"}),
    )
    .await?;
    Ok(Tenant {
        slug,
        requester: keys[0].clone(),
        approver: keys[1].clone(),
        account,
        payee: payee["payee"].as_str().context("payee")?.to_owned(),
    })
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // Index arithmetic only; no money here.
    #[allow(clippy::float_arithmetic)]
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = reqwest::Client::builder().pool_max_idle_per_host(args.clients);
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?;
        builder = builder.add_root_certificate(
            reqwest::Certificate::from_pem(&pem).context("--ca-file: not a PEM certificate")?,
        );
    }
    let client = builder.build()?;
    let started = Instant::now();
    let mut tenants = Vec::new();
    for n in 0..args.tenants {
        tenants.push(setup(&args, &client, n).await?);
    }
    eprintln!(
        "set up {} tenants in {:.1?}",
        tenants.len(),
        started.elapsed()
    );
    let mut streams = Vec::new();
    for tenant in tenants.iter().take(args.sse_tenants) {
        streams.push(subscribe(&client, &args.base, &tenant.requester).await?);
    }
    let tenants = Arc::new(tenants);
    let errors = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let acknowledged: Option<AckFile> = match &args.acknowledged {
        None => None,
        Some(path) => Some(Arc::new(Mutex::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("--acknowledged {path:?}"))?,
        )))),
    };
    let (attempt, retry) = (
        Duration::from_secs(args.attempt_seconds),
        Duration::from_secs(args.retry_seconds),
    );
    let run = format!("{}-{}-{}", args.prefix, std::process::id(), unix_ms());
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut workers = Vec::new();
    for worker in 0..args.clients {
        let (client, tenants, errors, retries) = (
            client.clone(),
            Arc::clone(&tenants),
            Arc::clone(&errors),
            Arc::clone(&retries),
        );
        let (base, run, acknowledged) = (args.base.clone(), run.clone(), acknowledged.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = worker;
            while Instant::now() < deadline {
                let tenant = &tenants[n % tenants.len()];
                let key = format!("{run}-{worker}-{n}");
                n += 1;
                let body = json!({"account": tenant.account, "payee": tenant.payee, "amount": "1.00", "currency": "EUR", "reference": "load"});
                let t0 = Instant::now();
                let requested = post_retried(&client, &base, &tenant.requester, "/v1/payouts", &body, &format!("{key}-r"), attempt, retry, &retries).await;
                latencies.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
                let Ok(requested) = requested else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let Some(payout) = requested.body["payout"].as_str().map(str::to_owned) else { continue };
                write_ack(acknowledged.as_ref(), &tenant.slug, "payout.requested", &payout, &requested);
                let t1 = Instant::now();
                let approved = post_retried(&client, &base, &tenant.approver, &format!("/v1/payouts/{payout}/approve"), &json!({}), &format!("{key}-a"), attempt, retry, &retries).await;
                latencies.push(u64::try_from(t1.elapsed().as_micros()).unwrap_or(u64::MAX));
                match approved {
                    Ok(approved) => write_ack(acknowledged.as_ref(), &tenant.slug, "payout.approved", &payout, &approved),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut followers = Vec::new();
    for response in streams {
        followers.push(tokio::spawn(follow(response, deadline)));
    }
    let load_started = Instant::now();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await?);
    }
    let elapsed = load_started.elapsed();
    let mut sse = Vec::new();
    for follower in followers {
        sse.extend(follower.await??);
    }
    sse.sort_unstable();
    latencies.sort_unstable();
    if let Some(file) = &acknowledged {
        file.lock()
            .map_err(|_| anyhow::anyhow!("--acknowledged: poisoned"))?
            .flush()
            .context("--acknowledged")?;
    }
    let commands = latencies.len();
    let per_second = commands as u128 * 1_000_000 / elapsed.as_micros().max(1);
    println!(
        "{}",
        json!({
            "tenants": args.tenants,
            "clients": args.clients,
            "seconds": elapsed.as_secs(),
            "commands": commands,
            "errors": errors.load(Ordering::Relaxed),
            "retries": retries.load(Ordering::Relaxed),
            "commands_per_second": per_second as u64,
            "p50_ms": percentile(&latencies, 0.50) / 1000,
            "p99_ms": percentile(&latencies, 0.99) / 1000,
            "p50_us": percentile(&latencies, 0.50),
            "p99_us": percentile(&latencies, 0.99),
            "sse_tenants": args.sse_tenants,
            "sse_events": sse.len(),
            "sse_p50_us": percentile(&sse, 0.50),
            "sse_p99_us": percentile(&sse, 0.99),
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_wait_out_the_last_two_seconds_of_a_step() {
        assert_eq!(wait_before_code(1_800_000_000), Duration::ZERO);
        assert_eq!(wait_before_code(1_800_000_027), Duration::ZERO);
        assert_eq!(wait_before_code(1_800_000_028), Duration::from_secs(2));
        assert_eq!(wait_before_code(1_800_000_029), Duration::from_secs(1));
        assert_eq!(wait_before_code(1_800_000_030), Duration::ZERO);
        assert_eq!(wait_before_code(-2), Duration::from_secs(2));
    }
}
