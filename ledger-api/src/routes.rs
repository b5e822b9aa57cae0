//! The endpoints of DESIGN section 7. Handlers translate HTTP into commands for the
//! tenant's writer and committed state into answers; every rule is the core's.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json, Router};
use ledger_core::checkpoint::Checkpoint;
use ledger_core::command::Command;
use ledger_core::ids::{
    AccountId, ApiKeyId, PayeeId, PayoutId, PrincipalId, PrincipalKind, TenantId,
};
use ledger_core::money::{Currency, Money};
use ledger_core::policy::{roles_allow, ApprovalRule, Permission, Role};
use ledger_core::proof::{batch_subject, TwoFactorFailure, TwoFactorProof};
use ledger_core::state::{Payout, TenantState};
use ledger_core::time::Timestamp;
use ledger_core::verify::{lines, Header, EXPORT_FORMAT};
use ledger_core::Rejection;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::http::{Caller, Idempotency, RequestId};
use crate::state::{kind, ApiKeyRecord, AppState, InviteRecord, TotpRecord};
use crate::util;
use crate::writer::{Submission, View};

/// Invites expire after this long.
const INVITE_SECONDS: i64 = 24 * 3600;

/// Every route: method, path, summary. The router registers exactly these, and
/// `/openapi.json` is generated from them (a test holds the two together).
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("get", "/healthz", "Liveness"),
    ("get", "/readyz", "Readiness: the store answers"),
    ("get", "/metrics", "Prometheus metrics"),
    ("get", "/openapi.json", "This document"),
    ("post", "/v1/users", "Add a user; returns a one-time invite"),
    (
        "post",
        "/v1/invites/redeem",
        "Redeem an invite: API key and TOTP enrolment (an Idempotency-Key replays the answer for an hour)",
    ),
    (
        "post",
        "/v1/me/totp/confirm",
        "Confirm TOTP enrolment with a first code",
    ),
    ("post", "/v1/users/{id}/roles", "Grant a role (2FA)"),
    ("delete", "/v1/users/{id}/roles/{role}", "Revoke a role"),
    (
        "post",
        "/v1/roles",
        "Grant several roles under one code (2FA)",
    ),
    (
        "post",
        "/v1/me/api-keys",
        "Issue an API key to yourself (2FA)",
    ),
    (
        "delete",
        "/v1/me/api-keys/{id}",
        "Revoke one of your API keys",
    ),
    ("post", "/v1/accounts", "Open an account"),
    (
        "get",
        "/v1/accounts/{id}",
        "An account's balances (read model; reflects_seq, min_seq)",
    ),
    ("post", "/v1/accounts/{id}/deposits", "Deposit funds"),
    ("post", "/v1/payees", "Add a payee"),
    ("get", "/v1/payees/{id}", "A payee (IBAN masked)"),
    ("post", "/v1/payouts", "Request a payout"),
    (
        "get",
        "/v1/payouts",
        "List payouts by status and account (read model; cursor pages)",
    ),
    (
        "get",
        "/v1/payouts/{id}",
        "A payout with who acted at each gate (read model)",
    ),
    (
        "post",
        "/v1/payouts/{id}",
        "Batch action (approve, authorize, execute, release) on several payouts",
    ),
    (
        "post",
        "/v1/payouts/{id}/{action}",
        "approve, reject, authorize, execute, release, fail, cancel",
    ),
    (
        "put",
        "/v1/policy/approvals",
        "Replace the approval policy (2FA)",
    ),
    ("get", "/v1/ledger/keys", "The public keys"),
    ("get", "/v1/events", "The event feed after a seq (cursor)"),
    (
        "get",
        "/v1/events/stream",
        "Server-Sent Events, resumable with Last-Event-ID",
    ),
    (
        "get",
        "/v1/audit",
        "The audit view: every decided command, accepted or denied, with its request id",
    ),
    (
        "get",
        "/v1/audit/export",
        "The export (JSON Lines, DESIGN section 4)",
    ),
    ("post", "/v1/checkpoints", "Sign a checkpoint now"),
    ("get", "/v1/checkpoints/latest", "The latest checkpoint"),
    // Webhooks (crate::webhooks).
    (
        "post",
        "/v1/webhooks",
        "Subscribe a webhook; the answer holds its secret, once",
    ),
    ("get", "/v1/webhooks", "List the webhook subscriptions"),
    (
        "get",
        "/v1/webhooks/{id}",
        "A webhook: status, cursor, failing event",
    ),
    (
        "delete",
        "/v1/webhooks/{id}",
        "Delete a webhook subscription",
    ),
    (
        "post",
        "/v1/webhooks/{id}/redeliver",
        "Leave the dead-letter state and retry",
    ),
];

/// The query parameters of the routes that take any: method, path, names. All are
/// optional; any other parameter is refused with 422. `/openapi.json` lists them, and a
/// black-box test sends each to its route.
pub const QUERY_PARAMETERS: &[(&str, &str, &[&str])] = &[
    ("get", "/v1/accounts/{id}", &["min_seq"]),
    (
        "get",
        "/v1/payouts",
        &["status", "account", "after", "limit", "min_seq"],
    ),
    ("get", "/v1/payouts/{id}", &["min_seq"]),
    (
        "get",
        "/v1/audit",
        &[
            "actor", "action", "result", "from", "to", "after", "limit", "min_seq",
        ],
    ),
    ("get", "/v1/events", &["after", "limit"]),
    ("get", "/v1/events/stream", &["after"]),
];

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/users", post(create_user))
        .route("/v1/invites/redeem", post(redeem))
        .route("/v1/me/totp/confirm", post(confirm_totp))
        .route("/v1/users/{id}/roles", post(grant_role))
        .route("/v1/users/{id}/roles/{role}", delete(revoke_role))
        .route("/v1/roles", post(grant_roles))
        .route("/v1/me/api-keys", post(issue_api_key))
        .route("/v1/me/api-keys/{id}", delete(revoke_api_key))
        .route("/v1/accounts", post(open_account))
        .route("/v1/accounts/{id}", get(crate::reads::get_account))
        .route("/v1/accounts/{id}/deposits", post(deposit))
        .route("/v1/payees", post(add_payee))
        .route("/v1/payees/{id}", get(get_payee))
        .route(
            "/v1/payouts",
            post(request_payout).get(crate::reads::list_payouts),
        )
        .route(
            "/v1/payouts/{id}",
            get(crate::reads::get_payout).post(batch_action),
        )
        .route("/v1/payouts/{id}/{action}", post(payout_action))
        .route("/v1/policy/approvals", put(update_policy))
        .route("/v1/ledger/keys", get(ledger_keys))
        .route("/v1/events", get(crate::stream::feed))
        .route("/v1/events/stream", get(crate::stream::stream))
        .route("/v1/audit", get(crate::reads::audit))
        .route("/v1/audit/export", get(export))
        .route("/v1/checkpoints", post(checkpoint_now))
        .route("/v1/checkpoints/latest", get(latest_checkpoint))
        .merge(crate::webhooks::router())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async {
            ApiError::Malformed("method not allowed on this path".into())
        })
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// Plumbing
// ---------------------------------------------------------------------------------------

/// A JSON body with unknown fields refused; failures are 400 (not JSON) or 422 (wrong
/// shape), with a message that never echoes a value from the request.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|_| ApiError::TooLarge)?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Malformed(format!("not JSON ({})", e.classify_name())))?;
        serde_json::from_value(value)
            .map(Body)
            .map_err(|e| ApiError::Validation(format!("body: {}", scrub(&e.to_string()))))
    }
}

/// Path parameters; a segment that cannot be read (not UTF-8 once percent-decoded)
/// names nothing, so it is a problem+json 404 like any id that cannot exist.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|_| ApiError::NotFound)
    }
}

trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "bad data",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// Drops the request's own values from a serde message, keeping what names the schema.
///
/// serde quotes the value it did not expect before ", expected …": a string as
/// `string "…"` (Debug-escaped), anything else and unknown names in backticks. What
/// follows ", expected" is the schema's own text and so are the names in "missing
/// field" and "duplicate field"; our own messages quote only fixed examples.
fn scrub(message: &str) -> String {
    let (head, tail) = match message.find(", expected") {
        Some(at) => message.split_at(at),
        None => (message, ""),
    };
    let mut out = String::new();
    if head.starts_with("missing field") || head.starts_with("duplicate field") {
        out.push_str(head);
    } else {
        let mut chars = head.chars();
        while let Some(c) = chars.next() {
            if c == '`' {
                out.push_str("`…`");
                for d in chars.by_ref() {
                    if d == '`' {
                        break;
                    }
                }
            } else if c == '"' && out.ends_with("string ") {
                out.push_str("\"…\"");
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            } else {
                out.push(c);
            }
        }
    }
    out.push_str(tail);
    out.chars().take(200).collect()
}

fn parse<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, ApiError> {
    text.parse()
        .map_err(|_| ApiError::Validation(format!("{what} is not valid")))
}

fn path_id<T: std::str::FromStr>(text: &str) -> Result<T, ApiError> {
    // An id that cannot exist is simply not found.
    text.parse().map_err(|_| ApiError::NotFound)
}

/// A new object id: derived from the idempotency key when there is one, so that a
/// retried request names the same object; random otherwise.
fn new_id(prefix: &str, idempotency: Option<&Idempotency>, salt: &str) -> String {
    match idempotency {
        None => util::random_id(prefix, 16),
        Some(idem) => {
            const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
            let digest = Sha256::new()
                .chain_update(idem.seed)
                .chain_update(prefix)
                .chain_update(salt)
                .finalize();
            let body: String = digest
                .iter()
                .take(16)
                .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
                .collect();
            format!("{prefix}{body}")
        }
    }
}

/// Whether the caller's roles and key scopes allow `permission`.
pub(crate) async fn caller_may(
    state: &AppState,
    caller: &Caller,
    permission: Permission,
) -> Result<bool, ApiError> {
    let who = caller.clone();
    state
        .writers
        .read(&caller.tenant, move |tenant, _| {
            allowed(tenant, &who, permission)
        })
        .await
}

pub(crate) fn allowed(state: &TenantState, caller: &Caller, permission: Permission) -> bool {
    let by_roles = state
        .roles_of(&caller.principal)
        .is_some_and(|roles| roles_allow(roles, permission));
    let by_scopes = caller
        .scopes
        .as_ref()
        .is_none_or(|scopes| scopes.contains(&permission));
    by_roles && by_scopes
}

struct Ctx {
    state: AppState,
    caller: Caller,
    idempotency: Option<Idempotency>,
}

impl Ctx {
    fn new(state: AppState, caller: Caller, idempotency: Option<Extension<Idempotency>>) -> Self {
        Self {
            state,
            caller,
            idempotency: idempotency.map(|Extension(i)| i),
        }
    }

    async fn submit(
        &self,
        commands: Vec<Command>,
        denied: Option<Rejection>,
        view: View,
    ) -> Result<Value, ApiError> {
        let submission = Submission {
            actor: self.caller.principal.clone(),
            scopes: self.caller.scopes.clone(),
            commands,
            denied,
            id_seed: self.idempotency.map(|i| i.seed),
            recheck: self.idempotency.is_some_and(|i| i.recheck),
            request_id: Some(self.caller.request_id.as_str().to_owned()),
            view,
        };
        let outcome = self
            .state
            .writers
            .submit(&self.caller.tenant, submission)
            .await;
        if let Ok((events, _)) = &outcome {
            if let Some(last) = events.last() {
                crate::http::note_committed(last.seq);
            }
        }
        match outcome {
            Ok((_, answer)) => Ok(answer),
            Err(ApiError::Rejected(Rejection::TwoFactor(TwoFactorFailure::Locked))) => {
                let retry_after = self
                    .state
                    .lockout_left(&self.caller.tenant, &self.caller.principal)
                    .await?
                    .max(1);
                Err(ApiError::Locked { retry_after })
            }
            Err(other) => Err(other),
        }
    }

    /// Runs commands that need a fresh 2FA code: checks `otp`, signs one proof for the
    /// commands' subjects (a batch proof for several), and submits; a wrong or locked
    /// code is recorded as a denied command. Services need no code.
    async fn submit_with_code(
        &self,
        commands: Vec<Command>,
        otp: Option<&str>,
        view: View,
    ) -> Result<Value, ApiError> {
        let Some(first) = commands.first() else {
            return Err(ApiError::Validation("no command".into()));
        };
        if self.caller.principal.kind() == PrincipalKind::Service || otp.is_none() {
            // A service needs no proof; a person without a code gets the core's
            // `two_factor_required`, recorded as evidence.
            return self.submit(commands, None, view).await;
        }
        let action = first.action();
        let step = match self
            .state
            .check_code(&self.caller.tenant, &self.caller.principal, otp, true)
            .await?
        {
            Ok(step) => step,
            Err(rejection) => return self.submit(commands, Some(rejection), view).await,
        };
        let subjects: Vec<String> = commands.iter().map(Command::subject).collect();
        let (subject, batch) = if commands.len() == 1 {
            (subjects[0].clone(), None)
        } else {
            (batch_subject(&subjects), Some(subjects))
        };
        let proof = self.state.proof(
            &self.caller.tenant,
            &self.caller.principal,
            action,
            &subject,
            step,
        );
        let commands = commands
            .into_iter()
            .map(|c| with_proof(c, proof.clone(), batch.clone()))
            .collect();
        self.submit(commands, None, view).await
    }

    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&TenantState) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        self.state
            .writers
            .read(&self.caller.tenant, move |state, _| read(state))
            .await
    }

    /// Reads under `permission`: without it, 403 like a denied command (reads are not
    /// appended).
    async fn read_as<T: Send + 'static>(
        &self,
        permission: Permission,
        read: impl FnOnce(&TenantState) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let caller = self.caller.clone();
        self.read(move |state| {
            if !allowed(state, &caller, permission) {
                return Err(ApiError::Rejected(Rejection::Forbidden { permission }));
            }
            read(state)
        })
        .await?
    }
}

fn with_proof(command: Command, proof: TwoFactorProof, list: Option<Vec<String>>) -> Command {
    match command {
        Command::GrantRole { user, role, .. } => Command::GrantRole {
            user,
            role,
            two_factor: Some(proof),
            batch: list,
        },
        Command::IssueApiKey {
            key,
            scopes,
            expires_at,
            ..
        } => Command::IssueApiKey {
            key,
            scopes,
            expires_at,
            two_factor: Some(proof),
        },
        Command::UpdatePolicy { rules, .. } => Command::UpdatePolicy {
            rules,
            two_factor: Some(proof),
        },
        Command::AuthorizePayout { payout, .. } => Command::AuthorizePayout {
            payout,
            two_factor: Some(proof),
            batch: list,
        },
        Command::ExecutePayout { payout, rail, .. } => Command::ExecutePayout {
            payout,
            rail,
            two_factor: Some(proof),
            batch: list,
        },
        Command::ReleasePayout { payout, .. } => Command::ReleasePayout {
            payout,
            two_factor: Some(proof),
            batch: list,
        },
        other @ (Command::CreateTenant { .. }
        | Command::AddUser { .. }
        | Command::RevokeRole { .. }
        | Command::RevokeApiKey { .. }
        | Command::OpenAccount { .. }
        | Command::Deposit { .. }
        | Command::AddPayee { .. }
        | Command::RequestPayout { .. }
        | Command::ApprovePayout { .. }
        | Command::RejectPayout { .. }
        | Command::FailPayout { .. }
        | Command::CancelPayout { .. }) => other,
    }
}

fn created(value: Value) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

/// An answer carrying a secret shown once: its idempotent replay copy is stored
/// encrypted ([`crate::http::SecretAnswer`]).
fn secret_answer(mut response: Response) -> Response {
    response.extensions_mut().insert(crate::http::SecretAnswer);
    response
}

fn ok(value: Value) -> Response {
    (StatusCode::OK, Json(value)).into_response()
}

// ---------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------

fn payout_view(state: &TenantState, id: &PayoutId) -> Value {
    match state.payouts.get(id) {
        None => Value::Null,
        Some(Payout::Closed(status)) => json!({"payout": id, "status": status.name()}),
        Some(Payout::Open(open)) => json!({
            "payout": id,
            "status": open.status.name(),
            "account": open.account,
            "amount": open.money.to_text(),
            "currency": open.money.currency(),
            "requester": open.requester,
            "approvers": open.approvers.as_slice(),
            "approvals_required": open.approvals_required,
            "authorizer": open.authorizer,
            "executor": open.executor,
        }),
    }
}

fn account_view(state: &TenantState, id: &AccountId) -> Value {
    match state.accounts.get(id) {
        None => Value::Null,
        Some(account) => {
            let minor = account.currency.minor_units();
            let text = |d: rust_decimal::Decimal| {
                let mut d = d;
                d.rescale(minor);
                d.to_string()
            };
            json!({
                "account": id,
                "currency": account.currency,
                "available": text(account.available),
                "held": text(account.held),
            })
        }
    }
}

// ---------------------------------------------------------------------------------------
// Health, metrics, OpenAPI
// ---------------------------------------------------------------------------------------

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

/// The OpenAPI 3.1 document, generated from [`ROUTES`].
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary) in ROUTES {
        let entry = paths.entry((*path).to_owned()).or_insert_with(|| json!({}));
        let mut parameters: Vec<Value> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        for (_, _, names) in QUERY_PARAMETERS
            .iter()
            .filter(|(m, p, _)| m == method && p == path)
        {
            parameters.extend(names.iter().map(|name| {
                json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}})
            }));
        }
        let public = matches!(
            *path,
            "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/v1/invites/redeem"
        );
        let mut operation = json!({
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "default": {
                    "description": "problem+json on error",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                }
            }
        });
        if !public {
            operation["security"] = json!([{"bearer": []}]);
        }
        if let Some(map) = entry.as_object_mut() {
            map.insert((*method).to_owned(), operation);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "payout ledger", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Problem": {"type": "object", "required": ["status", "code"], "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "code": {"type": "string"}, "detail": {"type": "string"}
            }}}
        }
    })
}

async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

// ---------------------------------------------------------------------------------------
// People and credentials
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

/// Creates an invite for `user` and returns its one-time token.
pub async fn create_invite(
    state: &AppState,
    tenant: &TenantId,
    user: &PrincipalId,
) -> Result<String, ApiError> {
    let invite_id = util::random_id("inv_", 20);
    let secret = hex::encode(util::random_bytes::<24>());
    let record = InviteRecord {
        user: user.clone(),
        secret_sha256: util::sha256_hex(secret.as_bytes()),
        expires_at: Timestamp::from_unix_micros(
            util::now().unix_micros() + INVITE_SECONDS * 1_000_000,
        ),
        redeemed: false,
    };
    if !state.store.index_credential(&invite_id, tenant).await?
        || !state
            .insert(tenant, kind::INVITE, &invite_id, &record)
            .await?
    {
        return Err(ApiError::Internal("invite id collision".into()));
    }
    Ok(format!("{invite_id}.{secret}"))
}

async fn create_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<NameBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let user: PrincipalId = parse("user", &new_id("usr_", ctx.idempotency.as_ref(), "user"))?;
    let view_user = user.clone();
    ctx.submit(
        vec![Command::AddUser {
            user: user.clone(),
            name: body.name,
        }],
        None,
        Box::new(move |_, _| json!({ "user": view_user })),
    )
    .await?;
    let invite = create_invite(&ctx.state, &ctx.caller.tenant, &user).await?;
    Ok(secret_answer(created(
        json!({"user": user, "invite": invite}),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemBody {
    invite: String,
}

/// Issues an API key (`<key_id>.<secret>`) for `principal`, stores it hashed, and
/// returns the token.
#[allow(clippy::too_many_arguments)]
async fn issue_key(
    state: &AppState,
    tenant: &TenantId,
    principal: &PrincipalId,
    key_id: &str,
    scopes: Option<Vec<Permission>>,
    expires_at: Option<Timestamp>,
    allowed_ips: Option<Vec<String>>,
    hmac: bool,
) -> Result<String, ApiError> {
    let secret = hex::encode(util::random_bytes::<32>());
    let hmac_secret = if hmac {
        Some(state.seal(tenant, key_id, "hmac_secret", secret.as_bytes())?)
    } else {
        None
    };
    let record = ApiKeyRecord {
        principal: principal.clone(),
        secret_sha256: util::sha256_hex(secret.as_bytes()),
        scopes,
        expires_at,
        allowed_ips,
        hmac_secret,
        revoked: false,
    };
    if !state.store.index_credential(key_id, tenant).await?
        || !state.insert(tenant, kind::API_KEY, key_id, &record).await?
    {
        return Err(ApiError::Internal("key id collision".into()));
    }
    Ok(format!("{key_id}.{secret}"))
}

/// An invite whose secret was presented, as stored (it may be spent or expired).
pub(crate) struct PresentedInvite {
    /// The invite's tenant.
    pub tenant: TenantId,
    /// The invite id.
    pub id: String,
    /// The record's version.
    pub version: i64,
    /// The record.
    pub record: InviteRecord,
}

/// The invite that `token` (`<invite_id>.<secret>`) names, when its secret matches;
/// `None` for anything else (no telling an unknown invite from a wrong secret).
pub(crate) async fn presented_invite(
    state: &AppState,
    token: &str,
) -> Result<Option<PresentedInvite>, ApiError> {
    let Some((invite_id, secret)) = token.split_once('.') else {
        return Ok(None);
    };
    if !invite_id.starts_with("inv_") || invite_id.len() > 64 {
        return Ok(None);
    }
    let Some(tenant) = state.store.credential_tenant(invite_id).await? else {
        return Ok(None);
    };
    let Some((version, record)) = state
        .get::<InviteRecord>(&tenant, kind::INVITE, invite_id)
        .await?
    else {
        return Ok(None);
    };
    let presented = util::sha256_hex(secret.as_bytes());
    if !util::constant_time_eq(presented.as_bytes(), record.secret_sha256.as_bytes()) {
        return Ok(None);
    }
    Ok(Some(PresentedInvite {
        tenant,
        id: invite_id.to_owned(),
        version,
        record,
    }))
}

/// Redeems an invite, once. Its answer shows the API key and TOTP secret once: with an
/// `Idempotency-Key`, the middleware keeps it sealed for a retry (`crate::http`, the
/// record scoped to the invite).
async fn redeem(
    State(state): State<AppState>,
    request_id: Option<Extension<RequestId>>,
    Body(body): Body<RedeemBody>,
) -> Result<Response, ApiError> {
    let PresentedInvite {
        tenant,
        id: invite_id,
        version,
        record: mut invite,
    } = presented_invite(&state, &body.invite)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if invite.redeemed || invite.expires_at <= util::now() {
        return Err(ApiError::Unauthorized);
    }
    invite.redeemed = true;
    if !state
        .update(&tenant, kind::INVITE, &invite_id, version, &invite)
        .await?
    {
        return Err(ApiError::Unauthorized);
    }
    let user = invite.user;
    let key_id = util::random_id("key_", 20);
    let key: ApiKeyId = parse("key", &key_id)?;
    let submission = Submission {
        actor: user.clone(),
        scopes: None,
        commands: vec![Command::IssueApiKey {
            key,
            scopes: Vec::new(),
            expires_at: None,
            two_factor: None,
        }],
        denied: None,
        id_seed: None,
        recheck: false,
        request_id: request_id.map(|Extension(id)| id.as_str().to_owned()),
        view: Box::new(|_, _| Value::Null),
    };
    let (events, _) = state.writers.submit(&tenant, submission).await?;
    if let Some(last) = events.last() {
        crate::http::note_committed(last.seq);
    }
    let api_key = issue_key(&state, &tenant, &user, &key_id, None, None, None, false).await?;
    let secret = util::random_bytes::<{ crate::totp::SECRET_BYTES }>();
    let record = TotpRecord {
        secret: state.seal(&tenant, user.as_str(), "totp_secret", &secret)?,
        confirmed: false,
        last_step: 0,
        failures: 0,
        locked_until: None,
    };
    if !state
        .insert(&tenant, kind::TOTP, user.as_str(), &record)
        .await?
    {
        return Err(ApiError::Unauthorized);
    }
    let (totp_secret, totp_uri) = crate::totp::enrolment(&secret, tenant.as_str(), user.as_str())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(secret_answer(created(json!({
        "user": user,
        "api_key": api_key,
        "totp_secret": totp_secret,
        "totp_uri": totp_uri,
    }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: String,
}

async fn confirm_totp(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<CodeBody>,
) -> Result<Response, ApiError> {
    match state
        .check_code(&caller.tenant, &caller.principal, Some(&body.code), false)
        .await?
    {
        Ok(_) => {}
        Err(Rejection::TwoFactor(TwoFactorFailure::Locked)) => {
            let retry_after = state
                .lockout_left(&caller.tenant, &caller.principal)
                .await?
                .max(1);
            return Err(ApiError::Locked { retry_after });
        }
        Err(rejection) => return Err(ApiError::Rejected(rejection)),
    }
    for _attempt in 0..4 {
        let Some((version, mut record)) = state
            .get::<TotpRecord>(&caller.tenant, kind::TOTP, caller.principal.as_str())
            .await?
        else {
            return Err(ApiError::NotFound);
        };
        record.confirmed = true;
        if state
            .update(
                &caller.tenant,
                kind::TOTP,
                caller.principal.as_str(),
                version,
                &record,
            )
            .await?
        {
            return Ok(ok(json!({"user": caller.principal, "totp": "confirmed"})));
        }
    }
    Err(ApiError::Unavailable)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: Role,
    otp: Option<String>,
}

async fn grant_role(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path(id): Path<String>,
    Body(body): Body<RoleBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let user: PrincipalId = path_id(&id)?;
    let command = Command::GrantRole {
        user: user.clone(),
        role: body.role,
        two_factor: None,
        batch: None,
    };
    let view: View = Box::new(
        move |state, _| json!({"user": user, "roles": state.roles_of(&user).cloned().unwrap_or_default()}),
    );
    let answer = if body.role.grant_needs_two_factor() {
        ctx.submit_with_code(vec![command], body.otp.as_deref(), view)
            .await?
    } else {
        ctx.submit(vec![command], None, view).await?
    };
    Ok(ok(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Grant {
    user: PrincipalId,
    role: Role,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsBody {
    grants: Vec<Grant>,
    otp: Option<String>,
}

async fn grant_roles(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<GrantsBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    if body.grants.is_empty() || body.grants.len() > 100 {
        return Err(ApiError::Validation("grants: 1 to 100".into()));
    }
    let commands: Vec<Command> = body
        .grants
        .iter()
        .map(|g| Command::GrantRole {
            user: g.user.clone(),
            role: g.role,
            two_factor: None,
            batch: None,
        })
        .collect();
    let users: Vec<PrincipalId> = body.grants.iter().map(|g| g.user.clone()).collect();
    let view: View = Box::new(move |state, _| {
        let granted: BTreeMap<String, Value> = users
            .iter()
            .map(|u| {
                (
                    u.to_string(),
                    json!(state.roles_of(u).cloned().unwrap_or_default()),
                )
            })
            .collect();
        json!({ "roles": granted })
    });
    let answer = ctx
        .submit_with_code(commands, body.otp.as_deref(), view)
        .await?;
    Ok(ok(answer))
}

async fn revoke_role(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path((id, role)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let user: PrincipalId = path_id(&id)?;
    let role: Role = path_id(&role)?;
    let view_user = user.clone();
    let answer = ctx
        .submit(
            vec![Command::RevokeRole { user, role }],
            None,
            Box::new(move |state, _| {
                json!({"user": view_user, "roles": state.roles_of(&view_user).cloned().unwrap_or_default()})
            }),
        )
        .await?;
    Ok(ok(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyBody {
    scopes: Vec<Permission>,
    expires_at: Option<Timestamp>,
    allowed_ips: Option<Vec<String>>,
    hmac: Option<bool>,
    otp: Option<String>,
}

async fn issue_api_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<ApiKeyBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    if let Some(ips) = &body.allowed_ips {
        if ips.is_empty() || ips.len() > 32 || ips.iter().any(|ip| !valid_ip_entry(ip)) {
            return Err(ApiError::Validation(
                "allowed_ips: 1 to 32 addresses or CIDR blocks".into(),
            ));
        }
    }
    let key_id = new_id("key_", ctx.idempotency.as_ref(), "key");
    let key: ApiKeyId = parse("key", &key_id)?;
    let command = Command::IssueApiKey {
        key,
        scopes: body.scopes.clone(),
        expires_at: body.expires_at,
        two_factor: None,
    };
    ctx.submit_with_code(
        vec![command],
        body.otp.as_deref(),
        Box::new(|_, _| Value::Null),
    )
    .await?;
    let api_key = issue_key(
        &ctx.state,
        &ctx.caller.tenant,
        &ctx.caller.principal,
        &key_id,
        Some(body.scopes),
        body.expires_at,
        body.allowed_ips,
        body.hmac.unwrap_or(false),
    )
    .await?;
    Ok(secret_answer(created(
        json!({"id": key_id, "api_key": api_key}),
    )))
}

fn valid_ip_entry(entry: &str) -> bool {
    let (address, prefix) = match entry.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (entry, None),
    };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => {
            prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|n| n <= 32))
        }
        Ok(std::net::IpAddr::V6(_)) => {
            prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|n| n <= 128))
        }
        Err(_) => false,
    }
}

async fn revoke_api_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let key: ApiKeyId = path_id(&id)?;
    let (version, mut record) = ctx
        .state
        .get::<ApiKeyRecord>(&ctx.caller.tenant, kind::API_KEY, &id)
        .await?
        .filter(|(_, r)| r.principal == ctx.caller.principal)
        .ok_or(ApiError::NotFound)?;
    ctx.submit(
        vec![Command::RevokeApiKey { key }],
        None,
        Box::new(|_, _| Value::Null),
    )
    .await?;
    record.revoked = true;
    let updated = ctx
        .state
        .update(&ctx.caller.tenant, kind::API_KEY, &id, version, &record)
        .await;
    ctx.state.api_keys.evict(&id);
    if !updated? {
        return Err(ApiError::Unavailable);
    }
    Ok(ok(json!({"id": id, "revoked": true})))
}

// ---------------------------------------------------------------------------------------
// Accounts, payees, policy
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountBody {
    currency: Currency,
    name: String,
}

async fn open_account(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<AccountBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let account: AccountId = parse(
        "account",
        &new_id("acct_", ctx.idempotency.as_ref(), "account"),
    )?;
    let view_account = account.clone();
    let answer = ctx
        .submit(
            vec![Command::OpenAccount {
                account,
                currency: body.currency,
                name: Some(body.name),
            }],
            None,
            Box::new(move |state, _| account_view(state, &view_account)),
        )
        .await?;
    Ok(created(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepositBody {
    amount: String,
    reference: Option<String>,
}

async fn deposit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path(id): Path<String>,
    Body(body): Body<DepositBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let account: AccountId = path_id(&id)?;
    let lookup = account.clone();
    let currency = ctx
        .read(move |state| state.accounts.get(&lookup).map(|a| a.currency))
        .await?
        .ok_or(ApiError::NotFound)?;
    let money = Money::parse(&body.amount, currency)
        .map_err(|e| ApiError::Validation(format!("amount: {e}")))?;
    let view_account = account.clone();
    let answer = ctx
        .submit(
            vec![Command::Deposit {
                account,
                money,
                reference: body.reference,
            }],
            None,
            Box::new(move |state, _| account_view(state, &view_account)),
        )
        .await?;
    Ok(created(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayeeBody {
    name: String,
    iban: String,
}

/// Checks an IBAN's shape and ISO 13616 mod-97 check digits.
fn valid_iban(iban: &str) -> bool {
    let compact: String = iban.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len())
        || !compact.chars().all(|c| c.is_ascii_alphanumeric())
        || !compact[..2].chars().all(|c| c.is_ascii_uppercase())
        || !compact[2..4].chars().all(|c| c.is_ascii_digit())
    {
        return false;
    }
    let rearranged = format!("{}{}", &compact[4..], &compact[..4]);
    let mut remainder: u32 = 0;
    for c in rearranged.chars() {
        let value = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        let digits = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * digits + value) % 97;
    }
    remainder == 1
}

fn mask_iban(iban: &str) -> String {
    let compact: String = iban.chars().filter(|c| !c.is_whitespace()).collect();
    let tail: String = compact
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{}**********{tail}", &compact[..2])
}

async fn add_payee(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<PayeeBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    if !valid_iban(&body.iban) {
        return Err(ApiError::Validation("iban is not a valid IBAN".into()));
    }
    let payee: PayeeId = parse("payee", &new_id("pay_", ctx.idempotency.as_ref(), "payee"))?;
    let envelope = ctx.state.seal(
        &ctx.caller.tenant,
        payee.as_str(),
        "iban",
        body.iban.as_bytes(),
    )?;
    let masked = mask_iban(&body.iban);
    let record = json!({"name": body.name, "iban_masked": masked});
    let view_payee = payee.clone();
    let view_record = record.clone();
    let answer = ctx
        .submit(
            vec![Command::AddPayee {
                payee: payee.clone(),
                name: body.name,
                iban: envelope,
            }],
            None,
            Box::new(move |_, _| {
                json!({"payee": view_payee, "name": view_record["name"], "iban": view_record["iban_masked"]})
            }),
        )
        .await?;
    ctx.state
        .insert(&ctx.caller.tenant, "payee", payee.as_str(), &record)
        .await?;
    Ok(created(answer))
}

async fn get_payee(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, None);
    let payee: PayeeId = path_id(&id)?;
    let exists = ctx
        .read_as(Permission::PayeeRead, move |state| {
            Ok(state.payees.contains_key(&payee))
        })
        .await;
    let exists = match exists {
        // Admins manage payees without payee.read: let payee.manage read too.
        Err(ApiError::Rejected(Rejection::Forbidden { .. })) => {
            let payee: PayeeId = path_id(&id)?;
            ctx.read_as(Permission::PayeeManage, move |state| {
                Ok(state.payees.contains_key(&payee))
            })
            .await?
        }
        other => other?,
    };
    if !exists {
        return Err(ApiError::NotFound);
    }
    let (_, record) = ctx
        .state
        .get::<Value>(&ctx.caller.tenant, "payee", &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(ok(
        json!({"payee": id, "name": record["name"], "iban": record["iban_masked"]}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    rules: Vec<ApprovalRule>,
    otp: Option<String>,
}

async fn update_policy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<PolicyBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let rules = body.rules.clone();
    let answer = ctx
        .submit_with_code(
            vec![Command::UpdatePolicy {
                rules: body.rules,
                two_factor: None,
            }],
            body.otp.as_deref(),
            Box::new(move |_, _| json!({ "rules": rules })),
        )
        .await?;
    Ok(ok(answer))
}

// ---------------------------------------------------------------------------------------
// Payouts
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayoutBody {
    account: AccountId,
    payee: PayeeId,
    amount: String,
    currency: Currency,
    reference: String,
    metadata: Option<BTreeMap<String, String>>,
}

async fn request_payout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Body(body): Body<PayoutBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let money = Money::parse(&body.amount, body.currency)
        .map_err(|e| ApiError::Validation(format!("amount: {e}")))?;
    let payout: PayoutId = parse("payout", &new_id("po_", ctx.idempotency.as_ref(), "payout"))?;
    let view_payout = payout.clone();
    let answer = ctx
        .submit(
            vec![Command::RequestPayout {
                payout,
                account: body.account,
                payee: body.payee,
                money,
                reference: body.reference,
                metadata: body.metadata,
            }],
            None,
            Box::new(move |state, _| payout_view(state, &view_payout)),
        )
        .await?;
    Ok(created(answer))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    otp: Option<String>,
    reason: Option<String>,
    rail: Option<String>,
}

fn payout_command(action: &str, payout: PayoutId, body: &ActionBody) -> Result<Command, ApiError> {
    let reason = || {
        body.reason
            .clone()
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| ApiError::Validation("reason is required".into()))
    };
    Ok(match action {
        "approve" => Command::ApprovePayout {
            payout,
            batch: None,
        },
        "reject" => Command::RejectPayout {
            payout,
            reason: reason()?,
        },
        "authorize" => Command::AuthorizePayout {
            payout,
            two_factor: None,
            batch: None,
        },
        "execute" => Command::ExecutePayout {
            payout,
            rail: body.rail.clone(),
            two_factor: None,
            batch: None,
        },
        "release" => Command::ReleasePayout {
            payout,
            two_factor: None,
            batch: None,
        },
        "fail" => Command::FailPayout {
            payout,
            reason: reason()?,
        },
        "cancel" => Command::CancelPayout {
            payout,
            reason: reason()?,
        },
        _ => return Err(ApiError::NotFound),
    })
}

fn needs_code(action: &str) -> bool {
    matches!(action, "authorize" | "execute" | "release")
}

async fn payout_action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path((id, action)): Path<(String, String)>,
    Body(body): Body<ActionBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    let payout: PayoutId = path_id(&id)?;
    let command = payout_command(&action, payout.clone(), &body)?;
    let view: View = Box::new(move |state, _| payout_view(state, &payout));
    let answer = if needs_code(&action) {
        ctx.submit_with_code(vec![command], body.otp.as_deref(), view)
            .await?
    } else {
        ctx.submit(vec![command], None, view).await?
    };
    Ok(ok(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    payouts: Vec<PayoutId>,
    otp: Option<String>,
}

async fn batch_action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    idempotency: Option<Extension<Idempotency>>,
    Path(action): Path<String>,
    Body(body): Body<BatchBody>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, idempotency);
    if !matches!(
        action.as_str(),
        "approve" | "authorize" | "execute" | "release"
    ) {
        return Err(ApiError::NotFound);
    }
    if body.payouts.is_empty() || body.payouts.len() > 1000 {
        return Err(ApiError::Validation("payouts: 1 to 1000".into()));
    }
    let list: Vec<String> = body.payouts.iter().map(ToString::to_string).collect();
    let commands: Vec<Command> = body
        .payouts
        .iter()
        .map(|p| payout_command(&action, p.clone(), &ActionBody::default()))
        .collect::<Result<_, _>>()?;
    let payouts = body.payouts.clone();
    let view: View = Box::new(
        move |state, _| json!({"payouts": payouts.iter().map(|p| payout_view(state, p)).collect::<Vec<_>>()}),
    );
    let answer = if needs_code(&action) {
        ctx.submit_with_code(commands, body.otp.as_deref(), view)
            .await?
    } else {
        let commands = commands
            .into_iter()
            .map(|c| match c {
                Command::ApprovePayout { payout, .. } => Command::ApprovePayout {
                    payout,
                    batch: Some(list.clone()),
                },
                other @ (Command::CreateTenant { .. }
                | Command::AddUser { .. }
                | Command::GrantRole { .. }
                | Command::RevokeRole { .. }
                | Command::IssueApiKey { .. }
                | Command::RevokeApiKey { .. }
                | Command::OpenAccount { .. }
                | Command::Deposit { .. }
                | Command::AddPayee { .. }
                | Command::UpdatePolicy { .. }
                | Command::RequestPayout { .. }
                | Command::RejectPayout { .. }
                | Command::AuthorizePayout { .. }
                | Command::ExecutePayout { .. }
                | Command::ReleasePayout { .. }
                | Command::FailPayout { .. }
                | Command::CancelPayout { .. }) => other,
            })
            .collect();
        ctx.submit(commands, None, view).await?
    };
    Ok(ok(answer))
}

// ---------------------------------------------------------------------------------------
// Audit: keys, export, checkpoints
// ---------------------------------------------------------------------------------------

async fn ledger_keys(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "keys": state.keys.records }))
}

async fn require(ctx: &Ctx, permission: Permission) -> Result<(), ApiError> {
    ctx.read_as(permission, |_| Ok(())).await
}

async fn export(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, None);
    require(&ctx, Permission::AuditExport).await?;
    let tenant = ctx.caller.tenant.clone();
    let store = ctx.state.store.clone();
    let head = store.head(&tenant).await?;
    let header_line = lines::header(&Header {
        format: EXPORT_FORMAT.to_owned(),
        v: 1,
        tenant: tenant.clone(),
        from_seq: 1,
        to_seq: head.seq,
        exported_at: util::now(),
    });
    let mut prologue = header_line;
    prologue.push('\n');
    for record in &ctx.state.keys.records {
        prologue.push_str(&lines::key(record));
        prologue.push('\n');
    }
    enum Stage {
        Prologue(String),
        Events(u64),
        Checkpoints(u64),
        Done,
    }
    let stream = futures_util::stream::unfold(Stage::Prologue(prologue), move |stage| {
        let store = store.clone();
        let tenant = tenant.clone();
        async move {
            match stage {
                Stage::Prologue(text) => Some((Ok::<_, std::io::Error>(text), Stage::Events(0))),
                Stage::Events(after) if after >= head.seq => {
                    Some((String::new().into_ok(), Stage::Checkpoints(0)))
                }
                Stage::Events(after) => {
                    let limit = u32::try_from((head.seq - after).min(1000)).unwrap_or(1000);
                    match store.load(&tenant, after, limit).await {
                        Ok(page) if !page.is_empty() => {
                            let mut text = String::new();
                            let mut last = after;
                            for (event, _) in &page {
                                match lines::event(event) {
                                    Ok(line) => {
                                        text.push_str(&line);
                                        text.push('\n');
                                    }
                                    Err(e) => {
                                        return Some((
                                            Err(std::io::Error::other(e.to_string())),
                                            Stage::Done,
                                        ))
                                    }
                                }
                                last = event.seq;
                            }
                            Some((Ok(text), Stage::Events(last)))
                        }
                        Ok(_) => Some((Ok(String::new()), Stage::Checkpoints(0))),
                        Err(e) => Some((Err(std::io::Error::other(e.to_string())), Stage::Done)),
                    }
                }
                Stage::Checkpoints(after) => match store.checkpoints(&tenant, after, 1000).await {
                    Ok(page) if !page.is_empty() => {
                        let mut text = String::new();
                        let mut last = after;
                        for checkpoint in page.iter().filter(|c| c.seq <= head.seq) {
                            text.push_str(&lines::checkpoint(checkpoint));
                            text.push('\n');
                            last = checkpoint.seq;
                        }
                        if last == after {
                            return Some((Ok(text), Stage::Done));
                        }
                        Some((Ok(text), Stage::Checkpoints(last)))
                    }
                    Ok(_) => None,
                    Err(e) => Some((Err(std::io::Error::other(e.to_string())), Stage::Done)),
                },
                Stage::Done => None,
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/jsonl")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

trait IntoOk {
    fn into_ok(self) -> Result<String, std::io::Error>;
}

impl IntoOk for String {
    fn into_ok(self) -> Result<String, std::io::Error> {
        Ok(self)
    }
}

fn checkpoint_json(checkpoint: &Checkpoint) -> Value {
    serde_json::to_value(checkpoint).unwrap_or(Value::Null)
}

async fn checkpoint_now(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, None);
    require(&ctx, Permission::AuditRead).await?;
    match ctx.state.writers.checkpoint(&ctx.caller.tenant).await? {
        Some(checkpoint) => Ok(created(checkpoint_json(&checkpoint))),
        None => Err(ApiError::Rejected(Rejection::InvalidState {
            detail: "the chain is empty".into(),
        })),
    }
}

async fn latest_checkpoint(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(state, caller, None);
    require(&ctx, Permission::LedgerRead).await?;
    let mut after = 0;
    let mut latest = None;
    loop {
        let page = ctx
            .state
            .store
            .checkpoints(&ctx.caller.tenant, after, ledger_store::PAGE_LIMIT_MAX)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        latest = Some(last.clone());
        if page.len() < ledger_store::PAGE_LIMIT_MAX as usize {
            break;
        }
    }
    latest
        .map(|c| ok(checkpoint_json(&c)))
        .ok_or(ApiError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iban_check_digits() {
        assert!(valid_iban("DE89370400440532013000"));
        assert!(valid_iban("GB82 WEST 1234 5698 7654 32"));
        assert!(!valid_iban("DE89370400440532013001"));
        assert!(!valid_iban("DE8937040044"));
        assert!(!valid_iban("de89370400440532013000"));
        assert_eq!(mask_iban("DE89370400440532013000"), "DE**********3000");
    }

    #[test]
    fn scrub_drops_quoted_values() {
        let iban = "DE89370400440532013000";
        let cases = [
            (
                format!("invalid type: string \"{iban}\", expected a number"),
                "invalid type: string \"…\", expected a number",
            ),
            (
                format!("invalid value: string \"a\\\"{iban}\", expected x"),
                "invalid value: string \"…\", expected x",
            ),
            (
                format!("unknown field `{iban}`, expected one of `amount`, `currency`"),
                "unknown field `…`, expected one of `amount`, `currency`",
            ),
            (
                format!("invalid type: integer `{}`, expected a string", 4_000_000),
                "invalid type: integer `…`, expected a string",
            ),
            (
                format!("unknown variant `{iban}`, expected `a` or `b`"),
                "unknown variant `…`, expected `a` or `b`",
            ),
            (
                "missing field `amount`".to_owned(),
                "missing field `amount`",
            ),
            (
                "amount must be a plain decimal string such as \"125.50\"".to_owned(),
                "amount must be a plain decimal string such as \"125.50\"",
            ),
            (
                format!("invalid type: string \"{iban}"),
                "invalid type: string \"…\"",
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(scrub(&message), expected, "{message}");
        }
    }

    #[test]
    fn openapi_lists_every_route_once_per_method() {
        let doc = openapi_document();
        for (method, path, _) in ROUTES {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
        for (method, path, names) in QUERY_PARAMETERS {
            assert!(
                ROUTES.iter().any(|(m, p, _)| m == method && p == path),
                "{path}"
            );
            let listed: Vec<&str> = doc["paths"][path][method]["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str())
                .collect();
            assert_eq!(&listed, names, "{method} {path}");
        }
    }
}
