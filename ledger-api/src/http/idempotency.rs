//! `Idempotency-Key`: the first answer recorded and replayed.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ledger_core::ids::TenantId;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::http::context::{
    Caller, Idempotency, SecretAnswer, BODY_MAX, IDEMPOTENCY_TAKEOVER_SECONDS, REDEEM_PATH,
    REDEEM_REPLAY_SECONDS, SEALED_ANSWER_FIELD,
};
use crate::records::{kind, IdempotencyRecord};
use crate::state::{presented_invite, AppState};
use crate::util;

pub(crate) enum IdempotencyStart {
    /// Go on (with ids derived from the key), the record at this version.
    Proceed(Idempotency, i64),
    /// Answer this (a replay).
    Answer(Response),
    /// The answer is past its replay window (only a redemption's has one).
    Expired,
}

/// Where an idempotency record lives and what it is called.
pub(crate) struct IdempotencyScope {
    /// The tenant whose records hold it.
    tenant: TenantId,
    /// The record id.
    id: String,
    /// How long after the answer a replay is honoured (`None`: always).
    replay_seconds: Option<i64>,
}

impl IdempotencyScope {
    /// An authenticated caller's: in its tenant, `principal:key`.
    pub(crate) fn of_caller(caller: &Caller, key: &str) -> Self {
        Self {
            tenant: caller.tenant.clone(),
            id: format!("{}:{key}", caller.principal),
            replay_seconds: None,
        }
    }

    /// An invite redemption's (no caller yet): in the invite's tenant, named by a hash of
    /// the whole invite and the key, so that only the invite's holder can reach it (and
    /// the id tells nothing of either); replayed for [`REDEEM_REPLAY_SECONDS`].
    pub(crate) fn of_redemption(tenant: TenantId, invite: &str, key: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(REDEEM_PATH)
            .chain_update([0])
            .chain_update(invite.as_bytes())
            .chain_update([0])
            .chain_update(key.as_bytes())
            .finalize();
        Self {
            tenant,
            id: format!("redeem:{}", hex::encode(digest)),
            replay_seconds: Some(REDEEM_REPLAY_SECONDS),
        }
    }
}

pub(crate) fn check_idempotency_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::Malformed(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        ));
    }
    Ok(())
}

/// The scope of a redemption's idempotency record: `None` (no idempotency: the handler
/// answers, 401 or 400) unless the body names an invite whose secret matches, so that no
/// one without the invite can make or read a record.
pub(crate) async fn redemption_scope(
    state: &AppState,
    key: &str,
    body: &[u8],
) -> Result<Option<IdempotencyScope>, ApiError> {
    check_idempotency_key(key)?;
    // Read as the handler reads it (`routes::Body`: a JSON value, the last of duplicate
    // fields winning).
    let Some(invite) = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value.get("invite")?.as_str().map(str::to_owned))
    else {
        return Ok(None);
    };
    Ok(presented_invite(state, &invite)
        .await?
        .map(|presented| IdempotencyScope::of_redemption(presented.tenant, &invite, key)))
}

pub(crate) async fn start_idempotent(
    state: &AppState,
    scope: &IdempotencyScope,
    key: &str,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<IdempotencyStart, ApiError> {
    check_idempotency_key(key)?;
    let (tenant, id) = (&scope.tenant, &scope.id);
    let request_sha256 = util::sha256_hex(
        format!("{method}\n{path}\n")
            .as_bytes()
            .iter()
            .chain(body)
            .copied()
            .collect::<Vec<u8>>()
            .as_slice(),
    );
    let seed: [u8; 32] = Sha256::new()
        .chain_update(tenant.as_str())
        .chain_update([0])
        .chain_update(id.as_bytes())
        .finalize()
        .into();
    let fresh = IdempotencyRecord {
        request_sha256: request_sha256.clone(),
        status: None,
        body: None,
        body_sealed: None,
        started_at: util::now(),
    };
    for _attempt in 0..4 {
        if state.insert(tenant, kind::IDEMPOTENCY, id, &fresh).await? {
            return Ok(IdempotencyStart::Proceed(
                Idempotency {
                    seed,
                    recheck: false,
                },
                1,
            ));
        }
        let Some((version, existing)) = state
            .get::<IdempotencyRecord>(tenant, kind::IDEMPOTENCY, id)
            .await?
        else {
            continue;
        };
        if existing.request_sha256 != request_sha256 {
            return Err(ApiError::IdempotencyConflict);
        }
        let answered_seconds = util::now().unix_seconds() - existing.started_at.unix_seconds();
        if existing.status.is_some()
            && scope
                .replay_seconds
                .is_some_and(|window| answered_seconds >= window)
        {
            // Past its window the answer is of no use to anyone: drop the sealed copy.
            if let Err(error) = state
                .store
                .delete_record(tenant, kind::IDEMPOTENCY, id)
                .await
            {
                tracing::warn!(error = %error, "expired idempotency record not deleted");
            }
            return Ok(IdempotencyStart::Expired);
        }
        let body = match existing.body_sealed {
            Some(envelope) => {
                let plain = state.open(tenant, id, SEALED_ANSWER_FIELD, &envelope)?;
                Some(String::from_utf8(plain).map_err(|_| {
                    ApiError::Internal("stored idempotent answer is not UTF-8".into())
                })?)
            }
            None => existing.body,
        };
        if let (Some(status), Some(body)) = (existing.status, body) {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = (status, body).into_response();
            let content_type = if status.is_success() {
                "application/json"
            } else {
                "application/problem+json"
            };
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static(content_type));
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(IdempotencyStart::Answer(response));
        }
        let age = util::now().unix_seconds() - existing.started_at.unix_seconds();
        if age < IDEMPOTENCY_TAKEOVER_SECONDS {
            return Err(ApiError::IdempotencyInProgress);
        }
        if state
            .update(tenant, kind::IDEMPOTENCY, id, version, &fresh)
            .await?
        {
            return Ok(IdempotencyStart::Proceed(
                Idempotency {
                    seed,
                    recheck: true,
                },
                version + 1,
            ));
        }
    }
    Err(ApiError::IdempotencyInProgress)
}

pub(crate) async fn finish_idempotent(
    state: &AppState,
    scope: &IdempotencyScope,
    version: i64,
    response: Response,
) -> Response {
    let (tenant, id) = (&scope.tenant, scope.id.as_str());
    let status = response.status();
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 4 * BODY_MAX).await else {
        return ApiError::Internal("response body".into()).into_response();
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let answer = if parts.extensions.get::<SecretAnswer>().is_some() {
        match state.seal(tenant, id, SEALED_ANSWER_FIELD, text.as_bytes()) {
            Ok(envelope) => Some((None, Some(envelope))),
            Err(error) => {
                tracing::warn!(error = %error, "idempotent answer not kept: it cannot be sealed");
                None
            }
        }
    } else {
        Some((Some(text), None))
    };
    let result = if let (false, Some((body, body_sealed))) = (status.is_server_error(), answer) {
        let record = IdempotencyRecord {
            request_sha256: String::new(),
            status: Some(status.as_u16()),
            body,
            body_sealed,
            started_at: util::now(),
        };
        match state
            .get::<IdempotencyRecord>(tenant, kind::IDEMPOTENCY, id)
            .await
        {
            Ok(Some((current, pending))) if current == version => state
                .update(
                    tenant,
                    kind::IDEMPOTENCY,
                    id,
                    version,
                    &IdempotencyRecord {
                        request_sha256: pending.request_sha256,
                        ..record
                    },
                )
                .await
                .map(|_| ()),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    } else {
        // Not an answer to keep: a retry must run the request again.
        state
            .store
            .delete_record(tenant, kind::IDEMPOTENCY, id)
            .await
            .map(|_| ())
            .map_err(ApiError::from)
    };
    if let Err(error) = result {
        tracing::warn!(error = %error, "idempotency record not updated");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Runs the request under its idempotency record in `scope`: a replay or a conflict is
/// answered at once; otherwise the handler runs, and its answer is kept for retries.
pub(crate) async fn run_idempotent(
    state: &AppState,
    scope: &IdempotencyScope,
    key: &str,
    path_and_query: &str,
    mut parts: axum::http::request::Parts,
    bytes: Bytes,
    next: Next,
) -> Response {
    match start_idempotent(state, scope, key, &parts.method, path_and_query, &bytes).await {
        Err(error) => error.into_response(),
        Ok(IdempotencyStart::Answer(response)) => response,
        // Only a redemption's answer expires: the invite is spent.
        Ok(IdempotencyStart::Expired) => ApiError::Unauthorized.into_response(),
        Ok(IdempotencyStart::Proceed(idempotency, version)) => {
            parts.extensions.insert(idempotency);
            let request = Request::from_parts(parts, Body::from(bytes));
            let response = next.run(request).await;
            finish_idempotent(state, scope, version, response).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redemption_records_are_named_by_invite_and_key() {
        let tenant: TenantId = "acme".parse().expect("tenant");
        let a = IdempotencyScope::of_redemption(tenant.clone(), "inv_a.secret", "k");
        assert!(a.id.starts_with("redeem:"));
        assert!(!a.id.contains("secret") && !a.id.contains("inv_a"));
        assert_eq!(a.replay_seconds, Some(REDEEM_REPLAY_SECONDS));
        for (invite, key) in [
            ("inv_a.secret", "k2"),
            ("inv_a.other", "k"),
            ("inv_b.secret", "k"),
        ] {
            let b = IdempotencyScope::of_redemption(tenant.clone(), invite, key);
            assert_ne!(a.id, b.id, "{invite} {key}");
        }
    }
}
