//! MCP's wire around the gateway's loop: JSON-RPC messages in a POST body, the errors the
//! gateway answers with, the headers it forwards or checks (Origin, `Mcp-Method`/`Mcp-Name`),
//! and OAuth protected-resource metadata (RFC 9728) for MCP proxies.

use serde_json::{Value, json};

use crate::*;

/// OAuth on an MCP proxy: where clients get tokens for it (RFC 9728 protected-resource
/// metadata, MCP's authorization). The proxy's policies check the tokens (`auth` in JWT mode,
/// with this proxy as the audience).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct McpOAuth {
    /// The authorization servers' issuer URLs.
    pub authorization_servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    /// The proxy's URL as clients know it (the token audience); by default from the request
    /// (`X-Forwarded-Proto` or, but for loopback hosts, `https`; `Host`; the context path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// Where protected-resource metadata lives (RFC 9728 §3.1: this, then the resource's path).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

pub(crate) fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The URL of the proxy at `prefix` as the client reached it, and of its metadata.
pub(crate) fn resource_urls(oauth: &McpOAuth, prefix: &str, headers: &Headers) -> (String, String) {
    let host = header(headers, "host").unwrap_or("localhost");
    let origin = match &oauth.resource {
        Some(r) => r.trim_end_matches(prefix).trim_end_matches('/').to_owned(),
        None => {
            let loopback = host.starts_with("127.")
                || host.starts_with("localhost")
                || host.starts_with("[::1]");
            let scheme = header(headers, "x-forwarded-proto").unwrap_or(if loopback {
                "http"
            } else {
                "https"
            });
            format!("{scheme}://{host}")
        }
    };
    let resource = oauth
        .resource
        .clone()
        .unwrap_or_else(|| format!("{origin}{prefix}"));
    (resource, format!("{origin}{METADATA_PATH}{prefix}"))
}

/// The answer to a GET of an MCP proxy's protected-resource metadata
/// (`/.well-known/oauth-protected-resource<context-path>`); `None` when `path` is not one.
/// `proxies`: each MCP proxy's route prefix (`""` for `/`) and OAuth settings.
pub fn metadata<'a>(
    mut proxies: impl Iterator<Item = (&'a str, &'a McpOAuth)>,
    request: &ClientRequest,
    request_id: &str,
) -> Option<Response> {
    let path = request.path.split('?').next().unwrap_or_default();
    let prefix = path.strip_prefix(METADATA_PATH)?;
    let (prefix, oauth) = proxies.find(|(p, _)| *p == prefix)?;
    let (resource, _) = resource_urls(oauth, prefix, &request.headers);
    let mut body = json!({
        "resource": resource,
        "authorization_servers": oauth.authorization_servers,
        "bearer_methods_supported": ["header"],
    });
    if !oauth.scopes_supported.is_empty() {
        body["scopes_supported"] = json!(oauth.scopes_supported);
    }
    let mut response = Response::json(200, body.to_string().into_bytes(), request_id);
    response
        .headers
        .push(("cache-control".into(), "max-age=3600".into()));
    Some(response)
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<String>,
}

/// One JSON-RPC message, as policies see it (`weir:policy/types.rpc-message`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpcMessage {
    pub id: Option<String>,
    pub method: Option<String>,
    pub params: Option<String>,
    pub tool_name: Option<String>,
    pub tool_arguments: Option<String>,
    pub result: Option<String>,
    pub error: Option<RpcError>,
}

fn one(v: &Value) -> Option<RpcMessage> {
    let obj = v.as_object()?;
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return None;
    }
    let method = obj.get("method").and_then(Value::as_str).map(str::to_owned);
    let params = obj.get("params");
    let is_call = method.as_deref() == Some("tools/call");
    Some(RpcMessage {
        id: obj.get("id").filter(|i| !i.is_null()).map(Value::to_string),
        tool_name: params
            .filter(|_| is_call)
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        tool_arguments: params
            .filter(|_| is_call)
            .and_then(|p| p.get("arguments"))
            .map(Value::to_string),
        params: params.map(Value::to_string),
        method,
        result: obj.get("result").map(Value::to_string),
        error: obj.get("error").and_then(|e| {
            Some(RpcError {
                code: e.get("code")?.as_i64()?,
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                data: e.get("data").map(Value::to_string),
            })
        }),
    })
}

/// The JSON-RPC messages of a body: one, or a batch, or the `data` of each event of an event
/// stream (an MCP server's answer to a POST); empty when it is not JSON-RPC.
pub fn rpc_messages(body: &[u8]) -> Vec<RpcMessage> {
    let of = |v: Value| match v {
        Value::Array(batch) => batch.iter().filter_map(one).collect(),
        v => one(&v).into_iter().collect::<Vec<_>>(),
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => of(v),
        Err(_) => std::str::from_utf8(body)
            .map(|text| {
                mcp_tools::split_events(text)
                    .into_iter()
                    .filter_map(|event| serde_json::from_str(&mcp_tools::event_data(event)?).ok())
                    .flat_map(of)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A JSON-RPC error response body. The gateway's refusals use code -32000 with the stable code,
/// the HTTP status and the request id in `data`.
pub fn error_body(
    id: Option<&Value>,
    status: u16,
    code: &str,
    message: &str,
    request_id: &str,
) -> Vec<u8> {
    let rpc_code = match code {
        "parse_error" => -32700,
        "invalid_request" => -32600,
        "header_mismatch" => -32020,
        _ => -32000,
    };
    let body = json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": {
            "code": rpc_code,
            "message": message,
            "data": {"code": code, "status": status, "request_id": request_id},
        },
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Headers of the client's request that the MCP server gets.
pub const FORWARDED: &[&str] = &[
    "accept",
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

/// A browser's request from an origin the proxy does not allow: 403 (MCP: servers validate
/// `Origin` against DNS rebinding). Allowed: no `Origin` (not a browser), the proxy's own
/// origin (its host is the request's `Host`), and the proxy's `allowed-origins`.
pub(crate) fn origin_refused(
    route: &RouteInfo,
    request: &ClientRequest,
    request_id: &str,
) -> Option<Response> {
    let header = |name: &str| header(&request.headers, name);
    let origin = header("origin")?;
    let allowed = route
        .mcp
        .as_ref()
        .map_or(&[][..], |m| &m.allowed_origins[..]);
    let host_of = |o: &str| o.split_once("://").map_or(o, |(_, rest)| rest).to_owned();
    let same_origin = header("host").is_some_and(|h| h.eq_ignore_ascii_case(&host_of(origin)));
    if same_origin || allowed.iter().any(|p| mcp_tools::glob(p, origin)) {
        return None;
    }
    let body = error_body(
        None,
        403,
        "origin_not_allowed",
        &format!(
            "Origin `{origin}` may not call MCP proxy `{}`: add it to the proxy's allowed-origins.",
            route.name
        ),
        request_id,
    );
    Some(Response::json(403, body, request_id))
}

/// The 2026-07-28 revision mirrors a request's method, and the name it acts on, in the
/// `Mcp-Method` and `Mcp-Name` headers for routing; a request whose headers say another thing
/// than its body is refused (-32020), so that what policies read (the body) and what routers
/// read (the headers) agree. A name sent base64-encoded (`=?base64?...?=`) is left to the server.
pub(crate) fn header_mismatch(headers: &Headers, body: &Value) -> Option<String> {
    let header = |name: &str| header(headers, name);
    let method = body.get("method").and_then(Value::as_str);
    if let Some(said) = header("mcp-method")
        && Some(said) != method
    {
        return Some(format!(
            "The Mcp-Method header (`{said}`) does not match the body's method (`{}`).",
            method.unwrap_or("none")
        ));
    }
    let key = match method {
        Some("tools/call" | "prompts/get") => "name",
        Some("resources/read") => "uri",
        _ => return None,
    };
    let named = body
        .get("params")
        .and_then(|p| p.get(key))
        .and_then(Value::as_str);
    match header("mcp-name") {
        Some(said) if said.starts_with("=?base64?") => None,
        Some(said) if named.is_some_and(|n| n != said) => Some(format!(
            "The Mcp-Name header (`{said}`) does not match the body's `{key}` (`{}`).",
            named.unwrap_or_default()
        )),
        _ => None,
    }
}
