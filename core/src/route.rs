//! Routes, endpoints and upstreams: where a request goes and in which format it is answered.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::GatewayError;
use crate::types::RouteKind;

/// The endpoints of an LLM proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
    /// Anthropic's Messages API, served in front of any provider (chat completions upstream).
    Messages,
}

impl Endpoint {
    const ALL: [Self; 5] = [
        Self::ChatCompletions,
        Self::Completions,
        Self::Embeddings,
        Self::Models,
        Self::Messages,
    ];

    /// The endpoint for a path below the proxy's context path.
    pub fn parse(path: &str) -> Option<Self> {
        let name = path.strip_prefix("/v1/")?;
        Self::from_name(name)
    }

    /// The endpoint of a name as configuration uses them (`chat/completions`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The name configuration and usage records use (`chat/completions`, `messages`).
    pub fn name(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat/completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Models => "models",
            Self::Messages => "messages",
        }
    }

    /// The OpenAI endpoint that serves it upstream.
    pub fn upstream(self) -> Self {
        match self {
            Self::Messages => Self::ChatCompletions,
            e => e,
        }
    }

    /// Path of the OpenAI endpoint below an OpenAI provider's base URL.
    pub fn upstream_path(self) -> &'static str {
        self.upstream().name()
    }

    /// The API format the client speaks on this endpoint.
    pub fn wire(self) -> Wire {
        match self {
            Self::Messages => Wire::Anthropic,
            _ => Wire::Openai,
        }
    }

    /// The one method the endpoint accepts.
    pub fn method(self) -> &'static str {
        match self {
            Self::Models => "GET",
            _ => "POST",
        }
    }
}

/// The API format a client speaks: errors, answers and streams are rendered in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Openai,
    Anthropic,
    /// MCP (JSON-RPC over Streamable HTTP).
    JsonRpc,
}

impl Wire {
    /// The format of the requests to a path, known before any route matched (for errors that
    /// happen before: 404, 413...).
    pub fn of_path(path: &str) -> Self {
        if path
            .split('?')
            .next()
            .unwrap_or("")
            .ends_with("/v1/messages")
        {
            Self::Anthropic
        } else {
            Self::Openai
        }
    }

    /// An error body in this format.
    pub fn error_body(
        self,
        status: u16,
        code: &str,
        message: &str,
        param: Option<&str>,
        request_id: &str,
    ) -> Vec<u8> {
        match self {
            Self::Openai => weir_llm::error::openai_error(status, code, message, param, request_id),
            Self::Anthropic => {
                weir_llm::translate::anthropic::inbound::error(status, message, request_id)
            }
            Self::JsonRpc => crate::mcp::error_body(None, status, code, message, request_id),
        }
    }
}

/// A secret string whose `Debug` never shows it.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// The secret itself; only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A provider as the data plane calls it: where, how (its kind) and with which credential.
#[derive(Debug, Default)]
pub struct Upstream {
    /// The provider's name in the configuration.
    pub name: String,
    /// Base URL without a trailing slash: `https://api.openai.com/v1`,
    /// `https://api.anthropic.com/v1`, `https://bedrock-runtime.us-east-1.amazonaws.com`.
    pub base_url: String,
    /// The credential injected into upstream requests (for Bedrock, the secret access key).
    /// Never logged, never returned.
    pub api_key: Option<Secret>,
    /// Set when the provider needs a key from a variable that is not set (named in the error).
    pub missing_key_env: Option<String>,
    pub timeout_ms: u64,
    /// The provider's API family.
    pub kind: weir_llm::ProviderKind,
    /// Azure: the `api-version` query parameter (the kind's default when `None`).
    pub api_version: Option<String>,
    /// Azure OpenAI: the deployment of each model (the model's name when absent).
    pub deployments: Vec<(String, String)>,
    /// Bedrock: the signing region and access key id (the secret is `api_key`).
    pub aws: Option<AwsAuth>,
    /// Prices of the models, for the cost of each request.
    pub prices: Arc<weir_llm::price::PriceTable>,
}

/// How requests to Bedrock are signed.
#[derive(Debug, Clone)]
pub struct AwsAuth {
    pub region: String,
    pub access_key_id: String,
    pub session_token: Option<Secret>,
}

/// Every upstream of a gateway, by provider name: the targets a policy may choose.
pub type Upstreams = BTreeMap<String, Arc<Upstream>>;

/// Body size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_response_bytes: usize,
}

/// The MCP server an MCP proxy fronts.
#[derive(Debug, Clone)]
pub struct McpServer {
    /// The server's Streamable HTTP endpoint.
    pub url: String,
    pub timeout_ms: u64,
    /// Who may see and call which tool (everyone every tool when empty).
    pub tools: Vec<crate::mcp_tools::ToolRule>,
    /// The credential the gateway sends the server (never the client's).
    pub credential: Option<McpCredential>,
    /// Browser origins allowed to call (globs); none: only the proxy's own origin.
    pub allowed_origins: Vec<String>,
    /// OAuth clients: where to get tokens (protected-resource metadata).
    pub oauth: Option<crate::mcp::McpOAuth>,
    /// The route's prefix (`""` for `/`), for the metadata's URL.
    pub prefix: String,
    /// Several servers behind the proxy (`url` and `credential` above are then unused).
    pub members: Vec<McpMember>,
    /// With `members`: tool and prompt names are `<member>_<name>`.
    pub prefixed: bool,
    /// With `members`: a member that fails is left out of lists.
    pub fail_open: bool,
}

/// One of several servers behind an MCP proxy.
#[derive(Debug, Clone)]
pub struct McpMember {
    pub name: String,
    pub url: String,
    pub timeout_ms: u64,
    pub credential: Option<McpCredential>,
}

/// The credential an MCP proxy sends its server.
#[derive(Debug, Clone)]
pub struct McpCredential {
    /// `authorization` (the key sent as `Bearer <key>`) or another header (the key as it is).
    pub header: String,
    pub key: Option<Secret>,
    /// Set when the key's variable (or platform secret) is not set.
    pub missing_env: Option<String>,
}

impl McpServer {
    /// Member `member` of a proxy with several servers, as the one server of this proxy.
    pub fn as_member(&self, member: &McpMember) -> McpServer {
        McpServer {
            url: member.url.clone(),
            timeout_ms: member.timeout_ms,
            credential: member.credential.clone(),
            members: Vec::new(),
            ..self.clone()
        }
    }
}

impl McpCredential {
    /// The header to send, or the variable to set when the key is missing.
    pub fn header_pair(&self) -> Result<(String, String), &str> {
        let Some(key) = &self.key else {
            return Err(self.missing_env.as_deref().unwrap_or("its api-key-env"));
        };
        let value = if self.header == "authorization" {
            format!("Bearer {}", key.expose())
        } else {
            key.expose().to_owned()
        };
        Ok((self.header.clone(), value))
    }
}

/// The route a request matched.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub name: String,
    pub kind: RouteKind,
    /// LLM proxies: the route's provider (the default target).
    pub upstream: Arc<Upstream>,
    /// Every provider of the gateway, for the targets policies choose.
    pub upstreams: Arc<Upstreams>,
    /// MCP proxies: the server.
    pub mcp: Option<McpServer>,
    pub limits: Limits,
    /// The endpoints the route exposes (its provider's access control); all when `None`.
    pub exposed: Option<Vec<Endpoint>>,
    /// When a failed attempt is retried (LLM proxies).
    pub retry: Arc<crate::Retry>,
}

/// Finds the route whose context path prefixes `path` (routes sorted longest prefix first);
/// returns it with the rest of the path.
pub fn find_route<'a, R>(
    routes: &'a [R],
    path: &'a str,
    prefix: impl Fn(&R) -> &str,
) -> Option<(&'a R, &'a str)> {
    routes.iter().find_map(|r| {
        let rest = path.strip_prefix(prefix(r))?;
        (rest.is_empty() || rest.starts_with('/')).then_some((r, rest))
    })
}

/// Checks the endpoint and method of a request on a matched LLM route.
pub fn endpoint(route: &str, rest: &str, method: &str) -> Result<Endpoint, GatewayError> {
    let Some(endpoint) = Endpoint::parse(rest) else {
        return Err(GatewayError::client(
            404,
            "unknown_endpoint",
            format!("Unknown endpoint `{rest}` on proxy `{route}`."),
        ));
    };
    if method != endpoint.method() {
        return Err(GatewayError::client(
            405,
            "method_not_allowed",
            format!("`{rest}` accepts {} only.", endpoint.method()),
        ));
    }
    Ok(endpoint)
}

/// The error for a path no proxy serves.
pub fn unknown_route(path: &str) -> GatewayError {
    GatewayError::client(404, "unknown_route", format!("No route for `{path}`."))
}

/// The error for a body over the limit.
pub fn too_large(max: usize) -> GatewayError {
    GatewayError::client(
        413,
        "request_too_large",
        format!("The request body exceeds the limit of {max} bytes."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_wires() {
        assert_eq!(
            Endpoint::parse("/v1/chat/completions"),
            Some(Endpoint::ChatCompletions)
        );
        assert_eq!(Endpoint::parse("/v1/nope"), None);
        assert_eq!(Endpoint::parse("/v2/models"), None);
        assert_eq!(Wire::of_path("/a/v1/messages?x=1"), Wire::Anthropic);
        assert_eq!(Wire::of_path("/a/v1/chat/completions"), Wire::Openai);
    }

    #[test]
    fn longest_prefix_first() {
        let routes = ["/a/b", "/a", ""];
        let find = |p| find_route(&routes, p, |r| r).map(|(r, rest)| (*r, rest));
        assert_eq!(find("/a/b/v1/models"), Some(("/a/b", "/v1/models")));
        assert_eq!(find("/a/v1/models"), Some(("/a", "/v1/models")));
        assert_eq!(find("/ab/v1/models"), Some(("", "/ab/v1/models")));
    }
}
