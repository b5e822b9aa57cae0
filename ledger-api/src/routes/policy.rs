//! The approval policy: `PUT /v1/policy/approvals`.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use ledger_core::command::Command;
use ledger_core::policy::ApprovalRule;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency};
use crate::http::extract::Body;
use crate::routes::context::{ok, Ctx};
use crate::routes::schema::{Amount, CurrencyCode, OneTimeCode};
use crate::state::AppState;

/// The schema of the core's `ApprovalRule` (which it deserializes itself).
#[derive(ToSchema)]
#[schema(as = ApprovalRule)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // a schema only: the body is read as the core's type
pub(crate) struct ApprovalRuleSchema {
    #[schema(value_type = CurrencyCode)]
    currency: String,
    /// Payouts of at least this amount need `approvals` distinct approvers.
    #[schema(value_type = Amount)]
    min_amount: String,
    #[schema(minimum = 1, maximum = 10)]
    approvals: u32,
}

/// `PUT /v1/policy/approvals`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplacePolicy {
    /// The whole policy (amounts below every rule need one approval).
    #[schema(value_type = Vec<ApprovalRuleSchema>)]
    rules: Vec<ApprovalRule>,
    #[schema(value_type = Option<OneTimeCode>)]
    otp: Option<String>,
}

/// The policy now in force.
#[derive(Serialize, ToSchema)]
pub(crate) struct Policy {
    #[schema(value_type = Vec<ApprovalRuleSchema>)]
    rules: Vec<ApprovalRule>,
}

/// Replace the approval policy (policy.manage, 2FA).
#[utoipa::path(put, path = "/v1/policy/approvals", tag = "policy", request_body = ReplacePolicy,
    responses((status = 200, description = "The policy", body = Policy)))]
async fn update_policy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<ReplacePolicy>,
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
            Box::new(move |_, _| serde_json::to_value(Policy { rules }).unwrap_or_default()),
        )
        .await?;
    Ok(ok(answer))
}

/// The policy route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(update_policy))
}
