//! Roles: `POST /v1/users/{id}/roles`, `POST /v1/roles`, `DELETE /v1/users/{id}/roles/{role}`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{delete, post};
use axum::{Extension, Router};
use ledger_core::command::Command;
use ledger_core::ids::PrincipalId;
use ledger_core::policy::Role;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency};
use crate::http::extract::{Body, Path};
use crate::routes::context::{ok, path_id, Ctx};
use crate::state::AppState;
use crate::writer::View;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: Role,
    otp: Option<String>,
}

async fn grant_role(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path(id): Path<String>,
    Body(body): Body<RoleBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let user: PrincipalId = path_id(&id)?;
    let command = Command::GrantRole {
        user: user.clone(),
        role: body.role,
        two_factor: None,
        batch: None,
    };
    let view: View = Box::new(
        move |state, _| json!({"user": user, "roles": state.roles_of(&user).cloned().unwrap_or_default()}),
    );
    let answer = if body.role.grant_needs_two_factor() {
        ctx.submit_with_code(vec![command], body.otp.as_deref(), view)
            .await?
    } else {
        ctx.submit(vec![command], None, view).await?
    };
    Ok(ok(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Grant {
    user: PrincipalId,
    role: Role,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsBody {
    grants: Vec<Grant>,
    otp: Option<String>,
}

async fn grant_roles(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<GrantsBody>,
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
        let granted: BTreeMap<String, Value> = users
            .iter()
            .map(|u| {
                (
                    u.to_string(),
                    json!(state.roles_of(u).cloned().unwrap_or_default()),
                )
            })
            .collect();
        json!({ "roles": granted })
    });
    let answer = ctx
        .submit_with_code(commands, body.otp.as_deref(), view)
        .await?;
    Ok(ok(answer))
}

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
            Box::new(move |state, _| {
                json!({"user": view_user, "roles": state.roles_of(&view_user).cloned().unwrap_or_default()})
            }),
        )
        .await?;
    Ok(ok(answer))
}

/// The role routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/{id}/roles", post(grant_role))
        .route("/v1/users/{id}/roles/{role}", delete(revoke_role))
        .route("/v1/roles", post(grant_roles))
}
