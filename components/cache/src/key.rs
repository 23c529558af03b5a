//! What makes two requests the same request: the cache keys.
//!
//! The **exact key** hashes the request body (OpenAI chat format: the gateway has translated an
//! Anthropic request before any policy sees it) without the fields that cannot change the
//! answer ([`IGNORED_FIELDS`]), in a canonical form: object keys sorted, no whitespace, numbers
//! written one way (`1`, `1.0` and `1e0` are the same temperature). Everything else counts:
//! model, messages, tools, tool choice, response format, sampling parameters (`temperature`,
//! `top_p`, `seed`, `stop`, penalties, `n`, `max_tokens`...), and any field a provider adds
//! later, so an unknown parameter never makes two different requests share an answer.
//!
//! The **fingerprint** is the same hash without the conversation's embedded part: what must
//! be equal for a semantic hit (model, tools, parameters, and the system messages unless the
//! configuration ignores them).

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// Top-level request fields that do not change the answer: how it is delivered (`stream`,
/// `stream_options`), who asked (`user`, `metadata`, `safety_identifier`,
/// `prompt_cache_key`), and the provider's bookkeeping (`store`, `service_tier`).
pub const IGNORED_FIELDS: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "metadata",
    "safety_identifier",
    "prompt_cache_key",
    "store",
    "service_tier",
];

/// The canonical text of a JSON value: sorted keys, no whitespace, numbers normalised.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        Value::Number(n) => out.push_str(&number(n)),
        other => out.push_str(&other.to_string()),
    }
}

/// `1`, `1.0` and `1e0` are one number: integral values are written as integers.
fn number(n: &Number) -> String {
    if n.is_f64()
        && let Some(f) = n.as_f64()
        && f.fract() == 0.0
        && f.abs() < 9.0e15
    {
        return format!("{}", f as i64);
    }
    n.to_string()
}

/// The request without the ignored fields (and, for the fingerprint, without its messages).
fn relevant(body: &Map<String, Value>, drop_messages: bool) -> Map<String, Value> {
    body.iter()
        .filter(|(k, _)| !IGNORED_FIELDS.contains(&k.as_str()))
        .filter(|(k, _)| !(drop_messages && *k == "messages"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn hex_sha256(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The exact key of a request body in a scope (`consumer`, generation...).
pub fn exact(scope: &str, body: &Map<String, Value>) -> String {
    hex_sha256(&[
        "exact",
        scope,
        &canonical(&Value::Object(relevant(body, false))),
    ])
}

/// The fingerprint of a request for the semantic layer: everything but the conversation,
/// plus the messages given (those that are not embedded but must match, e.g. system prompts).
pub fn fingerprint(scope: &str, body: &Map<String, Value>, kept_messages: &[Value]) -> String {
    hex_sha256(&[
        "semantic",
        scope,
        &canonical(&Value::Object(relevant(body, true))),
        &canonical(&Value::Array(kept_messages.to_vec())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(v: Value) -> String {
        exact("c", v.as_object().unwrap())
    }

    #[test]
    fn key_order_whitespace_and_number_forms_do_not_change_the_key() {
        let a: Value = serde_json::from_str(
            r#"{"model":"m","temperature":1,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            "{ \"messages\" : [ { \"content\":\"hi\", \"role\":\"user\" } ],\n \"temperature\": 1.0, \"model\": \"m\" }",
        )
        .unwrap();
        assert_eq!(key(a.clone()), key(b));
        let c: Value = serde_json::from_str(
            r#"{"model":"m","temperature":1e0,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!(key(a), key(c));
    }

    #[test]
    fn delivery_and_identity_fields_do_not_change_the_key() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let mut streamed = base.clone();
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        streamed["user"] = json!("alice");
        streamed["metadata"] = json!({"trace": "1"});
        assert_eq!(key(base), key(streamed));
    }

    #[test]
    fn what_determines_the_answer_changes_the_key() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let k = key(base.clone());
        let changes = [
            ("model", json!("other")),
            ("messages", json!([{"role": "user", "content": "hi!"}])),
            ("messages", json!([{"role": "system", "content": "hi"}])),
            ("temperature", json!(0.2)),
            ("top_p", json!(0.9)),
            ("seed", json!(7)),
            ("max_tokens", json!(10)),
            ("stop", json!(["\n"])),
            ("n", json!(2)),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            ("tool_choice", json!("required")),
            ("response_format", json!({"type": "json_object"})),
            ("some_future_parameter", json!(true)),
        ];
        for (field, value) in changes {
            let mut changed = base.clone();
            changed[field] = value;
            assert_ne!(key(changed), k, "{field}");
        }
        assert_ne!(exact("other-consumer", base.as_object().unwrap()), k);
    }

    #[test]
    fn the_fingerprint_ignores_the_embedded_messages_only() {
        let a =
            json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "a"}]});
        let b =
            json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "b"}]});
        let f = |v: &Value, kept: &[Value]| fingerprint("c", v.as_object().unwrap(), kept);
        assert_eq!(f(&a, &[]), f(&b, &[]));
        let mut other_model = b.clone();
        other_model["model"] = json!("n");
        assert_ne!(f(&a, &[]), f(&other_model, &[]));
        let system = [json!({"role": "system", "content": "answer in French"})];
        assert_ne!(f(&a, &[]), f(&a, &system));
        assert_ne!(f(&a, &[]), exact("c", a.as_object().unwrap()));
    }
}
