//! Payees: `POST /v1/payees`, `GET /v1/payees/{id}` (the IBAN masked).

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use ledger_core::command::Command;
use ledger_core::ids::PayeeId;
use ledger_core::policy::Permission;
use ledger_core::Rejection;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency};
use crate::http::extract::{Body, Path};
use crate::routes::context::{created, new_id, ok, parse, path_id, Ctx};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayeeBody {
    name: String,
    iban: String,
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

async fn add_payee(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<PayeeBody>,
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
                json!({"payee": view_payee, "name": view_record["name"], "iban": view_record["iban_masked"]})
            }),
        )
        .await?;
    ctx.state
        .insert(&ctx.caller.tenant, "payee", payee.as_str(), &record)
        .await?;
    Ok(created(answer))
}

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
    Ok(ok(
        json!({"payee": id, "name": record["name"], "iban": record["iban_masked"]}),
    ))
}

/// The payee routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/payees", post(add_payee))
        .route("/v1/payees/{id}", get(get_payee))
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
