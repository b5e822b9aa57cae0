//! Errors as `application/problem+json` (RFC 9457) with a stable `code`. A problem never
//! carries a secret, a code, a key or an IBAN: details are written here, from typed
//! errors, never echoed from the request.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ledger_core::proof::TwoFactorFailure;
use ledger_core::Rejection;

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON of the expected shape.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// 401: missing or bad credentials or request signature.
    #[error("unauthorized")]
    Unauthorized,
    /// 404: unknown, or another tenant's.
    #[error("not found")]
    NotFound,
    /// 413: body over the limit.
    #[error("request body too large")]
    TooLarge,
    /// 422: values that break a rule.
    #[error("{0}")]
    Validation(String),
    /// 422: an idempotency key reused with another request.
    #[error("this Idempotency-Key was used with another request")]
    IdempotencyConflict,
    /// 409: the same idempotency key is still being processed.
    #[error("a request with this Idempotency-Key is in progress")]
    IdempotencyInProgress,
    /// 429 with Retry-After.
    #[error("rate limited")]
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// 403 `two_factor_locked` with Retry-After.
    #[error("too many wrong one-time codes: money movement is locked")]
    Locked {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The core refused the command.
    #[error("{0}")]
    Rejected(Rejection),
    /// 503: the store is unavailable (retry).
    #[error("store unavailable")]
    Unavailable,
    /// 503 with Retry-After: the read model did not reflect the seq the read needs
    /// within the wait (`min_seq`, or this process's own last commit).
    #[error("the read model has not caught up yet (it reflects seq {reflected})")]
    ProjectionBehind {
        /// The seq it reflects.
        reflected: u64,
    },
    /// 500: a fault of ours, logged with its cause, shown without it.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            ApiError::IdempotencyConflict => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_conflict")
            }
            ApiError::IdempotencyInProgress => (StatusCode::CONFLICT, "idempotency_in_progress"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Locked { .. } => (StatusCode::FORBIDDEN, "two_factor_locked"),
            ApiError::Rejected(rejection) => {
                let status = match rejection {
                    Rejection::Forbidden { .. }
                    | Rejection::FourEyes { .. }
                    | Rejection::TwoFactor(_)
                    | Rejection::TenantSuspended
                    | Rejection::Deactivated => StatusCode::FORBIDDEN,
                    Rejection::InvalidState { .. } | Rejection::InsufficientFunds => {
                        StatusCode::CONFLICT
                    }
                    Rejection::NotFound { .. } => StatusCode::NOT_FOUND,
                    Rejection::Validation { .. } | Rejection::Autopay(_) => {
                        StatusCode::UNPROCESSABLE_ENTITY
                    }
                };
                // Only the verifier meets a rule approval the rule does not give.
                let code = if let Rejection::Autopay(_) = rejection {
                    "validation"
                } else {
                    rejection.code()
                };
                (status, code)
            }
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::ProjectionBehind { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "projection_behind")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// What the client reads (never the internal cause).
    fn detail(&self) -> String {
        match self {
            ApiError::Internal(_) => "internal error".to_owned(),
            ApiError::Rejected(Rejection::TwoFactor(TwoFactorFailure::Locked)) => {
                "too many wrong one-time codes: money movement is locked".to_owned()
            }
            ApiError::Malformed(_)
            | ApiError::Unauthorized
            | ApiError::NotFound
            | ApiError::TooLarge
            | ApiError::Validation(_)
            | ApiError::IdempotencyConflict
            | ApiError::IdempotencyInProgress
            | ApiError::RateLimited { .. }
            | ApiError::Locked { .. }
            | ApiError::Rejected(_)
            | ApiError::Unavailable
            | ApiError::ProjectionBehind { .. } => self.to_string(),
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        ApiError::Rejected(rejection)
    }
}

impl From<ledger_store::StoreError> for ApiError {
    fn from(error: ledger_store::StoreError) -> Self {
        tracing::error!(error = %error, "store error");
        ApiError::Unavailable
    }
}

/// Every stable `code` a problem can carry (the document lists them as an enum).
pub const PROBLEM_CODES: &[&str] = &[
    "malformed",
    "unauthorized",
    "not_found",
    "too_large",
    "validation",
    "idempotency_conflict",
    "idempotency_in_progress",
    "rate_limited",
    "two_factor_locked",
    "forbidden",
    "four_eyes",
    "two_factor_required",
    "two_factor_invalid",
    "invalid_state",
    "insufficient_funds",
    "tenant_suspended",
    "unavailable",
    "projection_behind",
    "internal",
];

/// A problem document (RFC 9457), as [`problem_body`] writes it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    /// `https://payout-ledger.example/problems/<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// The stable code clients branch on.
    pub code: String,
    /// Plain words for a person; never a secret, a code, a key or an IBAN.
    pub detail: String,
}

/// A problem document body.
pub fn problem_body(status: StatusCode, code: &str, detail: &str) -> String {
    serde_json::json!({
        "type": format!("https://payout-ledger.example/problems/{code}"),
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "code": code,
        "detail": detail,
    })
    .to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(cause = %cause, "internal error");
        }
        let mut response = (status, problem_body(status, code, &self.detail())).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        let retry = match &self {
            ApiError::RateLimited { retry_after } | ApiError::Locked { retry_after } => {
                Some(*retry_after)
            }
            ApiError::Rejected(Rejection::TwoFactor(TwoFactorFailure::Locked)) => Some(900),
            // The first request with that key is still being answered: try again shortly.
            ApiError::Unavailable
            | ApiError::ProjectionBehind { .. }
            | ApiError::IdempotencyInProgress => Some(1),
            ApiError::Malformed(_)
            | ApiError::Unauthorized
            | ApiError::NotFound
            | ApiError::TooLarge
            | ApiError::Validation(_)
            | ApiError::IdempotencyConflict
            | ApiError::Rejected(_)
            | ApiError::Internal(_) => None,
        };
        if let Some(seconds) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response.extensions_mut().insert(ProblemCode(code));
        response
    }
}

/// The code of an error response, for the access log.
#[derive(Debug, Clone, Copy)]
pub struct ProblemCode(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::policy::Permission;

    /// One of each error, the core's refusals included. The match below has no
    /// wildcard: a new variant does not compile until it is added here too.
    fn every_error() -> Vec<ApiError> {
        let rejections = [
            Rejection::Forbidden {
                permission: Permission::LedgerRead,
            },
            Rejection::FourEyes { detail: "x" },
            Rejection::TwoFactor(TwoFactorFailure::Missing),
            Rejection::TwoFactor(TwoFactorFailure::Locked),
            Rejection::TwoFactor(TwoFactorFailure::BadSignature),
            Rejection::InvalidState { detail: "x".into() },
            Rejection::InsufficientFunds,
            Rejection::NotFound { what: "x" },
            Rejection::Validation { detail: "x".into() },
            Rejection::TenantSuspended,
            Rejection::Deactivated,
            Rejection::Autopay(ledger_core::autopay::NoMatch::Ceiling),
        ];
        let mut all = vec![
            ApiError::Malformed("x".into()),
            ApiError::Unauthorized,
            ApiError::NotFound,
            ApiError::TooLarge,
            ApiError::Validation("x".into()),
            ApiError::IdempotencyConflict,
            ApiError::IdempotencyInProgress,
            ApiError::RateLimited { retry_after: 1 },
            ApiError::Locked { retry_after: 1 },
            ApiError::Unavailable,
            ApiError::ProjectionBehind { reflected: 0 },
            ApiError::Internal("x".into()),
        ];
        all.extend(rejections.into_iter().map(ApiError::Rejected));
        for error in &all {
            match error {
                ApiError::Malformed(_)
                | ApiError::Unauthorized
                | ApiError::NotFound
                | ApiError::TooLarge
                | ApiError::Validation(_)
                | ApiError::IdempotencyConflict
                | ApiError::IdempotencyInProgress
                | ApiError::RateLimited { .. }
                | ApiError::Locked { .. }
                | ApiError::Rejected(
                    Rejection::Forbidden { .. }
                    | Rejection::FourEyes { .. }
                    | Rejection::TwoFactor(_)
                    | Rejection::InvalidState { .. }
                    | Rejection::InsufficientFunds
                    | Rejection::NotFound { .. }
                    | Rejection::Validation { .. }
                    | Rejection::TenantSuspended
                    | Rejection::Deactivated
                    | Rejection::Autopay(_),
                )
                | ApiError::Unavailable
                | ApiError::ProjectionBehind { .. }
                | ApiError::Internal(_) => {}
            }
        }
        all
    }

    #[test]
    fn the_documented_codes_are_exactly_the_codes_answered() {
        let mut answered: Vec<&str> = every_error()
            .iter()
            .map(|e| e.status_and_code().1)
            .collect();
        answered.sort_unstable();
        answered.dedup();
        let mut documented = PROBLEM_CODES.to_vec();
        documented.sort_unstable();
        assert_eq!(answered, documented);
    }
}
