//! What every request goes through before and after its handler: a request id, the body
//! limit, rate limits, authentication (API key, scopes, expiry, IP allow-list, HMAC
//! signature), `Idempotency-Key`, and one structured access-log line that names the
//! request id, tenant, actor, action and result, and nothing secret.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use ledger_core::ids::{PrincipalId, PrincipalKind, TenantId};
use ledger_core::policy::Permission;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ProblemCode};
use crate::state::{kind, ApiKeyRecord, AppState, IdempotencyRecord};
use crate::util;

/// Largest request body accepted.
pub const BODY_MAX: usize = 64 * 1024;
/// Largest body read (and dropped) to answer 413 cleanly; beyond it the answer is sent
/// at once.
const DRAIN_MAX: usize = 1024 * 1024;
/// Request signatures older or newer than this are refused.
pub const SIGNATURE_WINDOW_SECONDS: i64 = 300;
/// A pending idempotent request older than this is taken over by a retry (its process
/// died, or its client gave up).
const IDEMPOTENCY_TAKEOVER_SECONDS: i64 = 10;
/// How long after its answer an invite redemption is replayed for its `Idempotency-Key`:
/// the answer holds the new API key and TOTP secret, so past this a spent invite is worth
/// nothing again (401, as any spent invite).
pub const REDEEM_REPLAY_SECONDS: i64 = 3600;
/// The public route that redeems an invite.
const REDEEM_PATH: &str = "/v1/invites/redeem";

/// The authenticated caller: the tenant comes from the key, never from the request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's tenant.
    pub tenant: TenantId,
    /// The key's principal.
    pub principal: PrincipalId,
    /// The key id.
    pub key_id: String,
    /// The key's scopes.
    pub scopes: Option<Vec<Permission>>,
    /// This request's id (written into the events it causes).
    pub request_id: RequestId,
}

/// The idempotency of a POST: event ids derive from `seed`; `recheck` when a retry took
/// over a request that may have committed.
#[derive(Debug, Clone, Copy)]
pub struct Idempotency {
    /// Seed for the events' ids.
    pub seed: [u8; 32],
    /// Whether the writer must first look for the events in the chain.
    pub recheck: bool,
}

/// Marks an answer that carries a secret shown once (a webhook's signing secret): the
/// copy kept for an idempotent replay is stored encrypted, as every stored secret is.
#[derive(Debug, Clone, Copy)]
pub struct SecretAnswer;

/// The field (for the encryption's AAD) of an encrypted idempotent answer.
const SEALED_ANSWER_FIELD: &str = "answer";

/// The id of a request: the client's `X-Request-Id` when it is acceptable, else a fresh
/// UUID. It is logged, echoed in the response, and written into the data of every event
/// the request causes (so the audit view, rebuilt from the chain alone, shows it): hence
/// short and of a safe charset, `[A-Za-z0-9_-]{1,64}`, so that it can neither forge a log
/// line or a header nor bloat the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The longest accepted id.
    pub const LENGTH_MAX: usize = 64;

    /// An acceptable id, or `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let acceptable = !text.is_empty()
            && text.len() <= Self::LENGTH_MAX
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        acceptable.then(|| Self(text.to_owned()))
    }

    /// The client's id if acceptable, else a fresh random UUID.
    pub fn from_header_or_new(header: Option<&str>) -> Self {
        header
            .and_then(Self::parse)
            .unwrap_or_else(|| Self(uuid::Uuid::from_bytes(util::random_bytes::<16>()).to_string()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

tokio::task_local! {
    /// The seq of the last event the current request committed (set by the handler's
    /// submissions, read by [`prepare`] for the `Ledger-Seq` header).
    static COMMITTED_SEQ: std::cell::Cell<Option<u64>>;
}

/// Records that the current request committed events up to `seq` (answered in the
/// `Ledger-Seq` header, for a client to pass as `min_seq` to a read elsewhere).
pub fn note_committed(seq: u64) {
    let _ = COMMITTED_SEQ.try_with(|cell| cell.set(Some(cell.get().map_or(seq, |s| s.max(seq)))));
}

/// The header naming the seq a request's writes committed up to.
pub const SEQ_HEADER: &str = "ledger-seq";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/v1/invites/redeem"
    )
}

fn is_sensitive(path: &str) -> bool {
    matches!(path, "/v1/invites/redeem" | "/v1/me/totp/confirm")
}

/// A path segment with its percent-escapes decoded, as the router's `Path` extractor
/// decodes it (so that `%61uthorize` counts as `authorize`).
fn decoded_segment(segment: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy()
}

/// Whether a request is one of those that carry a TOTP code (DESIGN 7: money movement
/// and administration under 2FA, and the enrolment's confirmation): these are limited
/// per API key too, tighter, when a person sends them. By method and path, whatever the
/// body holds (a request without its code is denied, and recorded, all the same).
fn carries_a_code(method: &Method, path: &str) -> bool {
    let segments: Vec<Cow<'_, str>> = path.split('/').skip(1).map(decoded_segment).collect();
    let segments: Vec<&str> = segments.iter().map(AsRef::as_ref).collect();
    let gated = |action: &str| matches!(action, "authorize" | "execute" | "release");
    match segments.as_slice() {
        ["v1", "payouts", _, action] | ["v1", "payouts", action] => {
            method == Method::POST && gated(action)
        }
        ["v1", "users", _, "roles"]
        | ["v1", "roles"]
        | ["v1", "me", "api-keys"]
        | ["v1", "me", "totp", "confirm"] => method == Method::POST,
        ["v1", "policy", "approvals"] => method == Method::PUT,
        _ => false,
    }
}

/// Whether `ip` is in `entry` (an address or `address/prefix`).
fn ip_allowed(ip: IpAddr, entry: &str) -> bool {
    let (address, prefix) = match entry.split_once('/') {
        Some((address, prefix)) => (address, prefix.parse::<u32>().ok()),
        None => (entry, None),
    };
    let Ok(network) = address.parse::<IpAddr>() else {
        return false;
    };
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let bits = prefix.unwrap_or(32).min(32);
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let bits = prefix.unwrap_or(128).min(128);
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => false,
    }
}

/// The string an HMAC-signing client signs: timestamp, nonce, method, path with query,
/// and the hex SHA-256 of the body, one per line.
pub fn signing_string(
    timestamp: &str,
    nonce: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    format!(
        "{timestamp}\n{nonce}\n{method}\n{path}\n{}",
        hex::encode(Sha256::digest(body))
    )
}

/// Checks the bearer key and, for `hmac` keys, the request signature.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    path_and_query: &str,
    body: &[u8],
    ip: IpAddr,
    request_id: &RequestId,
) -> Result<Caller, ApiError> {
    let token = header(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let (key_id, secret) = token.split_once('.').ok_or(ApiError::Unauthorized)?;
    if !key_id.starts_with("key_") || key_id.len() > 64 || secret.is_empty() {
        return Err(ApiError::Unauthorized);
    }
    if let Err(retry_after) = state.limits.check_key(key_id) {
        return Err(ApiError::RateLimited { retry_after });
    }
    let (tenant, record) = match state.api_keys.get(key_id) {
        Some(found) => found,
        None => {
            let tenant = state
                .store
                .credential_tenant(key_id)
                .await?
                .ok_or(ApiError::Unauthorized)?;
            let (_, record) = state
                .get::<ApiKeyRecord>(&tenant, kind::API_KEY, key_id)
                .await?
                .ok_or(ApiError::Unauthorized)?;
            state.api_keys.put(key_id, tenant.clone(), record.clone());
            (tenant, record)
        }
    };
    let presented = util::sha256_hex(secret.as_bytes());
    if !util::constant_time_eq(presented.as_bytes(), record.secret_sha256.as_bytes()) {
        return Err(ApiError::Unauthorized);
    }
    if record.revoked || record.expires_at.is_some_and(|at| at <= util::now()) {
        return Err(ApiError::Unauthorized);
    }
    if let Some(allowed) = &record.allowed_ips {
        if !allowed.iter().any(|entry| ip_allowed(ip, entry)) {
            return Err(ApiError::Unauthorized);
        }
    }
    if let Some(envelope) = &record.hmac_secret {
        let hmac_secret = state.open(&tenant, key_id, "hmac_secret", envelope)?;
        let timestamp = header(headers, "x-ledger-timestamp").ok_or(ApiError::Unauthorized)?;
        let nonce = header(headers, "x-ledger-nonce").ok_or(ApiError::Unauthorized)?;
        let signature = header(headers, "x-ledger-signature")
            .and_then(|v| v.strip_prefix("v1="))
            .and_then(|v| hex::decode(v).ok())
            .ok_or(ApiError::Unauthorized)?;
        let seconds: i64 = timestamp.parse().map_err(|_| ApiError::Unauthorized)?;
        if !within_signature_window(util::now().unix_seconds(), seconds)
            || nonce.is_empty()
            || nonce.len() > 64
        {
            return Err(ApiError::Unauthorized);
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&hmac_secret)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        mac.update(
            signing_string(timestamp, nonce, method.as_str(), path_and_query, body).as_bytes(),
        );
        mac.verify_slice(&signature)
            .map_err(|_| ApiError::Unauthorized)?;
        let nonce_id = format!("{key_id}:{nonce}");
        if !state
            .insert(&tenant, kind::NONCE, &nonce_id, &seconds)
            .await?
        {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(Caller {
        tenant,
        principal: record.principal,
        key_id: key_id.to_owned(),
        scopes: record.scopes,
        request_id: request_id.clone(),
    })
}

/// Whether a signed request's timestamp is within the window of now, either side;
/// any `i64` the client sends is answered, none overflows.
fn within_signature_window(now: i64, timestamp: i64) -> bool {
    now.abs_diff(timestamp) <= SIGNATURE_WINDOW_SECONDS.unsigned_abs()
}

enum IdempotencyStart {
    /// Go on (with ids derived from the key), the record at this version.
    Proceed(Idempotency, i64),
    /// Answer this (a replay).
    Answer(Response),
    /// The answer is past its replay window (only a redemption's has one).
    Expired,
}

/// Where an idempotency record lives and what it is called.
struct IdempotencyScope {
    /// The tenant whose records hold it.
    tenant: TenantId,
    /// The record id.
    id: String,
    /// How long after the answer a replay is honoured (`None`: always).
    replay_seconds: Option<i64>,
}

impl IdempotencyScope {
    /// An authenticated caller's: in its tenant, `principal:key`.
    fn of_caller(caller: &Caller, key: &str) -> Self {
        Self {
            tenant: caller.tenant.clone(),
            id: format!("{}:{key}", caller.principal),
            replay_seconds: None,
        }
    }

    /// An invite redemption's (no caller yet): in the invite's tenant, named by a hash of
    /// the whole invite and the key, so that only the invite's holder can reach it (and
    /// the id tells nothing of either); replayed for [`REDEEM_REPLAY_SECONDS`].
    fn of_redemption(tenant: TenantId, invite: &str, key: &str) -> Self {
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

fn check_idempotency_key(key: &str) -> Result<(), ApiError> {
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
async fn redemption_scope(
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
    Ok(crate::routes::presented_invite(state, &invite)
        .await?
        .map(|presented| IdempotencyScope::of_redemption(presented.tenant, &invite, key)))
}

async fn start_idempotent(
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

async fn finish_idempotent(
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
async fn run_idempotent(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_window_edges_and_extremes() {
        let now = 1_800_000_000;
        assert!(within_signature_window(now, now));
        assert!(within_signature_window(now, now - 300));
        assert!(within_signature_window(now, now + 300));
        assert!(!within_signature_window(now, now - 301));
        assert!(!within_signature_window(now, now + 301));
        assert!(!within_signature_window(now, i64::MIN));
        assert!(!within_signature_window(now, i64::MAX));
        assert!(!within_signature_window(-now, i64::MAX));
    }

    #[test]
    fn ip_allow_list_entries() {
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        assert!(ip_allowed(ip, "10.1.2.3"));
        assert!(ip_allowed(ip, "10.1.0.0/16"));
        assert!(ip_allowed(ip, "0.0.0.0/0"));
        assert!(!ip_allowed(ip, "10.1.2.4"));
        assert!(!ip_allowed(ip, "10.2.0.0/16"));
        assert!(!ip_allowed(ip, "::1"));
        assert!(!ip_allowed(ip, "not an ip"));
        let v6: IpAddr = "::1".parse().expect("ip");
        assert!(ip_allowed(v6, "::1/128"));
    }

    #[test]
    fn requests_that_carry_a_code() {
        let check = |method: Method, path: &str, expected: bool| {
            assert_eq!(carries_a_code(&method, path), expected, "{method} {path}");
        };
        for action in ["authorize", "execute", "release"] {
            check(Method::POST, &format!("/v1/payouts/po_1/{action}"), true);
            check(Method::POST, &format!("/v1/payouts/{action}"), true);
        }
        check(Method::POST, "/v1/payouts/po_1/%61uthorize", true);
        check(Method::POST, "/v1/payouts/%65xecute", true);
        check(Method::POST, "/v1/users/usr_1/roles", true);
        check(Method::POST, "/v1/roles", true);
        check(Method::POST, "/v1/me/api-keys", true);
        check(Method::POST, "/v1/me/totp/confirm", true);
        check(Method::PUT, "/v1/policy/approvals", true);
        for (method, path) in [
            (Method::POST, "/v1/payouts/po_1/approve"),
            (Method::POST, "/v1/payouts/approve"),
            (Method::POST, "/v1/payouts/po_1/cancel"),
            (Method::POST, "/v1/payouts"),
            (Method::GET, "/v1/payouts/po_1"),
            (Method::GET, "/v1/payouts/authorize"),
            (Method::DELETE, "/v1/users/usr_1/roles/approver"),
            (Method::DELETE, "/v1/me/api-keys/key_1"),
            (Method::GET, "/v1/policy/approvals"),
            (Method::POST, "/v1/users"),
            (Method::POST, "/v1/invites/redeem"),
            (Method::POST, "/v1/payouts/po_1/authorize/x"),
            (Method::POST, "/v1/payouts/po_1/%zzuthorize"),
        ] {
            check(method, path, false);
        }
    }

    #[test]
    fn percent_escapes_are_decoded_in_segments() {
        for (segment, expected) in [
            ("plain", "plain"),
            ("%61b", "ab"),
            ("%41%42", "AB"),
            ("100%", "100%"),
            ("%4", "%4"),
            ("%zz", "%zz"),
            ("a%2Fb", "a/b"),
        ] {
            assert_eq!(decoded_segment(segment), expected, "{segment}");
        }
    }

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

    #[test]
    fn request_ids_are_validated_or_replaced() {
        for good in ["a", "req-1_X", &"x".repeat(64)] {
            assert_eq!(RequestId::from_header_or_new(Some(good)).as_str(), good);
        }
        for bad in [
            "",
            "has space",
            "new\nline",
            "quote\"",
            "é",
            "a/b",
            "{\"json\":1}",
            &"x".repeat(65),
        ] {
            assert_eq!(RequestId::parse(bad), None, "{bad:?}");
            let replaced = RequestId::from_header_or_new(Some(bad));
            assert_ne!(replaced.as_str(), bad);
            assert!(
                RequestId::parse(replaced.as_str()).is_some(),
                "a fresh id is acceptable"
            );
        }
        assert_ne!(
            RequestId::from_header_or_new(None),
            RequestId::from_header_or_new(None)
        );
    }
}
