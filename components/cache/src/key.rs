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

/// Writes the canonical text of a JSON value: sorted keys, no whitespace, numbers normalised
/// (strings, `true`, `false` and `null` as serde_json writes them).
fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_object(map, &|_| true, out),
        Value::Array(items) => write_array(items, out),
        Value::Number(n) => write_number(n, out),
        other => write_json(other, out),
    }
}

/// An object, with only the keys `keep` accepts: written from the request as it was parsed,
/// not from a filtered copy of it.
fn write_object(map: &Map<String, Value>, keep: &dyn Fn(&str) -> bool, out: &mut Vec<u8>) {
    let mut keys: Vec<&String> = map.keys().filter(|k| keep(k)).collect();
    keys.sort();
    out.push(b'{');
    write_separated(keys, out, |k, out| {
        write_json(k, out);
        out.push(b':');
        write_value(&map[k], out);
    });
    out.push(b'}');
}

fn write_array(items: &[Value], out: &mut Vec<u8>) {
    out.push(b'[');
    write_separated(items, out, write_value);
    out.push(b']');
}

/// `each` of `items`, comma-separated.
fn write_separated<T>(
    items: impl IntoIterator<Item = T>,
    out: &mut Vec<u8>,
    mut each: impl FnMut(T, &mut Vec<u8>),
) {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(item, out);
    }
}

fn write_json<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Writing a string, a key or a literal into a `Vec` cannot fail.
    let _ = serde_json::to_writer(out, value);
}

/// `1`, `1.0` and `1e0` are one number: integral values are written as integers.
fn write_number(n: &Number, out: &mut Vec<u8>) {
    if n.is_f64()
        && let Some(f) = n.as_f64()
        && f.fract() == 0.0
        && f.abs() < 9.0e15
    {
        write_json(&(f as i64), out);
        return;
    }
    out.extend_from_slice(n.to_string().as_bytes());
}

/// Whether a top-level request field can change the answer (see [`IGNORED_FIELDS`]).
fn relevant(field: &str) -> bool {
    !IGNORED_FIELDS.contains(&field)
}

fn hex_sha256(parts: &[&[u8]]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let mut hex = String::with_capacity(64);
    for b in h.finalize() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 15)]));
    }
    hex
}

/// The exact key of a request body in a scope (`consumer`, generation...).
pub fn exact(scope: &str, body: &Map<String, Value>) -> String {
    let mut text = Vec::with_capacity(4096);
    write_object(body, &relevant, &mut text);
    hex_sha256(&[b"exact", scope.as_bytes(), &text])
}

/// The fingerprint of a request for the semantic layer: everything but the conversation,
/// plus the messages given (those that are not embedded but must match, e.g. system prompts).
pub fn fingerprint(scope: &str, body: &Map<String, Value>, kept_messages: &[Value]) -> String {
    let mut rest = Vec::with_capacity(1024);
    write_object(body, &|k| relevant(k) && k != "messages", &mut rest);
    let mut kept = Vec::with_capacity(1024);
    write_array(kept_messages, &mut kept);
    hex_sha256(&[b"semantic", scope.as_bytes(), &rest, &kept])
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
    fn keys_stay_what_earlier_versions_wrote() {
        // Entries already in a shared store (Redis, KV) keep being found after an upgrade.
        let body = json!({
            "model": "m", "stream": true, "user": "u", "temperature": 1.0, "top_p": 0.5,
            "messages": [
                {"role": "system", "content": "be \"brief\"\n\u{e9}"},
                {"role": "user", "content": "hi", "name": null, "extra": [true, false, 3e0]},
            ],
            "stop": ["\n", "\u{1}"], "seed": 12345678901u64, "logit_bias": {"b": -1, "a": 2.5},
        });
        let body = body.as_object().unwrap();
        assert_eq!(
            exact("scope", body),
            "40c9e18a10684a6eb882850f4a572bd22e961f73ba5657766e9c2bc529f22ed8"
        );
        let kept = [json!({"role": "system", "content": "x"})];
        assert_eq!(
            fingerprint("scope", body, &kept),
            "df6d8491a4013322d983385f93afe3381fba25cff070150933c65dcadd0db1ce"
        );
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
