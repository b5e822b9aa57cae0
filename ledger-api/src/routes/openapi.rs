//! `/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::state::AppState;

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

/// The OpenAPI document.
pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi))
}

#[cfg(test)]
mod tests {
    use super::*;

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
