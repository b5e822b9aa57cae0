//! The extractors every handler shares; their rejections are problem+json.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
