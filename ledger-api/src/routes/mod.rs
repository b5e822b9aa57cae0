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
pub mod users;
pub mod webhooks;

use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

/// The router: every resource's routes; anything else is a problem+json 404, a known
/// path with another method a 400.
pub fn router(state: AppState) -> Router {
    Router::new()
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
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async {
            ApiError::Malformed("method not allowed on this path".into())
        })
        .with_state(state)
}
