//! The `mcp-translator` policy: an MCP server made of a REST API. It answers an MCP proxy's
//! requests itself (`initialize` / `server/discover`, `tools/list`, `tools/call`, `ping`) in
//! the client's protocol era, and turns each tool call into a REST request sent through the
//! host's `http-client` (so it works wherever the policy runs, the edge included).
//!
//! Tools come from an OpenAPI 3.0/3.1 document (inline in `spec`, or fetched from `spec-url`
//! and kept in the instance's key-value namespace for `spec-ttl-s`) and from endpoints
//! declared by hand in `endpoints`. The policy holds no credential: the host adds the proxy's
//! (`upstream.openapi.api-key-env`) to the requests it sends to `base-url`.
//!
//! Arguments are checked against the tool's input schema before any request; JSON answers
//! become structured content, other statuses and failures tool errors (`isError: true`) that
//! a model can read.

pub mod openapi;

use openapi::{In, Operation, Selection, SpecError};
use serde::Deserialize;
use serde_json::{Value, json};
use weir_policy_sdk::{
    ConfigError, Context, Message, Phase, Policy, Reply, RouteKind, Verdict, http_client, kv,
};

/// The policy's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// An OpenAPI document: an object, or its JSON text.
    #[serde(default)]
    pub spec: Option<Value>,
    /// Where to fetch the OpenAPI document (JSON) on first use.
    #[serde(default)]
    pub spec_url: Option<String>,
    /// The API's base URL: operation paths and relative tool URLs are appended to it.
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub include_tags: Vec<String>,
    #[serde(default)]
    pub exclude_tags: Vec<String>,
    #[serde(default)]
    pub include_operations: Vec<String>,
    #[serde(default)]
    pub exclude_operations: Vec<String>,
    /// REST endpoints declared by hand as tools.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default = "thirty_seconds")]
    pub timeout_ms: u32,
    #[serde(default = "five_minutes")]
    pub spec_ttl_s: u64,
    /// The name the server gives itself (default: the proxy's name).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// A REST endpoint offered as a tool without an OpenAPI document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Endpoint {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `GET`, `POST`, ...
    pub method: String,
    /// A URL template, absolute or relative to `base-url`: `/orders/{id}`. Arguments named in
    /// it fill it; the others go in the query (GET, DELETE, HEAD) or in a JSON body object.
    pub url: String,
    /// The tool's input schema (default: any object).
    #[serde(default)]
    pub input_schema: Option<Value>,
}

fn thirty_seconds() -> u32 {
    30_000
}

fn five_minutes() -> u64 {
    300
}

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
/// Revisions of the initialize era this server speaks, oldest first.
const LEGACY: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Revisions of the stateless era.
const MODERN: [&str; 1] = ["2026-07-28"];
const VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

fn spec_error(prefix: &str, e: SpecError) -> ConfigError {
    ConfigError::at(format!("{prefix}.{}", e.path), e.message)
}

impl Config {
    fn selection(&self) -> Selection<'_> {
        Selection {
            include_tags: &self.include_tags,
            exclude_tags: &self.exclude_tags,
            include_operations: &self.include_operations,
            exclude_operations: &self.exclude_operations,
        }
    }

    /// The inline document, parsed.
    fn inline_spec(&self) -> Result<Option<Value>, ConfigError> {
        match &self.spec {
            None => Ok(None),
            Some(Value::String(text)) => serde_json::from_str(text)
                .map(Some)
                .map_err(|e| ConfigError::at("spec", format!("not a JSON document: {e}"))),
            Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
            Some(_) => Err(ConfigError::at(
                "spec",
                "give the OpenAPI document as an object, or as its JSON text",
            )),
        }
    }

    /// The declared tools as operations.
    fn declared(&self) -> Result<Vec<Operation>, ConfigError> {
        let mut out = Vec::new();
        for (i, t) in self.endpoints.iter().enumerate() {
            let at = |field: &str| format!("endpoints[{i}].{field}");
            if t.name.is_empty()
                || t.name.len() > openapi::MAX_NAME
                || openapi::sanitise(&t.name) != t.name
            {
                return Err(ConfigError::at(
                    at("name"),
                    format!(
                        "`{}` is not a tool name: 1 to 128 of A-Z a-z 0-9 _ - . (e.g. `{}`)",
                        t.name,
                        openapi::sanitise(&t.name)
                    ),
                ));
            }
            let method = t.method.to_ascii_uppercase();
            if !METHODS.contains(&method.as_str()) {
                return Err(ConfigError::at(
                    at("method"),
                    format!("`{}` is not one of {}", t.method, METHODS.join(", ")),
                ));
            }
            let absolute = t.url.starts_with("http://") || t.url.starts_with("https://");
            if absolute && !is_http_url(&t.url) || !absolute && !t.url.starts_with('/') {
                return Err(ConfigError::at(
                    at("url"),
                    format!(
                        "`{}` is neither an http(s) URL nor a path starting with `/` (relative \
                         to base-url)",
                        t.url
                    ),
                ));
            }
            if !absolute && self.base_url.is_none() {
                return Err(ConfigError::at(
                    at("url"),
                    "a relative URL needs `base-url`",
                ));
            }
            let schema = t
                .input_schema
                .clone()
                .unwrap_or_else(|| json!({"type": "object"}));
            if let Err(e) = weir_jsonschema::Schema::compile(&schema) {
                return Err(ConfigError::at(at("input-schema"), e));
            }
            let mut params = Vec::new();
            for segment in t.url.split('{').skip(1) {
                let Some((var, _)) = segment.split_once('}') else {
                    return Err(ConfigError::at(at("url"), "a `{` without its `}`"));
                };
                let declared = schema.get("properties").and_then(|p| p.get(var)).is_some();
                if !declared {
                    return Err(ConfigError::at(
                        at("input-schema"),
                        format!("the URL has `{{{var}}}`: declare `{var}` in properties"),
                    ));
                }
                params.push(openapi::Param {
                    name: var.to_owned(),
                    location: In::Path,
                });
            }
            out.push(Operation {
                name: t.name.clone(),
                description: t.description.clone().unwrap_or_default(),
                method,
                path: t.url.clone(),
                params,
                body: false,
                input_schema: schema,
            });
        }
        Ok(out)
    }

    /// Every tool, fetching the document from `spec-url` if need be.
    fn operations(&self) -> Result<Vec<Operation>, String> {
        let mut ops = match self.inline_spec() {
            Ok(Some(doc)) => openapi::operations(&doc, &self.selection())
                .map_err(|e| format!("spec.{}: {}", e.path, e.message))?,
            Ok(None) => match &self.spec_url {
                Some(url) => {
                    let doc = self.fetched_spec(url)?;
                    openapi::operations(&doc, &self.selection())
                        .map_err(|e| format!("the document at {url}: {}: {}", e.path, e.message))?
                }
                None => Vec::new(),
            },
            Err(e) => return Err(e.message),
        };
        let declared = self
            .declared()
            .map_err(|e| format!("{}: {}", e.path, e.message))?;
        for d in declared {
            if ops.iter().any(|o| o.name == d.name) {
                return Err(format!(
                    "tool `{}` is declared in `endpoints` and is also an operation of the document",
                    d.name
                ));
            }
            ops.push(d);
        }
        Ok(ops)
    }

    /// The document at `url`, from the instance's key-value store or fetched.
    fn fetched_spec(&self, url: &str) -> Result<Value, String> {
        let key = format!("spec/{url}");
        if let Ok(Some(bytes)) = kv::get(&key)
            && let Ok(doc) = serde_json::from_slice(&bytes)
        {
            return Ok(doc);
        }
        let resp = http_client::send(&http_client::OutgoingRequest {
            method: "GET".into(),
            url: url.to_owned(),
            headers: vec![("accept".into(), "application/json".into())],
            body: None,
            timeout_ms: self.timeout_ms,
        })
        .map_err(|e| {
            format!(
                "the OpenAPI document at {url} could not be fetched: {}",
                http_failure(&e, self.timeout_ms)
            )
        })?;
        if !(200..300).contains(&resp.status) {
            return Err(format!(
                "the OpenAPI document at {url} could not be fetched: HTTP {}",
                resp.status
            ));
        }
        let doc: Value = serde_json::from_slice(&resp.body).map_err(|e| {
            format!("the document at {url} is not JSON ({e}); YAML documents: put the document in `spec`")
        })?;
        let _ = kv::set(&key, &resp.body, Some(self.spec_ttl_s.saturating_mul(1000)));
        Ok(doc)
    }
}

fn http_failure(e: &http_client::HttpError, timeout_ms: u32) -> String {
    match e {
        http_client::HttpError::Denied(m) => format!("the gateway may not reach it ({m})"),
        http_client::HttpError::Timeout => format!("no answer within {timeout_ms} ms"),
        http_client::HttpError::Failed(m) => m.clone(),
    }
}

/// Characters left as they are in a URL component (RFC 3986 unreserved).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An argument as URL or header text.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The REST request a tool call becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct RestRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// The request for calling `op` with `args` (already checked against its schema).
pub fn rest_request(op: &Operation, base_url: Option<&str>, args: &Value) -> RestRequest {
    let empty = serde_json::Map::new();
    let args = args.as_object().unwrap_or(&empty);
    let mut path = op.path.clone();
    for p in op.params.iter().filter(|p| p.location == In::Path) {
        let value = args.get(&p.name).map(text_of).unwrap_or_default();
        path = path.replace(&format!("{{{}}}", p.name), &encode(&value));
    }
    let mut url = if path.starts_with("http://") || path.starts_with("https://") {
        path
    } else {
        format!(
            "{}{path}",
            base_url.unwrap_or_default().trim_end_matches('/')
        )
    };
    let mut query: Vec<(String, String)> = Vec::new();
    let mut headers = vec![("accept".to_owned(), "application/json".to_owned())];
    let mut body = None;
    let named = |name: &str| op.params.iter().any(|p| p.name == name);
    for p in &op.params {
        let Some(v) = args.get(&p.name) else { continue };
        match p.location {
            In::Path => {}
            In::Query => match v {
                Value::Array(items) => {
                    query.extend(items.iter().map(|i| (p.name.clone(), text_of(i))));
                }
                Value::Null => {}
                other => query.push((p.name.clone(), text_of(other))),
            },
            In::Header => headers.push((p.name.to_ascii_lowercase(), text_of(v))),
        }
    }
    if op.body {
        if let Some(b) = args.get("body") {
            body = Some(b.to_string().into_bytes());
        }
    } else if op.params.iter().all(|p| p.location == In::Path) {
        // A declared tool: the arguments its URL does not take.
        let rest: serde_json::Map<String, Value> = args
            .iter()
            .filter(|(k, _)| !named(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if matches!(op.method.as_str(), "GET" | "DELETE" | "HEAD" | "OPTIONS") {
            for (k, v) in &rest {
                match v {
                    Value::Array(items) => {
                        query.extend(items.iter().map(|i| (k.clone(), text_of(i))))
                    }
                    Value::Null => {}
                    other => query.push((k.clone(), text_of(other))),
                }
            }
        } else {
            body = Some(Value::Object(rest).to_string().into_bytes());
        }
    }
    if !query.is_empty() {
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&q.join("&"));
    }
    if body.is_some() {
        headers.push(("content-type".into(), "application/json".into()));
    }
    RestRequest {
        method: op.method.clone(),
        url,
        headers,
        body,
    }
}

/// The `tools/call` result for a REST answer.
pub fn call_result(status: u16, content_type: Option<&str>, body: &[u8]) -> Value {
    let text = String::from_utf8_lossy(body).into_owned();
    if !(200..300).contains(&status) {
        let mut excerpt: String = text.chars().take(4000).collect();
        if excerpt.len() < text.len() {
            excerpt.push('…');
        }
        let message = if excerpt.trim().is_empty() {
            format!("The API answered HTTP {status}.")
        } else {
            format!("The API answered HTTP {status}: {excerpt}")
        };
        return json!({"content": [{"type": "text", "text": message}], "isError": true});
    }
    if text.trim().is_empty() {
        let message = format!("The API answered HTTP {status} with no content.");
        return json!({"content": [{"type": "text", "text": message}], "isError": false});
    }
    let json_type = content_type.is_none_or(|t| {
        let t = t
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        t == "application/json" || t.ends_with("+json")
    });
    let parsed = json_type
        .then(|| serde_json::from_str::<Value>(&text).ok())
        .flatten();
    let mut result = json!({"content": [{"type": "text", "text": text}], "isError": false});
    if let Some(v) = parsed {
        result["structuredContent"] = match v {
            Value::Object(_) => v,
            other => json!({"result": other}),
        };
    }
    result
}

fn tool_entry(op: &Operation) -> Value {
    let mut tool = json!({"name": op.name, "inputSchema": op.input_schema});
    if !op.description.is_empty() {
        tool["description"] = json!(op.description);
    }
    tool
}

fn tool_error(text: String) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": true})
}

/// The protocol revision of a request: its `MCP-Protocol-Version` header, else the one its
/// `_meta` names.
fn revision(request: &Message, message: &Value) -> Option<String> {
    request.header("mcp-protocol-version").or_else(|| {
        message
            .pointer(&format!(
                "/params/_meta/{}",
                VERSION_META.replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
}

fn reply(status: u16, body: Option<Value>) -> Verdict {
    let mut headers = Vec::new();
    if body.is_some() {
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
    }
    Verdict::Respond(Reply {
        status,
        headers,
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
    })
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// What one JSON-RPC message gets: `None` for notifications and responses.
fn answer_one(
    config: &Config,
    cx: &Context,
    request: &Message,
    message: &Value,
    tools: &mut Option<Result<Vec<Operation>, String>>,
) -> Option<Value> {
    let id = message.get("id").cloned()?;
    let method = message.get("method").and_then(Value::as_str)?;
    let version = revision(request, message);
    let modern = version.as_deref().is_some_and(|v| MODERN.contains(&v));
    let server_info = json!({
        "name": config.server_name.clone().unwrap_or_else(|| cx.route()),
        "version": env!("CARGO_PKG_VERSION"),
    });
    let mut load = || -> Result<Vec<Operation>, String> {
        tools.get_or_insert_with(|| config.operations()).clone()
    };
    let mut result = match method {
        "initialize" => {
            let asked = message
                .pointer("/params/protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let agreed = if LEGACY.contains(&asked) {
                asked
            } else {
                LEGACY[LEGACY.len() - 1]
            };
            json!({
                "protocolVersion": agreed,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": server_info,
            })
        }
        "server/discover" => json!({
            "supportedVersions": MODERN,
            "capabilities": {"tools": {"listChanged": false}},
            "_meta": {"io.modelcontextprotocol/serverInfo": server_info},
        }),
        "ping" => json!({}),
        "tools/list" => match load() {
            Ok(ops) => json!({"tools": ops.iter().map(tool_entry).collect::<Vec<_>>()}),
            Err(e) => {
                return Some(rpc_error(
                    &id,
                    -32603,
                    &format!("The tools of this MCP proxy are unavailable: {e}"),
                ));
            }
        },
        "tools/call" => match load() {
            Ok(ops) => call(config, message, &ops),
            Err(e) => tool_error(format!("The tools of this MCP proxy are unavailable: {e}")),
        },
        // Lists of what this server does not offer are empty rather than errors: some clients
        // ask whatever the capabilities say.
        "resources/list" => json!({"resources": []}),
        "resources/templates/list" => json!({"resourceTemplates": []}),
        "prompts/list" => json!({"prompts": []}),
        other => {
            return Some(rpc_error(
                &id,
                -32601,
                &format!("Method not found: `{other}` (this server offers tools only)"),
            ));
        }
    };
    if modern && let Some(obj) = result.as_object_mut() {
        obj.insert("resultType".into(), json!("complete"));
        // Cacheable results say for whom and how long: tool lists depend on the consumer (tool
        // access control), so private, and the API may change.
        if method == "server/discover" || method.ends_with("/list") {
            obj.insert("cacheScope".into(), json!("private"));
            obj.insert("ttlMs".into(), json!(0));
        }
    }
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

fn call(config: &Config, message: &Value, ops: &[Operation]) -> Value {
    let name = message
        .pointer("/params/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(op) = ops.iter().find(|o| o.name == name) else {
        return tool_error(format!("Unknown tool `{name}`."));
    };
    let args = message
        .pointer("/params/arguments")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Ok(schema) = weir_jsonschema::Schema::compile(&op.input_schema)
        && let Err(e) = schema.validate(&args)
    {
        return tool_error(format!("Invalid arguments for tool `{name}`: {e}"));
    }
    let rest = rest_request(op, config.base_url.as_deref(), &args);
    let sent = http_client::send(&http_client::OutgoingRequest {
        method: rest.method,
        url: rest.url,
        headers: rest.headers,
        body: rest.body,
        timeout_ms: config.timeout_ms,
    });
    match sent {
        Ok(resp) => {
            let content_type = resp
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.as_str());
            call_result(resp.status, content_type, &resp.body)
        }
        Err(e) => tool_error(format!(
            "The API behind tool `{name}` could not be reached: {}",
            http_failure(&e, config.timeout_ms)
        )),
    }
}

pub struct McpTranslator;

impl Policy for McpTranslator {
    type Config = Config;
    const NAME: &'static str = "mcp-translator";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    // Instances start from a snapshot with the configuration (an inline OpenAPI document can be
    // large) already parsed: no parsing on the request path.
    const PREINITIALISE: bool = true;
    const PHASES: &'static [Phase] = &[Phase::Request];

    fn check(config: &Config) -> Result<(), ConfigError> {
        if config.spec.is_some() && config.spec_url.is_some() {
            return Err(ConfigError::at(
                "spec-url",
                "give the document either inline (`spec`) or by URL (`spec-url`), not both",
            ));
        }
        if config.spec.is_none() && config.spec_url.is_none() && config.endpoints.is_empty() {
            return Err(ConfigError::at(
                "",
                "no tools: give an OpenAPI document (`spec` or `spec-url`) or declare `endpoints`",
            ));
        }
        if let Some(url) = &config.spec_url
            && !is_http_url(url)
        {
            return Err(ConfigError::at(
                "spec-url",
                format!("`{url}` is not an http(s) URL"),
            ));
        }
        match &config.base_url {
            Some(url) if !is_http_url(url) => {
                return Err(ConfigError::at(
                    "base-url",
                    format!("`{url}` is not an http(s) URL"),
                ));
            }
            None if config.spec.is_some() || config.spec_url.is_some() => {
                return Err(ConfigError::at(
                    "base-url",
                    "missing: the URL the document's paths are relative to",
                ));
            }
            _ => {}
        }
        if config.timeout_ms == 0 || config.timeout_ms > 30_000 {
            return Err(ConfigError::at("timeout-ms", "must be 1 to 30000"));
        }
        if config.spec_ttl_s == 0 {
            return Err(ConfigError::at("spec-ttl-s", "must be at least 1"));
        }
        let declared = config.declared()?;
        if let Some(doc) = config.inline_spec()? {
            let ops = openapi::operations(&doc, &config.selection())
                .map_err(|e| spec_error("spec", e))?;
            if ops.is_empty() {
                return Err(ConfigError::at(
                    "spec.paths",
                    "no operation is left after include/exclude: the proxy would offer no tools",
                ));
            }
            if let Some((i, d)) = declared
                .iter()
                .enumerate()
                .find(|(_, d)| ops.iter().any(|o| o.name == d.name))
            {
                return Err(ConfigError::at(
                    format!("endpoints[{i}].name"),
                    format!(
                        "`{}` is also the name of an operation of the document",
                        d.name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn on_request(config: &Config, cx: &Context, request: &Message) -> Verdict {
        if cx.route_kind() != RouteKind::Mcp {
            return Verdict::deny(
                500,
                "policy_misconfigured",
                "mcp-translator serves MCP proxies only: remove it from this proxy's policies",
            );
        }
        if request.method() != "POST" {
            // No server stream and no sessions: the stateless answer of MCP servers.
            let body = rpc_error(
                &Value::Null,
                -32000,
                "Method not allowed: this MCP server has no event stream and no sessions (POST only)",
            );
            let mut verdict = reply(405, Some(body));
            if let Verdict::Respond(r) = &mut verdict {
                r.headers.push(("allow".into(), "POST".into()));
            }
            return verdict;
        }
        let body: Value = match serde_json::from_slice(&request.body()) {
            Ok(v) => v,
            Err(e) => {
                return reply(
                    400,
                    Some(rpc_error(
                        &Value::Null,
                        -32700,
                        &format!("Parse error: {e}"),
                    )),
                );
            }
        };
        if let Some(v) = request.header("mcp-protocol-version")
            && !LEGACY.contains(&v.as_str())
            && !MODERN.contains(&v.as_str())
        {
            let mut error = rpc_error(
                body.get("id").unwrap_or(&Value::Null),
                -32022,
                &format!("Unsupported protocol version `{v}`"),
            );
            error["error"]["data"] =
                json!({"supported": LEGACY.iter().chain(MODERN.iter()).collect::<Vec<_>>()});
            return reply(400, Some(error));
        }
        let mut tools = None;
        match &body {
            Value::Array(batch) => {
                let answers: Vec<Value> = batch
                    .iter()
                    .filter_map(|m| answer_one(config, cx, request, m, &mut tools))
                    .collect();
                if answers.is_empty() {
                    reply(202, None)
                } else {
                    reply(200, Some(Value::Array(answers)))
                }
            }
            message => match answer_one(config, cx, request, message, &mut tools) {
                Some(answer) => reply(200, Some(answer)),
                None => reply(202, None),
            },
        }
    }
}

weir_policy_sdk::export_policy!(McpTranslator);
weir_policy_sdk::config_schema!("../config.schema.json");

#[cfg(test)]
mod tests;
