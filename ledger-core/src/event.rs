//! The event envelope and its data (DESIGN section 4, normative), the hash chain, and
//! the typed bodies of every event kind.

use std::collections::BTreeMap;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::canonical::{self, CanonicalError};
use crate::crypto::{Hash, EVENT_HASH_PREFIX};
use crate::ids::{
    AccountId, ApiKeyId, AutopayRuleId, EventId, PayeeId, PayoutId, PrincipalId, TenantId,
};
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
    /// The auto-pay rule that approved it (the event's actor is then `rule:<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<AutopayRuleId>,
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

/// `autopay.rule.proposed`: a standing approval's terms (they never change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutopayRuleProposed {
    /// The rule.
    pub rule: AutopayRuleId,
    /// The one source account it covers.
    pub account: AccountId,
    /// The payees it covers.
    pub payees: Vec<PayeeId>,
    /// Its one currency.
    pub currency: Currency,
    /// The ceiling per payout, amount text.
    pub max_amount: String,
    /// The most it approves per UTC day, amount text.
    pub daily_limit: String,
}

/// `autopay.rule.enabled`, by an admin other than the proposer, with a 2FA proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutopayRuleEnabled {
    /// The rule.
    pub rule: AutopayRuleId,
    /// The enabling admin's 2FA proof (action `autopay.enable`, subject the rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_factor: Option<TwoFactorProof>,
}

/// `autopay.rule.disabled`, by any admin, no code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutopayRuleDisabled {
    /// The rule.
    pub rule: AutopayRuleId,
    /// Why.
    pub reason: String,
}

/// `user.deactivated`: the user's keys stop working and their roles stop counting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeactivated {
    /// The user.
    pub user: PrincipalId,
    /// Why.
    pub reason: String,
}

/// `totp.recovered`: the user spent a recovery code to enrol a new TOTP secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpRecovered {
    /// The user (the actor).
    pub user: PrincipalId,
}

/// `tenant.suspended` and `tenant.resumed`, by the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantStatusChanged {
    /// Why.
    pub reason: String,
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
    /// `autopay.rule.proposed`
    AutopayRuleProposed(AutopayRuleProposed),
    /// `autopay.rule.enabled`
    AutopayRuleEnabled(AutopayRuleEnabled),
    /// `autopay.rule.disabled`
    AutopayRuleDisabled(AutopayRuleDisabled),
    /// `user.deactivated`
    UserDeactivated(UserDeactivated),
    /// `totp.recovered`
    TotpRecovered(TotpRecovered),
    /// `tenant.suspended`
    TenantSuspended(TenantStatusChanged),
    /// `tenant.resumed`
    TenantResumed(TenantStatusChanged),
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

            /// The names of the fields of this kind's typed body (set or not), as serde
            /// reads them: the keys an extra data field may not take.
            pub fn field_names(&self) -> &'static [&'static str] {
                match self {
                    $(EventBody::$variant(data) => field_names_of(data),)*
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
    AutopayRuleProposed => "autopay.rule.proposed",
    AutopayRuleEnabled => "autopay.rule.enabled",
    AutopayRuleDisabled => "autopay.rule.disabled",
    UserDeactivated => "user.deactivated",
    TotpRecovered => "totp.recovered",
    TenantSuspended => "tenant.suspended",
    TenantResumed => "tenant.resumed",
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
            EventBody::AutopayRuleEnabled(d) => d.two_factor.as_ref(),
            EventBody::AutopayRuleProposed(_)
            | EventBody::AutopayRuleDisabled(_)
            | EventBody::UserDeactivated(_)
            | EventBody::TotpRecovered(_)
            | EventBody::TenantSuspended(_)
            | EventBody::TenantResumed(_)
            | EventBody::TenantCreated(_)
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
            | EventBody::CommandRejected(_)
            | EventBody::AutopayRuleProposed(_)
            | EventBody::AutopayRuleEnabled(_)
            | EventBody::AutopayRuleDisabled(_)
            | EventBody::UserDeactivated(_)
            | EventBody::TotpRecovered(_)
            | EventBody::TenantSuspended(_)
            | EventBody::TenantResumed(_) => &[],
        }
    }

    /// The actor to seal the event with when `submitter` submitted the command that
    /// produced it: the rule's principal for an approval by an auto-pay rule, else the
    /// submitter.
    pub fn sealed_actor(&self, submitter: &PrincipalId) -> PrincipalId {
        if let EventBody::PayoutApproved(PayoutApproved {
            rule: Some(rule), ..
        }) = self
        {
            return PrincipalId::of_rule(rule);
        }
        submitter.clone()
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
    /// An extra data field names a key the typed bodies use (or would change the typed
    /// body when read back), or has no value.
    #[error("extra data field {key:?}: {reason}")]
    ExtraField {
        /// The key (at most 64 characters of it).
        key: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

/// The extra data field in which the service records the id of the request that caused
/// an event (DESIGN 4 allows fields beyond the typed body; they are hashed with the data
/// and ignored by the typed body, so the verifier's comparison of bodies is unaffected).
pub const REQUEST_ID_FIELD: &str = "request_id";

/// Fields added to an event's data beyond its typed body, by key.
pub type ExtraData = serde_json::Map<String, Value>;

/// An event read from outside: the envelope as claimed, the hash recomputed from its
/// canonical bytes, and the typed body (or why the data does not fit its kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    /// The envelope; `event.hash` is the hash the text claims.
    pub event: Event,
    /// The hash of the canonical bytes.
    pub computed_hash: Hash,
    /// The kind as written (every kind of the design fits inline: no allocation).
    pub kind: smol_str::SmolStr,
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
        Self::seal_with(head, tenant, id, at, actor, body, &ExtraData::new())
    }

    /// Seals `body` as the next event after `head`, with `extra` fields added to its data
    /// (e.g. [`REQUEST_ID_FIELD`]). An extra key that any typed body of this kind uses is
    /// refused, whether or not this body sets it, and so is a null value; the data must
    /// read back as exactly `body`.
    pub fn seal_with(
        head: ChainHead,
        tenant: TenantId,
        id: EventId,
        at: Timestamp,
        actor: PrincipalId,
        body: EventBody,
        extra: &ExtraData,
    ) -> Result<(Event, Vec<u8>), EventError> {
        let seq = head.seq.checked_add(1).ok_or(EventError::SeqRange)?;
        if seq > canonical::INTEGER_MAGNITUDE_MAX {
            return Err(EventError::SeqRange);
        }
        let mut value = body.to_data();
        if !extra.is_empty() {
            let refuse = |key: &str, reason: &'static str| EventError::ExtraField {
                key: key.chars().take(64).collect(),
                reason,
            };
            let typed = body.field_names();
            let Value::Object(map) = &mut value else {
                unreachable!("event data always serialises to an object");
            };
            for (key, item) in extra {
                if typed.contains(&key.as_str()) || map.contains_key(key) {
                    return Err(refuse(key, "the typed body uses this key"));
                }
                if item.is_null() {
                    return Err(refuse(key, "an extra field needs a value"));
                }
                map.insert(key.clone(), item.clone());
            }
        }
        let data = canonical::to_canonical_vec(&value)?;
        let data = String::from_utf8(data).map_err(|e| EventError::Envelope {
            field: "data",
            message: e.to_string(),
        })?;
        if !extra.is_empty() && EventBody::from_data(body.kind(), &data).as_ref() != Ok(&body) {
            let key = extra.keys().next().map_or("", String::as_str);
            return Err(EventError::ExtraField {
                key: key.chars().take(64).collect(),
                reason: "the data would not read back as the typed body",
            });
        }
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

    /// The string value of the data's field `key` (an extra field such as
    /// [`REQUEST_ID_FIELD`], or a typed one); `None` when absent or not a string.
    pub fn data_string(&self, key: &str) -> Option<String> {
        let mut deserializer = serde_json::Deserializer::from_str(&self.data);
        serde::de::DeserializeSeed::deserialize(StringField(key), &mut deserializer)
            .ok()
            .flatten()
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
            kind: smol_str::SmolStr::new(&raw.kind),
            body_error,
        })
    }
}

/// The field names serde's derive passes to `deserialize_struct` for `T`: a deserializer
/// that records them and reads nothing.
fn field_names_of<T: Deserialize<'static>>(_: &T) -> &'static [&'static str] {
    struct Probe(&'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for &mut Probe {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("field names only"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(serde::de::Error::custom("field names only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut probe = Probe(&[]);
    let _ = T::deserialize(&mut probe);
    probe.0
}

/// Reads one string field of a JSON object, skipping the others.
struct StringField<'k>(&'k str);

impl<'de> serde::de::DeserializeSeed<'de> for StringField<'_> {
    type Value = Option<String>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StringField<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == self.0 {
                found = map.next_value::<Value>()?.as_str().map(str::to_owned);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// The start of an export event line as [`crate::verify::lines::event`] writes it.
const CANONICAL_LINE_HEAD: &[u8] = b"{\"event\":{\"actor\":\"";
/// The end of the envelope (`,"v":1}`) and of the line.
const CANONICAL_LINE_TAIL: &[u8] = b",\"v\":1},\"type\":\"event\"}";
/// `2026-11-22T10:15:30.123456Z`: the only form [`Timestamp::parse`] accepts.
const TIMESTAMP_LENGTH: usize = 27;
/// 64 lowercase hex digits: the only form [`Hash::parse`] accepts.
const HASH_HEX_LENGTH: usize = 64;
/// A hyphenated UUID: the only form [`EventId::parse`] accepts.
const EVENT_ID_LENGTH: usize = 36;
/// `{"event":`, before the envelope.
const CANONICAL_LINE_BEFORE_ENVELOPE: usize = 9;
/// `,"type":"event"}`, after the envelope.
const CANONICAL_LINE_AFTER_ENVELOPE: usize = 16;

/// A cursor over an export line for [`Event::parse_canonical_line`].
struct LineCursor<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> LineCursor<'a> {
    #[inline(always)]
    fn literal(&mut self, literal: &[u8]) -> Option<()> {
        let rest = self.text.as_bytes().get(self.position..)?;
        if rest.starts_with(literal) {
            self.position += literal.len();
            Some(())
        } else {
            None
        }
    }

    /// The rest of a string whose opening quote was read, up to its closing quote (read
    /// too). Only strings with no escape and no control character: exactly the strings
    /// whose minimal JSON escaping is themselves.
    fn plain_string(&mut self) -> Option<&'a str> {
        let start = self.position;
        let rest = self.text.as_bytes().get(start..)?;
        let length = rest
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if rest[length] != b'"' {
            return None;
        }
        self.position = start + length + 1;
        self.text.get(start..start + length)
    }

    /// The rest of a string of exactly `length` bytes whose opening quote was read, and
    /// its closing quote, without looking inside: for fields whose parser then accepts only
    /// characters that need no escape (hex, a UUID, a timestamp), so that a string that
    /// `plain_string` would refuse is refused by that parser anyway.
    fn fixed_string(&mut self, length: usize) -> Option<&'a str> {
        let start = self.position;
        if self.text.as_bytes().get(start + length) != Some(&b'"') {
            return None;
        }
        self.position = start + length + 1;
        self.text.get(start..start + length)
    }

    /// An integer in its canonical form (no sign, no leading zero), 1 to 2^53 - 1.
    fn canonical_positive_integer(&mut self) -> Option<u64> {
        let rest = self.text.as_bytes().get(self.position..)?;
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 16 || rest[0] == b'0' {
            return None;
        }
        let value = rest[..digits]
            .iter()
            .fold(0u64, |value, &c| value * 10 + u64::from(c - b'0'));
        self.position += digits;
        (value <= canonical::INTEGER_MAGNITUDE_MAX).then_some(value)
    }
}

impl Event {
    /// The fast path for an export event line that is byte for byte what
    /// [`crate::verify::lines::event`] writes (`{"event":<canonical envelope>,"type":"event"}`,
    /// envelope strings without escapes, canonical data): the fields are read in place and
    /// the hash is computed over the line's own bytes, minus the `hash` member, without
    /// building them again. `None` for any other line, valid or not, which the general
    /// path then reads; when it answers, it answers exactly what the general path would
    /// (held by a property test against [`crate::verify::parse_line_general`]).
    pub(crate) fn parse_canonical_line(text: &str) -> Option<ParsedEvent> {
        let mut cursor = LineCursor { text, position: 0 };
        cursor.literal(CANONICAL_LINE_HEAD)?;
        let actor = cursor.plain_string()?;
        cursor.literal(b",\"at\":\"")?;
        let at = cursor.fixed_string(TIMESTAMP_LENGTH)?;
        cursor.literal(b",\"data\":")?;
        let data_start = cursor.position;
        if text.as_bytes().get(data_start) != Some(&b'{')
            || !canonical::scan_value(text.as_bytes(), &mut cursor.position, 0)
        {
            return None;
        }
        let data = text.get(data_start..cursor.position)?;
        let hash_member_start = cursor.position;
        cursor.literal(b",\"hash\":\"")?;
        let hash = cursor.fixed_string(HASH_HEX_LENGTH)?;
        let hash_member_end = cursor.position;
        cursor.literal(b",\"id\":\"")?;
        let id = cursor.fixed_string(EVENT_ID_LENGTH)?;
        cursor.literal(b",\"kind\":\"")?;
        let kind = cursor.plain_string()?;
        cursor.literal(b",\"prev\":\"")?;
        let prev = cursor.fixed_string(HASH_HEX_LENGTH)?;
        cursor.literal(b",\"seq\":")?;
        let seq = cursor.canonical_positive_integer()?;
        cursor.literal(b",\"tenant\":\"")?;
        let tenant = cursor.plain_string()?;
        cursor.literal(CANONICAL_LINE_TAIL)?;
        if cursor.position != text.len() {
            return None;
        }
        let typed = match simple_body(kind, data) {
            Some(body) => Ok(body),
            None => EventBody::from_data(kind, data),
        };
        let (body, body_error) = match typed {
            Ok(body) => (body, None),
            Err(e) => (placeholder_body(), Some(e)),
        };
        let event = Event {
            tenant: TenantId::parse(tenant).ok()?,
            seq,
            id: EventId::parse(id).ok()?,
            at: Timestamp::parse(at).ok()?,
            actor: PrincipalId::parse(actor).ok()?,
            body,
            prev: Hash::parse(prev).ok()?,
            hash: Hash::parse(hash).ok()?,
            data: data.to_owned(),
        };
        // The envelope without `hash`: `{"actor":…,"data":{…}` and `,"id":…,"v":1}`.
        let bytes = text.as_bytes();
        let envelope_end = bytes.len() - CANONICAL_LINE_AFTER_ENVELOPE;
        let computed_hash = Hash::of_parts(
            EVENT_HASH_PREFIX,
            &[
                &bytes[CANONICAL_LINE_BEFORE_ENVELOPE..hash_member_start],
                &bytes[hash_member_end..envelope_end],
            ],
        );
        debug_assert!(body_error.is_some() || event.body.kind() == kind);
        Some(ParsedEvent {
            event,
            computed_hash,
            kind: smol_str::SmolStr::new(kind),
            body_error,
        })
    }
}

/// The typed data of the commonest kinds (`payout.approved`, `payout.requested`, and
/// `payout.authorized`, `payout.executed`, `payout.released` without a batch or a rail)
/// read straight from canonical data text in its simplest form (the kind's keys in their
/// sorted order, no optional field but the proof, strings without escapes), without
/// serde. `None` whenever the
/// text is anything else, and [`EventBody::from_data`] then decides; when it answers, it
/// answers what `from_data` does (the fast path's property test compares the two parsers
/// on every line, and the general one reads the data with serde only).
fn simple_body(kind: &str, data: &str) -> Option<EventBody> {
    let mut cursor = LineCursor {
        text: data,
        position: 0,
    };
    let body = match kind {
        "payout.approved" => {
            cursor.literal(b"{\"payout\":\"")?;
            let payout = cursor.plain_string()?;
            cursor.literal(b"}")?;
            EventBody::PayoutApproved(PayoutApproved {
                payout: PayoutId::parse(payout).ok()?,
                rule: None,
                batch: None,
            })
        }
        "payout.requested" => {
            cursor.literal(b"{\"account\":\"")?;
            let account = cursor.plain_string()?;
            cursor.literal(b",\"amount\":\"")?;
            let amount = cursor.plain_string()?;
            cursor.literal(b",\"currency\":\"")?;
            let currency = cursor.plain_string()?;
            cursor.literal(b",\"payee\":\"")?;
            let payee = cursor.plain_string()?;
            cursor.literal(b",\"payout\":\"")?;
            let payout = cursor.plain_string()?;
            cursor.literal(b",\"reference\":\"")?;
            let reference = cursor.plain_string()?;
            cursor.literal(b"}")?;
            EventBody::PayoutRequested(PayoutRequested {
                payout: PayoutId::parse(payout).ok()?,
                account: AccountId::parse(account).ok()?,
                payee: PayeeId::parse(payee).ok()?,
                amount: amount.to_owned(),
                currency: currency.parse().ok()?,
                reference: reference.to_owned(),
                metadata: None,
            })
        }
        "payout.authorized" => {
            // payout, postings, two_factor
            cursor.literal(b"{\"payout\":\"")?;
            let payout = PayoutId::parse(cursor.plain_string()?).ok()?;
            cursor.literal(b",\"postings\":")?;
            let postings = simple_postings(&mut cursor)?;
            cursor.literal(b",\"two_factor\":")?;
            let two_factor = Some(simple_proof(&mut cursor)?);
            cursor.literal(b"}")?;
            EventBody::PayoutAuthorized(PayoutAuthorized {
                payout,
                two_factor,
                postings,
                batch: None,
            })
        }
        "payout.executed" => {
            // payout, two_factor
            cursor.literal(b"{\"payout\":\"")?;
            let payout = PayoutId::parse(cursor.plain_string()?).ok()?;
            cursor.literal(b",\"two_factor\":")?;
            let two_factor = Some(simple_proof(&mut cursor)?);
            cursor.literal(b"}")?;
            EventBody::PayoutExecuted(PayoutExecuted {
                payout,
                rail: None,
                two_factor,
                batch: None,
            })
        }
        "payout.released" => {
            // payout, postings[, two_factor]
            cursor.literal(b"{\"payout\":\"")?;
            let payout = PayoutId::parse(cursor.plain_string()?).ok()?;
            cursor.literal(b",\"postings\":")?;
            let postings = simple_postings(&mut cursor)?;
            let two_factor = if cursor.literal(b",\"two_factor\":").is_some() {
                Some(simple_proof(&mut cursor)?)
            } else {
                None
            };
            cursor.literal(b"}")?;
            EventBody::PayoutReleased(PayoutReleased {
                payout,
                two_factor,
                postings,
                batch: None,
            })
        }
        _ => return None,
    };
    (cursor.position == data.len()).then_some(body)
}

/// `[{"account":…,"amount":…,"currency":…},…]` in its simplest form (see [`simple_body`]).
fn simple_postings(cursor: &mut LineCursor<'_>) -> Option<Vec<Posting>> {
    cursor.literal(b"[")?;
    let mut postings = Vec::with_capacity(2);
    if cursor.literal(b"]").is_some() {
        return Some(postings);
    }
    loop {
        cursor.literal(b"{\"account\":\"")?;
        let account = cursor.plain_string()?.to_owned();
        cursor.literal(b",\"amount\":\"")?;
        let amount = cursor.plain_string()?.to_owned();
        cursor.literal(b",\"currency\":\"")?;
        let currency = cursor.plain_string()?.parse().ok()?;
        cursor.literal(b"}")?;
        postings.push(Posting {
            account,
            amount,
            currency,
        });
        if cursor.literal(b"]").is_some() {
            return Some(postings);
        }
        cursor.literal(b",")?;
    }
}

/// A 2FA proof object in its simplest form (see [`simple_body`]): every field, in JCS
/// order, strings without escapes.
fn simple_proof(cursor: &mut LineCursor<'_>) -> Option<TwoFactorProof> {
    cursor.literal(b"{\"action\":\"")?;
    let action = cursor.plain_string()?.to_owned();
    cursor.literal(b",\"actor\":\"")?;
    let actor = PrincipalId::parse(cursor.plain_string()?).ok()?;
    cursor.literal(b",\"key_id\":\"")?;
    let key_id = crate::ids::KeyId::parse(cursor.plain_string()?).ok()?;
    cursor.literal(b",\"sig\":\"")?;
    let sig = crate::crypto::Sig::parse(cursor.plain_string()?).ok()?;
    cursor.literal(b",\"step\":")?;
    let step = cursor.canonical_positive_integer()?;
    cursor.literal(b",\"subject\":\"")?;
    let subject = cursor.plain_string()?.to_owned();
    cursor.literal(b",\"tenant\":\"")?;
    let tenant = TenantId::parse(cursor.plain_string()?).ok()?;
    cursor.literal(b",\"v\":1,\"verified_at\":\"")?;
    let verified_at = Timestamp::parse(cursor.plain_string()?).ok()?;
    cursor.literal(b"}")?;
    Some(TwoFactorProof {
        v: 1,
        tenant,
        actor,
        action,
        subject,
        step,
        verified_at,
        key_id,
        sig,
    })
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

    fn id<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().expect(s)
    }

    fn approved(batch: Option<Vec<String>>) -> EventBody {
        EventBody::PayoutApproved(PayoutApproved {
            payout: id("po_1"),
            rule: None,
            batch,
        })
    }

    fn seal_extra(
        body: EventBody,
        extra: &[(&str, Value)],
    ) -> Result<(Event, Vec<u8>), EventError> {
        let extra: ExtraData = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        Event::seal_with(
            ChainHead::GENESIS,
            id("acme"),
            EventId::from_uuid(uuid::Uuid::from_u128(7)),
            Timestamp::from_unix_micros(1_795_338_000_000_000),
            id("usr_bob"),
            body,
            &extra,
        )
    }

    #[test]
    fn extra_fields_are_hashed_kept_and_read_back() {
        let (event, bytes) =
            seal_extra(approved(None), &[(REQUEST_ID_FIELD, Value::from("req-1"))]).expect("seal");
        assert!(
            event.data().contains("\"request_id\":\"req-1\""),
            "{}",
            event.data()
        );
        assert_eq!(
            event.data_string(REQUEST_ID_FIELD).as_deref(),
            Some("req-1")
        );
        assert_eq!(event.data_string("payout").as_deref(), Some("po_1"));
        assert_eq!(event.data_string("absent"), None);
        // The envelope parses back: same typed body, same hash, the field still there.
        let text = String::from_utf8(event.to_json_bytes().expect("json")).expect("utf-8");
        let parsed = Event::parse(&text).expect("parse");
        assert_eq!(parsed.body_error, None);
        assert_eq!(parsed.computed_hash, event.hash);
        assert_eq!(parsed.event, event);
        assert_eq!(
            parsed.event.data_string(REQUEST_ID_FIELD).as_deref(),
            Some("req-1")
        );
        assert_eq!(event.canonical_bytes().expect("bytes"), bytes);
        // Without the field, the same body hashes differently: the field is in the hash.
        let (plain, _) = seal_extra(approved(None), &[]).expect("seal");
        assert_ne!(plain.hash, event.hash);
        assert_eq!(plain.body, event.body);
        assert_eq!(plain.data_string(REQUEST_ID_FIELD), None);
    }

    #[test]
    fn extra_fields_may_not_take_a_typed_key() {
        let refused = |body: EventBody, key: &str, value: Value| {
            matches!(
                seal_extra(body, &[(key, value)]),
                Err(EventError::ExtraField { .. })
            )
        };
        // Set by the body.
        assert!(refused(approved(None), "payout", Value::from("po_2")));
        // A field of the kind that this body leaves out.
        assert!(refused(
            approved(None),
            "batch",
            Value::from(Vec::<String>::new())
        ));
        let failed = EventBody::PayoutFailed(PayoutEnded {
            payout: id("po_1"),
            reason: "bounced".into(),
            postings: Vec::new(),
        });
        assert!(refused(failed, "postings", Value::Array(Vec::new())));
        // No value.
        assert!(refused(approved(None), REQUEST_ID_FIELD, Value::Null));
        // Outside the canonical domain.
        assert!(matches!(
            seal_extra(approved(None), &[("n", serde_json::json!(1.5))]),
            Err(EventError::Canonical(_))
        ));
        assert_eq!(
            approved(None).field_names(),
            &["payout", "rule", "batch"],
            "serde's field list"
        );
    }

    /// The fast path must take what the writer writes, or it buys nothing.
    #[test]
    fn the_fast_path_takes_every_event_line_the_writer_writes() {
        let ledger = crate::testkit::standard_tenant("acme", 1, "10.00");
        assert!(ledger.events.len() > 10);
        for event in &ledger.events {
            let line = crate::verify::lines::event(event).expect("line");
            let parsed = Event::parse_canonical_line(&line).expect("the fast path takes it");
            assert_eq!(parsed.event, *event);
            assert_eq!(parsed.computed_hash, event.hash);
            assert_eq!(parsed.body_error, None);
        }
    }

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
