//! What both backends share: checking a batch before it is written, and checking rows
//! when they are read back (the bytes are re-parsed and re-hashed; nothing is trusted
//! because it came from our own database).

use ledger_core::checkpoint::Checkpoint;
use ledger_core::crypto::{Hash, Sig, EVENT_HASH_PREFIX};
use ledger_core::event::{ChainHead, Event};
use ledger_core::ids::{KeyId, TenantId};
use ledger_core::time::Timestamp;

use crate::error::{AppendError, StoreError};
use crate::{BATCH_EVENTS_MAX, PAGE_LIMIT_MAX};

/// A seq as the databases store it (BIGINT / INTEGER). Event seqs are below 2^53 by the
/// canonical domain; a cursor beyond i64 saturates (nothing lies after it).
pub(crate) fn seq_to_db(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

pub(crate) fn check_limit(limit: u32) -> Result<i64, StoreError> {
    if limit > PAGE_LIMIT_MAX {
        return Err(StoreError::Limit {
            requested: limit,
            max: PAGE_LIMIT_MAX,
        });
    }
    Ok(i64::from(limit))
}

fn corrupt(tenant: &TenantId, seq: u64, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tenant: tenant.as_str().to_owned(),
        seq,
        reason: reason.into(),
    }
}

pub(crate) fn seq_from_db(tenant: &TenantId, seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| corrupt(tenant, 0, format!("negative seq {seq}")))
}

pub(crate) fn hash_from_db(tenant: &TenantId, seq: u64, bytes: &[u8]) -> Result<Hash, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(Hash::from_bytes)
        .map_err(|_| corrupt(tenant, seq, "hash is not 32 bytes"))
}

/// The head of a row `(seq, hash)`, or genesis when the tenant has no row.
pub(crate) fn head_from_row(
    tenant: &TenantId,
    row: Option<(i64, Vec<u8>)>,
) -> Result<ChainHead, StoreError> {
    match row {
        None => Ok(ChainHead::GENESIS),
        Some((seq, hash)) => {
            let seq = seq_from_db(tenant, seq)?;
            Ok(ChainHead {
                seq,
                hash: hash_from_db(tenant, seq, &hash)?,
            })
        }
    }
}

/// Checks a batch before anything is written: one tenant, contiguous from the expected
/// head, linked by prev, and each event's bytes exactly its canonical bytes, hashing to
/// its hash. The queryable columns are taken from the event, so they cannot disagree
/// with the stored bytes.
pub(crate) fn check_batch(
    tenant: &TenantId,
    expected_head: ChainHead,
    events: &[(Event, Vec<u8>)],
) -> Result<(), AppendError> {
    let invalid = |index: usize, reason: &'static str| AppendError::InvalidBatch { index, reason };
    if events.is_empty() {
        return Err(invalid(0, "the batch is empty"));
    }
    if events.len() > BATCH_EVENTS_MAX {
        return Err(invalid(
            BATCH_EVENTS_MAX,
            "the batch exceeds BATCH_EVENTS_MAX",
        ));
    }
    let mut head = expected_head;
    for (index, (event, bytes)) in events.iter().enumerate() {
        if &event.tenant != tenant {
            return Err(invalid(index, "event of another tenant"));
        }
        if Some(event.seq) != head.seq.checked_add(1) {
            return Err(invalid(index, "seq does not follow the head"));
        }
        if event.prev != head.hash {
            return Err(invalid(index, "prev is not the hash of the previous event"));
        }
        if Hash::of(EVENT_HASH_PREFIX, bytes) != event.hash {
            return Err(invalid(index, "bytes do not hash to the event's hash"));
        }
        match event.canonical_bytes() {
            Ok(canonical) if &canonical == bytes => {}
            Ok(_) | Err(_) => {
                return Err(invalid(index, "bytes are not the event's canonical bytes"))
            }
        }
        head = event.head();
    }
    Ok(())
}

/// Rebuilds an event from its stored row: parses the canonical bytes with
/// [`Event::parse`] and checks that they hash to the stored hash, that the recomputed
/// hash agrees, that the body fits its kind, and that tenant and seq match the row's key.
pub(crate) fn event_from_row(
    tenant: &TenantId,
    seq: i64,
    hash: &[u8],
    canonical: Vec<u8>,
) -> Result<(Event, Vec<u8>), StoreError> {
    let seq = seq_from_db(tenant, seq)?;
    let stored_hash = hash_from_db(tenant, seq, hash)?;
    if Hash::of(EVENT_HASH_PREFIX, &canonical) != stored_hash {
        return Err(corrupt(
            tenant,
            seq,
            "canonical bytes do not hash to the stored hash",
        ));
    }
    let text = std::str::from_utf8(&canonical)
        .map_err(|_| corrupt(tenant, seq, "canonical bytes are not UTF-8"))?;
    // The stored bytes are the envelope without `hash`; `Event::parse` reads an envelope
    // with it. Key order does not matter to the parser, which re-derives the canonical
    // bytes from the fields and hashes them.
    let Some(body) = text.strip_suffix('}') else {
        return Err(corrupt(
            tenant,
            seq,
            "canonical bytes are not a JSON object",
        ));
    };
    let mut envelope = String::with_capacity(text.len() + 80);
    envelope.push_str(body);
    envelope.push_str(",\"hash\":\"");
    envelope.push_str(&stored_hash.to_hex());
    envelope.push_str("\"}");
    let parsed = Event::parse(&envelope).map_err(|e| corrupt(tenant, seq, e.to_string()))?;
    if let Some(error) = parsed.body_error {
        return Err(corrupt(tenant, seq, error.to_string()));
    }
    if parsed.computed_hash != stored_hash || parsed.event.hash != stored_hash {
        return Err(corrupt(
            tenant,
            seq,
            "recomputed hash differs from the stored hash",
        ));
    }
    if &parsed.event.tenant != tenant || parsed.event.seq != seq {
        return Err(corrupt(
            tenant,
            seq,
            "envelope tenant or seq differs from the row's key",
        ));
    }
    Ok((parsed.event, canonical))
}

/// The columns of a stored checkpoint.
#[derive(sqlx::FromRow)]
pub(crate) struct CheckpointRow {
    pub seq: i64,
    pub head: Vec<u8>,
    pub at: String,
    pub key_id: String,
    pub sig: Vec<u8>,
}

pub(crate) fn checkpoint_from_row(
    tenant: &TenantId,
    row: CheckpointRow,
) -> Result<Checkpoint, StoreError> {
    let seq = seq_from_db(tenant, row.seq)?;
    let bad = |what: &str| corrupt(tenant, seq, format!("checkpoint {what}"));
    Ok(Checkpoint {
        v: 1,
        tenant: tenant.clone(),
        seq,
        head: hash_from_db(tenant, seq, &row.head)?,
        at: Timestamp::parse(&row.at).map_err(|_| bad("time"))?,
        key_id: KeyId::parse(&row.key_id).map_err(|_| bad("key id"))?,
        sig: <[u8; 64]>::try_from(row.sig.as_slice())
            .map(Sig::from_bytes)
            .map_err(|_| bad("signature length"))?,
    })
}
