//! People: `POST /v1/users` (an invite for a new user) and `POST /v1/invites/redeem`.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use ledger_core::command::Command;
use ledger_core::ids::{ApiKeyId, PrincipalId, TenantId};
use ledger_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency, RequestId};
use crate::http::extract::Body;
use crate::records::{kind, InviteRecord, TotpRecord};
use crate::routes::context::{created, new_id, parse, secret_answer, Ctx};
use crate::routes::keys::issue_key;
use crate::routes::schema::UserId;
use crate::state::{presented_invite, AppState, PresentedInvite};
use crate::util;
use crate::writer::Submission;

/// Invites expire after this long.
const INVITE_SECONDS: i64 = 24 * 3600;

/// `POST /v1/users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    /// The person's name, as the audit view shows it.
    name: String,
}

/// The new user and the one-time invite to hand to that person (never to anyone else).
#[derive(Serialize, ToSchema)]
pub(crate) struct UserInvited {
    #[schema(value_type = UserId)]
    user: PrincipalId,
    /// `<invite_id>.<secret>`, valid 24 h, redeemed once.
    invite: String,
}

/// Creates an invite for `user` and returns its one-time token.
pub async fn create_invite(
    state: &AppState,
    tenant: &TenantId,
    user: &PrincipalId,
) -> Result<String, ApiError> {
    let invite_id = util::random_id("inv_", 20);
    let secret = hex::encode(util::random_bytes::<24>());
    let record = InviteRecord {
        user: user.clone(),
        secret_sha256: util::sha256_hex(secret.as_bytes()),
        expires_at: Timestamp::from_unix_micros(
            util::now().unix_micros() + INVITE_SECONDS * 1_000_000,
        ),
        redeemed: false,
    };
    if !state.store.index_credential(&invite_id, tenant).await?
        || !state
            .insert(tenant, kind::INVITE, &invite_id, &record)
            .await?
    {
        return Err(ApiError::Internal("invite id collision".into()));
    }
    Ok(format!("{invite_id}.{secret}"))
}

/// Add a user; the answer holds a one-time invite (user.manage).
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, description = "The user and the invite, shown once", body = UserInvited)))]
async fn create_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<NewUser>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let user: PrincipalId = parse("user", &new_id("usr_", ctx.idempotency.as_ref(), "user"))?;
    ctx.submit(
        vec![Command::AddUser {
            user: user.clone(),
            name: body.name,
        }],
        None,
        Box::new(|_, _| Value::Null),
    )
    .await?;
    let invite = create_invite(&ctx.state, &ctx.caller.tenant, &user).await?;
    Ok(secret_answer(created(UserInvited { user, invite })))
}

/// `POST /v1/invites/redeem`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedeemInvite {
    /// The invite, `<invite_id>.<secret>`.
    invite: String,
}

/// A person's own credentials, shown this once.
#[derive(Serialize, ToSchema)]
pub(crate) struct InviteRedeemed {
    #[schema(value_type = UserId)]
    user: PrincipalId,
    /// `<key_id>.<secret>`, for `Authorization: Bearer`.
    api_key: String,
    /// The TOTP secret, base32 (RFC 6238, SHA-1, 6 digits, 30 s).
    totp_secret: String,
    /// The same as an `otpauth://totp/…` URI for an authenticator app.
    totp_uri: String,
}

/// Redeem an invite, once: the person's API key and TOTP enrolment.
///
/// Redeems an invite, once. Its answer shows the API key and TOTP secret once: with an
/// `Idempotency-Key`, the middleware keeps it sealed for a retry (`crate::http`, the
/// record scoped to the invite).
#[utoipa::path(post, path = "/v1/invites/redeem", tag = "users", request_body = RedeemInvite,
    responses((status = 201, description = "An API key and a TOTP enrolment, shown once (an Idempotency-Key replays this answer for an hour)", body = InviteRedeemed)))]
async fn redeem(
    State(state): State<AppState>,
    request_id: Option<Extension<RequestId>>,
    Body(body): Body<RedeemInvite>,
) -> Result<Response, ApiError> {
    let PresentedInvite {
        tenant,
        id: invite_id,
        version,
        record: mut invite,
    } = presented_invite(&state, &body.invite)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if invite.redeemed || invite.expires_at <= util::now() {
        return Err(ApiError::Unauthorized);
    }
    invite.redeemed = true;
    if !state
        .update(&tenant, kind::INVITE, &invite_id, version, &invite)
        .await?
    {
        return Err(ApiError::Unauthorized);
    }
    let user = invite.user;
    let key_id = util::random_id("key_", 20);
    let key: ApiKeyId = parse("key", &key_id)?;
    let submission = Submission {
        actor: user.clone(),
        scopes: None,
        commands: vec![Command::IssueApiKey {
            key,
            scopes: Vec::new(),
            expires_at: None,
            two_factor: None,
        }],
        denied: None,
        id_seed: None,
        recheck: false,
        request_id: request_id.map(|Extension(id)| id.as_str().to_owned()),
        view: Box::new(|_, _| Value::Null),
        peek: None,
    };
    let (events, _) = state.writers.submit(&tenant, submission).await?;
    if let Some(last) = events.last() {
        crate::http::context::note_committed(last.seq);
    }
    let api_key = issue_key(&state, &tenant, &user, &key_id, None, None, None, false).await?;
    let secret = util::random_bytes::<{ crate::totp::SECRET_BYTES }>();
    let record = TotpRecord {
        secret: state.seal(&tenant, user.as_str(), "totp_secret", &secret)?,
        confirmed: false,
        last_step: 0,
        failures: 0,
        locked_until: None,
    };
    if !state
        .insert(&tenant, kind::TOTP, user.as_str(), &record)
        .await?
    {
        return Err(ApiError::Unauthorized);
    }
    let (totp_secret, totp_uri) = crate::totp::enrolment(&secret, tenant.as_str(), user.as_str())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(secret_answer(created(InviteRedeemed {
        user,
        api_key,
        totp_secret,
        totp_uri,
    })))
}

/// The user and invite routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user))
        .routes(routes!(redeem))
}
