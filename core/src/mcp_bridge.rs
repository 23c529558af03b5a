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
use crate::mcp::{self, Full, Relayed, Reply, read};
use crate::*;

/// The revision of the stateless era.
pub const MODERN: &str = "2026-07-28";
/// The revision the gateway asks servers of the initialize era for.
pub const LEGACY: &str = "2025-11-25";
/// Revisions of the initialize era the gateway agrees to, oldest first.
pub const LEGACY_REVISIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
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

/// Relays a server's event stream, sent in a session the gateway shares between clients, as it
/// comes: every event passes untouched (progress notifications...) but the answer, which gets
/// back the id the client chose ([`upstream_id`] replaced it) and, for a client of the stateless
/// revision, that revision's fields ([`modernize`]). Bytes are held only until the blank line
/// that ends their event.
#[derive(Debug)]
pub struct AnswerRewrite {
    upstream_id: Value,
    client_id: Value,
    /// The method, when the client is of the stateless revision.
    modern: Option<String>,
    pending: Vec<u8>,
}

impl AnswerRewrite {
    /// For the answer to `upstream_id`, which is `client_id` to the client.
    pub fn new(upstream_id: Value, client_id: Value, modern: Option<&str>) -> Self {
        Self {
            upstream_id,
            client_id,
            modern: modern.map(str::to_owned),
            pending: Vec::new(),
        }
    }

    /// The complete events among the bytes so far, the answer rewritten.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.pending.len() {
            let end = if self.pending[i..].starts_with(b"\r\n\r\n") {
                i + 4
            } else if self.pending[i..].starts_with(b"\n\n") {
                i + 2
            } else {
                i += 1;
                continue;
            };
            out.push(self.event(&self.pending[start..end]));
            start = end;
            i = end;
        }
        self.pending.drain(..start);
        out
    }

    /// What is left when the stream ends (an event without its blank line).
    pub fn flush(&mut self) -> Option<Bytes> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.is_empty()).then(|| self.event(&rest))
    }

    fn event(&self, raw: &[u8]) -> Bytes {
        let answer = std::str::from_utf8(raw)
            .ok()
            .and_then(mcp_tools::event_data)
            .and_then(|d| serde_json::from_str::<Value>(&d).ok())
            .filter(|v| {
                v.get("id") == Some(&self.upstream_id)
                    && (v.get("result").is_some() || v.get("error").is_some())
            });
        let Some(mut answer) = answer else {
            return Bytes::copy_from_slice(raw);
        };
        answer["id"] = self.client_id.clone();
        if let Some(method) = &self.modern {
            answer = modernize(method, answer);
        }
        let text = String::from_utf8_lossy(raw);
        let mut event: String = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("data:"))
            .map(|l| format!("{l}\n"))
            .collect();
        event.push_str(&format!("data: {answer}\n\n"));
        Bytes::from(event)
    }
}

impl Upstream {
    /// Whether the server speaks the stateless revision only (no session).
    pub(crate) fn stateless(&self) -> bool {
        self.version.as_str() >= MODERN
    }
}

/// A request of the initialize era as one of the stateless revision: the body with `_meta`'s
/// envelope, and the headers (revision, `Mcp-Method`, `Mcp-Name`).
pub(crate) fn as_stateless(base: &Headers, request: &Value) -> (Headers, Value) {
    let mut request = request.clone();
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(obj) = request.as_object_mut() {
        let params = obj.entry("params").or_insert_with(|| json!({}));
        if let Some(params) = params.as_object_mut() {
            let meta = params.entry("_meta").or_insert_with(|| json!({}));
            if let (Some(meta), Value::Object(env)) = (meta.as_object_mut(), envelope()) {
                meta.extend(env);
            }
        }
    }
    let name = match method.as_str() {
        "tools/call" | "prompts/get" => request.pointer("/params/name"),
        "resources/read" => request.pointer("/params/uri"),
        _ => None,
    }
    .and_then(Value::as_str)
    .map(str::to_owned);
    (stateless_headers(base, &method, name.as_deref()), request)
}

/// The id of a request the gateway sends in a session it shares between clients (the bridge's
/// per consumer, several servers'): the gateway's request id, so that two clients' ids (each
/// counts from 0) never meet in one server session.
pub(crate) fn upstream_id<P: Platform>(call: &Call<P>) -> Value {
    json!(format!("weir-{}", call.request_id))
}

/// `message` with the id `id`.
pub(crate) fn with_id(message: &Value, id: &Value) -> Value {
    let mut message = message.clone();
    if message.get("id").is_some() {
        message["id"] = id.clone();
    }
    message
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
    let result = answer_to(&body, &json!(0)).and_then(|m| m.get("result").cloned());
    if result.is_none()
        && (400..500).contains(&status)
        && let Some(found) = discover(call, server, base).await?
    {
        // A server of the stateless revision only: no session, its description from discover.
        let up = Upstream {
            session: None,
            version: MODERN.into(),
            capabilities: found.get("capabilities").cloned().unwrap_or(json!({})),
            server_info: found
                .pointer("/_meta/io.modelcontextprotocol~1serverInfo")
                .cloned()
                .unwrap_or(json!({})),
        };
        if let Ok(bytes) = serde_json::to_vec(&up) {
            let _ = call.platform.state_set(key, bytes, ERA_TTL_MS).await;
        }
        return Ok(up);
    }
    let result = result.ok_or_else(|| GatewayError::Upstream {
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
) -> Result<Reply<P::Body>, GatewayError> {
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
        return Ok(Reply::Full(answer(202, Bytes::new())));
    };
    let method = message
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let key = session_key(&call.route.name, consumer);
    // The session is the consumer's, shared by its clients: the server sees the gateway's ids.
    let up_id = upstream_id(call);
    let body = Bytes::from(with_id(&message, &up_id).to_string());
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
            return Ok(Reply::Full(answer(200, Bytes::from(reply.to_string()))));
        }
        let headers = in_session(base, Some(&up));
        let resp = mcp::send(call, server, "POST", headers.clone(), body.clone()).await?;
        let status = resp.status;
        if method == "tools/call" && mcp::relays(&resp.headers, status) {
            // Relayed as it comes (progress), the answer given the new revision's fields.
            let cancel =
                mcp::cancel_request(&server.url, &headers, &up_id, None, server.timeout_ms);
            let rewrite = AnswerRewrite::new(up_id, id, Some(&method));
            return Ok(Reply::Stream(Relayed::tool_call(
                status,
                resp.body,
                cancel,
                Some(rewrite),
            )));
        }
        let got = read(call, server, resp.body).await?;
        if status == 404 && attempt == 0 {
            // The server forgot the session: open another.
            let _ = call.platform.state_delete(&key).await;
            continue;
        }
        return Ok(Reply::Full(match answer_to(&got, &up_id) {
            Some(reply) => {
                let reply = modernize(&method, with_id(&reply, &id));
                answer(status, Bytes::from(reply.to_string()))
            }
            None => answer(status, got),
        }));
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

// --- The other way: a client of the initialize era, a server of the stateless revision only.

/// What a request of the stateless revision carries in `params._meta`.
pub(crate) fn envelope() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// The headers of a stateless request: the revision, `Mcp-Method` and `Mcp-Name` (left out
/// when the name is not plain ASCII: the server reads it from the body).
fn stateless_headers(base: &Headers, method: &str, name: Option<&str>) -> Headers {
    let mut headers = in_session(base, None);
    headers.push(("mcp-protocol-version".into(), MODERN.into()));
    headers.push(("mcp-method".into(), method.into()));
    if let Some(name) = name.filter(|n| n.bytes().all(|b| (0x20..0x7f).contains(&b))) {
        headers.push(("mcp-name".into(), name.into()));
    }
    headers
}

/// The server's `server/discover` result, if it speaks the stateless revision.
pub(crate) async fn discover<P: Platform>(
    call: &mut Call<P>,
    server: &McpServer,
    base: &Headers,
) -> Result<Option<Value>, GatewayError> {
    let request = json!({"jsonrpc": "2.0", "id": 0, "method": "server/discover",
                         "params": {"_meta": envelope()}});
    let headers = stateless_headers(base, "server/discover", None);
    let resp = mcp::send(
        call,
        server,
        "POST",
        headers,
        Bytes::from(request.to_string()),
    )
    .await?;
    let status = resp.status;
    let got = read(call, server, resp.body).await?;
    if !(200..300).contains(&status) {
        return Ok(None);
    }
    let speaks_modern = |r: &Value| {
        r.get("supportedVersions")
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().any(|x| x == MODERN))
    };
    Ok(answer_to(&got, &json!(0))
        .and_then(|m| m.get("result").cloned())
        .filter(speaks_modern))
}

/// The gateway's answer to a client's `initialize` (`body`) in front of a stateless server that
/// described itself as `discovered`: a session of the gateway's (its `upstream` empty: the
/// server has none).
pub(crate) async fn initialize_over_stateless<P: Platform>(
    call: &Call<P>,
    body: &Bytes,
    discovered: &Value,
    consumer: Option<&str>,
) -> Result<Full, GatewayError> {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let asked = request
        .pointer("/params/protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let agreed = if LEGACY_REVISIONS.contains(&asked) {
        asked
    } else {
        LEGACY
    };
    let sid = new_session(call, consumer).await?;
    let info = discovered
        .pointer("/_meta/io.modelcontextprotocol~1serverInfo")
        .cloned()
        .unwrap_or_else(|| json!({"name": call.route.name, "version": ""}));
    let result = json!({
        "protocolVersion": agreed,
        "capabilities": discovered.get("capabilities").cloned().unwrap_or(json!({})),
        "serverInfo": info,
    });
    let reply = json!({"jsonrpc": "2.0", "id": request.get("id").cloned().unwrap_or(Value::Null), "result": result});
    Ok(Full {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("mcp-session-id".into(), sid),
        ],
        body: Bytes::from(reply.to_string()),
        is_stream: false,
    })
}

/// A new session of the gateway's own for `consumer`, with no server session behind it.
pub(crate) async fn new_session<P: Platform>(
    call: &Call<P>,
    consumer: Option<&str>,
) -> Result<String, GatewayError> {
    let Some(random) = call.platform.random_bytes() else {
        return Err(GatewayError::Unavailable {
            code: "session_store_unavailable",
            message: "The gateway has no random source for session ids.".into(),
        });
    };
    let sid = mcp_sessions::new_id(random);
    let own = mcp_sessions::Session {
        upstream: String::new(),
        consumer: consumer.map(str::to_owned),
        touched_ms: call.platform.now_ms(),
    };
    call.platform
        .state_set(
            &mcp_sessions::key(&call.route.name, &sid),
            serde_json::to_vec(&own).unwrap_or_default(),
            mcp_sessions::IDLE_MS,
        )
        .await
        .map_err(|e| GatewayError::Unavailable {
            code: "session_store_unavailable",
            message: format!("The gateway cannot store MCP sessions now ({e})."),
        })?;
    Ok(sid)
}

/// A request of a client of the initialize era, in a session of the gateway's over a server of
/// the stateless revision: sent with the new revision's headers and `_meta`.
pub(crate) async fn to_stateless<P: Platform>(
    call: &mut Call<P>,
    server: &McpServer,
    base: &Headers,
    message: &MessageView,
    sid: &str,
) -> Result<Reply<P::Body>, GatewayError> {
    let full = |status: u16, body: Bytes| {
        Reply::Full(Full {
            status,
            headers: if body.is_empty() {
                Vec::new()
            } else {
                vec![("content-type".into(), "application/json".into())]
            },
            body,
            is_stream: false,
        })
    };
    match message.method.as_str() {
        "GET" => {
            let reply = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000,
                "message": "This MCP server offers no event stream."}});
            return Ok(full(405, Bytes::from(reply.to_string())));
        }
        "DELETE" => {
            let _ = call
                .platform
                .state_delete(&mcp_sessions::key(&call.route.name, sid))
                .await;
            return Ok(full(200, Bytes::from_static(b"{}")));
        }
        _ => {}
    }
    let request: Value = serde_json::from_slice(&message.body).unwrap_or(Value::Null);
    let Some(id) = request.get("id").cloned() else {
        // Notifications of the session (`initialized`...) have no stateless counterpart.
        return Ok(full(202, Bytes::new()));
    };
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let (headers, request) = as_stateless(base, &request);
    let resp = mcp::send(
        call,
        server,
        "POST",
        headers,
        Bytes::from(request.to_string()),
    )
    .await?;
    let status = resp.status;
    if method == "tools/call" && mcp::relays(&resp.headers, status) {
        // The answer of the new revision keeps fields a client of the initialize era ignores.
        let headers = stateless_headers(base, "notifications/cancelled", None);
        let cancel = mcp::cancel_request(
            &server.url,
            &headers,
            &id,
            Some(envelope()),
            server.timeout_ms,
        );
        return Ok(Reply::Stream(Relayed::tool_call(
            status, resp.body, cancel, None,
        )));
    }
    let got = read(call, server, resp.body).await?;
    Ok(match answer_to(&got, &id) {
        Some(reply) => full(status, Bytes::from(reply.to_string())),
        None => full(status, got),
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

    #[test]
    fn a_relayed_stream_passes_events_as_they_end_and_gives_the_answer_its_client_id() {
        let mut r = AnswerRewrite::new(json!("weir-req_1"), json!(2), Some("tools/call"));
        let progress = "event: message\nid: 7\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n";
        // Half an event: nothing yet; the rest of it: the event as it came, byte for byte.
        assert!(r.push(&progress.as_bytes()[..20]).is_empty());
        assert_eq!(
            r.push(&progress.as_bytes()[20..]),
            vec![Bytes::from(progress)]
        );
        let answer = "event: message\r\nid: 8\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"weir-req_1\",\"result\":{\"content\":[]}}\r\n\r\n";
        let out = r.push(answer.as_bytes());
        assert_eq!(out.len(), 1);
        let text = std::str::from_utf8(&out[0]).unwrap();
        assert!(text.starts_with("event: message\nid: 8\ndata: "), "{text}");
        let data: Value = serde_json::from_str(&mcp_tools::event_data(text).unwrap()).unwrap();
        assert_eq!(data["id"], 2);
        assert_eq!(data["result"]["resultType"], "complete");
        // Another request's answer is not touched; a last event without its blank line is kept.
        let other = "data: {\"jsonrpc\":\"2.0\",\"id\":\"weir-req_9\",\"result\":{}}";
        assert!(r.push(other.as_bytes()).is_empty());
        assert_eq!(r.flush(), Some(Bytes::from(other)));
        assert_eq!(r.flush(), None);
        // A client of the initialize era: the id only.
        let mut legacy = AnswerRewrite::new(json!("weir-req_1"), json!(5), None);
        let out =
            legacy.push(b"data: {\"jsonrpc\":\"2.0\",\"id\":\"weir-req_1\",\"result\":{}}\n\n");
        let data: Value = serde_json::from_str(
            &mcp_tools::event_data(std::str::from_utf8(&out[0]).unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(data, json!({"jsonrpc": "2.0", "id": 5, "result": {}}));
    }
}
