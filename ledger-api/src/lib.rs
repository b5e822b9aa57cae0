//! The axum service and operator CLI; the only crate that knows HTTP. Handlers turn
//! requests into commands for a per-tenant writer (group commit, `writer`), which
//! decides them with ledger-core and appends through ledger-store.

pub mod config;
pub mod credentials;
pub mod error;
pub mod http;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod projector;
pub mod records;
pub mod relay;
pub mod routes;
pub mod state;
pub mod tls;
pub mod totp;
pub mod util;
pub mod wal;
pub mod webhooks;
pub mod writer;

/// The service as `serve` runs it: the [`routes::router`] inside the [`http::middleware::prepare`]
/// middleware (request id, body limit, rate limits, authentication, `Idempotency-Key`,
/// access log). Tests and the fuzz target drive it with `tower::ServiceExt::oneshot`,
/// with a `ConnectInfo<SocketAddr>` request extension standing in for the socket.
pub fn app(state: state::AppState) -> axum::Router {
    routes::router(state.clone()).layer(axum::middleware::from_fn_with_state(
        state,
        http::middleware::prepare,
    ))
}
