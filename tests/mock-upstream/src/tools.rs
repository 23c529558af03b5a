//! A minimal MCP server and REST endpoint for the benchmark's MCP rows: `POST /mcp` answers
//! JSON-RPC (stateless, JSON answers: `initialize`, `tools/list`, `tools/call` of `add`), and
//! `POST /rest/add` adds `a` and `b` of a JSON body, the REST API an MCP translator calls.

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{Value, json};

/// The answer to a JSON-RPC message posted to `/mcp`; `None` body for notifications (202).
pub(crate) fn mcp(body: &[u8]) -> (StatusCode, Option<Bytes>) {
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        let e = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}});
        return (StatusCode::BAD_REQUEST, Some(Bytes::from(e.to_string())));
    };
    let Some(id) = message.get("id").cloned() else {
        return (StatusCode::ACCEPTED, None);
    };
    let method = message
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let result = match method {
        "initialize" => json!({
            "protocolVersion": message.pointer("/params/protocolVersion").cloned().unwrap_or(json!("2025-11-25")),
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "weir-mock-upstream", "version": env!("CARGO_PKG_VERSION")},
        }),
        "ping" => json!({}),
        "tools/list" => json!({"tools": [{
            "name": "add",
            "description": "Adds two numbers.",
            "inputSchema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]},
        }]}),
        "tools/call" => {
            let arg = |k: &str| {
                message
                    .pointer(&format!("/params/arguments/{k}"))
                    .and_then(Value::as_i64)
            };
            match (
                message.pointer("/params/name").and_then(Value::as_str),
                arg("a"),
                arg("b"),
            ) {
                (Some("add"), Some(a), Some(b)) => json!({
                    "content": [{"type": "text", "text": (a + b).to_string()}],
                    "structuredContent": {"result": a + b},
                    "isError": false,
                }),
                _ => {
                    json!({"content": [{"type": "text", "text": "add takes integers a and b"}], "isError": true})
                }
            }
        }
        other => {
            let e = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("Method not found: {other}")}});
            return (StatusCode::OK, Some(Bytes::from(e.to_string())));
        }
    };
    let answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
    (StatusCode::OK, Some(Bytes::from(answer.to_string())))
}

/// `POST /rest/add`: `{"a": 1, "b": 2}` → `{"sum": 3}`.
pub(crate) fn rest_add(body: &[u8]) -> (StatusCode, Bytes) {
    let parsed: Option<(i64, i64)> = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| Some((v.get("a")?.as_i64()?, v.get("b")?.as_i64()?)));
    match parsed {
        Some((a, b)) => (
            StatusCode::OK,
            Bytes::from(json!({"sum": a + b}).to_string()),
        ),
        None => (
            StatusCode::BAD_REQUEST,
            Bytes::from(json!({"error": "give integers a and b"}).to_string()),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn add_is_a_tool_and_a_rest_endpoint() {
        let call = br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}"#;
        let (status, body) = mcp(call);
        let answer: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(
            (
                status,
                answer["id"].clone(),
                answer["result"]["structuredContent"]["result"].clone()
            ),
            (StatusCode::OK, json!(5), json!(5))
        );
        assert_eq!(
            mcp(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            (StatusCode::ACCEPTED, None)
        );
        let (status, body) = rest_add(br#"{"a":2,"b":40}"#);
        assert_eq!(
            (status, body),
            (StatusCode::OK, Bytes::from(r#"{"sum":42}"#))
        );
        assert_eq!(rest_add(b"{}").0, StatusCode::BAD_REQUEST);
    }
}
