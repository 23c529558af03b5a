//! Several MCP servers behind one proxy. The gateway is the client's server: it answers
//! `initialize` / `server/discover` and `ping` itself (its own sessions, crate::mcp_sessions),
//! merges the servers' tools, prompts and resources (tool and prompt names prefixed with the
//! server's name, `github_create_issue`, unless `prefix: none`), and sends each call to the
//! server it names, in a session the gateway keeps with each server for each consumer (as the
//! bridge does, crate::mcp_bridge). A server that fails is left out of lists (`fail-open`, the
//! default) or fails them. Lists are paged with a cursor that holds each server's; a tool call
//! named with its server's prefix is relayed as the server streams it (progress notifications);
//! there is no GET stream (405).

use bytes::Bytes;
use serde_json::{Value, json};

use crate::call::Call;
use crate::mcp::{self, Full, Relayed, Reply};
use crate::mcp_bridge::{self, AnswerRewrite, LEGACY, LEGACY_REVISIONS, MODERN};
use crate::mcp_sessions;
use crate::*;

fn json_full(status: u16, message: &Value) -> Full {
    Full {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Bytes::from(message.to_string()),
        is_stream: false,
    }
}

fn error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// What a server answered.
enum Asked<B> {
    /// A result or an error message.
    Answer(Value),
    /// An event stream, relayed as it comes.
    Stream(Box<Relayed<B>>),
}

/// Sends `message` (a request with an id) to `member` in the gateway's session with it; an
/// event stream is relayed if `relay` says so (`Some(modern)`: whether the client is of the
/// stateless revision), else read for the answer.
async fn ask<P: Platform>(
    call: &mut Call<P>,
    server: &McpServer,
    member: &McpMember,
    base: &Headers,
    consumer: Option<&str>,
    message: &Value,
    relay: Option<bool>,
) -> Result<Asked<P::Body>, GatewayError> {
    let single = server.as_member(member);
    let mut headers = base.clone();
    mcp::add_credential(call, member.credential.as_ref(), &mut headers)?;
    let key = format!(
        "gateway:mcp-members|{}/{}/{}",
        call.route.name,
        consumer.unwrap_or("-"),
        member.name
    );
    // One session per consumer and server, shared by the consumer's clients: the server sees
    // the gateway's ids.
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let up_id = mcp_bridge::upstream_id(call);
    let message = &mcp_bridge::with_id(message, &up_id);
    for attempt in 0..2 {
        let up = mcp_bridge::upstream_session(call, &single, &headers, &key).await?;
        // A server of the stateless revision gets its headers and `_meta`; others, the session.
        let (sent, body) = if up.stateless() {
            mcp_bridge::as_stateless(&headers, message)
        } else {
            (mcp_bridge::in_session(&headers, Some(&up)), message.clone())
        };
        let resp = mcp::send(
            call,
            &single,
            "POST",
            sent.clone(),
            Bytes::from(body.to_string()),
        )
        .await?;
        let status = resp.status;
        if let Some(modern) = relay
            && mcp::relays(&resp.headers, status)
        {
            let method = message
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let meta = up.stateless().then(mcp_bridge::envelope);
            let cancel = mcp::cancel_request(&member.url, &sent, &up_id, meta, member.timeout_ms);
            let rewrite = AnswerRewrite::new(up_id, id, modern.then_some(method));
            return Ok(Asked::Stream(Box::new(Relayed::tool_call(
                status,
                resp.body,
                cancel,
                Some(rewrite),
            ))));
        }
        let body = mcp::read(call, &single, resp.body).await?;
        if status == 404 && attempt == 0 {
            let _ = call.platform.state_delete(&key).await;
            continue;
        }
        return mcp_bridge::answer_to(&body, &up_id)
            .map(|answer| Asked::Answer(mcp_bridge::with_id(&answer, &id)))
            .ok_or_else(|| GatewayError::Upstream {
                status: 502,
                code: "upstream_invalid_response",
                message: format!(
                    "MCP server `{}` of `{}` did not answer (HTTP {status}).",
                    member.name, call.route.name
                ),
                detail: None,
            });
    }
    Err(GatewayError::Upstream {
        status: 502,
        code: "upstream_handshake_failed",
        message: format!(
            "MCP server `{}` of `{}` keeps forgetting its sessions.",
            member.name, call.route.name
        ),
        detail: None,
    })
}

/// What a list method lists, and whether its names are prefixed.
fn listed(method: &str) -> Option<(&'static str, bool)> {
    match method {
        "tools/list" => Some(("tools", true)),
        "prompts/list" => Some(("prompts", true)),
        "resources/list" => Some(("resources", false)),
        "resources/templates/list" => Some(("resourceTemplates", false)),
        _ => None,
    }
}

/// A cursor of the gateway's: each server's cursor, by server name (hex of their JSON: opaque to
/// clients, as MCP cursors are).
fn encode_cursor(cursors: &serde_json::Map<String, Value>) -> String {
    Value::Object(cursors.clone())
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(cursor: &str) -> Option<serde_json::Map<String, Value>> {
    if !cursor.len().is_multiple_of(2) || cursor.len() > 64 * 1024 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    match serde_json::from_slice(&bytes?).ok()? {
        Value::Object(map) if map.values().all(Value::is_string) => Some(map),
        _ => None,
    }
}

/// The member a prefixed name belongs to, and the name the member knows.
fn split<'a>(server: &'a McpServer, name: &'a str) -> Option<(&'a McpMember, &'a str)> {
    let (prefix, rest) = name.split_once('_')?;
    let member = server.members.iter().find(|m| m.name == prefix)?;
    Some((member, rest))
}

/// The answer to one JSON-RPC message on a proxy with several servers.
pub(crate) async fn serve<P: Platform>(
    call: &mut Call<P>,
    server: &McpServer,
    message: &MessageView,
    base: &Headers,
    consumer: Option<&str>,
    session: Option<&str>,
) -> Result<Reply<P::Body>, GatewayError> {
    let modern = mcp::header(&message.headers, "mcp-protocol-version").is_some_and(|v| v >= MODERN);
    let finish = |status: u16, reply: Value, method: &str| {
        let reply = if modern {
            mcp_bridge::modernize(method, reply)
        } else {
            reply
        };
        Reply::Full(json_full(status, &reply))
    };
    match message.method.as_str() {
        "GET" => {
            let reply = error(
                &Value::Null,
                -32000,
                "This MCP proxy offers no event stream.",
            );
            return Ok(Reply::Full(json_full(405, &reply)));
        }
        "DELETE" => {
            if let Some(sid) = session {
                let _ = call
                    .platform
                    .state_delete(&mcp_sessions::key(&call.route.name, sid))
                    .await;
            }
            return Ok(Reply::Full(json_full(200, &json!({}))));
        }
        _ => {}
    }
    let request: Value = serde_json::from_slice(&message.body).unwrap_or(Value::Null);
    if request.is_array() {
        let reply = error(
            &Value::Null,
            -32600,
            "Batches are not accepted by an MCP proxy with several servers: send one message per request.",
        );
        return Ok(Reply::Full(json_full(400, &reply)));
    }
    let Some(id) = request.get("id").cloned() else {
        // Notifications (`initialized`, `cancelled`...) concern the gateway's own session.
        return Ok(Reply::Full(Full {
            status: 202,
            headers: Vec::new(),
            body: Bytes::new(),
            is_stream: false,
        }));
    };
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let info = json!({"name": call.route.name, "version": env!("CARGO_PKG_VERSION")});
    let capabilities = json!({"tools": {"listChanged": false}, "prompts": {"listChanged": false},
                              "resources": {"listChanged": false, "subscribe": false}});
    match method.as_str() {
        "initialize" => {
            let asked = request
                .pointer("/params/protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let agreed = if LEGACY_REVISIONS.contains(&asked) {
                asked
            } else {
                LEGACY
            };
            let sid = mcp_bridge::new_session(call, consumer).await?;
            let result = json!({"protocolVersion": agreed, "capabilities": capabilities, "serverInfo": info});
            let mut full = json_full(200, &json!({"jsonrpc": "2.0", "id": id, "result": result}));
            full.headers.push(("mcp-session-id".into(), sid));
            return Ok(Reply::Full(full));
        }
        "server/discover" => {
            let result = json!({"supportedVersions": [MODERN], "capabilities": capabilities,
                                "_meta": {"io.modelcontextprotocol/serverInfo": info}});
            return Ok(finish(
                200,
                json!({"jsonrpc": "2.0", "id": id, "result": result}),
                &method,
            ));
        }
        "ping" => {
            return Ok(finish(
                200,
                json!({"jsonrpc": "2.0", "id": id, "result": {}}),
                &method,
            ));
        }
        _ => {}
    }
    if let Some((field, prefixed)) = listed(&method) {
        let mut merged: Vec<Value> = Vec::new();
        let mut names = std::collections::HashSet::new();
        // The client's cursor holds each server's: a later page asks only the servers that had
        // more, each for its own next page.
        let cursors = match request.pointer("/params/cursor").and_then(Value::as_str) {
            Some(c) => match decode_cursor(c) {
                Some(map) => Some(map),
                None => {
                    let reply = error(
                        &id,
                        -32602,
                        "Invalid cursor: pass back the nextCursor of the previous page.",
                    );
                    return Ok(finish(200, reply, &method));
                }
            },
            None => None,
        };
        let mut next = serde_json::Map::new();
        for member in &server.members {
            let mut ask_list = json!({"jsonrpc": "2.0", "id": id, "method": method});
            if let Some(map) = &cursors {
                match map.get(&member.name) {
                    Some(c) => ask_list["params"] = json!({"cursor": c}),
                    None => continue,
                }
            }
            let answer = ask(call, server, member, base, consumer, &ask_list, None).await;
            if let Ok(Asked::Answer(a)) = &answer
                && let Some(more) = a.pointer("/result/nextCursor").filter(|c| c.is_string())
            {
                next.insert(member.name.clone(), more.clone());
            }
            let items = match answer {
                Ok(Asked::Answer(a)) if a.get("result").is_some() => a
                    .pointer(&format!("/result/{field}"))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                failed => {
                    let why = match failed {
                        Ok(Asked::Answer(a)) => {
                            a.get("error").map(Value::to_string).unwrap_or_default()
                        }
                        Ok(Asked::Stream(_)) => "an event stream".into(),
                        Err(e) => e.to_string(),
                    };
                    if server.fail_open {
                        call.platform.warn(
                            &call.request_id,
                            &format!("MCP server `{}` left out of {method}: {why}", member.name),
                        );
                        continue;
                    }
                    let reply = error(
                        &id,
                        -32603,
                        &format!("MCP server `{}` failed: {why}", member.name),
                    );
                    return Ok(finish(502, reply, &method));
                }
            };
            for mut item in items {
                let key = if prefixed { "name" } else { "uri" };
                let Some(name) = item.get(key).and_then(Value::as_str).map(str::to_owned) else {
                    continue;
                };
                let shown = if prefixed && server.prefixed {
                    format!("{}_{name}", member.name)
                } else {
                    name
                };
                if !names.insert(shown.clone()) {
                    call.platform.warn(
                        &call.request_id,
                        &format!(
                            "`{shown}` of MCP server `{}` is already listed: left out",
                            member.name
                        ),
                    );
                    continue;
                }
                item[key] = json!(shown);
                merged.push(item);
            }
        }
        let mut result = json!({field: merged});
        if !next.is_empty() {
            result["nextCursor"] = json!(encode_cursor(&next));
        }
        let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
        return Ok(finish(200, reply, &method));
    }
    // A call: to the server its name (or, for a resource, its URI) belongs to.
    let named = match method.as_str() {
        "tools/call" | "prompts/get" => request.pointer("/params/name").and_then(Value::as_str),
        _ => None,
    };
    let targets: Vec<(McpMember, Value)> = match named {
        Some(name) if server.prefixed => match split(server, name) {
            Some((member, own)) => {
                let mut forwarded = request.clone();
                forwarded["params"]["name"] = json!(own);
                vec![(member.clone(), forwarded)]
            }
            None => Vec::new(),
        },
        // Unprefixed names, resources and other requests: each server in turn until one answers.
        _ => server
            .members
            .iter()
            .map(|m| (m.clone(), request.clone()))
            .collect(),
    };
    let mut last = error(
        &id,
        -32602,
        &format!(
            "No server of this proxy has `{}`.",
            named.unwrap_or(&method)
        ),
    );
    // A tool call named with its server's prefix has one server to go to: its event stream is
    // relayed as it comes.
    let relay =
        (method == "tools/call" && targets.len() == 1 && named.is_some() && server.prefixed)
            .then_some(modern);
    for (member, forwarded) in targets {
        match ask(call, server, &member, base, consumer, &forwarded, relay).await {
            Ok(Asked::Stream(relayed)) => return Ok(Reply::Stream(*relayed)),
            Ok(Asked::Answer(answer)) if answer.get("result").is_some() => {
                return Ok(finish(200, answer, &method));
            }
            Ok(Asked::Answer(answer)) => last = answer,
            Err(e) if server.fail_open => {
                call.platform.warn(
                    &call.request_id,
                    &format!("MCP server `{}`: {e}", member.name),
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(finish(200, last, &method))
}
