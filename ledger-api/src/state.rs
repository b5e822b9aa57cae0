//! The service's shared state and the records it keeps beside the chain: API keys,
//! invites, TOTP enrolments, idempotency answers and HMAC nonces (typed here, stored by
//! ledger-store as JSON with compare-and-set).

use std::sync::Arc;

use ledger_core::ids::{PrincipalId, TenantId};
use ledger_core::policy::Permission;
use ledger_core::proof::{TwoFactorFailure, TwoFactorProof, UnsignedProof};
use ledger_core::time::Timestamp;
use ledger_core::Rejection;
use ledger_store::crypto::{FieldScope, KeyRing};
use ledger_store::Store;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::ApiError;
use crate::keys::Keys;
use crate::limits::Limits;
use crate::totp;
use crate::util;
use crate::writer::Writers;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Signing keys.
    pub keys: Arc<Keys>,
    /// Field encryption.
    pub ring: Arc<KeyRing>,
    /// Per-tenant writers.
    pub writers: Writers,
    /// Rate limits.
    pub limits: Arc<Limits>,
    /// Counters for /metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// API-key records recently read.
    pub api_keys: Arc<crate::credentials::ApiKeyCache>,
    /// Webhook settings: target rules (checked at subscription) and the worker's.
    pub webhooks: Arc<crate::webhooks::WebhookConfig>,
    /// Keeps the read models current; reads wait on it.
    pub projector: crate::projector::Projector,
    /// How long a read waits for the read model to reflect the seq it needs.
    pub read_wait: std::time::Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

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

impl AppState {
    /// Reads and parses a record.
    pub async fn get<T: DeserializeOwned>(
        &self,
        tenant: &TenantId,
        kind: &str,
        id: &str,
    ) -> Result<Option<(i64, T)>, ApiError> {
        match self.store.record(tenant, kind, id).await? {
            None => Ok(None),
            Some(record) => {
                let value = serde_json::from_str(&record.value).map_err(|e| {
                    ApiError::Internal(format!("stored {kind} record does not parse: {e}"))
                })?;
                Ok(Some((record.version, value)))
            }
        }
    }

    /// Creates a record; `false` if it exists.
    pub async fn insert<T: Serialize>(
        &self,
        tenant: &TenantId,
        kind: &str,
        id: &str,
        value: &T,
    ) -> Result<bool, ApiError> {
        let text = serde_json::to_string(value).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(self.store.insert_record(tenant, kind, id, &text).await?)
    }

    /// Replaces a record at `version`; `false` if it moved on.
    pub async fn update<T: Serialize>(
        &self,
        tenant: &TenantId,
        kind: &str,
        id: &str,
        version: i64,
        value: &T,
    ) -> Result<bool, ApiError> {
        let text = serde_json::to_string(value).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(self
            .store
            .update_record(tenant, kind, id, version, &text)
            .await?)
    }

    /// Encrypts a secret field for `tenant`/`record`/`field`.
    pub fn seal(
        &self,
        tenant: &TenantId,
        record: &str,
        field: &str,
        plaintext: &[u8],
    ) -> Result<String, ApiError> {
        self.ring
            .encrypt(
                FieldScope {
                    tenant,
                    record,
                    field,
                },
                plaintext,
            )
            .map_err(|e| ApiError::Internal(format!("encrypt {field}: {e}")))
    }

    /// Decrypts a secret field.
    pub fn open(
        &self,
        tenant: &TenantId,
        record: &str,
        field: &str,
        envelope: &str,
    ) -> Result<Vec<u8>, ApiError> {
        self.ring
            .decrypt(
                FieldScope {
                    tenant,
                    record,
                    field,
                },
                envelope,
            )
            .map(|plain| plain.to_vec())
            .map_err(|e| ApiError::Internal(format!("decrypt {field}: {e}")))
    }

    /// Checks `code` for `user` and consumes its step; counts wrong codes and locks
    /// after [`totp::FAILURES_MAX`]. `Ok(step)` for a good code; the rejection to record
    /// as evidence otherwise (`require_confirmed`: money movement needs a confirmed
    /// enrolment).
    pub async fn check_code(
        &self,
        tenant: &TenantId,
        user: &PrincipalId,
        code: Option<&str>,
        require_confirmed: bool,
    ) -> Result<Result<u64, Rejection>, ApiError> {
        let Some(code) = code else {
            return Ok(Err(Rejection::TwoFactor(TwoFactorFailure::Missing)));
        };
        for _attempt in 0..8 {
            let Some((version, mut record)) = self
                .get::<TotpRecord>(tenant, kind::TOTP, user.as_str())
                .await?
            else {
                return Ok(Err(Rejection::TwoFactor(TwoFactorFailure::Missing)));
            };
            if require_confirmed && !record.confirmed {
                return Ok(Err(Rejection::TwoFactor(TwoFactorFailure::Missing)));
            }
            let now = util::now();
            if record.locked_until.is_some_and(|until| until > now) {
                return Ok(Err(Rejection::TwoFactor(TwoFactorFailure::Locked)));
            }
            let secret = self.open(tenant, user.as_str(), "totp_secret", &record.secret)?;
            let now_seconds = u64::try_from(now.unix_seconds()).unwrap_or(0);
            let step = totp::matching_step(&secret, code, now_seconds, record.last_step)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let outcome = match step {
                Some(step) => {
                    record.last_step = step;
                    record.failures = 0;
                    record.locked_until = None;
                    Ok(step)
                }
                None => {
                    record.failures += 1;
                    if record.failures >= totp::FAILURES_MAX {
                        record.failures = 0;
                        record.locked_until = Some(Timestamp::from_unix_micros(
                            now.unix_micros() + totp::LOCKOUT_SECONDS * 1_000_000,
                        ));
                    }
                    Err(Rejection::TwoFactor(TwoFactorFailure::WrongCode))
                }
            };
            if self
                .update(tenant, kind::TOTP, user.as_str(), version, &record)
                .await?
            {
                return Ok(outcome);
            }
        }
        Err(ApiError::Unavailable)
    }

    /// Seconds left on `user`'s lockout.
    pub async fn lockout_left(
        &self,
        tenant: &TenantId,
        user: &PrincipalId,
    ) -> Result<u64, ApiError> {
        let now = util::now();
        Ok(self
            .get::<TotpRecord>(tenant, kind::TOTP, user.as_str())
            .await?
            .and_then(|(_, r)| r.locked_until)
            .map(|until| {
                u64::try_from((until.unix_micros() - now.unix_micros()) / 1_000_000 + 1)
                    .unwrap_or(1)
            })
            .unwrap_or(0))
    }

    /// A proof that `actor` passed 2FA at `step` for `action` on `subject`, signed with
    /// the 2FA key.
    pub fn proof(
        &self,
        tenant: &TenantId,
        actor: &PrincipalId,
        action: &str,
        subject: &str,
        step: u64,
    ) -> TwoFactorProof {
        let (key_id, key) = &self.keys.two_factor;
        UnsignedProof {
            v: 1,
            tenant: tenant.clone(),
            actor: actor.clone(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            step,
            verified_at: util::now(),
            key_id: key_id.clone(),
        }
        .sign(key)
    }
}
