//! Every answer the black-box tests receive is checked against `/openapi.json`: its
//! status must be one the operation documents (or its `default`, a problem), and a JSON
//! body must validate against that response's schema (JSON Schema 2020-12, formats
//! asserted). A request to no documented operation (the fallback's 404, a method the
//! path does not serve) is checked as a problem. So the document's schemas are proved
//! against real answers of the running server, on both backends, by every test.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use reqwest::StatusCode;
use serde_json::{json, Value};

static VALIDATORS: LazyLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn document() -> &'static Value {
    ledger_api::routes::openapi_document()
}

/// The documented path template `path` (no query) is an instance of, preferring the
/// one with the most literal segments (`/v1/checkpoints/latest` over a `{…}`).
pub fn template_of(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    let paths = document()["paths"].as_object()?;
    paths
        .keys()
        .filter_map(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (part, segment) in parts.iter().zip(&segments) {
                if part.starts_with('{') {
                    if segment.is_empty() {
                        return None;
                    }
                } else if part == segment {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, template.as_str()))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, template)| template)
}

fn validator(pointer: &str, schema: &Value) -> Arc<jsonschema::Validator> {
    let mut cache = VALIDATORS.lock().expect("validators");
    if let Some(found) = cache.get(pointer) {
        return found.clone();
    }
    // The response's schema, with the document's components beside it so that its
    // `#/components/schemas/…` references resolve.
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": document()["components"],
    });
    let built = Arc::new(
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("the schema at {pointer} does not compile: {e}")),
    );
    cache.insert(pointer.to_owned(), built.clone());
    built
}

/// Checks one answer against the document (panics with the reason when it does not
/// conform).
pub fn check(method: &str, url_path: &str, status: StatusCode, content_type: &str, body: &Value) {
    let path = url_path.split('?').next().unwrap_or(url_path);
    let method = method.to_ascii_lowercase();
    let operation = template_of(path).and_then(|template| {
        let operation = &document()["paths"][template][&method];
        operation.is_object().then_some((template, operation))
    });
    let (pointer, response) = match operation {
        Some((template, operation)) => {
            let code = status.as_u16().to_string();
            let key = if operation["responses"][&code].is_object() {
                code
            } else {
                assert!(
                    !status.is_success(),
                    "{method} {path}: {status} is not a status /openapi.json documents for {template}"
                );
                "default".to_owned()
            };
            (
                format!("{method} {template} {key}"),
                operation["responses"][&key].clone(),
            )
        }
        // No such operation: the router's fallbacks answer problems.
        None => {
            assert!(
                !status.is_success(),
                "{method} {path}: {status} from an operation /openapi.json does not have"
            );
            (
                "fallback".to_owned(),
                json!({"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}),
            )
        }
    };
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media != "application/json" && media != "application/problem+json" {
        return;
    }
    let Some(schema) = response["content"].get(media).map(|c| &c["schema"]) else {
        panic!("{method} {path}: {status} answered {media}, which {pointer} does not document");
    };
    let validator = validator(&format!("{pointer} {media}"), schema);
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path}: the {status} answer does not match /openapi.json ({pointer}): {errors:?}\n{body}"
    );
}
