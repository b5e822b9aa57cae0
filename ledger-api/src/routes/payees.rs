//! Payees: `POST /v1/payees`, `GET /v1/payees/{id}` (the IBAN masked).

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use ledger_core::command::Command;
use ledger_core::ids::PayeeId;
use ledger_core::policy::Permission;
use ledger_core::Rejection;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency};
use crate::http::extract::{Body, Path};
use crate::routes::context::{created, new_id, ok, parse, path_id, Ctx};
use crate::routes::schema::PayeeId as PayeeIdSchema;
use crate::state::AppState;

/// `POST /v1/payees`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPayee {
    name: String,
    /// ISO 13616, check digits verified; stored encrypted, never shown again in full.
    #[schema(
        pattern = "^[A-Z]{2}[0-9]{2}[A-Za-z0-9 ]{11,40}$",
        example = "DE89370400440532013000"
    )]
    iban: String,
}

/// A payee, its IBAN masked.
#[derive(Serialize, ToSchema)]
pub(crate) struct PayeeView {
    #[schema(value_type = PayeeIdSchema)]
    payee: String,
    name: String,
    /// The country and the last four characters only.
    #[schema(example = "DE**********3000")]
    iban: String,
}

fn payee_view(payee: &str, record: &Value) -> PayeeView {
    let text = |field: &str| record[field].as_str().unwrap_or_default().to_owned();
    PayeeView {
        payee: payee.to_owned(),
        name: text("name"),
        iban: text("iban_masked"),
    }
}

/// Checks an IBAN's shape and ISO 13616 mod-97 check digits.
fn valid_iban(iban: &str) -> bool {
    let compact: String = iban.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len())
        || !compact.chars().all(|c| c.is_ascii_alphanumeric())
        || !compact[..2].chars().all(|c| c.is_ascii_uppercase())
        || !compact[2..4].chars().all(|c| c.is_ascii_digit())
    {
        return false;
    }
    let rearranged = format!("{}{}", &compact[4..], &compact[..4]);
    let mut remainder: u32 = 0;
    for c in rearranged.chars() {
        let value = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        let digits = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * digits + value) % 97;
    }
    remainder == 1
}

fn mask_iban(iban: &str) -> String {
    let compact: String = iban.chars().filter(|c| !c.is_whitespace()).collect();
    let tail: String = compact
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{}**********{tail}", &compact[..2])
}

/// Add a payee (payee.manage).
#[utoipa::path(post, path = "/v1/payees", tag = "payees", request_body = NewPayee,
    responses((status = 201, description = "The payee, its IBAN masked", body = PayeeView)))]
async fn add_payee(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<NewPayee>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    if !valid_iban(&body.iban) {
        return Err(ApiError::Validation("iban is not a valid IBAN".into()));
    }
    let payee: PayeeId = parse("payee", &new_id("pay_", ctx.idempotency.as_ref(), "payee"))?;
    let envelope = ctx.state.seal(
        &ctx.caller.tenant,
        payee.as_str(),
        "iban",
        body.iban.as_bytes(),
    )?;
    let masked = mask_iban(&body.iban);
    let record = json!({"name": body.name, "iban_masked": masked});
    let view_payee = payee.clone();
    let view_record = record.clone();
    let answer = ctx
        .submit(
            vec![Command::AddPayee {
                payee: payee.clone(),
                name: body.name,
                iban: envelope,
            }],
            None,
            Box::new(move |_, _| {
                serde_json::to_value(payee_view(view_payee.as_str(), &view_record))
                    .unwrap_or_default()
            }),
        )
        .await?;
    ctx.state
        .insert(&ctx.caller.tenant, "payee", payee.as_str(), &record)
        .await?;
    Ok(created(answer))
}

/// A payee, its IBAN masked (payee.read or payee.manage).
#[utoipa::path(get, path = "/v1/payees/{id}", tag = "payees",
    params(("id" = PayeeIdSchema, Path, description = "The payee")),
    responses((status = 200, description = "The payee", body = PayeeView)))]
async fn get_payee(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, None);
    let payee: PayeeId = path_id(&id)?;
    let exists = ctx
        .read_as(Permission::PayeeRead, move |state| {
            Ok(state.payees.contains_key(&payee))
        })
        .await;
    let exists = match exists {
        // Admins manage payees without payee.read: let payee.manage read too.
        Err(ApiError::Rejected(Rejection::Forbidden { .. })) => {
            let payee: PayeeId = path_id(&id)?;
            ctx.read_as(Permission::PayeeManage, move |state| {
                Ok(state.payees.contains_key(&payee))
            })
            .await?
        }
        other => other?,
    };
    if !exists {
        return Err(ApiError::NotFound);
    }
    let (_, record) = ctx
        .state
        .get::<Value>(&ctx.caller.tenant, "payee", &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(ok(payee_view(&id, &record)))
}

/// The payee routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add_payee))
        .routes(routes!(get_payee))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iban_check_digits() {
        assert!(valid_iban("DE89370400440532013000"));
        assert!(valid_iban("GB82 WEST 1234 5698 7654 32"));
        assert!(!valid_iban("DE89370400440532013001"));
        assert!(!valid_iban("DE8937040044"));
        assert!(!valid_iban("de89370400440532013000"));
        assert_eq!(mask_iban("DE89370400440532013000"), "DE**********3000");
    }
}
