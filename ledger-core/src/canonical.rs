//! Canonical JSON (RFC 8785, JCS) for the ledger's value domain: objects with ASCII keys,
//! sorted; no whitespace; integers only, below 2^53 in magnitude; strings escaped minimally
//! (`"`, `\` and control characters; `\b \t \n \f \r`, else `\u00xx` in lowercase hex).
//!
//! The writer does not rely on the order of `serde_json::Map` (a feature flag elsewhere in
//! a build could change it): it sorts keys itself.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Largest integer magnitude allowed: 2^53 - 1.
pub const INTEGER_MAGNITUDE_MAX: u64 = (1 << 53) - 1;

/// Deepest nesting accepted when parsing.
pub const NESTING_DEPTH_MAX: usize = 32;

/// Why a JSON value is outside the ledger's canonical value domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// The text is not JSON, or not JSON of our domain (a float, a duplicate key, ...).
    #[error("invalid JSON: {0}")]
    Parse(String),
    /// A number with a fraction or exponent: amounts are strings.
    #[error("floating-point numbers are not allowed")]
    Float,
    /// An integer of 2^53 or more in magnitude.
    #[error("integer out of range (|n| must be below 2^53)")]
    IntegerRange,
    /// An object key with a non-ASCII character.
    #[error("object keys must be ASCII")]
    NonAsciiKey,
    /// Nesting beyond [`NESTING_DEPTH_MAX`].
    #[error("JSON nested too deeply")]
    TooDeep,
}

/// Parses JSON text into a value of the ledger's domain, refusing floats, integers of 2^53
/// or more, non-ASCII keys and duplicate keys (which different parsers resolve differently).
pub fn parse_value(text: &str) -> Result<Value, CanonicalError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = StrictValue::deserialize(&mut deserializer)
        .map_err(|e| CanonicalError::Parse(e.to_string()))?;
    deserializer
        .end()
        .map_err(|e| CanonicalError::Parse(e.to_string()))?;
    check_domain(&value.0, 0)?;
    Ok(value.0)
}

/// The canonical bytes of `value`.
pub fn to_canonical_vec(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out)?;
    Ok(out)
}

/// Appends the canonical bytes of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    write_value(value, out, 0)
}

/// Appends a JSON string literal, escaped as JCS requires.
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes exactly `"`, `\` and U+0000..U+001F, with lowercase hex.
    // Writing into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, s).is_err() {
        unreachable!("writing a string into a Vec<u8> cannot fail");
    }
}

fn write_value(value: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), CanonicalError> {
    if depth > NESTING_DEPTH_MAX {
        return Err(CanonicalError::TooDeep);
    }
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out)?,
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out, depth + 1)?;
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, out, depth)?,
    }
    Ok(())
}

fn write_object(
    map: &Map<String, Value>,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), CanonicalError> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (key, item)) in entries.into_iter().enumerate() {
        if !key.is_ascii() {
            return Err(CanonicalError::NonAsciiKey);
        }
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        write_value(item, out, depth + 1)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_number(n: &Number, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    if let Some(u) = n.as_u64() {
        if u > INTEGER_MAGNITUDE_MAX {
            return Err(CanonicalError::IntegerRange);
        }
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > INTEGER_MAGNITUDE_MAX {
            return Err(CanonicalError::IntegerRange);
        }
        out.extend_from_slice(i.to_string().as_bytes());
    } else {
        return Err(CanonicalError::Float);
    }
    Ok(())
}

fn check_domain(value: &Value, depth: usize) -> Result<(), CanonicalError> {
    if depth > NESTING_DEPTH_MAX {
        return Err(CanonicalError::TooDeep);
    }
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
        Value::Number(n) => write_number(n, &mut Vec::new()),
        Value::Array(items) => items.iter().try_for_each(|v| check_domain(v, depth + 1)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if k.is_ascii() {
                check_domain(v, depth + 1)
            } else {
                Err(CanonicalError::NonAsciiKey)
            }
        }),
    }
}

/// A `serde_json::Value` whose deserialisation refuses floats and duplicate keys.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value without floats or duplicate keys")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<Value, E> {
        Err(E::custom("floating-point numbers are not allowed"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let StrictValue(item) = access.next_value()?;
            map.insert(key, item);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> Result<String, CanonicalError> {
        let value = parse_value(text)?;
        let bytes = to_canonical_vec(&value)?;
        Ok(String::from_utf8(bytes).expect("utf-8"))
    }

    #[test]
    fn domain_is_enforced() {
        assert_eq!(
            canonical(r#"{"b":1,"a":[true,null]}"#).as_deref(),
            Ok(r#"{"a":[true,null],"b":1}"#)
        );
        assert_eq!(
            canonical("1.5"),
            Err(CanonicalError::Parse(
                "floating-point numbers are not allowed at line 1 column 3".into()
            ))
        );
        assert!(matches!(canonical("1e3"), Err(CanonicalError::Parse(_))));
        assert!(matches!(canonical("1.0"), Err(CanonicalError::Parse(_))));
        assert_eq!(
            canonical("9007199254740991").as_deref(),
            Ok("9007199254740991")
        );
        assert_eq!(
            canonical("-9007199254740991").as_deref(),
            Ok("-9007199254740991")
        );
        assert_eq!(
            canonical("9007199254740992"),
            Err(CanonicalError::IntegerRange)
        );
        assert_eq!(canonical(r#"{"é":1}"#), Err(CanonicalError::NonAsciiKey));
        assert!(
            matches!(canonical(r#"{"a":1,"a":2}"#), Err(CanonicalError::Parse(m)) if m.contains("duplicate"))
        );
        assert!(matches!(
            canonical(r#"{"a":1} x"#),
            Err(CanonicalError::Parse(_))
        ));
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert!(canonical(&deep).is_err());
    }
}

/// Whether `text` is already the canonical form of a value in our domain, so that its
/// bytes can be hashed as they are. One pass, no allocation. Conservative: `false` only
/// means "re-encode it" (e.g. an object key with an escape), never "invalid".
pub fn is_canonical(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut position = 0;
    scan_value(bytes, &mut position, 0) && position == bytes.len()
}

/// Scans one canonical value of `b` from `position` (advanced past it); `false` as for
/// [`is_canonical`].
pub(crate) fn scan_value(b: &[u8], position: &mut usize, depth: usize) -> bool {
    if depth > NESTING_DEPTH_MAX {
        return false;
    }
    match b.get(*position) {
        Some(b'{') => scan_object(b, position, depth),
        Some(b'[') => scan_array(b, position, depth),
        Some(b'"') => scan_string(b, position).is_some(),
        Some(b't') => scan_literal(b, position, b"true"),
        Some(b'f') => scan_literal(b, position, b"false"),
        Some(b'n') => scan_literal(b, position, b"null"),
        Some(b'-' | b'0'..=b'9') => scan_integer(b, position),
        _ => false,
    }
}

fn scan_literal(b: &[u8], position: &mut usize, literal: &[u8]) -> bool {
    if b[*position..].starts_with(literal) {
        *position += literal.len();
        true
    } else {
        false
    }
}

fn scan_integer(b: &[u8], position: &mut usize) -> bool {
    let start = *position;
    let negative = b[*position] == b'-';
    if negative {
        *position += 1;
    }
    let digits_start = *position;
    while b.get(*position).is_some_and(u8::is_ascii_digit) {
        *position += 1;
    }
    let digits = &b[digits_start..*position];
    let well_formed = match digits {
        [] => false,
        [b'0'] => !negative,
        [b'0', ..] => false,
        _ => digits.len() <= 16,
    };
    if !well_formed || matches!(b.get(*position), Some(b'.' | b'e' | b'E')) {
        return false;
    }
    let magnitude = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<u64>().ok());
    let _ = start;
    magnitude.is_some_and(|m| m <= INTEGER_MAGNITUDE_MAX)
}

/// Scans a string in its minimal escaping; returns the raw content (without quotes).
fn scan_string<'a>(b: &'a [u8], position: &mut usize) -> Option<&'a [u8]> {
    *position += 1;
    let start = *position;
    loop {
        let c = *b.get(*position)?;
        match c {
            b'"' => {
                let content = &b[start..*position];
                *position += 1;
                return Some(content);
            }
            0x00..=0x1f => return None,
            b'\\' => {
                let escape = *b.get(*position + 1)?;
                match escape {
                    b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => *position += 2,
                    b'u' => {
                        let hex = b.get(*position + 2..*position + 6)?;
                        let lower_hex = |d: &u8| d.is_ascii_digit() || (b'a'..=b'f').contains(d);
                        if hex[0] != b'0' || hex[1] != b'0' || !hex.iter().all(lower_hex) {
                            return None;
                        }
                        let code =
                            u8::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()?;
                        let has_short_form = matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d);
                        if code >= 0x20 || has_short_form {
                            return None;
                        }
                        *position += 6;
                    }
                    _ => return None,
                }
            }
            _ => *position += 1,
        }
    }
}

fn scan_object(b: &[u8], position: &mut usize, depth: usize) -> bool {
    *position += 1;
    if b.get(*position) == Some(&b'}') {
        *position += 1;
        return true;
    }
    let mut previous: Option<&[u8]> = None;
    loop {
        if b.get(*position) != Some(&b'"') {
            return false;
        }
        let Some(key) = scan_string(b, position) else {
            return false;
        };
        // Keys with escapes or non-ASCII bytes are re-encoded by the slow path.
        if key.iter().any(|&c| c == b'\\' || c >= 0x80) || previous.is_some_and(|p| p >= key) {
            return false;
        }
        previous = Some(key);
        if b.get(*position) != Some(&b':') {
            return false;
        }
        *position += 1;
        if !scan_value(b, position, depth + 1) {
            return false;
        }
        match b.get(*position) {
            Some(b',') => *position += 1,
            Some(b'}') => {
                *position += 1;
                return true;
            }
            _ => return false,
        }
    }
}

fn scan_array(b: &[u8], position: &mut usize, depth: usize) -> bool {
    *position += 1;
    if b.get(*position) == Some(&b']') {
        *position += 1;
        return true;
    }
    loop {
        if !scan_value(b, position, depth + 1) {
            return false;
        }
        match b.get(*position) {
            Some(b',') => *position += 1,
            Some(b']') => {
                *position += 1;
                return true;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod scan_tests {
    use super::*;

    #[test]
    fn canonical_texts_are_recognised_and_others_are_not() {
        for yes in [
            r#"{}"#,
            r#"{"a":1,"b":[true,false,null,"x"]}"#,
            r#"{"a":-9007199254740991,"b":0}"#,
            r#"{"s":"q\" b\\ t\t n\n u\u001f del"}"#,
            "{\"s\":\"\u{e9}\u{1f4b6}\"}",
        ] {
            assert!(is_canonical(yes), "{yes}");
        }
        for no in [
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{ "a":1}"#,
            r#"{"a":1.0}"#,
            r#"{"a":1e3}"#,
            r#"{"a":-0}"#,
            r#"{"a":01}"#,
            r#"{"a":9007199254740992}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":"\u000a"}"#,
            r#"{"a":"\u001F"}"#,
            r#"{"a":"\/"}"#,
            r#"{"\u0061":1}"#,
            r#"{"a":1}x"#,
            r#"{"a":[1,]}"#,
            "",
        ] {
            assert!(!is_canonical(no), "{no}");
        }
    }
}
