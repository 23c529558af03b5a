//! Several MCP servers behind one proxy. The gateway is the client's server: it answers
//! `initialize` / `server/discover` and `ping` itself (its own sessions, crate::mcp_sessions),
//! merges the servers' tools, prompts and resources (tool and prompt names prefixed with the
//! server's name, `github_create_issue`, unless `prefix: none`), and sends each call to the
//! server it names, in a session the gateway keeps with each server for each consumer (as the
//! bridge does, crate::mcp_bridge). A server that fails is left out of lists (`fail-open`, the
//! default) or fails them. Lists are the servers' first pages; a tool call's answer is read
//! whole (no progress notifications), and there is no GET stream (405).

use bytes::Bytes;
use serde_json::{Value, json};

use crate::call::Call;
use crate::mcp::{self, Full};
use crate::mcp_bridge::{self, LEGACY, LEGACY_REVISIONS, MODERN};
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

/// The server `member` as the one server of a proxy (for `mcp::send`).
fn as_server(server: &McpServer, member: &McpMember) -> McpServer {
    McpServer {
        url: member.url.clone(),
        timeout_ms: member.timeout_ms,
        credential: member.credential.clone(),
        members: Vec::new(),
        ..server.clone()
    }
}

/// Sends `message` (a request with an id) to `member` in the gateway's session with it;
/// returns its answer (a result or an error message).
async fn ask<P: Platform>(
    call: &mut Call<P>,
    server: &McpServer,
    member: &McpMember,
    base: &Headers,
    consumer: Option<&str>,
    message: &Value,
) -> Result<Value, GatewayError> {
    let single = as_server(server, member);
    let mut headers = base.clone();
    mcp::add_credential(call, member.credential.as_ref(), &mut headers)?;
    let key = format!(
        "gateway:mcp-members|{}/{}/{}",
        call.route.name,
        consumer.unwrap_or("-"),
        member.name
    );
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    for attempt in 0..2 {
        let up = mcp_bridge::upstream_session(call, &single, &headers, &key).await?;
        let resp = mcp::send(
            call,
            &single,
            "POST",
            mcp_bridge::in_session(&headers, Some(&up)),
            Bytes::from(message.to_string()),
        )
        .await?;
        let status = resp.status;
        let body = mcp::read(call, &single, resp.body).await?;
        if status == 404 && attempt == 0 {
            let _ = call.platform.state_delete(&key).await;
            continue;
        }
        return mcp_bridge::answer_to(&body, &id).ok_or_else(|| GatewayError::Upstream {
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
) -> Result<Full, GatewayError> {
    let modern = mcp::header(&message.headers, "mcp-protocol-version").is_some_and(|v| v >= MODERN);
    let finish = |status: u16, reply: Value, method: &str| {
        let reply = if modern {
            mcp_bridge::modernize(method, reply)
        } else {
            reply
        };
        json_full(status, &reply)
    };
    match message.method.as_str() {
        "GET" => {
            let reply = error(
                &Value::Null,
                -32000,
                "This MCP proxy offers no event stream.",
            );
            return Ok(json_full(405, &reply));
        }
        "DELETE" => {
            if let Some(sid) = session {
                let _ = call
                    .platform
                    .state_delete(&mcp_sessions::key(&call.route.name, sid))
                    .await;
            }
            return Ok(json_full(200, &json!({})));
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
        return Ok(json_full(400, &reply));
    }
    let Some(id) = request.get("id").cloned() else {
        // Notifications (`initialized`, `cancelled`...) concern the gateway's own session.
        return Ok(Full {
            status: 202,
            headers: Vec::new(),
            body: Bytes::new(),
            is_stream: false,
        });
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
            return Ok(full);
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
        for member in &server.members {
            let ask_list = json!({"jsonrpc": "2.0", "id": id, "method": method});
            let answer = ask(call, server, member, base, consumer, &ask_list).await;
            let items = match answer {
                Ok(a) if a.get("result").is_some() => a
                    .pointer(&format!("/result/{field}"))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                failed => {
                    let why = match failed {
                        Ok(a) => a.get("error").map(Value::to_string).unwrap_or_default(),
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
        let reply = json!({"jsonrpc": "2.0", "id": id, "result": {field: merged}});
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
    for (member, forwarded) in targets {
        match ask(call, server, &member, base, consumer, &forwarded).await {
            Ok(answer) if answer.get("result").is_some() => {
                return Ok(finish(200, answer, &method));
            }
            Ok(answer) => last = answer,
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
