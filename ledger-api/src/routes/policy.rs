//! The approval policy: `PUT /v1/policy/approvals`.

use axum::extract::State;
use axum::response::Response;
use axum::routing::put;
use axum::{Extension, Router};
use ledger_core::command::Command;
use ledger_core::policy::ApprovalRule;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency};
use crate::http::extract::Body;
use crate::routes::context::{ok, Ctx};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    rules: Vec<ApprovalRule>,
    otp: Option<String>,
}

async fn update_policy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<PolicyBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let rules = body.rules.clone();
    let answer = ctx
        .submit_with_code(
            vec![Command::UpdatePolicy {
                rules: body.rules,
                two_factor: None,
            }],
            body.otp.as_deref(),
            Box::new(move |_, _| json!({ "rules": rules })),
        )
        .await?;
    Ok(ok(answer))
}

/// The policy route.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/policy/approvals", put(update_policy))
}
