//! The verdict for people (a short summary) and for programs (`--json`), and the pinned
//! key list.

use std::fmt::Write as _;
use std::path::Path;

use ledger_core::crypto::{KeyRecord, KeySet};
use ledger_core::verify::{Break, BreakLocation, Report};

use crate::error::Error;

/// Where a break is, in words: "seq 15" or "the checkpoint at seq 1000".
fn location(found: &Break) -> String {
    match found.location {
        BreakLocation::Event { seq } => format!("seq {seq}"),
        BreakLocation::Checkpoint { seq } => format!("the checkpoint at seq {seq}"),
    }
}

fn describe(found: &Break) -> String {
    let kind = serde_json::to_value(&found.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let code = found
        .code
        .as_ref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    let line = if found.line == 0 {
        String::new()
    } else {
        format!(", line {}", found.line)
    };
    format!("{}{line}: {kind}{code}: {}", location(found), found.reason)
}

/// The human summary, ending in a newline.
pub fn human(report: &Report) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let tenant = s
        .tenant
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    match &report.first_break {
        None => {
            let _ = writeln!(out, "INTACT: export of tenant {tenant}");
        }
        Some(found) => {
            let _ = writeln!(out, "BROKEN: export of tenant {tenant}");
            let _ = writeln!(out, "first break          {}", describe(found));
            if let Some(rule) = &report.also_rule_break {
                let _ = writeln!(out, "first rule break     {}", describe(rule));
            }
            let _ = writeln!(out, "(counts below stop at the first break)");
        }
    }
    let _ = writeln!(
        out,
        "events               {} ({} command.rejected)",
        s.events, s.commands_rejected
    );
    let statuses: Vec<String> = s
        .payouts_by_status
        .iter()
        .map(|(status, n)| format!("{status} {n}"))
        .collect();
    let payouts: u64 = s.payouts_by_status.values().sum();
    let _ = writeln!(
        out,
        "payouts              {payouts}{}{}",
        if statuses.is_empty() { "" } else { ": " },
        statuses.join(", ")
    );
    let money = |map: &std::collections::BTreeMap<ledger_core::Currency, rust_decimal::Decimal>| {
        if map.is_empty() {
            "none".to_owned()
        } else {
            map.iter()
                .map(|(currency, amount)| format!("{amount} {currency}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let _ = writeln!(out, "released             {}", money(&s.released));
    let _ = writeln!(out, "deposited            {}", money(&s.deposited));
    let _ = writeln!(
        out,
        "money movements      {} with 2FA, {} by services (no 2FA needed), {} without 2FA",
        s.money_movements_with_two_factor,
        s.money_movements_by_services,
        s.money_movements_without_two_factor
    );
    let _ = writeln!(
        out,
        "checkpoints          {} verified",
        s.checkpoints_verified
    );
    let keys: Vec<String> = s.keys_used.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        out,
        "keys used            {}",
        if keys.is_empty() {
            "none".to_owned()
        } else {
            keys.join(", ")
        }
    );
    if s.keys_pinned {
        let _ = writeln!(out, "keys                 pinned (--keys)");
    } else {
        let _ = writeln!(
            out,
            "keys                 NOT PINNED: the export's own key lines were trusted, and a \
             forger can ship their own keys; pass --keys with GET /v1/ledger/keys obtained \
             out of band"
        );
    }
    out
}

/// The machine-readable verdict: the report with `"intact"`.
pub fn json(report: &Report) -> String {
    let mut value = match serde_json::to_value(report) {
        Ok(value) => value,
        Err(e) => unreachable!("a report always serialises: {e}"),
    };
    if let Some(map) = value.as_object_mut() {
        map.insert("intact".into(), report.is_intact().into());
    }
    value.to_string()
}

/// The one-line summary of a break, for the exit-1 message.
pub fn first_break_line(report: &Report) -> Option<String> {
    report
        .first_break
        .as_ref()
        .map(|found| format!("broken at {}", describe(found)))
}

/// Reads a `--keys` file: the JSON of `GET /v1/ledger/keys`, either `{"keys":[...]}` or a
/// bare array of key records.
pub fn read_keys(path: &Path) -> Result<KeySet, Error> {
    let keys_error = |message: String| Error::Keys {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| keys_error(format!("not JSON: {e}")))?;
    let list = match value {
        serde_json::Value::Object(mut map) => map.remove("keys"),
        list @ serde_json::Value::Array(_) => Some(list),
        serde_json::Value::Null
        | serde_json::Value::Bool(_)
        | serde_json::Value::Number(_)
        | serde_json::Value::String(_) => None,
    };
    let Some(serde_json::Value::Array(list)) = list else {
        return Err(keys_error("expected {\"keys\":[...]} or [...]".into()));
    };
    if list.is_empty() {
        return Err(keys_error("no keys".into()));
    }
    let mut keys = KeySet::new();
    for (index, item) in list.into_iter().enumerate() {
        let record: KeyRecord = serde_json::from_value(item)
            .map_err(|e| keys_error(format!("key {}: {e}", index + 1)))?;
        keys.insert(record)
            .map_err(|e| keys_error(format!("key {}: {e}", index + 1)))?;
    }
    Ok(keys)
}
