//! A client of the stateless revision (2026-07-28) in front of a server of the initialize era
//! (most servers in the wild): the server refuses the client's requests (no session), so the
//! gateway speaks that era for the client. It opens a session with the server per consumer
//! (`initialize` + `notifications/initialized`, kept in the platform's key-value store), answers
//! `server/discover` from what the server said at `initialize`, forwards the other requests in
//! that session, and gives the answers the fields of the new revision (`resultType`, and
//! `cacheScope` / `ttlMs` on lists). A server found to be of the initialize era is remembered
//! for an hour, so later requests go to the bridge at once; a session the server forgot (404) is
//! opened again once.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::call::Call;
use crate::mcp::{self, Full};
use crate::*;

/// The revision of the stateless era.
pub const MODERN: &str = "2026-07-28";
/// The revision the gateway asks servers of the initialize era for.
pub const LEGACY: &str = "2025-11-25";
const ERA_TTL_MS: u64 = 60 * 60 * 1000;

/// Whether a request comes from a client of the stateless era (its revision header, and no
/// session).
pub(crate) fn modern_client(headers: &Headers) -> bool {
    mcp::header(headers, "mcp-protocol-version").is_some_and(|v| v >= MODERN)
        && mcp::header(headers, "mcp-session-id").is_none()
}

fn era_key(route: &str) -> String {
    format!("gateway:mcp-era|{route}")
}

fn session_key(route: &str, consumer: Option<&str>) -> String {
    format!("gateway:mcp-bridge|{route}/{}", consumer.unwrap_or("-"))
}

/// Whether the proxy's server was found to speak the initialize era only.
pub(crate) async fn known_initialize_era<P: Platform>(call: &Call<P>) -> bool {
    matches!(call.platform.state_get(&era_key(&call.route.name)).await, Ok(Some(v)) if v == b"initialize")
}

/// The gateway's session with the server, for one consumer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Upstream {
    session: Option<String>,
    version: String,
    capabilities: Value,
    server_info: Value,
}

/// `message` with the fields a client of the stateless revision expects of `method`'s result.
pub fn modernize(method: &str, mut message: Value) -> Value {
    if let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) {
        result
            .entry("resultType")
            .or_insert_with(|| json!("complete"));
        if method == "server/discover" || method.ends_with("/list") {
            result
                .entry("cacheScope")
                .or_insert_with(|| json!("private"));
            result.entry("ttlMs").or_insert_with(|| json!(0));
        }
    }
    message
}

/// The message answering request `id` in a body (JSON, a batch, or an event stream).
pub fn answer_to(body: &[u8], id: &Value) -> Option<Value> {
    let is_answer = |v: &Value| {
        v.get("id") == Some(id) && (v.get("result").is_some() || v.get("error").is_some())
    };
    let pick = |v: Value| match v {
        Value::Array(batch) => batch.into_iter().find(is_answer),
        v => is_answer(&v).then_some(v),
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => pick(v),
        Err(_) => {
            let text = std::str::from_utf8(body).ok()?;
            mcp_tools::split_events(text)
                .into_iter()
                .filter_map(|e| serde_json::from_str(&mcp_tools::event_data(e)?).ok())
                .find_map(pick)
        }
    }
}

/// The client's headers for the server, in session `up`.
pub(crate) fn in_session(base: &Headers, up: Option<&Upstream>) -> Headers {
    let mut headers: Headers = base
        .iter()
        .filter(|(n, _)| {
            !matches!(
                n.as_str(),
                "mcp-protocol-version" | "mcp-session-id" | "mcp-method" | "mcp-name"
            )
        })
        .cloned()
        .collect();
    if let Some(up) = up {
        headers.push(("mcp-protocol-version".into(), up.version.clone()));
        if let Some(s) = &up.session {
            headers.push(("mcp-session-id".into(), s.clone()));
        }
    }
    headers
}

pub(crate) async fn read<P: Platform>(
    call: &Call<P>,
    server: &McpServer,
    body: P::Body,
) -> Result<Bytes, GatewayError> {
    call.platform
        .read_body(
            body,
            call.route.limits.max_response_bytes,
            server.timeout_ms,
        )
        .await
        .map_err(|_| GatewayError::Upstream {
            status: 502,
            code: "upstream_response_failed",
            message: format!(
                "The MCP server of `{}` broke off its response.",
                call.route.name
            ),
            detail: None,
        })
}

/// The consumer's session with the server, opened if there is none.
pub(crate) async fn upstream_session<P: Platform>(
    call: &mut Call<P>,
    server: &McpServer,
    base: &Headers,
    key: &str,
) -> Result<Upstream, GatewayError> {
    if let Ok(Some(bytes)) = call.platform.state_get(key).await
        && let Ok(up) = serde_json::from_slice::<Upstream>(&bytes)
    {
        return Ok(up);
    }
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {},
        "clientInfo": {"name": "weir", "version": env!("CARGO_PKG_VERSION")}}});
    let resp = mcp::send(
        call,
        server,
        "POST",
        in_session(base, None),
        Bytes::from(init.to_string()),
    )
    .await?;
    let status = resp.status;
    let session = mcp::header(&resp.headers, "mcp-session-id").map(str::to_owned);
    let body = read(call, server, resp.body).await?;
    let result = answer_to(&body, &json!(0))
        .and_then(|m| m.get("result").cloned())
        .ok_or_else(|| GatewayError::Upstream {
            status: 502,
            code: "upstream_handshake_failed",
            message: format!(
                "The MCP server of `{}` did not complete `initialize` (HTTP {status}).",
                call.route.name
            ),
            detail: None,
        })?;
    let up = Upstream {
        session,
        version: result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(LEGACY)
            .to_owned(),
        capabilities: result.get("capabilities").cloned().unwrap_or(json!({})),
        server_info: result.get("serverInfo").cloned().unwrap_or(json!({})),
    };
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let resp = mcp::send(
        call,
        server,
        "POST",
        in_session(base, Some(&up)),
        Bytes::from(note.to_string()),
    )
    .await?;
    let _ = read(call, server, resp.body).await;
    if let Ok(bytes) = serde_json::to_vec(&up) {
        let _ = call
            .platform
            .state_set(key, bytes, mcp_sessions::IDLE_MS)
            .await;
    }
    Ok(up)
}

/// The answer to the stateless-era request `body` (headers `base`, as they would go to the
/// server), obtained in the initialize era.
pub(crate) async fn bridge<P: Platform>(
    call: &mut Call<P>,
    server: &McpServer,
    base: &Headers,
    body: &Bytes,
    consumer: Option<&str>,
) -> Result<Full, GatewayError> {
    let _ = call
        .platform
        .state_set(
            &era_key(&call.route.name),
            b"initialize".to_vec(),
            ERA_TTL_MS,
        )
        .await;
    let answer = |status: u16, body: Bytes| Full {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body,
        is_stream: false,
    };
    let message: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(id) = message.get("id").cloned() else {
        // A notification: nothing a server of the initialize era needs outside its session.
        return Ok(answer(202, Bytes::new()));
    };
    let method = message
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let key = session_key(&call.route.name, consumer);
    for attempt in 0..2 {
        let up = upstream_session(call, server, base, &key).await?;
        if method == "server/discover" {
            let result = json!({
                "supportedVersions": [MODERN],
                "capabilities": up.capabilities,
                "_meta": {"io.modelcontextprotocol/serverInfo": up.server_info},
            });
            let reply = modernize(
                &method,
                json!({"jsonrpc": "2.0", "id": id, "result": result}),
            );
            return Ok(answer(200, Bytes::from(reply.to_string())));
        }
        let resp = mcp::send(
            call,
            server,
            "POST",
            in_session(base, Some(&up)),
            body.clone(),
        )
        .await?;
        let status = resp.status;
        let got = read(call, server, resp.body).await?;
        if status == 404 && attempt == 0 {
            // The server forgot the session: open another.
            let _ = call.platform.state_delete(&key).await;
            continue;
        }
        return Ok(match answer_to(&got, &id) {
            Some(reply) => answer(status, Bytes::from(modernize(&method, reply).to_string())),
            None => answer(status, got),
        });
    }
    Err(GatewayError::Upstream {
        status: 502,
        code: "upstream_handshake_failed",
        message: format!(
            "The MCP server of `{}` keeps forgetting its sessions.",
            call.route.name
        ),
        detail: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_get_the_fields_of_the_new_revision() {
        let list = modernize(
            "tools/list",
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}),
        );
        assert_eq!(list["result"]["resultType"], "complete");
        assert_eq!(list["result"]["cacheScope"], "private");
        let call = modernize(
            "tools/call",
            json!({"jsonrpc": "2.0", "id": 1, "result": {"content": []}}),
        );
        assert_eq!(call["result"]["resultType"], "complete");
        assert!(call["result"].get("cacheScope").is_none());
        let error = modernize(
            "tools/call",
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": 1}}),
        );
        assert!(error.get("result").is_none());
    }

    #[test]
    fn the_answer_is_found_in_json_batches_and_event_streams() {
        let id = json!(4);
        assert!(answer_to(br#"{"jsonrpc":"2.0","id":4,"result":{}}"#, &id).is_some());
        assert!(answer_to(br#"{"jsonrpc":"2.0","id":5,"result":{}}"#, &id).is_none());
        let sse = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{\"ok\":1}}\n\n";
        assert_eq!(answer_to(sse, &id).unwrap()["result"]["ok"], 1);
    }
}
