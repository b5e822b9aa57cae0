//! The records the service keeps beside the chain: API keys, invites, TOTP enrolments,
//! idempotency answers and HMAC nonces (typed here, stored by ledger-store as JSON with
//! compare-and-set through `AppState::get`, `insert` and `update`).

use ledger_core::ids::PrincipalId;
use ledger_core::policy::Permission;
use ledger_core::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Record kinds.
pub mod kind {
    /// API keys, by key id.
    pub const API_KEY: &str = "apikey";
    /// Invites, by invite id.
    pub const INVITE: &str = "invite";
    /// TOTP enrolments, by user.
    pub const TOTP: &str = "totp";
    /// Idempotency answers, by `principal:key`, or for an invite redemption (no caller
    /// yet) by `redeem:<SHA-256 of the invite and the key>`.
    pub const IDEMPOTENCY: &str = "idem";
    /// HMAC nonces, by `key_id:nonce`.
    pub const NONCE: &str = "nonce";
}

/// An API key (the secret only as its SHA-256).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRecord {
    /// Whose.
    pub principal: PrincipalId,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Scopes narrowing the principal's roles (`None`: all of them).
    pub scopes: Option<Vec<Permission>>,
    /// Expiry.
    pub expires_at: Option<Timestamp>,
    /// Client IPs or CIDR blocks allowed (`None`: any).
    pub allowed_ips: Option<Vec<String>>,
    /// For keys that must sign requests: the HMAC secret, encrypted.
    pub hmac_secret: Option<String>,
    /// Revoked.
    pub revoked: bool,
}

/// A one-time invite (the secret only as its SHA-256).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteRecord {
    /// The user it is for.
    pub user: PrincipalId,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Expiry.
    pub expires_at: Timestamp,
    /// Used.
    pub redeemed: bool,
}

/// A user's TOTP enrolment (the secret encrypted).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotpRecord {
    /// Encryption envelope of the raw secret.
    pub secret: String,
    /// Confirmed with a first code.
    pub confirmed: bool,
    /// The last step used (each step once).
    pub last_step: u64,
    /// Wrong codes since the last good one.
    pub failures: u32,
    /// Locked until.
    pub locked_until: Option<Timestamp>,
}

/// A stored answer to an idempotent POST.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyRecord {
    /// SHA-256 of method, path and body.
    pub request_sha256: String,
    /// Status, once answered.
    pub status: Option<u16>,
    /// Body, once answered.
    pub body: Option<String>,
    /// Body, once answered, encrypted: for answers that carry a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sealed: Option<String>,
    /// When the request was first seen.
    pub started_at: Timestamp,
}
