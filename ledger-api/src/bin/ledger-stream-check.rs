//! Reads the relay's JetStream stream from its first message to its last and checks it
//! against the chains in the database (deploy/ha/broker-test): for every tenant of
//! `--expect` (lines `<tenant>\t<head seq>`, the database's heads), the stream must hold
//! the events 1..=head, each exactly once by `Nats-Msg-Id: <tenant>:<seq>`, in seq order,
//! and each payload the event that id names. Prints one JSON verdict; exits 0 when every
//! tenant checks out, 1 otherwise.

#![allow(clippy::print_stdout)] // The verdict is the output.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, consumer::pull};
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "Check the relay's JetStream stream against the database's chains")]
struct Args {
    /// NATS servers, comma-separated (any live node of the cluster will do).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The stream.
    #[arg(long, default_value = ledger_api::relay::STREAM)]
    stream: String,
    /// The database's heads: one `<tenant>\t<seq>` line per tenant.
    #[arg(long)]
    expect: std::path::PathBuf,
    /// Give up reading after this many seconds.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
}

#[derive(Debug, Default)]
struct Seen {
    /// The next seq expected in order.
    next: u64,
    messages: u64,
    duplicates: u64,
    out_of_order: u64,
    mismatched: u64,
    ids: std::collections::BTreeSet<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut expected = BTreeMap::new();
    let text = std::fs::read_to_string(&args.expect).context("--expect")?;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (tenant, seq) = line
            .split_once('\t')
            .with_context(|| format!("--expect: {line:?}"))?;
        expected.insert(tenant.trim().to_owned(), seq.trim().parse::<u64>()?);
    }
    let servers: Vec<async_nats::ServerAddr> = args
        .nats_url
        .split(',')
        .map(|u| u.trim().parse())
        .collect::<Result<_, _>>()
        .context("--nats-url")?;
    let client = async_nats::connect(servers).await.context("connect")?;
    let js = jetstream::new(client);
    let mut stream = js.get_stream(&args.stream).await.context("stream")?;
    let info = stream.info().await.context("stream info")?;
    let (stored, replicas) = (info.state.messages, info.config.num_replicas);
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .context("consumer")?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let (mut read, mut without_id) = (0u64, 0u64);
    while read < stored && Instant::now() < deadline {
        let mut batch = match consumer
            .fetch()
            .max_messages(5_000)
            .expires(Duration::from_secs(2))
            .messages()
            .await
        {
            Ok(batch) => batch,
            Err(error) => {
                // A cluster that just lost a node may refuse a pull for a moment.
                eprintln!("ledger-stream-check: fetch: {error}; again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut got = 0;
        let mut failed = false;
        while let Some(message) = batch.next().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    eprintln!("ledger-stream-check: message: {error}; fetching again");
                    failed = true;
                    break;
                }
            };
            got += 1;
            read += 1;
            let Some(id) = message
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned())
            else {
                without_id += 1;
                continue;
            };
            let Some((tenant, seq)) = id.rsplit_once(':') else {
                without_id += 1;
                continue;
            };
            let seq: u64 = seq.parse().with_context(|| format!("id {id:?}"))?;
            let entry = seen.entry(tenant.to_owned()).or_insert_with(|| Seen {
                next: 1,
                ..Seen::default()
            });
            entry.messages += 1;
            let event: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
            if event["tenant"].as_str() != Some(tenant) || event["seq"].as_u64() != Some(seq) {
                entry.mismatched += 1;
            }
            if !entry.ids.insert(seq) {
                entry.duplicates += 1;
            } else if seq != entry.next {
                entry.out_of_order += 1;
            }
            entry.next = entry.next.max(seq + 1);
        }
        if got == 0 && !failed {
            break;
        }
    }
    let mut tenants = Vec::new();
    let (mut missing_total, mut duplicates, mut out_of_order, mut mismatched) = (0, 0, 0, 0);
    for (tenant, head) in &expected {
        let entry = seen.remove(tenant).unwrap_or_default();
        let missing = (1..=*head).filter(|s| !entry.ids.contains(s)).count() as u64;
        let beyond = entry.ids.iter().filter(|s| **s > *head).count() as u64;
        missing_total += missing;
        duplicates += entry.duplicates;
        out_of_order += entry.out_of_order;
        mismatched += entry.mismatched + beyond;
        tenants.push(
            json!({"tenant": tenant, "head": head, "messages": entry.messages,
            "missing": missing, "duplicates": entry.duplicates,
            "out_of_order": entry.out_of_order, "not_in_chain": beyond}),
        );
    }
    let intact = missing_total == 0
        && duplicates == 0
        && out_of_order == 0
        && mismatched == 0
        && without_id == 0;
    println!(
        "{}",
        json!({
            "intact": intact,
            "stream_messages": stored,
            "stream_replicas": replicas,
            "read": read,
            "expected_events": expected.values().sum::<u64>(),
            "missing": missing_total,
            "duplicates": duplicates,
            "out_of_order": out_of_order,
            "mismatched": mismatched,
            "without_id": without_id,
            "other_tenants": seen.len(),
            "tenants": tenants,
        })
    );
    if !intact {
        bail!("the stream does not match the chains");
    }
    Ok(())
}
