//! The zero-copy canonical check (`canonical::is_canonical`) must agree with the encoder:
//! every canonical encoding is recognised, and whatever is recognised re-encodes to
//! itself. Otherwise the verifier would hash bytes another implementation would not.

use ledger_core::canonical::{is_canonical, parse_value, to_canonical_vec};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(|n| Value::Number(n.into())),
        any::<String>().prop_map(Value::String),
        "[\\x00-\\x7f]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[ -~]{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn canonical_encodings_are_recognised(value in json_value()) {
        let bytes = to_canonical_vec(&value).expect("domain");
        let text = String::from_utf8(bytes).expect("utf-8");
        // Keys with escapes are left to the slow path; everything else must pass.
        let has_escaped_key = text.contains("\\") && value_has_escaped_key(&value);
        if !has_escaped_key {
            prop_assert!(is_canonical(&text), "{}", text);
        }
    }

    #[test]
    fn recognised_texts_re_encode_to_themselves(value in json_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).expect("json")
        } else {
            serde_json::to_string(&value).expect("json")
        };
        if is_canonical(&text) {
            let parsed = parse_value(&text).expect("canonical text parses");
            let again = to_canonical_vec(&parsed).expect("domain");
            prop_assert_eq!(again, text.as_bytes());
        }
    }
}

fn value_has_escaped_key(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(k, v)| {
            k.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') || value_has_escaped_key(v)
        }),
        Value::Array(items) => items.iter().any(value_has_escaped_key),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => false,
    }
}
