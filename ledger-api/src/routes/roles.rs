//! Roles: `POST /v1/users/{id}/roles`, `POST /v1/roles`, `DELETE /v1/users/{id}/roles/{role}`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use ledger_core::command::Command;
use ledger_core::ids::PrincipalId;
use ledger_core::policy::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency};
use crate::http::extract::{Body, Path};
use crate::routes::context::{ok, path_id, Ctx};
use crate::routes::schema::{OneTimeCode, RoleName, UserId};
use crate::state::AppState;
use crate::writer::View;

/// `POST /v1/users/{id}/roles`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantRole {
    #[schema(value_type = RoleName)]
    role: Role,
    /// The current TOTP code (needed for a money-moving role).
    #[schema(value_type = Option<OneTimeCode>)]
    otp: Option<String>,
}

/// A user's roles after the change.
#[derive(Serialize, ToSchema)]
pub(crate) struct UserRoles {
    #[schema(value_type = UserId)]
    user: PrincipalId,
    #[schema(value_type = Vec<RoleName>)]
    roles: Vec<Role>,
}

fn user_roles(state: &ledger_core::state::TenantState, user: PrincipalId) -> serde_json::Value {
    let roles = state
        .roles_of(&user)
        .map(|r| r.iter().copied().collect())
        .unwrap_or_default();
    serde_json::to_value(UserRoles { user, roles }).unwrap_or_default()
}

const USER: &str = "The user";

/// Grant a role (2FA for a money-moving role); nobody grants their own.
#[utoipa::path(post, path = "/v1/users/{id}/roles", tag = "roles", request_body = GrantRole,
    params(("id" = UserId, Path, description = USER)),
    responses((status = 200, description = "The user's roles", body = UserRoles)))]
async fn grant_role(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path(id): Path<String>,
    Body(body): Body<GrantRole>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let user: PrincipalId = path_id(&id)?;
    let command = Command::GrantRole {
        user: user.clone(),
        role: body.role,
        two_factor: None,
        batch: None,
    };
    let view: View = Box::new(move |state, _| user_roles(state, user));
    let answer = if body.role.grant_needs_two_factor() {
        ctx.submit_with_code(vec![command], body.otp.as_deref(), view)
            .await?
    } else {
        ctx.submit(vec![command], None, view).await?
    };
    Ok(ok(answer))
}

/// One grant of `POST /v1/roles`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Grant {
    #[schema(value_type = UserId)]
    user: PrincipalId,
    #[schema(value_type = RoleName)]
    role: Role,
}

/// `POST /v1/roles`: several grants under one code (one batch proof).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantRoles {
    #[schema(min_items = 1, max_items = 100)]
    grants: Vec<Grant>,
    #[schema(value_type = Option<OneTimeCode>)]
    otp: Option<String>,
}

/// Each granted user's roles afterwards.
#[derive(Serialize, ToSchema)]
pub(crate) struct RolesGranted {
    /// By user id.
    #[schema(value_type = BTreeMap<String, Vec<RoleName>>)]
    roles: BTreeMap<String, Vec<Role>>,
}

/// Grant several roles under one code (2FA, all or nothing).
#[utoipa::path(post, path = "/v1/roles", tag = "roles", request_body = GrantRoles,
    responses((status = 200, description = "The users' roles", body = RolesGranted)))]
async fn grant_roles(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<GrantRoles>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    if body.grants.is_empty() || body.grants.len() > 100 {
        return Err(ApiError::Validation("grants: 1 to 100".into()));
    }
    let commands: Vec<Command> = body
        .grants
        .iter()
        .map(|g| Command::GrantRole {
            user: g.user.clone(),
            role: g.role,
            two_factor: None,
            batch: None,
        })
        .collect();
    let users: Vec<PrincipalId> = body.grants.iter().map(|g| g.user.clone()).collect();
    let view: View = Box::new(move |state, _| {
        let roles: BTreeMap<String, Vec<Role>> = users
            .iter()
            .map(|u| {
                let roles = state.roles_of(u).map(|r| r.iter().copied().collect());
                (u.to_string(), roles.unwrap_or_default())
            })
            .collect();
        serde_json::to_value(RolesGranted { roles }).unwrap_or_default()
    });
    let answer = ctx
        .submit_with_code(commands, body.otp.as_deref(), view)
        .await?;
    Ok(ok(answer))
}

/// Revoke a role.
#[utoipa::path(delete, path = "/v1/users/{id}/roles/{role}", tag = "roles",
    params(("id" = UserId, Path, description = USER), ("role" = RoleName, Path, description = "The role")),
    responses((status = 200, description = "The user's roles", body = UserRoles)))]
async fn revoke_role(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path((id, role)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let user: PrincipalId = path_id(&id)?;
    let role: Role = path_id(&role)?;
    let view_user = user.clone();
    let answer = ctx
        .submit(
            vec![Command::RevokeRole { user, role }],
            None,
            Box::new(move |state, _| user_roles(state, view_user)),
        )
        .await?;
    Ok(ok(answer))
}

/// The role routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(grant_role))
        .routes(routes!(revoke_role))
        .routes(routes!(grant_roles))
}
