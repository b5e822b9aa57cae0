//! The service's shared state, built once at start-up ([`AppState::build`]) and handed
//! to the middleware and every handler: the store, keys, writers, limits, caches, and
//! the access to the records beside the chain (`crate::records`) with TOTP checking.

use std::sync::Arc;

use ledger_core::ids::{PrincipalId, TenantId};
use ledger_core::proof::{TwoFactorFailure, TwoFactorProof, UnsignedProof};
use ledger_core::time::Timestamp;
use ledger_core::Rejection;
use ledger_store::crypto::{FieldScope, KeyRing};
use ledger_store::Store;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::{ConfigError, Storage};
use crate::credentials::ApiKeyCache;
use crate::error::ApiError;
use crate::keys::Keys;
use crate::limits::{LimitConfig, Limits};
use crate::metrics::Metrics;
use crate::projector::Projector;
use crate::records::{kind, InviteRecord, TotpRecord};
use crate::webhooks::settings::WebhookConfig;
use crate::writer::Writers;
use crate::{totp, util};

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
    pub metrics: Arc<Metrics>,
    /// API-key records recently read.
    pub api_keys: Arc<ApiKeyCache>,
    /// Webhook settings: target rules (checked at subscription) and the worker's.
    pub webhooks: Arc<WebhookConfig>,
    /// Keeps the read models current; reads wait on it.
    pub projector: Projector,
    /// How long a read waits for the read model to reflect the seq it needs.
    pub read_wait: std::time::Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// Everything the handlers need, from the validated settings: the one place the
    /// state is built (`serve`, the operator commands, the tests and the fuzz target).
    pub async fn build(storage: &Storage, limits: LimitConfig) -> Result<Self, ConfigError> {
        storage.validate()?;
        let ring = storage.key_ring()?;
        let keys = Arc::new(storage.keys()?);
        let store = storage.open().await?;
        let writers = Writers::new(store.clone(), Arc::clone(&keys));
        Ok(Self {
            projector: Projector::new(store.clone(), writers.clone()),
            writers,
            store,
            keys,
            ring: Arc::new(ring),
            limits: Arc::new(Limits::new(limits)),
            metrics: Arc::new(Metrics::default()),
            api_keys: Arc::new(ApiKeyCache::default()),
            webhooks: Arc::default(),
            read_wait: crate::config::READ_WAIT_DEFAULT,
        })
    }

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

/// An invite whose secret was presented, as stored (it may be spent or expired).
pub(crate) struct PresentedInvite {
    /// The invite's tenant.
    pub tenant: TenantId,
    /// The invite id.
    pub id: String,
    /// The record's version.
    pub version: i64,
    /// The record.
    pub record: InviteRecord,
}

/// The invite that `token` (`<invite_id>.<secret>`) names, when its secret matches;
/// `None` for anything else (no telling an unknown invite from a wrong secret).
pub(crate) async fn presented_invite(
    state: &AppState,
    token: &str,
) -> Result<Option<PresentedInvite>, ApiError> {
    let Some((invite_id, secret)) = token.split_once('.') else {
        return Ok(None);
    };
    if !invite_id.starts_with("inv_") || invite_id.len() > 64 {
        return Ok(None);
    }
    let Some(tenant) = state.store.credential_tenant(invite_id).await? else {
        return Ok(None);
    };
    let Some((version, record)) = state
        .get::<InviteRecord>(&tenant, kind::INVITE, invite_id)
        .await?
    else {
        return Ok(None);
    };
    let presented = util::sha256_hex(secret.as_bytes());
    if !util::constant_time_eq(presented.as_bytes(), record.secret_sha256.as_bytes()) {
        return Ok(None);
    }
    Ok(Some(PresentedInvite {
        tenant,
        id: invite_id.to_owned(),
        version,
        record,
    }))
}
