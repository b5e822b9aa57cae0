//! The event envelope and its data (DESIGN section 4, normative), the hash chain, and
//! the typed bodies of every event kind.

use std::collections::BTreeMap;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::canonical::{self, CanonicalError};
use crate::crypto::{Hash, EVENT_HASH_PREFIX};
use crate::ids::{AccountId, ApiKeyId, EventId, PayeeId, PayoutId, PrincipalId, TenantId};
use crate::money::Currency;
use crate::policy::{ApprovalRule, Permission, Role};
use crate::proof::TwoFactorProof;
use crate::time::Timestamp;

/// One posting line: a signed amount on a bucket (`acct_X:available`, `acct_X:held`,
/// `world:funding`, `world:payees`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Posting {
    /// The bucket.
    pub account: String,
    /// Signed amount text at the currency's scale.
    pub amount: String,
    /// The currency.
    pub currency: Currency,
}

/// `tenant.created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantCreated {
    /// Display name.
    pub name: String,
    /// The first administrator, granted `admin` by this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<PrincipalId>,
}

/// `user.added`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAdded {
    /// The new user.
    pub user: PrincipalId,
    /// Display name.
    pub name: String,
}

/// `role.granted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleGranted {
    /// Grantee.
    pub user: PrincipalId,
    /// Role.
    pub role: Role,
    /// 2FA proof of the granting admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_factor: Option<TwoFactorProof>,
    /// Subjects (`usr_x:role`) of a batch grant under one proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Vec<String>>,
}

/// `role.revoked`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRevoked {
    /// The principal losing the role.
    pub user: PrincipalId,
    /// Role.
    pub role: Role,
}

/// `apikey.issued`. The secret never enters the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyIssued {
    /// The key's public id.
    pub key: ApiKeyId,
    /// Its owner.
    pub user: PrincipalId,
    /// Scopes that narrow the owner's roles (empty: no narrowing).
    pub scopes: Vec<Permission>,
    /// Expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// 2FA proof; absent only for a user's first key, issued at invite redemption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_factor: Option<TwoFactorProof>,
}

/// `apikey.revoked`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRevoked {
    /// The key.
    pub key: ApiKeyId,
}

/// `account.opened`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountOpened {
    /// The account.
    pub account: AccountId,
    /// Its only currency.
    pub currency: Currency,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `funds.deposited`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsDeposited {
    /// Credited account.
    pub account: AccountId,
    /// Amount text.
    pub amount: String,
    /// Currency.
    pub currency: Currency,
    /// Free-text reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// `world:funding` -> `acct:available`.
    pub postings: Vec<Posting>,
}

/// `payee.added`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayeeAdded {
    /// The payee.
    pub payee: PayeeId,
    /// Display name.
    pub name: String,
    /// The IBAN as an encryption envelope `v1:<key_id>:<hex>`; never plain text.
    pub iban: String,
}

/// `policy.updated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyUpdated {
    /// The complete new rule set.
    pub rules: Vec<ApprovalRule>,
    /// 2FA proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_factor: Option<TwoFactorProof>,
}

/// `payout.requested`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRequested {
    /// The payout.
    pub payout: PayoutId,
    /// Source account.
    pub account: AccountId,
    /// Destination.
    pub payee: PayeeId,
    /// Amount text.
    pub amount: String,
    /// Currency.
    pub currency: Currency,
    /// Reference.
    pub reference: String,
    /// Optional client metadata (string values only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `payout.approved`, `payout.rejected`, ... all name their payout; gate events may carry
/// a batch list (every event of a batch carries the same proof).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutApproved {
    /// The payout.
    pub payout: PayoutId,
    /// Batch list, for batch approvals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Vec<String>>,
}

/// `payout.rejected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRejected {
    /// The payout.
    pub payout: PayoutId,
    /// Why.
    pub reason: String,
}

/// `payout.authorized`: available -> held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutAuthorized {
    /// The payout.
    pub payout: PayoutId,
    /// The authorizer's 2FA proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_factor: Option<TwoFactorProof>,
    /// Postings.
    pub postings: Vec<Posting>,
    /// Batch list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Vec<String>>,
}

/// `payout.executed`: the instruction went to the rail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutExecuted {
    /// The payout.
    pub payout: PayoutId,
    /// The rail, e.g. SEPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rail: Option<String>,
    /// The executor's 2FA proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_factor: Option<TwoFactorProof>,
    /// Batch list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Vec<String>>,
}

/// `payout.released`: held -> world:payees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutReleased {
    /// The payout.
    pub payout: PayoutId,
    /// The releaser's 2FA proof (persons only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_factor: Option<TwoFactorProof>,
    /// Postings.
    pub postings: Vec<Posting>,
    /// Batch list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Vec<String>>,
}

/// `payout.failed` (held -> available) and `payout.cancelled` (held -> available when it
/// was authorized; no postings before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutEnded {
    /// The payout.
    pub payout: PayoutId,
    /// Why.
    pub reason: String,
    /// The returned hold, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub postings: Vec<Posting>,
}

/// `command.rejected`: a denied command, kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRejected {
    /// The action attempted, e.g. `payout.execute`.
    pub action: String,
    /// Its subject.
    pub subject: String,
    /// Stable reason code, e.g. `four_eyes`.
    pub reason: String,
    /// A human explanation, free of secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Every event kind with its typed data. Exhaustive: a new kind breaks every match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventBody {
    /// `tenant.created`
    TenantCreated(TenantCreated),
    /// `user.added`
    UserAdded(UserAdded),
    /// `role.granted`
    RoleGranted(RoleGranted),
    /// `role.revoked`
    RoleRevoked(RoleRevoked),
    /// `apikey.issued`
    ApiKeyIssued(ApiKeyIssued),
    /// `apikey.revoked`
    ApiKeyRevoked(ApiKeyRevoked),
    /// `account.opened`
    AccountOpened(AccountOpened),
    /// `funds.deposited`
    FundsDeposited(FundsDeposited),
    /// `payee.added`
    PayeeAdded(PayeeAdded),
    /// `policy.updated`
    PolicyUpdated(PolicyUpdated),
    /// `payout.requested`
    PayoutRequested(PayoutRequested),
    /// `payout.approved`
    PayoutApproved(PayoutApproved),
    /// `payout.rejected`
    PayoutRejected(PayoutRejected),
    /// `payout.authorized`
    PayoutAuthorized(PayoutAuthorized),
    /// `payout.executed`
    PayoutExecuted(PayoutExecuted),
    /// `payout.released`
    PayoutReleased(PayoutReleased),
    /// `payout.failed`
    PayoutFailed(PayoutEnded),
    /// `payout.cancelled`
    PayoutCancelled(PayoutEnded),
    /// `command.rejected`
    CommandRejected(CommandRejected),
}

/// Why an event's data does not fit its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The kind is not one the ledger knows.
    #[error("unknown event kind {0:?}")]
    UnknownKind(String),
    /// The data does not have the kind's fields.
    #[error("data does not fit {kind}: {message}")]
    Data {
        /// The kind.
        kind: &'static str,
        /// The decoder's message.
        message: String,
    },
}

macro_rules! body_kinds {
    ($($variant:ident => $kind:literal),* $(,)?) => {
        impl EventBody {
            /// Every kind, as text.
            pub const KINDS: &'static [&'static str] = &[$($kind),*];

            /// The event kind, e.g. `payout.approved`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(EventBody::$variant(_) => $kind,)*
                }
            }

            /// The data object.
            pub fn to_data(&self) -> Value {
                let value = match self {
                    $(EventBody::$variant(data) => serde_json::to_value(data),)*
                };
                match value {
                    Ok(value) => value,
                    Err(e) => unreachable!("event data always serialises: {e}"),
                }
            }

            /// Reads the data of `kind` from its JSON text.
            pub fn from_data(kind: &str, data: &str) -> Result<Self, BodyError> {
                match kind {
                    $($kind => serde_json::from_str(data)
                        .map(EventBody::$variant)
                        .map_err(|e| BodyError::Data { kind: $kind, message: e.to_string() }),)*
                    other => Err(BodyError::UnknownKind(other.chars().take(64).collect())),
                }
            }
        }
    };
}

body_kinds! {
    TenantCreated => "tenant.created",
    UserAdded => "user.added",
    RoleGranted => "role.granted",
    RoleRevoked => "role.revoked",
    ApiKeyIssued => "apikey.issued",
    ApiKeyRevoked => "apikey.revoked",
    AccountOpened => "account.opened",
    FundsDeposited => "funds.deposited",
    PayeeAdded => "payee.added",
    PolicyUpdated => "policy.updated",
    PayoutRequested => "payout.requested",
    PayoutApproved => "payout.approved",
    PayoutRejected => "payout.rejected",
    PayoutAuthorized => "payout.authorized",
    PayoutExecuted => "payout.executed",
    PayoutReleased => "payout.released",
    PayoutFailed => "payout.failed",
    PayoutCancelled => "payout.cancelled",
    CommandRejected => "command.rejected",
}

impl EventBody {
    /// The 2FA proof the event carries, if any.
    pub fn two_factor(&self) -> Option<&TwoFactorProof> {
        match self {
            EventBody::RoleGranted(d) => d.two_factor.as_ref(),
            EventBody::ApiKeyIssued(d) => d.two_factor.as_ref(),
            EventBody::PolicyUpdated(d) => d.two_factor.as_ref(),
            EventBody::PayoutAuthorized(d) => d.two_factor.as_ref(),
            EventBody::PayoutExecuted(d) => d.two_factor.as_ref(),
            EventBody::PayoutReleased(d) => d.two_factor.as_ref(),
            EventBody::TenantCreated(_)
            | EventBody::UserAdded(_)
            | EventBody::RoleRevoked(_)
            | EventBody::ApiKeyRevoked(_)
            | EventBody::AccountOpened(_)
            | EventBody::FundsDeposited(_)
            | EventBody::PayeeAdded(_)
            | EventBody::PayoutRequested(_)
            | EventBody::PayoutApproved(_)
            | EventBody::PayoutRejected(_)
            | EventBody::PayoutFailed(_)
            | EventBody::PayoutCancelled(_)
            | EventBody::CommandRejected(_) => None,
        }
    }

    /// The postings the event carries (empty for most kinds).
    pub fn postings(&self) -> &[Posting] {
        match self {
            EventBody::FundsDeposited(d) => &d.postings,
            EventBody::PayoutAuthorized(d) => &d.postings,
            EventBody::PayoutReleased(d) => &d.postings,
            EventBody::PayoutFailed(d) | EventBody::PayoutCancelled(d) => &d.postings,
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
            | EventBody::PayoutExecuted(_)
            | EventBody::CommandRejected(_) => &[],
        }
    }
}

/// The head of a tenant's chain: the last seq and its hash (seq 0 and zeros when empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// Last seq, 0 for an empty chain.
    pub seq: u64,
    /// Hash of the last event, zeros for an empty chain.
    pub hash: Hash,
}

impl ChainHead {
    /// The head of an empty chain.
    pub const GENESIS: ChainHead = ChainHead {
        seq: 0,
        hash: Hash::ZERO,
    };
}

/// A sealed event: envelope, typed body, and the exact data that was hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Tenant.
    pub tenant: TenantId,
    /// Position in the tenant's chain, from 1.
    pub seq: u64,
    /// Unique id.
    pub id: EventId,
    /// When it was decided.
    pub at: Timestamp,
    /// Who acted.
    pub actor: PrincipalId,
    /// Kind and typed data.
    pub body: EventBody,
    /// Hash of the previous event.
    pub prev: Hash,
    /// This event's hash.
    pub hash: Hash,
    /// The data object as hashed, in canonical JSON (may hold fields beyond the typed
    /// body).
    data: String,
}

/// Why an event cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The JSON is outside the canonical domain.
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    /// A required envelope field is missing or has the wrong type.
    #[error("envelope field {field:?}: {message}")]
    Envelope {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The seq is 0 or would overflow.
    #[error("seq out of range")]
    SeqRange,
}

/// An event read from outside: the envelope as claimed, the hash recomputed from its
/// canonical bytes, and the typed body (or why the data does not fit its kind).
#[derive(Debug, Clone)]
pub struct ParsedEvent {
    /// The envelope; `event.hash` is the hash the text claims.
    pub event: Event,
    /// The hash of the canonical bytes.
    pub computed_hash: Hash,
    /// The kind as written.
    pub kind: String,
    /// Whether the data fits the kind; when it does not, `event.body` is a placeholder and
    /// must not be used.
    pub body_error: Option<BodyError>,
}

impl Event {
    /// Seals `body` as the next event after `head`.
    pub fn seal(
        head: ChainHead,
        tenant: TenantId,
        id: EventId,
        at: Timestamp,
        actor: PrincipalId,
        body: EventBody,
    ) -> Result<(Event, Vec<u8>), EventError> {
        let seq = head.seq.checked_add(1).ok_or(EventError::SeqRange)?;
        if seq > canonical::INTEGER_MAGNITUDE_MAX {
            return Err(EventError::SeqRange);
        }
        let data = canonical::to_canonical_vec(&body.to_data())?;
        let data = String::from_utf8(data).map_err(|e| EventError::Envelope {
            field: "data",
            message: e.to_string(),
        })?;
        let mut event = Event {
            tenant,
            seq,
            id,
            at,
            actor,
            data,
            body,
            prev: head.hash,
            hash: Hash::ZERO,
        };
        let bytes = event.canonical_bytes()?;
        event.hash = Hash::of(EVENT_HASH_PREFIX, &bytes);
        Ok((event, bytes))
    }

    /// The data object as hashed, in canonical JSON.
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The head after this event.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash,
        }
    }

    /// JCS of the envelope without `hash`: the bytes that are hashed and stored.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, EventError> {
        let mut out = Vec::with_capacity(512);
        self.write_envelope(&mut out, None)?;
        Ok(out)
    }

    /// The JSON envelope including `hash`, canonically encoded (one export line's event).
    pub fn to_json_bytes(&self) -> Result<Vec<u8>, EventError> {
        let mut out = Vec::with_capacity(600);
        self.write_envelope(&mut out, Some(&self.hash))?;
        Ok(out)
    }

    fn write_envelope(&self, out: &mut Vec<u8>, hash: Option<&Hash>) -> Result<(), EventError> {
        let at = self.at.to_string();
        let mut id = uuid::Uuid::encode_buffer();
        let id = self.id.uuid().hyphenated().encode_lower(&mut id);
        let mut prev = [0u8; 64];
        let mut hash_hex = [0u8; 64];
        let hash = hash.map(|h| hex_into(h, &mut hash_hex));
        EnvelopeText {
            actor: self.actor.as_str(),
            at: &at,
            data: &self.data,
            hash,
            id,
            kind: self.body.kind(),
            prev: hex_into(&self.prev, &mut prev),
            seq: self.seq,
            tenant: self.tenant.as_str(),
        }
        .write(out);
        Ok(())
    }

    /// Parses an envelope from JSON text (an export line's event, or a stored row),
    /// recomputing its hash from the canonical bytes of exactly what it says. The data
    /// is hashed as written when it is already canonical, else re-encoded.
    pub fn parse(text: &str) -> Result<ParsedEvent, EventError> {
        let raw: RawEnvelope<'_> =
            serde_json::from_str(text).map_err(|e| EventError::Envelope {
                field: "event",
                message: e.to_string(),
            })?;
        Self::from_raw(raw, text.len())
    }

    /// Reads an envelope borrowed from its text (see [`Event::parse`]).
    pub(crate) fn from_raw(
        raw: RawEnvelope<'_>,
        length_hint: usize,
    ) -> Result<ParsedEvent, EventError> {
        if raw.v != 1 {
            return Err(EventError::Envelope {
                field: "v",
                message: format!("unsupported version {}", raw.v),
            });
        }
        if raw.seq == 0 || raw.seq > canonical::INTEGER_MAGNITUDE_MAX {
            return Err(EventError::SeqRange);
        }
        let field = |field: &'static str| {
            move |e: &dyn std::fmt::Display| EventError::Envelope {
                field,
                message: e.to_string(),
            }
        };
        let data_text = raw.data.get();
        let data = if canonical::is_canonical(data_text) {
            data_text.to_owned()
        } else {
            let value = canonical::parse_value(data_text)?;
            String::from_utf8(canonical::to_canonical_vec(&value)?)
                .map_err(|e| field("data")(&e))?
        };
        if !data.starts_with('{') {
            return Err(EventError::Envelope {
                field: "data",
                message: "not an object".into(),
            });
        }
        let (body, body_error) = match EventBody::from_data(&raw.kind, &data) {
            Ok(body) => (body, None),
            Err(e) => (placeholder_body(), Some(e)),
        };
        let event = Event {
            tenant: TenantId::parse(&raw.tenant).map_err(|e| field("tenant")(&e))?,
            seq: raw.seq,
            id: EventId::parse(&raw.id).map_err(|e| field("id")(&e))?,
            at: Timestamp::parse(&raw.at).map_err(|e| field("at")(&e))?,
            actor: PrincipalId::parse(&raw.actor).map_err(|e| field("actor")(&e))?,
            body,
            prev: Hash::parse(&raw.prev).map_err(|e| field("prev")(&e))?,
            hash: Hash::parse(&raw.hash).map_err(|e| field("hash")(&e))?,
            data,
        };
        // The raw texts were validated above to be in their only canonical form
        // (strict timestamp, lowercase hyphenated uuid, lowercase hex).
        let mut bytes = Vec::with_capacity(length_hint);
        EnvelopeText {
            actor: &raw.actor,
            at: &raw.at,
            data: &event.data,
            hash: None,
            id: &raw.id,
            kind: &raw.kind,
            prev: &raw.prev,
            seq: raw.seq,
            tenant: &raw.tenant,
        }
        .write(&mut bytes);
        let computed_hash = Hash::of(EVENT_HASH_PREFIX, &bytes);
        debug_assert!(body_error.is_some() || event.body.kind() == raw.kind);
        Ok(ParsedEvent {
            event,
            computed_hash,
            kind: raw.kind.into_owned(),
            body_error,
        })
    }
}

fn hex_into<'a>(hash: &Hash, buffer: &'a mut [u8; 64]) -> &'a str {
    if hex::encode_to_slice(hash.as_bytes(), buffer).is_err() {
        unreachable!("64 hex characters fit 64 bytes");
    }
    std::str::from_utf8(buffer).unwrap_or_default()
}

/// The envelope's fields as canonical texts, written in canonical key order: actor, at,
/// data, [hash], id, kind, prev, seq, tenant, v.
struct EnvelopeText<'a> {
    actor: &'a str,
    at: &'a str,
    data: &'a str,
    hash: Option<&'a str>,
    id: &'a str,
    kind: &'a str,
    prev: &'a str,
    seq: u64,
    tenant: &'a str,
}

impl EnvelopeText<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        out.extend_from_slice(b"{\"actor\":");
        canonical::write_string(self.actor, out);
        out.extend_from_slice(b",\"at\":");
        canonical::write_string(self.at, out);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(self.data.as_bytes());
        if let Some(hash) = self.hash {
            out.extend_from_slice(b",\"hash\":");
            canonical::write_string(hash, out);
        }
        out.extend_from_slice(b",\"id\":");
        canonical::write_string(self.id, out);
        out.extend_from_slice(b",\"kind\":");
        canonical::write_string(self.kind, out);
        out.extend_from_slice(b",\"prev\":");
        canonical::write_string(self.prev, out);
        out.extend_from_slice(b",\"seq\":");
        if write!(out, "{}", self.seq).is_err() {
            unreachable!("writing into a Vec cannot fail");
        }
        out.extend_from_slice(b",\"tenant\":");
        canonical::write_string(self.tenant, out);
        out.extend_from_slice(b",\"v\":1}");
    }
}

fn placeholder_body() -> EventBody {
    EventBody::CommandRejected(CommandRejected {
        action: String::new(),
        subject: String::new(),
        reason: String::new(),
        detail: None,
    })
}

/// The envelope as written, borrowed from the text: duplicate and unknown fields are
/// refused, numbers must be integers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnvelope<'a> {
    v: u64,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    seq: u64,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    at: Cow<'a, str>,
    #[serde(borrow)]
    actor: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(borrow)]
    hash: Cow<'a, str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for kind in EventBody::KINDS {
            let err = EventBody::from_data(kind, "{}");
            assert!(!matches!(err, Err(BodyError::UnknownKind(_))), "{kind}");
        }
        assert!(matches!(
            EventBody::from_data("payout.stolen", "{}"),
            Err(BodyError::UnknownKind(_))
        ));
    }
}
