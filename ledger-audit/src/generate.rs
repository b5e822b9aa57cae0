//! Writes large, valid exports for benchmarks (the hidden `generate` subcommand): a
//! standard tenant decided by the writer's own rules (`ledger_core::testkit`), streamed
//! to the file without keeping the events in memory, a checkpoint every 1000 events.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ledger_core::checkpoint::Checkpoint;
use ledger_core::event::Event;
use ledger_core::money::{Currency, Money};
use ledger_core::testkit::{standard_tenant, Ledger};
use ledger_core::verify::lines;
use ledger_core::Command;

use crate::error::Error;

/// What the generated log is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Requests and approvals: no event carries a signature.
    Plain,
    /// Whole lifecycles (request, approve, authorize and execute with 2FA, release by a
    /// service): two events in five carry a 2FA proof.
    Payouts,
}

impl Profile {
    fn events_per_payout(self) -> u64 {
        match self {
            Profile::Plain => 2,
            Profile::Payouts => 5,
        }
    }
}

/// Checkpoint cadence, as the service's default.
const CHECKPOINT_EVERY: u64 = 1000;

fn id<T: std::str::FromStr>(text: &str) -> Result<T, Error>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| Error::Generate(format!("id {text:?}: {e}")))
}

fn decided(result: Result<Vec<Event>, ledger_core::Rejection>) -> Result<Vec<Event>, Error> {
    result.map_err(|e| Error::Generate(format!("the writer refused a command: {e}")))
}

fn payout(ledger: &mut Ledger, n: u64, profile: Profile) -> Result<Vec<Event>, Error> {
    let po = format!("po_{n}");
    let mut events = decided(ledger.execute(
        "usr_ann",
        Command::RequestPayout {
            payout: id(&po)?,
            account: id("acct_ops")?,
            payee: id("pay_lark")?,
            money:
                Money::parse("12.34", Currency::Eur).map_err(|e| Error::Generate(e.to_string()))?,
            reference: format!("inv-{n}"),
            metadata: None,
        },
    ))?;
    let approver = if n % 2 == 0 { "usr_bob" } else { "usr_bea" };
    events.extend(decided(ledger.execute(
        approver,
        Command::ApprovePayout {
            payout: id(&po)?,
            batch: None,
        },
    ))?);
    if profile == Profile::Plain {
        return Ok(events);
    }
    let proof = ledger.proof("usr_cat", "payout.authorize", &po);
    events.extend(decided(ledger.execute(
        "usr_cat",
        Command::AuthorizePayout {
            payout: id(&po)?,
            two_factor: Some(proof),
            batch: None,
        },
    ))?);
    let proof = ledger.proof("usr_dan", "payout.execute", &po);
    events.extend(decided(ledger.execute(
        "usr_dan",
        Command::ExecutePayout {
            payout: id(&po)?,
            rail: None,
            two_factor: Some(proof),
            batch: None,
        },
    ))?);
    events.extend(decided(ledger.execute(
        "svc_settlement",
        Command::ReleasePayout {
            payout: id(&po)?,
            two_factor: None,
            batch: None,
        },
    ))?);
    Ok(events)
}

/// Writes `batch` as event lines, signing a checkpoint at every [`CHECKPOINT_EVERY`]th
/// seq (of that event, not of the head after the batch).
fn write_events(
    writer: &mut impl Write,
    ledger: &Ledger,
    batch: &[Event],
    checkpoints: &mut Vec<Checkpoint>,
) -> std::io::Result<()> {
    for event in batch {
        let line = lines::event(event).map_err(std::io::Error::other)?;
        writer.write_all(line.as_bytes())?;
        writer.write_all(b"\n")?;
        if event.seq % CHECKPOINT_EVERY == 0 {
            checkpoints.push(Checkpoint::sign(
                ledger.tenant.clone(),
                event.seq,
                event.hash,
                event.at,
                "ckpt-1".parse().map_err(std::io::Error::other)?,
                &ledger.checkpoint_key,
            ));
        }
    }
    Ok(())
}

/// Writes an export of at least `events` events (whole payouts; the header's `to_seq`
/// says exactly how many) to `out`. Returns the number of events written.
pub fn generate(out: &Path, events: u64, profile: Profile) -> Result<u64, Error> {
    let write_error = |source| Error::Write {
        path: PathBuf::from(out),
        source,
    };
    let mut ledger = standard_tenant("acme", 7, "1000000000000.00");
    let setup = ledger.events.clone();
    ledger.forget_events();
    let per = profile.events_per_payout();
    let payouts = events.saturating_sub(ledger.head.seq).div_ceil(per);
    let to_seq = ledger.head.seq + payouts * per;

    let file = std::fs::File::create(out).map_err(write_error)?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let mut header = ledger.header();
    header.to_seq = to_seq;
    writer
        .write_all(lines::header(&header).as_bytes())
        .map_err(write_error)?;
    writer.write_all(b"\n").map_err(write_error)?;
    for record in ledger.keys.iter() {
        writeln!(writer, "{}", lines::key(record)).map_err(write_error)?;
    }
    let mut checkpoints = Vec::new();
    write_events(&mut writer, &ledger, &setup, &mut checkpoints).map_err(write_error)?;
    for n in 0..payouts {
        let batch = payout(&mut ledger, n, profile)?;
        write_events(&mut writer, &ledger, &batch, &mut checkpoints).map_err(write_error)?;
    }
    if ledger.head.seq != to_seq {
        return Err(Error::Generate(format!(
            "wrote {} events, announced {to_seq}",
            ledger.head.seq
        )));
    }
    if ledger.head.seq % CHECKPOINT_EVERY != 0 {
        checkpoints.push(ledger.checkpoint());
    }
    for checkpoint in &checkpoints {
        writeln!(writer, "{}", lines::checkpoint(checkpoint)).map_err(write_error)?;
    }
    writer.flush().map_err(write_error)?;
    Ok(to_seq)
}
