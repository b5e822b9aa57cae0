//! A person's credentials: API keys (`/v1/me/api-keys`) and TOTP confirmation
//! (`/v1/me/totp/confirm`).

use axum::extract::State;
use axum::response::Response;
use axum::routing::{delete, post};
use axum::{Extension, Router};
use ledger_core::command::Command;
use ledger_core::ids::{ApiKeyId, PrincipalId, TenantId};
use ledger_core::policy::Permission;
use ledger_core::proof::TwoFactorFailure;
use ledger_core::time::Timestamp;
use ledger_core::Rejection;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency};
use crate::http::extract::{Body, Path};
use crate::records::{kind, ApiKeyRecord, TotpRecord};
use crate::routes::context::{created, new_id, ok, parse, path_id, secret_answer, Ctx};
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: String,
}

async fn confirm_totp(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<CodeBody>,
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
            return Ok(ok(json!({"user": caller.principal, "totp": "confirmed"})));
        }
    }
    Err(ApiError::Unavailable)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyBody {
    scopes: Vec<Permission>,
    expires_at: Option<Timestamp>,
    allowed_ips: Option<Vec<String>>,
    hmac: Option<bool>,
    otp: Option<String>,
}

async fn issue_api_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<ApiKeyBody>,
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
    Ok(secret_answer(created(
        json!({"id": key_id, "api_key": api_key}),
    )))
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
    Ok(ok(json!({"id": id, "revoked": true})))
}

/// The API-key and TOTP routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/me/totp/confirm", post(confirm_totp))
        .route("/v1/me/api-keys", post(issue_api_key))
        .route("/v1/me/api-keys/{id}", delete(revoke_api_key))
}
