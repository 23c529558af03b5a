//! The tools an MCP proxy offers, as the controller lists them (`GET
//! /api/v1/mcp-proxies/{name}/tools`): asked of the proxy's `mcp-translator` (a REST API), or
//! of its MCP server in a session of the initialize era with the proxy's credential. Tool
//! access control does not apply: the operator sees every tool.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use weir_core::chain::{Admission, Stop};
use weir_core::{McpServer, MessageView, RequestState, RouteKind};
use weir_runtime::ChainRun;

use crate::configure::{Route, State};

/// Why the tools could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error("no MCP proxy `{0}`")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
}

/// The tools of MCP proxy `name` (their `tools/list` entries).
pub(crate) async fn list(state: &State, name: &str) -> Result<Vec<Value>, ToolsError> {
    let route = state
        .routes
        .iter()
        .find(|r| r.info.kind == RouteKind::Mcp && r.info.name == name)
        .ok_or_else(|| ToolsError::NotFound(name.to_owned()))?;
    match route.chain.only("mcp-translator") {
        Some(spec) => from_translator(route, spec).await,
        None => {
            let server = route.info.mcp.as_ref().ok_or_else(|| {
                ToolsError::Unavailable(format!("MCP proxy `{name}` has no server"))
            })?;
            if server.members.is_empty() {
                return from_server(state, name, server).await;
            }
            // Several servers: each one's tools, named as the proxy shows them.
            let mut tools = Vec::new();
            for member in &server.members {
                let single = server.as_member(member);
                let listed = match from_server(state, name, &single).await {
                    Ok(listed) => listed,
                    // As the data plane does: left out, or the whole list fails.
                    Err(_) if server.fail_open => continue,
                    Err(e) => {
                        return Err(ToolsError::Unavailable(format!(
                            "server `{}`: {e}",
                            member.name
                        )));
                    }
                };
                for mut tool in listed {
                    if server.prefixed
                        && let Some(n) = tool.get("name").and_then(Value::as_str)
                    {
                        tool["name"] = json!(format!("{}_{n}", member.name));
                    }
                    tools.push(tool);
                }
            }
            Ok(tools)
        }
    }
}

async fn from_translator(
    route: &Route,
    spec: weir_runtime::ChainSpec,
) -> Result<Vec<Value>, ToolsError> {
    let mut run = ChainRun::new(
        Arc::new(spec),
        RequestState {
            request_id: format!("controller-tools-{}", crate::proxy::now_ms()),
            route: route.info.name.clone(),
            route_kind: RouteKind::Mcp,
            endpoint: "tools/list".into(),
            consumer: None,
            attributes: Default::default(),
            llm: None,
            received_at_ms: crate::proxy::now_ms(),
        },
    );
    let mut message = MessageView {
        method: "POST".into(),
        path: route.prefix.clone(),
        status: 0,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (
                "accept".into(),
                "application/json, text/event-stream".into(),
            ),
        ],
        body: Bytes::from(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string()),
    };
    let stop = weir_core::chain::request_phase(&mut run, &mut message, &mut Admission::default())
        .await
        .map_err(|e| ToolsError::Unavailable(e.to_string()))?;
    let Some(Stop::Respond { reply, .. }) = stop else {
        return Err(ToolsError::Unavailable(
            "the proxy's mcp-translator did not answer tools/list".into(),
        ));
    };
    tools_of(&reply.body, 1)
}

/// The tools of a `tools/list` answer (JSON or an event stream) to request `id`.
fn tools_of(body: &[u8], id: i64) -> Result<Vec<Value>, ToolsError> {
    let message = answer(body, id)?;
    Ok(message
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

/// The result of the answer to request `id` in `body`, or its error.
fn answer(body: &[u8], id: i64) -> Result<Value, ToolsError> {
    let messages = weir_core::mcp::rpc_messages(body);
    let id = id.to_string();
    let m = messages
        .iter()
        .find(|m| m.id.as_deref() == Some(id.as_str()))
        .ok_or_else(|| {
            ToolsError::Unavailable(format!(
                "the answer is not a JSON-RPC answer to request {id}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ))
        })?;
    if let Some(error) = &m.error {
        return Err(ToolsError::Unavailable(format!(
            "the server answered an error: {} {}",
            error.code, error.message
        )));
    }
    m.result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .ok_or_else(|| ToolsError::Unavailable("the answer has no result".into()))
}

async fn from_server(
    state: &State,
    name: &str,
    server: &McpServer,
) -> Result<Vec<Value>, ToolsError> {
    let mut headers: Vec<(String, String)> = vec![
        ("content-type".into(), "application/json".into()),
        (
            "accept".into(),
            "application/json, text/event-stream".into(),
        ),
    ];
    if let Some(credential) = &server.credential {
        headers.push(credential.header_pair().map_err(|var| {
            ToolsError::Unavailable(format!(
                "MCP proxy `{name}` has no credential for its server: set {var}"
            ))
        })?);
    }
    let client = &state.shared.client;
    let timeout = std::time::Duration::from_millis(server.timeout_ms.min(30_000));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "weir-controller", "version": env!("CARGO_PKG_VERSION")}}});
    let (status, got, body) = post(client, &server.url, &headers, init, timeout).await?;
    if !(200..300).contains(&status) {
        return Err(ToolsError::Unavailable(format!(
            "the MCP server answered initialize with HTTP {status}"
        )));
    }
    let result = answer(&body, 1)?;
    if let Some(session) = got
        .iter()
        .find(|(n, _)| n == "mcp-session-id")
        .map(|(_, v)| v.clone())
    {
        headers.push(("mcp-session-id".into(), session));
    }
    if let Some(v) = result.get("protocolVersion").and_then(Value::as_str) {
        headers.push(("mcp-protocol-version".into(), v.to_owned()));
    }
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    post(client, &server.url, &headers, note, timeout).await?;
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..50_i64 {
        let mut request = json!({"jsonrpc": "2.0", "id": page + 2, "method": "tools/list"});
        if let Some(c) = &cursor {
            request["params"] = json!({"cursor": c});
        }
        let (status, _, body) = post(client, &server.url, &headers, request, timeout).await?;
        if !(200..300).contains(&status) {
            return Err(ToolsError::Unavailable(format!(
                "the MCP server answered tools/list with HTTP {status}"
            )));
        }
        let result = answer(&body, page + 2)?;
        tools.extend(
            result
                .get("tools")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
        cursor = result
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    Ok(tools)
}

async fn post(
    client: &crate::upstream::HttpClient,
    url: &str,
    headers: &[(String, String)],
    body: Value,
    timeout: std::time::Duration,
) -> Result<(u16, Vec<(String, String)>, Bytes), ToolsError> {
    let mut builder = http::Request::builder().method("POST").uri(url);
    for (n, v) in headers {
        builder = builder.header(n, v);
    }
    let request = builder
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| ToolsError::Unavailable(format!("invalid request: {e}")))?;
    let unreachable =
        |e: String| ToolsError::Unavailable(format!("the MCP server could not be reached: {e}"));
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| unreachable(format!("no answer within {} ms", timeout.as_millis())))?
        .map_err(|e| unreachable(crate::proxy::with_causes(&e)))?;
    let status = response.status().as_u16();
    let headers = crate::proxy::header_pairs(response.headers());
    let body = tokio::time::timeout(
        timeout,
        http_body_util::Limited::new(response.into_body(), 8 << 20).collect(),
    )
    .await
    .map_err(|_| unreachable(format!("no whole answer within {} ms", timeout.as_millis())))?
    .map_err(|e| unreachable(e.to_string()))?
    .to_bytes();
    Ok((status, headers, body))
}

/// Fetches the OpenAPI document of every MCP proxy over `upstream.openapi.spec-url` and has the
/// proxy's `mcp-translator` check it as it would an inline `spec`, so that a document it cannot
/// translate is refused when the proxy is created or changed (the controller), with the
/// operation named. Only proxies whose upstream differs from `before`'s are checked, so that an
/// unrelated change does not depend on a documentation server. (At start the documents are not
/// fetched: the gateway starts offline.)
pub(crate) async fn check_documents(
    state: &State,
    before: &weir_config::GatewayConfig,
) -> Result<(), crate::ConfigureError> {
    for (i, proxy) in state.config.mcp_proxies.iter().enumerate() {
        let Some(url) = proxy
            .upstream
            .openapi
            .as_ref()
            .and_then(|a| a.spec_url.clone())
        else {
            continue;
        };
        let unchanged = before
            .mcp_proxies
            .iter()
            .any(|p| p.name == proxy.name && p.upstream == proxy.upstream);
        if unchanged {
            continue;
        }
        let path = format!("mcp-proxies[{i}].upstream.openapi.spec-url");
        let refused = |message: String| crate::ConfigureError::Config {
            path: path.clone(),
            message,
        };
        let Some((policy, config)) = state
            .routes
            .iter()
            .find(|r| r.info.kind == RouteKind::Mcp && r.info.name == proxy.name)
            .and_then(|r| r.chain.entry("mcp-translator"))
        else {
            continue;
        };
        let document = fetch_document(&state.shared.client, &url)
            .await
            .map_err(|e| refused(format!("the document at {url} could not be read: {e}")))?;
        let mut config: Value = serde_json::from_str(&config).unwrap_or_default();
        if let Some(c) = config.as_object_mut() {
            c.remove("spec-url");
            c.insert("spec".into(), document);
        }
        if let Err((field, message)) = policy.validate_entry(&path, "", &config.to_string()).await {
            let inner = field.trim_start_matches('.');
            let inner = inner.strip_prefix("spec.").unwrap_or(inner);
            return Err(refused(if inner.is_empty() {
                format!("the document at {url}: {message}")
            } else {
                format!("the document at {url}: {inner}: {message}")
            }));
        }
    }
    Ok(())
}

/// With `prefix: none`, two servers of one proxy must not offer a tool of the same name (the
/// first would hide the other's): when such a proxy is created or its upstream changes, the
/// controller asks each server for its tools and refuses the change, naming the tool and both
/// servers. A server that cannot be reached is not checked (the data plane warns when it lists
/// a name twice).
pub(crate) async fn check_unprefixed(
    state: &State,
    before: &weir_config::GatewayConfig,
) -> Result<(), crate::ConfigureError> {
    for (i, proxy) in state.config.mcp_proxies.iter().enumerate() {
        let unchanged = before
            .mcp_proxies
            .iter()
            .any(|p| p.name == proxy.name && p.upstream == proxy.upstream);
        let Some(server) = state
            .routes
            .iter()
            .find(|r| r.info.kind == RouteKind::Mcp && r.info.name == proxy.name)
            .and_then(|r| r.info.mcp.as_ref())
        else {
            continue;
        };
        if unchanged || server.prefixed || server.members.len() < 2 {
            continue;
        }
        let mut owners: std::collections::HashMap<String, String> = Default::default();
        for member in &server.members {
            let single = server.as_member(member);
            let Ok(tools) = from_server(state, &proxy.name, &single).await else {
                continue;
            };
            for tool in tools {
                let Some(name) = tool.get("name").and_then(Value::as_str) else {
                    continue;
                };
                if let Some(first) = owners.insert(name.to_owned(), member.name.clone())
                    && first != member.name
                {
                    return Err(crate::ConfigureError::Config {
                        path: format!("mcp-proxies[{i}].upstream.prefix"),
                        message: format!(
                            "servers `{first}` and `{}` both offer a tool named `{name}`: with \
                             `prefix: none` tool names must be unique across the servers (use \
                             `prefix: name`, which names it `{first}_{name}` and `{}_{name}`)",
                            member.name, member.name
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

async fn fetch_document(client: &crate::upstream::HttpClient, url: &str) -> Result<Value, String> {
    let request = http::Request::builder()
        .method("GET")
        .uri(url)
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let timeout = std::time::Duration::from_secs(10);
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
        .map_err(|e| crate::proxy::with_causes(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    let body = tokio::time::timeout(
        timeout,
        http_body_util::Limited::new(response.into_body(), 16 << 20).collect(),
    )
    .await
    .map_err(|_| "no whole answer within 10 s".to_owned())?
    .map_err(|e| e.to_string())?
    .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| format!("not JSON ({e}); for a YAML document, put it inline in `spec`"))
}
