//! The subscription record (kind [`KIND`], id `wh_…`) and its ids.

use ledger_core::ids::{PrincipalId, TenantId};
use ledger_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::http::context::Idempotency;
use crate::util;
use crate::webhooks::signature::WebhookSecret;

/// The record kind of subscriptions.
pub const KIND: &str = "webhook";
/// The encrypted field of a subscription record.
pub(crate) const SECRET_FIELD: &str = "secret";
/// Most subscriptions per tenant.
pub const SUBSCRIPTIONS_MAX: usize = 50;
/// The longest description, in bytes.
pub const DESCRIPTION_BYTES_MAX: usize = 256;
/// The event filter that matches every kind.
pub const ALL_KINDS: &str = "*";
/// Characters of a subscription id after `wh_`.
const ID_CHARS: usize = 20;

// The record
// ---------------------------------------------------------------------------------------

/// The event a subscription is stuck on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failing {
    /// The event's seq.
    pub seq: u64,
    /// Failed attempts at it so far.
    pub attempts: u32,
    /// When the first of them failed.
    pub first_failed_at: Timestamp,
    /// What the last one met: `status`, `redirect_not_followed`, `timeout`, `connect`,
    /// `address_refused`, `dns`, `request` (never the URL or a body).
    pub last_error: String,
    /// The HTTP status of the last answer, if there was one.
    pub last_status: Option<u16>,
    /// When the next attempt is due (`None` once dead-lettered).
    pub next_attempt_at: Option<Timestamp>,
}

/// Which process is delivering a subscription, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// The worker's random id.
    pub owner: String,
    /// The lease lapses then (another worker may take over).
    pub until: Timestamp,
}

/// A subscription as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRecord {
    /// The target, normalised.
    pub url: String,
    /// Event kinds delivered (`["*"]`: all).
    pub events: Vec<String>,
    /// Free text.
    pub description: Option<String>,
    /// The signing secret's bytes, as an encryption envelope.
    pub secret: String,
    /// Created then.
    pub created_at: Timestamp,
    /// Created by.
    pub created_by: PrincipalId,
    /// Every event up to this seq was delivered (or is of a kind not subscribed to).
    pub cursor: u64,
    /// Events delivered so far.
    pub delivered: u64,
    /// The event it is stuck on, if any.
    pub failing: Option<Failing>,
    /// Stopped after too many failed attempts at `failing`, until redelivery.
    pub dead_letter: bool,
    /// The worker delivering it now.
    pub lease: Option<Lease>,
}

impl WebhookRecord {
    /// Whether an event of `kind` is delivered.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|k| k == ALL_KINDS || k == kind)
    }

    fn status(&self) -> &'static str {
        match (&self.failing, self.dead_letter) {
            (_, true) => "dead_letter",
            (Some(_), false) => "retrying",
            (None, false) => "active",
        }
    }

    /// The view the API shows: everything but the secret and the lease.
    pub fn view(&self, id: &str) -> Value {
        json!({
            "id": id,
            "url": self.url,
            "events": self.events,
            "description": self.description,
            "status": self.status(),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "cursor": self.cursor,
            "delivered": self.delivered,
            "failing": self.failing,
            "dead_letter": self.dead_letter,
        })
    }

    /// The signing secret.
    pub fn open_secret(
        &self,
        ring: &ledger_store::crypto::KeyRing,
        tenant: &TenantId,
        id: &str,
    ) -> Result<WebhookSecret, ledger_store::crypto::FieldCryptoError> {
        ring.decrypt(
            ledger_store::crypto::FieldScope {
                tenant,
                record: id,
                field: SECRET_FIELD,
            },
            &self.secret,
        )
        .map(|bytes| WebhookSecret::from_bytes(bytes.to_vec()))
    }
}

/// Whether `id` can be a subscription id (anything else is simply not found).
pub(crate) fn valid_id(id: &str) -> bool {
    id.strip_prefix("wh_").is_some_and(|body| {
        body.len() == ID_CHARS
            && body
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// A new id: derived from the idempotency key when there is one (a retried creation
/// names the same subscription), random otherwise.
pub(crate) fn new_id(idempotency: Option<&Idempotency>) -> String {
    match idempotency {
        None => util::random_id("wh_", ID_CHARS),
        Some(idempotency) => {
            const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
            let digest = Sha256::new()
                .chain_update(idempotency.seed)
                .chain_update(b"webhook")
                .finalize();
            let body: String = digest
                .iter()
                .take(ID_CHARS)
                .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
                .collect();
            format!("wh_{body}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let id = new_id(None);
        assert!(valid_id(&id), "{id}");
        let seed = Idempotency {
            seed: [7; 32],
            recheck: false,
        };
        assert_eq!(new_id(Some(&seed)), new_id(Some(&seed)));
        assert!(valid_id(&new_id(Some(&seed))));
        assert!(!valid_id("wh_short"));
        assert!(!valid_id("xx_abcdefghijkmnpqrstu"));
        assert!(!valid_id("wh_ABCDEFGHIJKMNPQRSTUV"));
    }
}
