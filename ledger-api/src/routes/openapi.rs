//! `/openapi.json`: OpenAPI 3.1, generated from the handlers' `#[utoipa::path]`
//! attributes and their request, query and answer types. Each resource's router
//! registers a route and its operation in one call (`utoipa_axum::routes!`), so neither
//! exists without the other (`crate::routes::router` builds both). What every operation
//! shares is added here, once, by [`finish`]: the problem answers with their stable
//! codes, the `X-Request-Id`, `Idempotency-Key` and `Ledger-Seq` headers, and the
//! security schemes (the bearer key, and the HMAC-signed request headers of `hmac` keys).

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Value};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Problem, PROBLEM_CODES};
use crate::http::context::is_public;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "payout ledger",
        description = "A multi-tenant, event-sourced payout ledger: payouts through four \
                       eyes and three 2FA gates, every change an event in a hash-chained log \
                       (DESIGN.md section 7).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(Problem))
)]
struct ApiDoc;

/// The document before the resources' operations are merged into it.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The served document, fixed at start-up.
#[derive(Debug, Clone)]
pub struct Document(pub Arc<Vec<u8>>);

/// This document (OpenAPI 3.1).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Value))
)]
async fn openapi(Extension(Document(bytes)): Extension<Document>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        bytes.as_ref().clone(),
    )
        .into_response()
}

/// The document's route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi))
}

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn header_schema(description: &str, schema: Value) -> Value {
    json!({"description": description, "schema": schema})
}

/// Completes the generated document with what every operation shares.
pub fn finish(document: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(document).unwrap_or(Value::Null);
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    let request_id = json!({
        "name": "X-Request-Id", "in": "header", "required": false,
        "description": "The request's id, echoed in the answer and the audit view; \
                        1 to 128 of A-Z a-z 0-9 . _ -, else a fresh one is made.",
        "schema": {"type": "string", "maxLength": 128}
    });
    let idempotency = json!({
        "name": "Idempotency-Key", "in": "header", "required": false,
        "description": "The same key and body replays the first answer; the same key \
                        with another body is 422 idempotency_conflict.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}
    });
    let answer_headers = json!({
        "X-Request-Id": header_schema("The request's id.", json!({"type": "string"})),
    });
    let problem = json!({
        "description": "A problem (RFC 9457) with a stable `code`; 429, 503 and \
                        two_factor_locked carry Retry-After.",
        "headers": {
            "X-Request-Id": header_schema("The request's id.", json!({"type": "string"})),
            "Retry-After": header_schema("Seconds to wait.", json!({"type": "integer", "minimum": 1})),
        },
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        for method in METHODS {
            let Some(operation) = item.get_mut(method).and_then(Value::as_object_mut) else {
                continue;
            };
            let parameters = operation.entry("parameters").or_insert_with(|| json!([]));
            if let Some(list) = parameters.as_array_mut() {
                list.push(request_id.clone());
                if method == "post" || method == "put" {
                    list.push(idempotency.clone());
                }
            }
            let writes = method != "get";
            if let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            {
                for (status, response) in responses.iter_mut() {
                    let headers = response
                        .as_object_mut()
                        .map(|r| r.entry("headers").or_insert_with(|| json!({})));
                    let Some(headers) = headers.and_then(Value::as_object_mut) else {
                        continue;
                    };
                    if let Some(shared) = answer_headers.as_object() {
                        headers.extend(shared.clone());
                    }
                    if writes && status.starts_with('2') {
                        headers.insert(
                            "Ledger-Seq".into(),
                            header_schema(
                                "The seq this request's events committed up to (absent when \
                                 nothing was appended): pass it as min_seq to a read.",
                                json!({"type": "integer", "minimum": 1}),
                            ),
                        );
                    }
                }
                responses.insert("default".into(), problem.clone());
            }
            if !is_public(path) {
                operation.insert(
                    "security".into(),
                    json!([{"bearer": []}, {"bearer": [], "ledger_timestamp": [], "ledger_nonce": [], "ledger_signature": []}]),
                );
            }
        }
    }
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "An API key, `<key_id>.<secret>`; the key decides the tenant."},
        "ledger_timestamp": {"type": "apiKey", "in": "header", "name": "X-Ledger-Timestamp",
                   "description": "hmac keys: Unix seconds, within 300 s."},
        "ledger_nonce": {"type": "apiKey", "in": "header", "name": "X-Ledger-Nonce",
                   "description": "hmac keys: used once."},
        "ledger_signature": {"type": "apiKey", "in": "header", "name": "X-Ledger-Signature",
                   "description": "hmac keys: hex HMAC-SHA256 of timestamp, nonce, method, \
                                   path with query and the hex SHA-256 of the body, one per line."},
    });
    doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"] = json!(PROBLEM_CODES);
    doc
}
