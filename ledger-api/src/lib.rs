//! The axum service and operator CLI. Filled by the API issue; the only crate that knows
//! HTTP.
