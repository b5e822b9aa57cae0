//! The endpoints of DESIGN section 7, one module per resource, each with its handlers,
//! its request and answer types and a `router()` merged here. Handlers translate HTTP
//! into commands for the tenant's writer and committed state into answers; every rule
//! is the core's. What handlers share is in `context` (the request's context) and
//! `read_model` (reads of the projections); the middleware and the extractors are in
//! `crate::http`, which imports nothing from here.

pub mod accounts;
pub mod audit;
pub mod context;
pub mod events;
pub mod keys;
pub mod openapi;
pub mod operations;
pub mod payees;
pub mod payouts;
pub mod policy;
pub mod read_model;
pub mod roles;
pub mod schema;
pub mod users;
pub mod webhooks;

use std::sync::{Arc, LazyLock};

use axum::{Extension, Router};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::state::AppState;

/// Every resource's routes, each registered with its operation.
fn resources() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(operations::router())
        .merge(openapi::router())
        .merge(users::router())
        .merge(keys::router())
        .merge(roles::router())
        .merge(accounts::router())
        .merge(payees::router())
        .merge(payouts::router())
        .merge(policy::router())
        .merge(audit::router())
        .merge(events::router())
        .merge(webhooks::router())
}

static DOCUMENT: LazyLock<Value> =
    LazyLock::new(|| openapi::finish(resources().split_for_parts().1));

/// The OpenAPI document `/openapi.json` serves: made from the same registrations as
/// the router.
pub fn openapi_document() -> &'static Value {
    &DOCUMENT
}

/// Every operation: method, path, summary, in the document's order (the black-box drift
/// test probes each; the fuzz targets index into it).
pub static ROUTES: LazyLock<Vec<(&'static str, &'static str, &'static str)>> =
    LazyLock::new(|| {
        operations_where(|_| true)
            .into_iter()
            .map(|(m, p, s, _)| (m, p, s))
            .collect()
    });

/// The query parameters of the operations that take any: method, path, names (all
/// optional; any other is refused with 422).
pub static QUERY_PARAMETERS: LazyLock<Vec<(&'static str, &'static str, &'static [&'static str])>> =
    LazyLock::new(|| {
        operations_where(|(_, _, _, query)| !query.is_empty())
            .into_iter()
            .map(|(m, p, _, q)| (m, p, q))
            .collect()
    });

type Operation = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

fn operations_where(keep: impl Fn(&Operation) -> bool) -> Vec<Operation> {
    let mut out = Vec::new();
    let Some(paths) = DOCUMENT["paths"].as_object() else {
        return out;
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, operation) in item
            .iter()
            .filter(|(m, _)| matches!(m.as_str(), "get" | "put" | "post" | "delete" | "patch"))
        {
            let query: Vec<&'static str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str())
                .map(leak)
                .collect();
            let summary = operation["summary"].as_str().unwrap_or_default();
            let entry = (leak(method), leak(path), leak(summary), &*Vec::leak(query));
            if keep(&entry) {
                out.push(entry);
            }
        }
    }
    out
}

/// The router: every resource's routes; anything else is a problem+json 404, a known
/// path with another method a 400.
pub fn router(state: AppState) -> Router {
    let (router, _) = resources().split_for_parts();
    let document = serde_json::to_vec(openapi_document()).unwrap_or_default();
    router
        .layer(Extension(openapi::Document(Arc::new(document))))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async {
            ApiError::Malformed("method not allowed on this path".into())
        })
        .with_state(state)
}
