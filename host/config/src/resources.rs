//! The parts of the configuration the Gateway-Controller API manages beyond providers and
//! proxies: provider templates, MCP proxies, proxy API keys, secrets and the controller's own
//! settings. The same types are the file's sections, so a file and the API speak one shape.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A secret (a provider's API key) in a document: write-only. It is read from a document as
/// given, and always written out as `***`, so no API response, export, log or config dump can
/// hold it. A document that sends `***` back means "keep the stored value".
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SecretValue(String);

/// What a secret looks like in anything weir writes.
pub const REDACTED: &str = "***";

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that uses it (the upstream request).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether this is the redacted placeholder rather than a value.
    pub fn is_redacted(&self) -> bool {
        self.0 == REDACTED
    }
}

impl Serialize for SecretValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Where a provider family keeps token counts and model names, so usage can be read from any
/// provider's answers. Paths are dotted JSON paths into the response body (`usage.prompt_tokens`);
/// `remaining-tokens` is a response header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProviderTemplate {
    #[schemars(pattern(r"^[A-Za-z0-9._-]{1,64}$"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub prompt_tokens: String,
    pub completion_tokens: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<String>,
    /// Response header with the tokens left in the provider's rate-limit window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_tokens_header: Option<String>,
    /// Request body path of the requested model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_model: Option<String>,
    /// Response body path of the model that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_model: Option<String>,
}

/// (name, description, prompt, completion, total, remaining header, request model, response model)
type TemplateRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

/// (prompt, completion, total, remaining header, request model, response model)
type UsagePaths = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

const OPENAI_USAGE: UsagePaths = (
    "usage.prompt_tokens",
    "usage.completion_tokens",
    Some("usage.total_tokens"),
    Some("x-ratelimit-remaining-tokens"),
    Some("model"),
    Some("model"),
);

const fn openai_like(name: &'static str, description: &'static str) -> TemplateRow {
    let (p, c, t, r, rq, rs) = OPENAI_USAGE;
    (name, description, p, c, t, r, rq, rs)
}

const BUILTIN_TEMPLATES: &[TemplateRow] = &[
    openai_like("openai", "OpenAI chat completions, completions, embeddings"),
    openai_like(
        "azure-openai",
        "Azure OpenAI (deployments, api-version query parameter)",
    ),
    openai_like(
        "azure-ai-foundry",
        "Azure AI Foundry model inference (OpenAI-compatible)",
    ),
    openai_like("mistral", "Mistral chat completions (OpenAI-compatible)"),
    (
        "anthropic",
        "Anthropic Messages API",
        "usage.input_tokens",
        "usage.output_tokens",
        None,
        Some("anthropic-ratelimit-tokens-remaining"),
        Some("model"),
        Some("model"),
    ),
    (
        "aws-bedrock",
        "AWS Bedrock Converse",
        "usage.inputTokens",
        "usage.outputTokens",
        Some("usage.totalTokens"),
        None,
        None,
        None,
    ),
    (
        "gemini",
        "Google Gemini generateContent",
        "usageMetadata.promptTokenCount",
        "usageMetadata.candidatesTokenCount",
        Some("usageMetadata.totalTokenCount"),
        None,
        None,
        Some("modelVersion"),
    ),
];

/// The provider templates built into weir (read-only through the API).
pub fn builtin_templates() -> Vec<ProviderTemplate> {
    BUILTIN_TEMPLATES
        .iter()
        .map(
            |&(name, description, p, c, t, r, rq, rs)| ProviderTemplate {
                name: name.into(),
                description: Some(description.into()),
                prompt_tokens: p.into(),
                completion_tokens: c.into(),
                total_tokens: t.map(Into::into),
                remaining_tokens_header: r.map(Into::into),
                request_model: rq.map(Into::into),
                response_model: rs.map(Into::into),
            },
        )
        .collect()
}

/// An API key of a proxy. The key itself is shown once, when it is created; only its SHA-256
/// and a prefix (to recognise it) are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApiKey {
    /// Stable id (used in the API's paths).
    pub id: String,
    /// The consumer the key authenticates as.
    pub consumer: String,
    /// The first characters of the key, e.g. `wk-3f9a…`.
    pub prefix: String,
    pub key_sha256: String,
    pub created_at_ms: u64,
}

/// An MCP proxy: exposes an upstream MCP server, or a REST API as MCP tools. (The MCP data plane
/// comes later; the resource is stored and validated now.)
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct McpProxy {
    #[schemars(pattern(r"^[A-Za-z0-9._-]{1,64}$"))]
    pub name: String,
    #[schemars(pattern(r"^/([A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*)?$"))]
    pub context_path: String,
    pub upstream: McpUpstream,
    /// Tool access control: who may see and call which tool (everyone every tool when empty).
    /// The first rule whose `name` matches a tool decides; a tool no rule matches is allowed
    /// (end with `{name: "*", deny: ["*"]}` for an allow-list). Needs `auth` in `policies` to
    /// know the consumer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<McpTool>,
    /// Browser origins (globs: `https://*.example.com`) allowed to call besides the proxy's own;
    /// a request with another `Origin` gets a 403 (MCP's defence against DNS rebinding).
    /// Clients that are not browsers send no `Origin`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// For OAuth clients: the authorization servers that issue tokens for this proxy, served as
    /// protected-resource metadata (RFC 9728) at
    /// `/.well-known/oauth-protected-resource<context-path>` and named in 401 answers'
    /// `WWW-Authenticate`. Check the tokens with `auth` in JWT mode (audience: this proxy's URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<weir_core::mcp::McpOAuth>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<crate::PolicyRef>,
}

/// What an MCP proxy fronts: exactly one of `server`, `servers` and `openapi`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct McpUpstream {
    /// A Streamable HTTP MCP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<McpServerUpstream>,
    /// Several MCP servers behind one proxy: their tools, prompts and resources merged, tool
    /// and prompt names prefixed by the server's name (`github_create_issue`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<McpNamedServer>,
    /// With `servers`: `name` (default) prefixes tool and prompt names with `<server>_`;
    /// `none` keeps them (the first server listing a name has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<McpPrefix>,
    /// With `servers`: a server that fails is left out of lists (true, the default), or the
    /// whole list fails (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
    /// A REST API described by an OpenAPI document, translated into tools (stored, not served
    /// yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openapi: Option<McpOpenapiUpstream>,
}

/// An MCP server an MCP proxy fronts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct McpServerUpstream {
    /// Its Streamable HTTP endpoint, e.g. `https://tools.example.com/mcp`.
    pub url: String,
    /// The environment variable (at the edge: the platform secret) holding the credential the
    /// gateway sends the server. The client's own credentials never go there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// The header the credential goes in: `authorization` (default; sent as `Bearer <key>`) or
    /// another, sent as it is (`x-api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_header: Option<String>,
    /// Give up on an answer after this many milliseconds (default 60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3_600_000))]
    pub timeout_ms: Option<u64>,
}

impl McpServerUpstream {
    /// The timeout of a request to the server.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(60_000)
    }

    /// The header the credential goes in, lower-case.
    pub fn api_key_header(&self) -> String {
        self.api_key_header
            .as_deref()
            .unwrap_or("authorization")
            .to_ascii_lowercase()
    }
}

/// How the tools of several servers are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum McpPrefix {
    /// `<server>_<tool>`.
    Name,
    /// As each server names them.
    None,
}

/// One of several MCP servers behind a proxy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct McpNamedServer {
    /// Its name: the prefix of its tools' and prompts' names.
    #[schemars(pattern(r"^[A-Za-z0-9.-]{1,32}$"))]
    pub name: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3_600_000))]
    pub timeout_ms: Option<u64>,
}

impl McpNamedServer {
    /// The server's connection settings, as for a proxy's only server.
    pub fn server(&self) -> McpServerUpstream {
        McpServerUpstream {
            url: self.url.clone(),
            api_key_env: self.api_key_env.clone(),
            api_key_header: self.api_key_header.clone(),
            timeout_ms: self.timeout_ms,
        }
    }
}

/// A REST API an MCP proxy serves as tools (the `mcp-translator` policy, which the proxy's
/// chain ends with): the operations of an OpenAPI 3.0/3.1 document, and endpoints declared by
/// hand.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct McpOpenapiUpstream {
    /// The OpenAPI document, inline (in YAML configuration files, as YAML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
    /// Where to fetch the OpenAPI document (JSON) instead, on first use (kept for 5 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_url: Option<String>,
    /// The API's base URL: the document's paths and relative endpoint URLs are appended to it.
    pub base_url: String,
    /// Only operations with one of these tags (or named in `include-operations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_tags: Vec<String>,
    /// Only these operations (operationId or tool name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_operations: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_operations: Vec<String>,
    /// REST endpoints declared by hand as tools: `{name, description?, method, url,
    /// input-schema?}`, the URL a template (`/orders/{id}`) relative to `base-url` or absolute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<serde_json::Value>,
    /// The environment variable (at the edge: the platform secret) holding the API's
    /// credential, which the gateway adds to the requests it sends to `base-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// The header the credential goes in: `authorization` (default; sent as `Bearer <key>`) or
    /// another, sent as it is (`x-api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_header: Option<String>,
    /// Give up on a REST answer after this many milliseconds (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 30_000))]
    pub timeout_ms: Option<u64>,
}

impl McpOpenapiUpstream {
    /// The header the credential goes in, lower-case.
    pub fn api_key_header(&self) -> String {
        self.api_key_header
            .as_deref()
            .unwrap_or("authorization")
            .to_ascii_lowercase()
    }

    /// The `mcp-translator` entry that serves this API, with the hosts it may reach and the
    /// credential the host adds.
    pub fn translator(&self) -> crate::PolicyRef {
        let mut config = serde_json::json!({ "base-url": self.base_url });
        let fields = [
            ("spec", self.spec.clone()),
            (
                "spec-url",
                self.spec_url.clone().map(serde_json::Value::from),
            ),
            ("timeout-ms", self.timeout_ms.map(serde_json::Value::from)),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                config[k] = v;
            }
        }
        let lists = [
            ("include-tags", &self.include_tags),
            ("exclude-tags", &self.exclude_tags),
            ("include-operations", &self.include_operations),
            ("exclude-operations", &self.exclude_operations),
        ];
        for (k, v) in lists {
            if !v.is_empty() {
                config[k] = serde_json::json!(v);
            }
        }
        if !self.endpoints.is_empty() {
            config["endpoints"] = serde_json::Value::Array(self.endpoints.clone());
        }
        let mut hosts: Vec<String> = Vec::new();
        let urls = std::iter::once(self.base_url.as_str())
            .chain(self.spec_url.as_deref())
            .chain(
                self.endpoints
                    .iter()
                    .filter_map(|e| e.get("url").and_then(serde_json::Value::as_str)),
            );
        for url in urls {
            if let Some(host) = weir_core::isolation::url_host(url)
                && !hosts.contains(&host)
            {
                hosts.push(host);
            }
        }
        let mut entry = crate::PolicyRef::new("mcp-translator", config);
        entry.allow_hosts = hosts;
        entry.credential =
            self.api_key_env
                .as_ref()
                .map(|var| weir_core::isolation::PolicyCredential {
                    url_prefix: self.base_url.clone(),
                    header: self.api_key_header(),
                    secret: var.clone(),
                });
        entry
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct McpTool {
    /// A tool name or a glob (`*` any run of characters, `?` one): `github_*`.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Consumers (ids or globs) who may see and call the matching tools (everyone when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Consumers (ids or globs) who may not, whatever `allow` says (`*`: nobody may).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl McpTool {
    /// The rule as the gateway enforces it.
    pub fn rule(&self) -> weir_core::mcp_tools::ToolRule {
        weir_core::mcp_tools::ToolRule {
            name: self.name.clone(),
            allow: self.allow.clone(),
            deny: self.deny.clone(),
        }
    }
}

/// The Gateway-Controller REST API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ControllerSettings {
    /// Listen address (e.g. 127.0.0.1:9090); none: no controller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Basic-auth users.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<AdminUser>,
    /// Bearer tokens.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<AdminToken>,
}

/// What a controller credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AdminRole {
    /// Read everything (secrets stay hidden).
    ReadOnly,
    /// Read and change everything.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminUser {
    pub name: String,
    /// SHA-256 (hex) of the password (`weir hash-key`).
    pub password_sha256: String,
    pub role: AdminRole,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminToken {
    pub name: String,
    /// SHA-256 (hex) of the token.
    pub token_sha256: String,
    pub role: AdminRole,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_serialize() {
        let s = SecretValue::new("sk-canary");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.expose(), "sk-canary");
        let back: SecretValue = serde_json::from_str("\"***\"").unwrap();
        assert!(back.is_redacted());
    }

    #[test]
    fn every_builtin_template_is_there() {
        let names: Vec<String> = builtin_templates().into_iter().map(|t| t.name).collect();
        for n in [
            "openai",
            "azure-openai",
            "anthropic",
            "aws-bedrock",
            "azure-ai-foundry",
            "gemini",
            "mistral",
        ] {
            assert!(names.iter().any(|x| x == n), "{n}");
        }
    }
}
