//! Verification of an export (DESIGN section 4): the chain's integrity (seq contiguity,
//! prev links, hashes, checkpoints) and its rules, by re-deciding every event with the
//! same `decide` the writer uses (in [`Enforcement::Audit`]).
//!
//! Integrity breaks rank before rule breaks: if the log was altered, that is the finding,
//! whatever the altered content says. Among integrity breaks the lowest seq wins, an event
//! before a checkpoint at the same seq.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::{self, CanonicalError};
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::command::{Command, Context, Enforcement, Rejection};
use crate::crypto::{Hash, KeyPurpose, KeyRecord, KeySet, PublicKeyBytes, Sig};
use crate::decide::{audit_fast_path, decide_one, exact_money};
use crate::event::{Event, EventBody, EventError, ParsedEvent, Posting};
use crate::ids::{KeyId, PrincipalKind, TenantId};
use crate::money::{Currency, SignedAmount};
use crate::proof::{SignatureCheck, TwoFactorFailure, TwoFactorProof};
use crate::state::{Bucket, IdMap, IdSet, PayoutStatus, TenantState};
use crate::time::Timestamp;

/// The export format name of the header line.
pub const EXPORT_FORMAT: &str = "payout-ledger-export";
/// Longest export line accepted.
pub const LINE_LENGTH_MAX: usize = 1 << 20;

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always `payout-ledger-export`.
    pub format: String,
    /// Format version, 1.
    pub v: u32,
    /// The tenant.
    pub tenant: TenantId,
    /// First seq in the file.
    pub from_seq: u64,
    /// Last seq in the file.
    pub to_seq: u64,
    /// When the export was written.
    pub exported_at: Timestamp,
}

/// One parsed export line.
// Events are nearly every line: held inline, so that parsing a line allocates no box and
// a chunk's lines live in one buffer the auditor reuses from chunk to chunk.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ExportLine {
    /// `{"type":"header",...}`
    Header(Header),
    /// `{"type":"key","key":{...}}`
    Key(KeyRecord),
    /// `{"type":"event","event":{...}}`
    Event(ParsedEvent),
    /// `{"type":"checkpoint","checkpoint":{...}}`
    Checkpoint(Checkpoint),
}

/// Why a line cannot be read: the input is unusable (exit 2), not evidence of tampering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Longer than [`LINE_LENGTH_MAX`].
    #[error("line too long")]
    TooLong,
    /// Not JSON of the canonical domain.
    #[error(transparent)]
    Json(#[from] CanonicalError),
    /// Not an export line.
    #[error("not an export line: {0}")]
    Shape(String),
    /// An event envelope that cannot be read.
    #[error("event: {0}")]
    Event(#[from] EventError),
}

fn take_field<T: for<'de> Deserialize<'de>>(
    map: &mut serde_json::Map<String, Value>,
    field: &str,
) -> Result<T, LineError> {
    let value = map
        .remove(field)
        .ok_or_else(|| LineError::Shape(format!("missing {field:?}")))?;
    T::deserialize(value).map_err(|e| LineError::Shape(format!("{field}: {e}")))
}

/// An event line, borrowed: the fast path for the bulk of an export.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEventLine<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    event: crate::event::RawEnvelope<'a>,
}

/// Parses one export line. Pure and thread-safe: the auditor runs it in parallel.
///
/// An event line exactly as [`lines::event`] writes it (the bulk of every export) is read
/// in place by a fast path; any other line goes through [`parse_line_general`], and the
/// two give the same answer on every line the fast path takes (a property test holds it).
pub fn parse_line(text: &str) -> Result<ExportLine, LineError> {
    if text.len() > LINE_LENGTH_MAX {
        return Err(LineError::TooLong);
    }
    if let Some(parsed) = Event::parse_canonical_line(text) {
        return Ok(ExportLine::Event(parsed));
    }
    parse_line_general(text)
}

/// [`parse_line`] without its fast path for canonical event lines: every line, in any
/// JSON layout the format allows. The reference the fast path is tested against.
pub fn parse_line_general(text: &str) -> Result<ExportLine, LineError> {
    if text.len() > LINE_LENGTH_MAX {
        return Err(LineError::TooLong);
    }
    if let Ok(raw) = serde_json::from_str::<RawEventLine<'_>>(text) {
        if raw.kind == "event" {
            return Ok(ExportLine::Event(Event::from_raw(raw.event, text.len())?));
        }
    }
    let Value::Object(mut map) = canonical::parse_value(text)? else {
        return Err(LineError::Shape("not a JSON object".into()));
    };
    let kind: String = take_field(&mut map, "type")?;
    let line = match kind.as_str() {
        "header" => ExportLine::Header(
            Header::deserialize(Value::Object(std::mem::take(&mut map)))
                .map_err(|e| LineError::Shape(format!("header: {e}")))?,
        ),
        "key" => ExportLine::Key(take_field(&mut map, "key")?),
        "checkpoint" => ExportLine::Checkpoint(take_field(&mut map, "checkpoint")?),
        "event" => {
            let event = map
                .remove("event")
                .ok_or_else(|| LineError::Shape("missing \"event\"".into()))?;
            let text = canonical::to_canonical_vec(&event)?;
            ExportLine::Event(Event::parse(&String::from_utf8_lossy(&text))?)
        }
        _ => return Err(LineError::Shape("unknown line type".into())),
    };
    if let Some(extra) = map.keys().next() {
        return Err(LineError::Shape(format!(
            "unexpected field {:?}",
            extra.chars().take(32).collect::<String>()
        )));
    }
    Ok(line)
}

/// Where a break is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "at", rename_all = "snake_case")]
pub enum BreakLocation {
    /// An event (or the seq where one is missing).
    Event {
        /// The seq.
        seq: u64,
    },
    /// A checkpoint, named by the seq it signs.
    Checkpoint {
        /// The checkpoint's seq.
        seq: u64,
    },
}

/// What kind of break.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// A seq missing, repeated, out of order, or beyond the header's range.
    Sequence,
    /// `prev` does not match the previous event's hash.
    Link,
    /// `hash` does not match the canonical bytes.
    Hash,
    /// An event or checkpoint of another tenant.
    Tenant,
    /// A checkpoint whose signature or head does not verify.
    Checkpoint,
    /// The event's data does not fit its kind.
    Data,
    /// The postings do not sum to zero or take a tenant account below zero.
    Postings,
    /// The event breaks a ledger rule (code as in `command.rejected`).
    Rule,
}

impl BreakKind {
    fn is_integrity(&self) -> bool {
        match self {
            BreakKind::Sequence
            | BreakKind::Link
            | BreakKind::Hash
            | BreakKind::Tenant
            | BreakKind::Checkpoint => true,
            BreakKind::Data | BreakKind::Postings | BreakKind::Rule => false,
        }
    }
}

/// The first break found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// Where.
    #[serde(flatten)]
    pub location: BreakLocation,
    /// What kind.
    pub kind: BreakKind,
    /// The rule code for [`BreakKind::Rule`] (e.g. `four_eyes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Explanation.
    pub reason: String,
    /// The line of the file (1-based).
    pub line: usize,
}

impl Break {
    fn seq(&self) -> u64 {
        match self.location {
            BreakLocation::Event { seq } | BreakLocation::Checkpoint { seq } => seq,
        }
    }
}

/// Counts for the auditor's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The tenant.
    pub tenant: Option<TenantId>,
    /// Events read.
    pub events: u64,
    /// Events by kind.
    pub events_by_kind: BTreeMap<String, u64>,
    /// Payouts by their last status.
    pub payouts_by_status: BTreeMap<String, u64>,
    /// Money deposited, per currency.
    pub deposited: BTreeMap<Currency, Decimal>,
    /// Money released to payees, per currency.
    pub released: BTreeMap<Currency, Decimal>,
    /// Money movements (authorize, execute, release) carrying a 2FA proof.
    pub money_movements_with_two_factor: u64,
    /// Releases confirmed by a service principal (which needs no 2FA).
    pub money_movements_by_services: u64,
    /// Money movements by persons without a 2FA proof (0 in an intact log).
    pub money_movements_without_two_factor: u64,
    /// `command.rejected` events: denied attempts kept as evidence.
    pub commands_rejected: u64,
    /// Checkpoints whose signature and head verified.
    pub checkpoints_verified: u64,
    /// Key ids that signed a verified checkpoint or proof.
    pub keys_used: BTreeSet<KeyId>,
    /// Whether the keys were pinned by the auditor (else the export's own key lines).
    pub keys_pinned: bool,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// `None` when intact; else the first break (integrity before rules).
    #[serde(rename = "break")]
    pub first_break: Option<Break>,
    /// The first rule break, when an integrity break outranks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub also_rule_break: Option<Break>,
    /// Counts.
    pub summary: Summary,
}

impl Report {
    /// Whether the export verified intact.
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Why verification cannot even start or finish: the input is not a usable export.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// A line could not be parsed.
    #[error("line {line}: {error}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// Why.
        error: LineError,
    },
    /// The first line is not a header, or a second header appears.
    #[error("line {line}: {message}")]
    Structure {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The export is empty.
    #[error("empty input: not an export")]
    Empty,
}

/// Proof signatures verified ahead of time (in parallel, in batches): for each proof, by
/// its signature, the exact proof, the public key that verified it and the answer. A proof
/// looked up under another key, or not in it (another proof with the same signature
/// bytes included), is verified on the spot.
#[derive(Debug, Clone, Default)]
pub struct SignatureCache(IdMap<Sig, CachedSignature>);

/// One entry of a [`SignatureCache`].
pub type CachedSignature = (TwoFactorProof, PublicKeyBytes, bool);

impl SignatureCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records whether `proof`'s signature verifies under `public_key`.
    pub fn insert(&mut self, public_key: PublicKeyBytes, proof: TwoFactorProof, valid: bool) {
        self.0.insert(proof.sig, (proof, public_key, valid));
    }

    /// Whether `proof`'s signature verified under `public_key`, if it was checked.
    pub fn get(&self, public_key: &PublicKeyBytes, proof: &TwoFactorProof) -> Option<bool> {
        match self.0.get(&proof.sig) {
            Some((cached, key, valid)) if key == public_key && cached == proof => Some(*valid),
            Some(_) | None => None,
        }
    }

    /// How many proofs it answers for.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it answers for none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Extend<(Sig, CachedSignature)> for SignatureCache {
    fn extend<I: IntoIterator<Item = (Sig, CachedSignature)>>(&mut self, entries: I) {
        self.0.extend(entries);
    }
}

impl IntoIterator for SignatureCache {
    type Item = (Sig, CachedSignature);
    type IntoIter = std::collections::hash_map::IntoIter<Sig, CachedSignature>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A proof's signature made ready for a batch ([`prepare_signature`]), on a parse worker:
/// the key looked up and the per-signature half of the batch equation done.
#[derive(Debug, Clone)]
pub struct PendingSignature {
    public_key: PublicKeyBytes,
    proof: TwoFactorProof,
    verifying: ed25519_dalek::VerifyingKey,
    prepared: crate::crypto::PreparedSignature,
}

/// Prepares `proof`'s signature for [`verify_pending_signatures`], or `None` when `keys`
/// has no usable 2FA key for it (the verifier then answers on the spot).
pub fn prepare_signature(keys: &KeySet, proof: &TwoFactorProof) -> Option<PendingSignature> {
    let record = keys
        .lookup(&proof.key_id, KeyPurpose::TwoFactor, proof.verified_at)
        .ok()?;
    let verifying = *keys.verifying_key(&record.key_id)?;
    let signature = ed25519_dalek::Signature::from_bytes(proof.sig.as_bytes());
    let prepared =
        crate::crypto::PreparedSignature::new(&proof.signed_message(), &signature, &verifying);
    Some(PendingSignature {
        public_key: record.public_key,
        proof: proof.clone(),
        verifying,
        prepared,
    })
}

/// Verifies prepared signatures, each distinct proof once, in one Ed25519 batch where all
/// are valid (the common case), else one by one so each gets its own answer.
pub fn verify_pending_signatures(pending: Vec<PendingSignature>) -> SignatureCache {
    let mut seen: IdMap<Sig, usize> = IdMap::default();
    let mut entries: Vec<PendingSignature> = Vec::with_capacity(pending.len());
    for entry in pending {
        // One key set: a proof's key id always leads to the same key.
        if seen
            .get(&entry.proof.sig)
            .is_some_and(|&index| entries[index].proof == entry.proof)
        {
            continue;
        }
        seen.insert(entry.proof.sig, entries.len());
        entries.push(entry);
    }
    let batch: Vec<&crate::crypto::PreparedSignature> =
        entries.iter().map(|entry| &entry.prepared).collect();
    let all_valid = !entries.is_empty() && crate::crypto::verify_prepared_batch(&batch);
    drop(batch);
    let mut cache = SignatureCache(IdMap::with_capacity_and_hasher(
        entries.len(),
        Default::default(),
    ));
    for entry in entries {
        let ok = all_valid || {
            let signature = ed25519_dalek::Signature::from_bytes(entry.proof.sig.as_bytes());
            entry
                .verifying
                .verify_strict(&entry.proof.signed_message(), &signature)
                .is_ok()
        };
        cache.insert(entry.public_key, entry.proof, ok);
    }
    cache
}

/// Verifies the signatures of `proofs` under `keys`, each distinct proof once, in one
/// Ed25519 batch where all are valid (the common case), else one by one so each gets its
/// own answer.
pub fn precheck_signatures(keys: &KeySet, proofs: &[&TwoFactorProof]) -> SignatureCache {
    verify_pending_signatures(
        proofs
            .iter()
            .filter_map(|proof| prepare_signature(keys, proof))
            .collect(),
    )
}

struct CachedCheck<'a> {
    keys: &'a KeySet,
    cache: &'a SignatureCache,
}

impl SignatureCheck for CachedCheck<'_> {
    fn check_signature(&self, proof: &TwoFactorProof) -> Result<(), TwoFactorFailure> {
        let record = self
            .keys
            .lookup(&proof.key_id, KeyPurpose::TwoFactor, proof.verified_at)
            .map_err(|_| TwoFactorFailure::UnknownKey)?;
        match self.cache.get(&record.public_key, proof) {
            Some(true) => Ok(()),
            Some(false) => Err(TwoFactorFailure::BadSignature),
            None => crate::proof::verify_proof_signature(self.keys, proof),
        }
    }
}

/// Most events a header's `to_seq` makes the verifier reserve room for (hashes, and
/// payouts for half as many): 32 MiB of hashes.
const RESERVE_EVENTS_MAX: usize = 1 << 20;

/// Streams an export through the checks. Feed lines in order, then [`Verifier::finish`].
#[derive(Debug)]
pub struct Verifier {
    keys: KeySet,
    keys_pinned: bool,
    header: Option<Header>,
    state: Option<TenantState>,
    next_seq: u64,
    prev_hash: Hash,
    last_seq: u64,
    integrity_break: Option<Break>,
    rule_break: Option<Break>,
    wanted_hashes: Option<IdSet<u64>>,
    hashes: EventHashes,
    checkpoints: Vec<(usize, Checkpoint)>,
    summary: Summary,
    lines: usize,
    fast_paths: bool,
}

impl Verifier {
    /// A verifier that trusts `pinned` keys, or (with `None`) the export's own key lines.
    pub fn new(pinned: Option<KeySet>) -> Self {
        let keys_pinned = pinned.is_some();
        Self {
            keys: pinned.unwrap_or_default(),
            keys_pinned,
            header: None,
            state: None,
            next_seq: 1,
            prev_hash: Hash::ZERO,
            last_seq: 0,
            integrity_break: None,
            rule_break: None,
            wanted_hashes: None,
            hashes: EventHashes::default(),
            checkpoints: Vec::new(),
            summary: Summary {
                keys_pinned,
                ..Summary::default()
            },
            lines: 0,
            fast_paths: true,
        }
    }

    /// Re-decides every event through the general `decide`, without the fast path for
    /// the commonest kinds: the reference the fast path is tested against.
    #[doc(hidden)]
    pub fn without_fast_paths(mut self) -> Self {
        self.fast_paths = false;
        self
    }

    /// Declares the seqs that checkpoints will name, so that only those hashes are kept
    /// (memory then does not grow with the file). Without it every hash is kept; hashes
    /// kept before the call are pruned to the declared seqs.
    pub fn expect_checkpoints(&mut self, seqs: impl IntoIterator<Item = u64>) {
        let wanted: IdSet<u64> = seqs.into_iter().collect();
        self.hashes.retain(&wanted);
        self.wanted_hashes = Some(wanted);
    }

    /// How many event hashes are kept for the checkpoints (all of them until
    /// [`Verifier::expect_checkpoints`] names the seqs).
    pub fn hashes_kept(&self) -> usize {
        self.hashes.len()
    }

    /// The keys in force (pinned, or gathered from the export so far).
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Feeds one parsed line (1-based `line` number).
    pub fn push(
        &mut self,
        line: usize,
        parsed: ExportLine,
        cache: &SignatureCache,
    ) -> Result<(), UsageError> {
        self.lines = line;
        match parsed {
            ExportLine::Header(header) => {
                if self.header.is_some() || line != 1 {
                    return Err(UsageError::Structure {
                        line,
                        message: "the header must be the first line, and only once".into(),
                    });
                }
                if header.format != EXPORT_FORMAT || header.v != 1 {
                    return Err(UsageError::Structure {
                        line,
                        message: "not a payout-ledger-export v1".into(),
                    });
                }
                if header.from_seq != 1 {
                    return Err(UsageError::Structure {
                        line,
                        message: "only whole-chain exports (from_seq 1) can be verified".into(),
                    });
                }
                self.summary.tenant = Some(header.tenant.clone());
                let mut state = TenantState::new(header.tenant.clone());
                // Room for what the header announces (bounded: the header is input), so
                // that the hashes and the payouts do not grow by doubling and copying.
                let announced = usize::try_from(header.to_seq).unwrap_or(usize::MAX);
                let room = announced.min(RESERVE_EVENTS_MAX);
                self.hashes.prefix.reserve(room);
                state.payouts.reserve(room / 2);
                self.state = Some(state);
                self.header = Some(header);
                Ok(())
            }
            ExportLine::Key(record) => {
                self.require_header(line)?;
                if !self.keys_pinned {
                    self.keys
                        .insert(record)
                        .map_err(|e| UsageError::Structure {
                            line,
                            message: e.to_string(),
                        })?;
                }
                Ok(())
            }
            ExportLine::Checkpoint(checkpoint) => {
                self.require_header(line)?;
                self.checkpoints.push((line, checkpoint));
                Ok(())
            }
            ExportLine::Event(parsed) => {
                self.require_header(line)?;
                self.push_event(line, &parsed, cache);
                Ok(())
            }
        }
    }

    /// [`Verifier::push`] of an event line, borrowed: the caller keeps the parsed event
    /// (the auditor drops it on another thread).
    pub fn push_event_line(
        &mut self,
        line: usize,
        parsed: &ParsedEvent,
        cache: &SignatureCache,
    ) -> Result<(), UsageError> {
        self.lines = line;
        self.require_header(line)?;
        self.push_event(line, parsed, cache);
        Ok(())
    }

    fn require_header(&self, line: usize) -> Result<(), UsageError> {
        if self.header.is_none() {
            return Err(UsageError::Structure {
                line,
                message: "the first line must be the export header".into(),
            });
        }
        Ok(())
    }

    fn integrity(&mut self, line: usize, seq: u64, kind: BreakKind, reason: String) {
        if self.integrity_break.is_none() {
            self.integrity_break = Some(Break {
                location: BreakLocation::Event { seq },
                kind,
                code: None,
                reason,
                line,
            });
        }
    }

    fn push_event(&mut self, line: usize, parsed: &ParsedEvent, cache: &SignatureCache) {
        let event = &parsed.event;
        let seq = event.seq;
        let expected_seq = self.next_seq;
        let to_seq = self.header.as_ref().map_or(0, |h| h.to_seq);
        if self.header.as_ref().map(|h| &h.tenant) != Some(&event.tenant) {
            self.integrity(
                line,
                seq,
                BreakKind::Tenant,
                "event of another tenant".into(),
            );
        }
        if seq != expected_seq {
            let reason = if seq > expected_seq {
                format!("seq {expected_seq} is missing (found {seq})")
            } else {
                format!("seq {seq} repeated or out of order (expected {expected_seq})")
            };
            self.integrity(line, expected_seq, BreakKind::Sequence, reason);
        } else if seq > to_seq {
            self.integrity(
                line,
                seq,
                BreakKind::Sequence,
                format!("seq {seq} is beyond the header's to_seq {to_seq}"),
            );
        }
        if event.prev != self.prev_hash {
            self.integrity(
                line,
                seq,
                BreakKind::Link,
                "prev does not match the previous event's hash".into(),
            );
        }
        if event.hash != parsed.computed_hash {
            self.integrity(
                line,
                seq,
                BreakKind::Hash,
                "hash does not match the event's canonical bytes".into(),
            );
        }
        self.next_seq = seq.saturating_add(1);
        self.prev_hash = event.hash;
        self.last_seq = self.last_seq.max(seq);
        if self
            .wanted_hashes
            .as_ref()
            .is_none_or(|wanted| wanted.contains(&seq))
        {
            self.hashes.insert(seq, event.hash);
        }
        self.count(parsed);
        if self.rule_break.is_none() {
            if let Err((kind, code, reason)) = self.check_rules(parsed, cache) {
                self.rule_break = Some(Break {
                    location: BreakLocation::Event { seq },
                    kind,
                    code,
                    reason,
                    line,
                });
            }
        }
    }

    fn count(&mut self, parsed: &ParsedEvent) {
        let summary = &mut self.summary;
        summary.events += 1;
        match summary.events_by_kind.get_mut(parsed.kind.as_str()) {
            Some(count) => *count += 1,
            None => {
                summary.events_by_kind.insert(parsed.kind.to_string(), 1);
            }
        }
        if parsed.body_error.is_some() {
            return;
        }
        let event = &parsed.event;
        let moves_money = matches!(
            event.body,
            EventBody::PayoutAuthorized(_)
                | EventBody::PayoutExecuted(_)
                | EventBody::PayoutReleased(_)
        );
        if moves_money {
            if event.body.two_factor().is_some() {
                summary.money_movements_with_two_factor += 1;
            } else if event.actor.kind() == PrincipalKind::Service
                && matches!(event.body, EventBody::PayoutReleased(_))
            {
                summary.money_movements_by_services += 1;
            } else {
                summary.money_movements_without_two_factor += 1;
            }
        }
        match &event.body {
            EventBody::FundsDeposited(d) => {
                add_amount(&mut summary.deposited, d.currency, &d.postings)
            }
            EventBody::PayoutReleased(d) => {
                let currency = d.postings.first().map(|p| p.currency);
                if let Some(currency) = currency {
                    add_amount(&mut summary.released, currency, &d.postings);
                }
            }
            EventBody::CommandRejected(_) => summary.commands_rejected += 1,
            EventBody::TenantCreated(_)
            | EventBody::UserAdded(_)
            | EventBody::RoleGranted(_)
            | EventBody::RoleRevoked(_)
            | EventBody::ApiKeyIssued(_)
            | EventBody::ApiKeyRevoked(_)
            | EventBody::AccountOpened(_)
            | EventBody::PayeeAdded(_)
            | EventBody::PolicyUpdated(_)
            | EventBody::PayoutRequested(_)
            | EventBody::PayoutApproved(_)
            | EventBody::PayoutRejected(_)
            | EventBody::PayoutAuthorized(_)
            | EventBody::PayoutExecuted(_)
            | EventBody::PayoutFailed(_)
            | EventBody::PayoutCancelled(_)
            | EventBody::AutopayRuleProposed(_)
            | EventBody::AutopayRuleEnabled(_)
            | EventBody::AutopayRuleDisabled(_)
            | EventBody::UserDeactivated(_)
            | EventBody::TotpRecovered(_)
            | EventBody::TenantSuspended(_)
            | EventBody::TenantResumed(_) => {}
        }
    }

    /// Re-decides the event; on success applies it.
    fn check_rules(
        &mut self,
        parsed: &ParsedEvent,
        cache: &SignatureCache,
    ) -> Result<(), (BreakKind, Option<String>, String)> {
        if let Some(error) = &parsed.body_error {
            return Err((BreakKind::Data, None, error.to_string()));
        }
        let event = &parsed.event;
        let Some(state) = self.state.as_mut() else {
            unreachable!("events are only pushed after the header");
        };
        check_postings(state, event.body.postings())
            .map_err(|reason| (BreakKind::Postings, None, reason))?;
        let rule = |r: Rejection| (BreakKind::Rule, Some(r.code().to_owned()), r.to_string());
        let mismatch = || {
            (
                BreakKind::Rule,
                Some("mismatch".into()),
                "the event's data differs from what the rules produce for it (postings or fields)"
                    .into(),
            )
        };
        if self.fast_paths {
            let signatures = CachedCheck {
                keys: &self.keys,
                cache,
            };
            let ctx = Context {
                tenant: &event.tenant,
                actor: &event.actor,
                at: event.at,
                scopes: None,
                signatures: &signatures,
                enforcement: Enforcement::Audit,
            };
            if let Some(result) = audit_fast_path(state, &event.body, &ctx) {
                if !result.map_err(rule)? {
                    return Err(mismatch());
                }
                state.apply_mut(event);
                return Ok(());
            }
        }
        if let Some(command) = command_of(&event.body).map_err(rule)? {
            let signatures = CachedCheck {
                keys: &self.keys,
                cache,
            };
            let ctx = Context {
                tenant: &event.tenant,
                actor: &event.actor,
                at: event.at,
                scopes: None,
                signatures: &signatures,
                enforcement: Enforcement::Audit,
            };
            let decided = decide_one(state, &command, &ctx).map_err(rule)?;
            if decided != event.body {
                return Err(mismatch());
            }
            if let Some(proof) = event.body.two_factor() {
                self.summary.keys_used.insert(proof.key_id.clone());
            }
        }
        state.apply_mut(event);
        Ok(())
    }

    /// Checks the checkpoints and the header's range, and reports.
    pub fn finish(mut self) -> Result<Report, UsageError> {
        self.conclude(signatures_in_order)
    }

    /// [`Verifier::finish`], handing back what the verifier held (the tenant state, the
    /// kept hashes: large for a long chain) for the caller to free where it likes.
    /// `signatures` answers [`Checkpoint::verify_signature`] for each checkpoint under the
    /// keys, in order (the auditor spreads them over its cores); a missing answer is
    /// worked out here.
    pub fn finish_keeping_state(
        mut self,
        signatures: impl FnOnce(&KeySet, &[&Checkpoint]) -> Vec<Result<(), CheckpointError>>,
    ) -> (Result<Report, UsageError>, SpentVerifier) {
        let report = self.conclude(signatures);
        (report, SpentVerifier(self))
    }

    fn conclude(
        &mut self,
        signatures: impl FnOnce(&KeySet, &[&Checkpoint]) -> Vec<Result<(), CheckpointError>>,
    ) -> Result<Report, UsageError> {
        let Some(header) = self.header.clone() else {
            return Err(UsageError::Empty);
        };
        if self.integrity_break.is_none() && self.last_seq < header.to_seq {
            let missing = self.last_seq + 1;
            self.integrity(
                self.lines,
                missing,
                BreakKind::Sequence,
                format!(
                    "seq {missing} is missing (the header says to_seq {})",
                    header.to_seq
                ),
            );
        }
        let mut checkpoint_break: Option<Break> = None;
        let checkpoints = std::mem::take(&mut self.checkpoints);
        let mut verdicts = {
            let signed: Vec<&Checkpoint> = checkpoints.iter().map(|(_, c)| c).collect();
            signatures(&self.keys, &signed).into_iter()
        };
        for (line, checkpoint) in checkpoints {
            let signature = verdicts
                .next()
                .unwrap_or_else(|| checkpoint.verify_signature(&self.keys));
            let failure = if checkpoint.tenant != header.tenant {
                Some("checkpoint of another tenant".to_owned())
            } else if let Err(e) = signature {
                Some(e.to_string())
            } else {
                match self.hashes.get(checkpoint.seq) {
                    None => Some(format!("no event at seq {} in the export", checkpoint.seq)),
                    Some(hash) if *hash != checkpoint.head => Some(format!(
                        "head does not match the hash of event {}",
                        checkpoint.seq
                    )),
                    Some(_) => None,
                }
            };
            match failure {
                None => {
                    self.summary.checkpoints_verified += 1;
                    self.summary.keys_used.insert(checkpoint.key_id.clone());
                }
                Some(reason) => {
                    let candidate = Break {
                        location: BreakLocation::Checkpoint {
                            seq: checkpoint.seq,
                        },
                        kind: BreakKind::Checkpoint,
                        code: None,
                        reason,
                        line,
                    };
                    if checkpoint_break
                        .as_ref()
                        .is_none_or(|b| candidate.seq() < b.seq())
                    {
                        checkpoint_break = Some(candidate);
                    }
                }
            }
        }
        let integrity = match (self.integrity_break.take(), checkpoint_break) {
            (Some(event), Some(checkpoint)) if checkpoint.seq() < event.seq() => Some(checkpoint),
            (Some(event), _) => Some(event),
            (None, checkpoint) => checkpoint,
        };
        if let Some(state) = &self.state {
            // Counted by status first: no text per payout.
            let mut counts = [0u64; PayoutStatus::ALL.len()];
            for payout in state.payouts.values() {
                let status = payout.status();
                if let Some(index) = PayoutStatus::ALL.iter().position(|s| *s == status) {
                    counts[index] += 1;
                }
            }
            for (status, count) in PayoutStatus::ALL.iter().zip(counts) {
                if count > 0 {
                    *self
                        .summary
                        .payouts_by_status
                        .entry(status.name().to_owned())
                        .or_default() += count;
                }
            }
        }
        let rule_break = self.rule_break.take();
        let (first_break, also_rule_break) = match integrity {
            Some(b) => (Some(b), rule_break),
            None => (rule_break, None),
        };
        debug_assert!(first_break
            .as_ref()
            .is_none_or(|b| b.kind.is_integrity() || also_rule_break.is_none()));
        Ok(Report {
            first_break,
            also_rule_break,
            summary: std::mem::take(&mut self.summary),
        })
    }
}

/// Each checkpoint's [`Checkpoint::verify_signature`], one after the other.
pub fn signatures_in_order(
    keys: &KeySet,
    checkpoints: &[&Checkpoint],
) -> Vec<Result<(), CheckpointError>> {
    checkpoints
        .iter()
        .map(|c| c.verify_signature(keys))
        .collect()
}

/// A finished verifier's state, to be dropped (see [`Verifier::finish_keeping_state`]).
#[derive(Debug)]
pub struct SpentVerifier(#[allow(dead_code)] Verifier);

/// The event hashes kept for the checkpoints. While every hash is kept, the in-order
/// prefix of the chain (seqs 1, 2, 3, …) is a vector, one push per event; from the
/// first event out of that order on (a chain already broken), or once only the seqs that
/// checkpoints name are wanted, hashes go to a map, which is looked at first: the last
/// event seen at a seq wins, as in a map alone.
#[derive(Debug, Default)]
struct EventHashes {
    prefix: Vec<Hash>,
    others: IdMap<u64, Hash>,
    /// Pruned to the wanted seqs: the map alone from then on.
    pruned: bool,
}

impl EventHashes {
    fn insert(&mut self, seq: u64, hash: Hash) {
        if !self.pruned && self.others.is_empty() && seq == self.prefix.len() as u64 + 1 {
            self.prefix.push(hash);
        } else {
            self.others.insert(seq, hash);
        }
    }

    fn get(&self, seq: u64) -> Option<&Hash> {
        self.others.get(&seq).or_else(|| {
            let index = usize::try_from(seq.checked_sub(1)?).ok()?;
            self.prefix.get(index)
        })
    }

    /// Keeps only the hashes of `wanted` seqs, all in the map.
    fn retain(&mut self, wanted: &IdSet<u64>) {
        for &seq in wanted {
            if !self.others.contains_key(&seq) {
                if let Some(hash) = self.get(seq).copied() {
                    self.others.insert(seq, hash);
                }
            }
        }
        self.prefix = Vec::new();
        self.pruned = true;
        self.others.retain(|seq, _| wanted.contains(seq));
    }

    fn len(&self) -> usize {
        self.prefix.len() + self.others.len()
    }
}

fn add_amount(totals: &mut BTreeMap<Currency, Decimal>, currency: Currency, postings: &[Posting]) {
    let credited: Decimal = postings
        .iter()
        .filter_map(|p| SignedAmount::parse_exact(&p.amount, p.currency).ok())
        .filter(|a| a.currency() == currency && !a.is_negative())
        .map(|a| a.amount())
        .sum();
    let total = totals.entry(currency).or_default();
    *total = total.checked_add(credited).unwrap_or(*total);
}

/// Postings must name known buckets in the account's currency at the exact scale, sum to
/// zero per currency, and leave no tenant bucket below zero.
fn check_postings(state: &TenantState, postings: &[Posting]) -> Result<(), String> {
    let mut sums: BTreeMap<Currency, Decimal> = BTreeMap::new();
    let mut after: BTreeMap<Bucket, Decimal> = BTreeMap::new();
    for posting in postings {
        let bucket = Bucket::parse(&posting.account).ok_or_else(|| {
            format!(
                "unknown bucket {:?}",
                posting.account.chars().take(80).collect::<String>()
            )
        })?;
        let amount = SignedAmount::parse_exact(&posting.amount, posting.currency)
            .map_err(|e| format!("posting amount: {e}"))?;
        if let Bucket::Available(account) | Bucket::Held(account) = &bucket {
            let known = state
                .accounts
                .get(account)
                .ok_or_else(|| format!("posting to unknown account {account}"))?;
            if known.currency != posting.currency {
                return Err(format!(
                    "posting in {} to a {} account",
                    posting.currency, known.currency
                ));
            }
        }
        let sum = sums.entry(posting.currency).or_default();
        *sum = sum.checked_add(amount.amount()).ok_or("posting overflow")?;
        let balance = after
            .entry(bucket.clone())
            .or_insert_with(|| state.balance(&bucket, posting.currency));
        *balance = balance
            .checked_add(amount.amount())
            .ok_or("balance overflow")?;
    }
    if let Some((currency, _)) = sums.iter().find(|(_, sum)| !sum.is_zero()) {
        return Err(format!("postings do not sum to zero in {currency}"));
    }
    if let Some((bucket, _)) = after.iter().find(|(bucket, balance)| {
        bucket.is_tenant() && balance.is_sign_negative() && !balance.is_zero()
    }) {
        return Err(format!("postings take {} below zero", bucket.to_text()));
    }
    Ok(())
}

/// The command an event records (None for `command.rejected`, which records a denial).
fn command_of(body: &EventBody) -> Result<Option<Command>, Rejection> {
    let command = match body {
        EventBody::TenantCreated(d) => Command::CreateTenant {
            name: d.name.clone(),
            admin: d.admin.clone(),
        },
        EventBody::UserAdded(d) => Command::AddUser {
            user: d.user.clone(),
            name: d.name.clone(),
        },
        EventBody::RoleGranted(d) => Command::GrantRole {
            user: d.user.clone(),
            role: d.role,
            two_factor: d.two_factor.clone(),
            batch: d.batch.clone(),
        },
        EventBody::RoleRevoked(d) => Command::RevokeRole {
            user: d.user.clone(),
            role: d.role,
        },
        EventBody::ApiKeyIssued(d) => Command::IssueApiKey {
            key: d.key.clone(),
            scopes: d.scopes.clone(),
            expires_at: d.expires_at,
            two_factor: d.two_factor.clone(),
        },
        EventBody::ApiKeyRevoked(d) => Command::RevokeApiKey { key: d.key.clone() },
        EventBody::AccountOpened(d) => Command::OpenAccount {
            account: d.account.clone(),
            currency: d.currency,
            name: d.name.clone(),
        },
        EventBody::FundsDeposited(d) => Command::Deposit {
            account: d.account.clone(),
            money: exact_money(&d.amount, d.currency)?,
            reference: d.reference.clone(),
        },
        EventBody::PayeeAdded(d) => Command::AddPayee {
            payee: d.payee.clone(),
            name: d.name.clone(),
            iban: d.iban.clone(),
        },
        EventBody::PolicyUpdated(d) => Command::UpdatePolicy {
            rules: d.rules.clone(),
            two_factor: d.two_factor.clone(),
        },
        EventBody::PayoutRequested(d) => Command::RequestPayout {
            payout: d.payout.clone(),
            account: d.account.clone(),
            payee: d.payee.clone(),
            money: exact_money(&d.amount, d.currency)?,
            reference: d.reference.clone(),
            metadata: d.metadata.clone(),
        },
        EventBody::PayoutApproved(d) => match &d.rule {
            Some(rule) if d.batch.is_none() => Command::ApprovePayoutByRule {
                payout: d.payout.clone(),
                rule: rule.clone(),
            },
            Some(_) => {
                return Err(Rejection::validation(
                    "an auto-pay approval carries no batch",
                ))
            }
            None => Command::ApprovePayout {
                payout: d.payout.clone(),
                batch: d.batch.clone(),
            },
        },
        EventBody::PayoutRejected(d) => Command::RejectPayout {
            payout: d.payout.clone(),
            reason: d.reason.clone(),
        },
        EventBody::PayoutAuthorized(d) => Command::AuthorizePayout {
            payout: d.payout.clone(),
            two_factor: d.two_factor.clone(),
            batch: d.batch.clone(),
        },
        EventBody::PayoutExecuted(d) => Command::ExecutePayout {
            payout: d.payout.clone(),
            rail: d.rail.clone(),
            two_factor: d.two_factor.clone(),
            batch: d.batch.clone(),
        },
        EventBody::PayoutReleased(d) => Command::ReleasePayout {
            payout: d.payout.clone(),
            two_factor: d.two_factor.clone(),
            batch: d.batch.clone(),
        },
        EventBody::PayoutFailed(d) => Command::FailPayout {
            payout: d.payout.clone(),
            reason: d.reason.clone(),
        },
        EventBody::PayoutCancelled(d) => Command::CancelPayout {
            payout: d.payout.clone(),
            reason: d.reason.clone(),
        },
        EventBody::CommandRejected(_) => return Ok(None),
        EventBody::AutopayRuleProposed(d) => Command::ProposeAutopayRule {
            rule: d.rule.clone(),
            account: d.account.clone(),
            payees: d.payees.clone(),
            max_amount: exact_money(&d.max_amount, d.currency)?,
            daily_limit: exact_money(&d.daily_limit, d.currency)?,
        },
        EventBody::AutopayRuleEnabled(d) => Command::EnableAutopayRule {
            rule: d.rule.clone(),
            two_factor: d.two_factor.clone(),
        },
        EventBody::AutopayRuleDisabled(d) => Command::DisableAutopayRule {
            rule: d.rule.clone(),
            reason: d.reason.clone(),
        },
        EventBody::UserDeactivated(d) => Command::DeactivateUser {
            user: d.user.clone(),
            reason: d.reason.clone(),
        },
        EventBody::TotpRecovered(_) => Command::RecoverTotp {},
        EventBody::TenantSuspended(d) => Command::SuspendTenant {
            reason: d.reason.clone(),
        },
        EventBody::TenantResumed(d) => Command::ResumeTenant {
            reason: d.reason.clone(),
        },
    };
    Ok(Some(command))
}

/// Verifies a whole export held in memory, line by line (single-threaded; the auditor's
/// CLI runs the same steps in parallel).
pub fn verify_export(text: &str, pinned: Option<KeySet>) -> Result<Report, UsageError> {
    let mut verifier = Verifier::new(pinned);
    let cache = SignatureCache::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = parse_line(line).map_err(|error| UsageError::Line {
            line: index + 1,
            error,
        })?;
        verifier.push(index + 1, parsed, &cache)?;
    }
    verifier.finish()
}

/// Writes export lines (DESIGN section 4), each canonical JSON without a newline.
pub mod lines {
    use super::{Checkpoint, Event, EventError, Header, KeyRecord};

    fn json<T: serde::Serialize>(kind: &str, field: Option<&str>, value: &T) -> String {
        let inner = match serde_json::to_value(value) {
            Ok(inner) => inner,
            Err(e) => unreachable!("export records always serialise: {e}"),
        };
        let mut line = serde_json::Map::new();
        line.insert("type".into(), kind.into());
        match (field, inner) {
            (Some(field), inner) => {
                line.insert(field.into(), inner);
            }
            (None, serde_json::Value::Object(fields)) => line.extend(fields),
            (None, _) => unreachable!("a header is an object"),
        }
        match crate::canonical::to_canonical_vec(&serde_json::Value::Object(line)) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => unreachable!("export records are in the canonical domain: {e}"),
        }
    }

    /// `{"type":"header",...}`
    pub fn header(header: &Header) -> String {
        json("header", None, header)
    }

    /// `{"type":"key","key":{...}}`
    pub fn key(record: &KeyRecord) -> String {
        json("key", Some("key"), record)
    }

    /// `{"type":"checkpoint","checkpoint":{...}}`
    pub fn checkpoint(checkpoint: &Checkpoint) -> String {
        json("checkpoint", Some("checkpoint"), checkpoint)
    }

    /// `{"event":{...},"type":"event"}` with the event's canonical envelope.
    pub fn event(event: &Event) -> Result<String, EventError> {
        let envelope = event.to_json_bytes()?;
        let mut line = String::with_capacity(envelope.len() + 32);
        line.push_str("{\"event\":");
        line.push_str(&String::from_utf8_lossy(&envelope));
        line.push_str(",\"type\":\"event\"}");
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header_announcing(to_seq: u64) -> ExportLine {
        let text = format!(
            "{{\"exported_at\":\"2026-11-22T09:00:00.000000Z\",\"format\":\"payout-ledger-export\",\
             \"from_seq\":1,\"tenant\":\"acme\",\"to_seq\":{to_seq},\"type\":\"header\",\"v\":1}}"
        );
        parse_line(&text).expect("a header line")
    }

    /// The room reserved from the header's `to_seq` follows it, and a header announcing
    /// more than [`RESERVE_EVENTS_MAX`] events (it is input) reserves no more than that.
    #[test]
    fn the_header_reserves_room_for_what_it_announces_up_to_a_bound() {
        let cache = SignatureCache::default();
        for (to_seq, hashes_at_least, hashes_at_most) in [
            (1000, 1000, RESERVE_EVENTS_MAX),
            ((1 << 53) - 1, RESERVE_EVENTS_MAX, 2 * RESERVE_EVENTS_MAX),
        ] {
            let mut verifier = Verifier::new(None);
            verifier
                .push(1, header_announcing(to_seq), &cache)
                .expect("a usable header");
            let hashes = verifier.hashes.prefix.capacity();
            assert!(
                (hashes_at_least..=hashes_at_most).contains(&hashes),
                "to_seq {to_seq}: room for {hashes} hashes"
            );
            let payouts = verifier.state.as_ref().expect("state").payouts.capacity();
            assert!(
                payouts >= hashes_at_least / 2 && payouts <= 2 * RESERVE_EVENTS_MAX,
                "to_seq {to_seq}: room for {payouts} payouts"
            );
        }
    }

    proptest! {
        /// The kept hashes answer as one map would, through any order of seqs (in order,
        /// repeated, with gaps) and a pruning at any point.
        #[test]
        fn event_hashes_answer_as_one_map_would(
            seqs in proptest::collection::vec(prop_oneof![4 => Just(None), 1 => (0u64..40).prop_map(Some)], 0..60),
            prune_at in 0usize..60,
            wanted in proptest::collection::hash_set(0u64..40, 0..8),
        ) {
            let wanted: IdSet<u64> = wanted.into_iter().collect();
            let mut hashes = EventHashes::default();
            let mut map: IdMap<u64, Hash> = IdMap::default();
            let mut next = 1;
            for (index, seq) in seqs.iter().enumerate() {
                if index == prune_at {
                    hashes.retain(&wanted);
                    map.retain(|seq, _| wanted.contains(seq));
                }
                // Mostly the next seq in order, sometimes any seq.
                let seq = seq.unwrap_or(next);
                next = seq + 1;
                let hash = Hash::of(b"test", &index.to_be_bytes());
                if index < prune_at || wanted.contains(&seq) {
                    hashes.insert(seq, hash);
                    map.insert(seq, hash);
                }
            }
            for seq in 0..45 {
                prop_assert_eq!(hashes.get(seq), map.get(&seq), "seq {}", seq);
            }
            if prune_at < seqs.len() {
                prop_assert_eq!(hashes.len(), map.len());
            }
        }
    }
}
