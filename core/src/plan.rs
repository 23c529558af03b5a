//! The gateway plan: what `weir build` bakes into an edge app. A resolved, flattened form of the
//! gateway configuration (routes sorted longest prefix first, policies assigned to the composed
//! component's slots, secrets named but never included).

use serde::{Deserialize, Serialize};

use crate::{Phase, RouteKind};

/// The version of the plan format; the gateway component refuses others.
pub const PLAN_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Plan {
    pub version: u32,
    pub max_body_bytes: usize,
    pub max_response_bytes: usize,
    /// Every provider: the routes' own and the targets policies may choose.
    pub providers: Vec<PlanProvider>,
    /// Longest prefix first.
    pub routes: Vec<PlanRoute>,
    /// Names of the platform secrets the app must pass in (provider API keys).
    pub secrets: Vec<String>,
    /// The policy component of each link of the composed chain, by position.
    pub slots: Vec<PlanSlot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PlanSlot {
    /// Policy name, e.g. `auth`.
    pub policy: String,
    /// sha256 of the policy component this slot runs (the file `weir` loads).
    pub sha256: String,
    pub phases: Vec<Phase>,
    /// The slot runs a pre-initialised snapshot of that component (its code unchanged, its
    /// memory holding the slot's configurations already parsed; see `weir build`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preinitialised: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PlanRoute {
    pub name: String,
    /// `""` for `/`, else `/openai`.
    pub prefix: String,
    pub kind: RouteKind,
    /// LLM routes: the provider (a name from `providers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// MCP routes: the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<PlanMcpServer>,
    /// Provider policies first, then the proxy's, in chain order.
    pub policies: Vec<PlanPolicy>,
    /// LLM routes: when failed attempts are retried.
    #[serde(default, skip_serializing_if = "is_default")]
    pub retry: crate::Retry,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PlanMcpServer {
    pub url: String,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<crate::mcp_tools::ToolRule>,
    /// The platform secret holding the server's credential, and the header it goes in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_header: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<crate::mcp::McpOAuth>,
    /// Several servers behind the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<PlanMcpMember>,
    #[serde(default)]
    pub prefixed: bool,
    #[serde(default)]
    pub fail_open: bool,
}

/// One of several servers behind an MCP proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PlanMcpMember {
    pub name: String,
    pub url: String,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_header: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PlanProvider {
    pub name: String,
    pub base_url: String,
    /// The secret holding the API key, if the provider needs one.
    pub api_key_secret: Option<String>,
    pub timeout_ms: u64,
    /// The endpoints exposed (names as in the configuration); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Vec<String>>,
    /// The provider's API family (`openai`, `anthropic`, `gemini`, `azure-openai`...).
    pub kind: weir_llm::ProviderKind,
    /// Azure: the `api-version` query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PlanPolicy {
    /// The composition slot whose component runs this policy.
    pub slot: u32,
    /// The instance name (`proxy:demo/token-limit`, see [`crate::isolation::instance`]).
    pub instance: String,
    /// Its key-value namespace (see [`crate::isolation::namespace`]).
    pub namespace: String,
    /// The configuration (JSON), validated by `weir build` against the component.
    pub config: String,
    pub allow_hosts: Vec<String>,
    /// A credential the runtime adds to the policy's requests to one API; its key is the
    /// platform secret it names (listed in the plan's `secrets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<crate::isolation::PolicyCredential>,
}

impl Plan {
    /// Parses a plan, refusing other format versions.
    pub fn parse(json: &str) -> Result<Self, String> {
        let plan: Self = serde_json::from_str(json).map_err(|e| format!("invalid plan: {e}"))?;
        if plan.version != PLAN_VERSION {
            return Err(format!(
                "plan version {} is not supported by this gateway (expected {PLAN_VERSION}); rebuild the app with the matching `weir build`",
                plan.version
            ));
        }
        Ok(plan)
    }
}
