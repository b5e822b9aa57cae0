//! The schemas of the values the resources share, for `/openapi.json`: ids with their
//! patterns, decimal amounts, timestamps, and the names of roles, permissions,
//! currencies and statuses, each taken from the core's own list. Fields name them with
//! `#[schema(value_type = …)]`; each is one named component of the document.

use std::borrow::Cow;

use ledger_core::ids::ID_LENGTH_MAX;
use ledger_core::money::Currency;
use ledger_core::policy::Role;
use ledger_core::state::PayoutStatus;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;

/// Adds `T` to the router's components: for a schema only a path parameter names
/// (utoipa collects the schemas of bodies and answers, not of inline parameters).
pub(crate) fn with_schema<T: ToSchema, S: Clone + Send + Sync + 'static>(
    mut router: OpenApiRouter<S>,
) -> OpenApiRouter<S> {
    let components = router
        .get_openapi_mut()
        .components
        .get_or_insert_with(Default::default);
    components
        .schemas
        .insert(T::name().into_owned(), T::schema());
    router
}

fn text(description: &str, pattern: Option<String>, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(pattern)
        .examples([example])
        .into()
}

fn id(description: &str, prefix: &str, example: &str) -> RefOr<Schema> {
    text(
        description,
        Some(format!("^{prefix}[a-z0-9_-]{{1,{ID_LENGTH_MAX}}}$")),
        example,
    )
}

fn names<'a>(description: &str, names: impl IntoIterator<Item = &'a str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(names.into_iter().map(str::to_owned)))
        .into()
}

macro_rules! schema {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $body:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $ty;
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $body
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

schema!(
    /// `acct_…`.
    AccountId,
    "AccountId",
    id("An account id.", "acct_", "acct_7k2m9x")
);
schema!(
    /// `pay_…`.
    PayeeId,
    "PayeeId",
    id("A payee id.", "pay_", "pay_3f8q2w")
);
schema!(
    /// `po_…`.
    PayoutId,
    "PayoutId",
    id("A payout id.", "po_", "po_9c4t6h")
);
schema!(
    /// `usr_…` (a person).
    UserId,
    "UserId",
    id("A user (a person).", "usr_", "usr_alice")
);
schema!(
    /// `usr_…` or `svc_…`, or `rule:apr_…` for an auto-pay rule's approval.
    PrincipalId,
    "PrincipalId",
    text(
        "A principal: a user (usr_…) or a service (svc_…).",
        Some(format!(
            "^(usr|svc)_[a-z0-9_-]{{1,{ID_LENGTH_MAX}}}$|^rule:apr_[a-z0-9_-]{{1,{ID_LENGTH_MAX}}}$"
        )),
        "usr_alice",
    )
);
schema!(
    /// `key_…`.
    ApiKeyId,
    "ApiKeyId",
    id("An API key's id (the part before the dot).", "key_", "key_4n8v2c")
);
schema!(
    /// A positive decimal amount with at most the currency's minor digits.
    Amount,
    "Amount",
    text(
        "A decimal amount as text, never a number: at most the currency's minor-unit \
         digits (EUR 125.50, JPY 1200); fewer are normalised (125.5 is 125.50).",
        Some(r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,3})?$".to_owned()),
        "125.50",
    )
);
schema!(
    /// An RFC 3339 UTC time with six fractional digits.
    Time,
    "Time",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::DateTime
        )))
        .description(Some("UTC, RFC 3339 with six fractional digits and Z."))
        .examples(["2026-11-22T10:15:30.123456Z"])
        .into()
);
schema!(
    /// ISO 4217 code.
    CurrencyCode,
    "Currency",
    names(
        "An ISO 4217 currency.",
        Currency::ALL.iter().map(|c| c.code())
    )
);
schema!(
    /// A role's name.
    RoleName,
    "Role",
    names("A role.", Role::ALL.iter().map(|r| r.name()))
);
schema!(
    /// A permission's name.
    PermissionName,
    "Permission",
    names("A permission.", {
        let mut all: Vec<&str> = Role::ALL
            .iter()
            .flat_map(|r| r.permissions().iter().map(|p| p.name()))
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    })
);
schema!(
    /// A payout's status.
    PayoutStatusName,
    "PayoutStatus",
    names("A payout's status.", PayoutStatus::ALL.iter().map(|s| s.name()))
);
schema!(
    /// A six-digit TOTP code.
    OneTimeCode,
    "OneTimeCode",
    text(
        "The current six-digit TOTP code (RFC 6238).",
        Some("^[0-9]{6}$".to_owned()),
        "492039"
    )
);
