//! Operations: `/healthz`, `/readyz`, `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.credential_tenant("key_readyz_probe").await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(_) => ApiError::Unavailable.into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state
            .metrics
            .render(state.writers.commits(), state.writers.transactions()),
    )
        .into_response()
}

/// Health, readiness and metrics.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}
