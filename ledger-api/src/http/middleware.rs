//! What every request goes through before and after its handler: a request id, the body
//! limit, rate limits, authentication (API key, scopes, expiry, IP allow-list, HMAC
//! signature), `Idempotency-Key`, and one structured access-log line that names the
//! request id, tenant, actor, action and result, and nothing secret.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ledger_core::ids::PrincipalKind;

use crate::error::{ApiError, ProblemCode};
use crate::http::auth::authenticate;
use crate::http::context::{
    carries_a_code, header, is_public, is_sensitive, Caller, RequestId, BODY_MAX, COMMITTED_SEQ,
    DRAIN_MAX, REDEEM_PATH, SEQ_HEADER,
};
use crate::http::idempotency::{redemption_scope, run_idempotent, IdempotencyScope};
use crate::state::AppState;

/// The middleware around every route.
pub async fn prepare(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = RequestId::from_header_or_new(header(request.headers(), "x-request-id"));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let action = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let committed = std::cell::Cell::new(None);
    let (response, caller, committed) = COMMITTED_SEQ
        .scope(committed, async {
            let (response, caller) = handle(&state, peer.ip(), request, next, &request_id).await;
            (response, caller, COMMITTED_SEQ.with(std::cell::Cell::get))
        })
        .await;
    let mut response = response;
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert("x-request-id", value);
    }
    if let Some(seq) = committed {
        response
            .headers_mut()
            .insert(SEQ_HEADER, HeaderValue::from(seq));
    }
    let status = response.status().as_u16();
    let code = response
        .extensions()
        .get::<ProblemCode>()
        .map_or(if status < 400 { "ok" } else { "error" }, |c| c.0);
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    state.metrics.observe(status, code, micros);
    tracing::info!(
        request_id = %request_id.as_str(),
        tenant = caller.as_ref().map(|c| c.tenant.as_str()).unwrap_or("-"),
        actor = caller.as_ref().map(|c| c.principal.as_str()).unwrap_or("-"),
        method = %method,
        action = %action,
        path = %path,
        status,
        result = code,
        micros,
        "request"
    );
    response
}

async fn handle(
    state: &AppState,
    ip: IpAddr,
    request: Request,
    next: Next,
    request_id: &RequestId,
) -> (Response, Option<Caller>) {
    let path = request.uri().path().to_owned();
    if let Err(retry_after) = state.limits.check_ip(ip, is_sensitive(&path)) {
        return (ApiError::RateLimited { retry_after }.into_response(), None);
    }
    let (mut parts, body) = request.into_parts();
    let declared = header(&parts.headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_MAX) {
        return (ApiError::TooLarge.into_response(), None);
    }
    // A body somewhat over the limit is read and dropped, so that the client, still
    // sending, gets its 413 instead of a reset connection.
    let bytes: Bytes = match axum::body::to_bytes(body, DRAIN_MAX).await {
        Ok(bytes) if bytes.len() <= BODY_MAX => bytes,
        Ok(_) | Err(_) => return (ApiError::TooLarge.into_response(), None),
    };
    parts.extensions.insert(request_id.clone());
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(path.clone(), |p| p.as_str().to_owned());
    let method = parts.method.clone();
    let idempotency_key = header(&parts.headers, "idempotency-key")
        .map(str::to_owned)
        .filter(|_| method == Method::POST || method == Method::PUT);
    if is_public(&path) {
        // An invite redemption (public: the invite is the credential) is idempotent too,
        // its record scoped to the invite.
        if let (REDEEM_PATH, Some(key)) = (path.as_str(), &idempotency_key) {
            match redemption_scope(state, key, &bytes).await {
                Err(error) => return (error.into_response(), None),
                Ok(Some(scope)) => {
                    let response =
                        run_idempotent(state, &scope, key, &path_and_query, parts, bytes, next)
                            .await;
                    return (response, None);
                }
                Ok(None) => {}
            }
        }
        let request = Request::from_parts(parts, Body::from(bytes));
        return (next.run(request).await, None);
    }
    let caller = match authenticate(
        state,
        &parts.headers,
        &parts.method,
        &path_and_query,
        &bytes,
        ip,
        request_id,
    )
    .await
    {
        Ok(caller) => caller,
        Err(error) => return (error.into_response(), None),
    };
    // A person's requests that carry a TOTP code: tighter, per key (a service's need
    // no code and are not counted here).
    if caller.principal.kind() == PrincipalKind::User && carries_a_code(&method, &path) {
        if let Err(retry_after) = state.limits.check_key_sensitive(&caller.key_id) {
            return (
                ApiError::RateLimited { retry_after }.into_response(),
                Some(caller),
            );
        }
    }
    parts.extensions.insert(caller.clone());
    let Some(key) = idempotency_key else {
        let request = Request::from_parts(parts, Body::from(bytes));
        return (next.run(request).await, Some(caller));
    };
    let scope = IdempotencyScope::of_caller(&caller, &key);
    let response = run_idempotent(state, &scope, &key, &path_and_query, parts, bytes, next).await;
    (response, Some(caller))
}
