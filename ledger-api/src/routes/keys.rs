//! A person's credentials: API keys (`/v1/me/api-keys`) and TOTP confirmation
//! (`/v1/me/totp/confirm`).

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use ledger_core::command::Command;
use ledger_core::ids::{ApiKeyId, PrincipalId, TenantId};
use ledger_core::policy::Permission;
use ledger_core::proof::TwoFactorFailure;
use ledger_core::time::Timestamp;
use ledger_core::Rejection;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency};
use crate::http::extract::{Body, Path};
use crate::records::{kind, ApiKeyRecord, TotpRecord};
use crate::routes::context::{created, new_id, ok, parse, path_id, secret_answer, Ctx};
use crate::routes::schema::{
    ApiKeyId as ApiKeyIdSchema, OneTimeCode, PermissionName, Time, UserId,
};
use crate::state::AppState;
use crate::util;

/// Issues an API key (`<key_id>.<secret>`) for `principal`, stores it hashed, and
/// returns the token.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn issue_key(
    state: &AppState,
    tenant: &TenantId,
    principal: &PrincipalId,
    key_id: &str,
    scopes: Option<Vec<Permission>>,
    expires_at: Option<Timestamp>,
    allowed_ips: Option<Vec<String>>,
    hmac: bool,
) -> Result<String, ApiError> {
    let secret = hex::encode(util::random_bytes::<32>());
    let hmac_secret = if hmac {
        Some(state.seal(tenant, key_id, "hmac_secret", secret.as_bytes())?)
    } else {
        None
    };
    let record = ApiKeyRecord {
        principal: principal.clone(),
        secret_sha256: util::sha256_hex(secret.as_bytes()),
        scopes,
        expires_at,
        allowed_ips,
        hmac_secret,
        revoked: false,
    };
    if !state.store.index_credential(key_id, tenant).await?
        || !state.insert(tenant, kind::API_KEY, key_id, &record).await?
    {
        return Err(ApiError::Internal("key id collision".into()));
    }
    Ok(format!("{key_id}.{secret}"))
}

/// `POST /v1/me/totp/confirm`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfirmTotp {
    /// A first code from the enrolled secret.
    #[schema(value_type = OneTimeCode)]
    code: String,
}

/// The enrolment is confirmed: money movement may now be authorized with codes.
#[derive(Serialize, ToSchema)]
pub(crate) struct TotpConfirmed {
    #[schema(value_type = UserId)]
    user: PrincipalId,
    /// Always `confirmed`.
    #[schema(value_type = String, pattern = "^confirmed$")]
    totp: &'static str,
}

/// Confirm TOTP enrolment with a first code.
#[utoipa::path(post, path = "/v1/me/totp/confirm", tag = "keys", request_body = ConfirmTotp,
    responses((status = 200, description = "Confirmed", body = TotpConfirmed)))]
async fn confirm_totp(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<ConfirmTotp>,
) -> Result<Response, ApiError> {
    match state
        .check_code(&caller.tenant, &caller.principal, Some(&body.code), false)
        .await?
    {
        Ok(_) => {}
        Err(Rejection::TwoFactor(TwoFactorFailure::Locked)) => {
            let retry_after = state
                .lockout_left(&caller.tenant, &caller.principal)
                .await?
                .max(1);
            return Err(ApiError::Locked { retry_after });
        }
        Err(rejection) => return Err(ApiError::Rejected(rejection)),
    }
    for _attempt in 0..4 {
        let Some((version, mut record)) = state
            .get::<TotpRecord>(&caller.tenant, kind::TOTP, caller.principal.as_str())
            .await?
        else {
            return Err(ApiError::NotFound);
        };
        record.confirmed = true;
        if state
            .update(
                &caller.tenant,
                kind::TOTP,
                caller.principal.as_str(),
                version,
                &record,
            )
            .await?
        {
            return Ok(ok(TotpConfirmed {
                user: caller.principal,
                totp: "confirmed",
            }));
        }
    }
    Err(ApiError::Unavailable)
}

/// `POST /v1/me/api-keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewApiKey {
    /// What the key may do: only narrows what the owner's roles allow.
    #[schema(value_type = Vec<PermissionName>)]
    scopes: Vec<Permission>,
    /// When the key stops working.
    #[schema(value_type = Option<Time>)]
    expires_at: Option<Timestamp>,
    /// 1 to 32 addresses or CIDR blocks the key may be used from.
    #[schema(min_items = 1, max_items = 32)]
    allowed_ips: Option<Vec<String>>,
    /// Whether every request must also be signed (the X-Ledger-* headers).
    hmac: Option<bool>,
    /// The current TOTP code.
    #[schema(value_type = Option<OneTimeCode>)]
    otp: Option<String>,
}

/// The new key, shown once.
#[derive(Serialize, ToSchema)]
pub(crate) struct ApiKeyIssued {
    /// The key's id.
    #[schema(value_type = ApiKeyIdSchema)]
    id: String,
    /// `<key_id>.<secret>`.
    api_key: String,
}

/// Issue an API key to yourself (2FA).
#[utoipa::path(post, path = "/v1/me/api-keys", tag = "keys", request_body = NewApiKey,
    responses((status = 201, description = "The key, shown once", body = ApiKeyIssued)))]
async fn issue_api_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<NewApiKey>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    if let Some(ips) = &body.allowed_ips {
        if ips.is_empty() || ips.len() > 32 || ips.iter().any(|ip| !valid_ip_entry(ip)) {
            return Err(ApiError::Validation(
                "allowed_ips: 1 to 32 addresses or CIDR blocks".into(),
            ));
        }
    }
    let key_id = new_id("key_", ctx.idempotency.as_ref(), "key");
    let key: ApiKeyId = parse("key", &key_id)?;
    let command = Command::IssueApiKey {
        key,
        scopes: body.scopes.clone(),
        expires_at: body.expires_at,
        two_factor: None,
    };
    ctx.submit_with_code(
        vec![command],
        body.otp.as_deref(),
        Box::new(|_, _| Value::Null),
    )
    .await?;
    let api_key = issue_key(
        &ctx.state,
        &ctx.caller.tenant,
        &ctx.caller.principal,
        &key_id,
        Some(body.scopes),
        body.expires_at,
        body.allowed_ips,
        body.hmac.unwrap_or(false),
    )
    .await?;
    Ok(secret_answer(created(ApiKeyIssued {
        id: key_id,
        api_key,
    })))
}

fn valid_ip_entry(entry: &str) -> bool {
    let (address, prefix) = match entry.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (entry, None),
    };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => {
            prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|n| n <= 32))
        }
        Ok(std::net::IpAddr::V6(_)) => {
            prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|n| n <= 128))
        }
        Err(_) => false,
    }
}

/// The key is revoked.
#[derive(Serialize, ToSchema)]
pub(crate) struct ApiKeyRevoked {
    #[schema(value_type = ApiKeyIdSchema)]
    id: String,
    /// Always true.
    revoked: bool,
}

/// Revoke one of your API keys.
#[utoipa::path(delete, path = "/v1/me/api-keys/{id}", tag = "keys", params(("id" = ApiKeyIdSchema, Path, description = "One of the caller's keys")),
    responses((status = 200, description = "Revoked", body = ApiKeyRevoked)))]
async fn revoke_api_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let key: ApiKeyId = path_id(&id)?;
    let (version, mut record) = ctx
        .state
        .get::<ApiKeyRecord>(&ctx.caller.tenant, kind::API_KEY, &id)
        .await?
        .filter(|(_, r)| r.principal == ctx.caller.principal)
        .ok_or(ApiError::NotFound)?;
    ctx.submit(
        vec![Command::RevokeApiKey { key }],
        None,
        Box::new(|_, _| Value::Null),
    )
    .await?;
    record.revoked = true;
    let updated = ctx
        .state
        .update(&ctx.caller.tenant, kind::API_KEY, &id, version, &record)
        .await;
    ctx.state.api_keys.evict(&id);
    if !updated? {
        return Err(ApiError::Unavailable);
    }
    Ok(ok(ApiKeyRevoked { id, revoked: true }))
}

/// The API-key and TOTP routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(confirm_totp))
        .routes(routes!(issue_api_key))
        .routes(routes!(revoke_api_key))
}
