//! The HTTP middleware and the extractors every handler shares. Nothing here imports a
//! handler module (`crate::routes`): handlers depend on this layer, never the other way
//! (`tests/architecture.rs`).
//!
//! - `middleware` — what every request goes through: request id, body limit, rate
//!   limits, authentication, `Idempotency-Key`, the access log ([`middleware::prepare`]).
//! - `auth` — bearer keys and HMAC-signed requests.
//! - `idempotency` — the first answer of a POST recorded and replayed.
//! - `context` — what the middleware hands to the handlers (`Caller`, `Idempotency`,
//!   `RequestId`), the headers and the request limits.
//! - `extract` — `Body` (JSON, unknown fields refused) and `Path` (an unreadable
//!   segment is 404), rejected as problem+json.

pub mod auth;
pub mod context;
pub mod extract;
pub mod idempotency;
pub mod middleware;
