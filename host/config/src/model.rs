//! The configuration document.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole gateway configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GatewayConfig {
    /// Data-plane listen address.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Admin listen address (health, readiness, metrics, config); none: no admin listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub runtime: RuntimeSettings,
    #[serde(default)]
    pub kv: KvSettings,
    /// The Gateway-Controller REST API (listen address, admin credentials).
    #[serde(default, skip_serializing_if = "is_default")]
    pub controller: crate::ControllerSettings,
    /// Custom policy components (in addition to the built-in ones).
    #[serde(default)]
    pub policies: Vec<PolicySource>,
    /// Custom provider templates (in addition to the built-in ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub llm_provider_templates: Vec<crate::ProviderTemplate>,
    pub providers: Vec<Provider>,
    pub proxies: Vec<Proxy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_proxies: Vec<crate::McpProxy>,
    /// Model prices for the cost of each request (in addition to, and winning over, the
    /// built-in list prices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<ModelPrice>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

/// Protections of the data plane against oversized input.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Largest upstream (non-streaming) response body read.
    pub max_response_bytes: usize,
    /// Most request headers accepted (431 above).
    pub max_headers: usize,
    /// Largest total size of the request head (431 above).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            max_response_bytes: 32 << 20,
            max_headers: 100,
            max_header_bytes: 64 << 10,
        }
    }
}

/// Limits on every policy call.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuntimeSettings {
    /// CPU time a single policy call may use before it is stopped (its waits for the key-value
    /// store or outbound HTTP and time off the CPU do not count; checked every 1 ms).
    pub policy_timeout_ms: u64,
    /// Linear memory a policy instance may grow to.
    pub policy_memory_mib: u64,
    /// Policy instances that may be alive at once (pooling allocator slots).
    pub max_instances: u32,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            policy_timeout_ms: 100,
            policy_memory_mib: 64,
            max_instances: 1000,
        }
    }
}

/// The key-value backend for policy state.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct KvSettings {
    /// `memory` (one process) or `redis` (shared by every replica).
    pub backend: KvBackend,
    /// Memory: bound on the number of entries.
    pub max_entries: usize,
    /// Redis: `redis://host:6379/0`, or `rediss://` for TLS. No password here: see
    /// `password-env`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Redis: the environment variable holding the password, if it needs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Redis: prepended to every key, so several gateways can share one Redis.
    pub prefix: String,
    /// Redis: time one operation may take before it counts as failed.
    pub timeout_ms: u64,
    /// Redis: multiplexed connections per process.
    pub connections: usize,
}

impl Default for KvSettings {
    fn default() -> Self {
        Self {
            backend: KvBackend::Memory,
            max_entries: 1_000_000,
            url: None,
            password_env: None,
            prefix: "weir:".into(),
            timeout_ms: 250,
            connections: 4,
        }
    }
}

/// Where policy state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KvBackend {
    /// In this process (the default).
    #[default]
    Memory,
    /// In Redis (≥ 6.2) or Valkey, shared by every replica.
    Redis,
}

/// A policy component loaded from a file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicySource {
    /// The name proxies use to refer to it.
    #[schemars(pattern(r"^[A-Za-z0-9._-]{1,64}$"))]
    pub name: String,
    /// Path to the `.wasm` component (relative to the working directory).
    pub path: PathBuf,
}

pub use weir_llm::ProviderKind;

/// The JSON Schema of a provider `kind`: the names of [`ProviderKind::ALL`].
fn provider_kind_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.name()).collect();
    schemars::json_schema!({
        "description": "The API family of a provider: how weir talks to it (requests are translated from OpenAI format, answers and streams back to it). `openai` (and OpenAI-compatible servers), `azure-openai`, `azure-ai-foundry`, `mistral`, `anthropic`, `gemini`, `aws-bedrock` (SigV4-signed Converse).",
        "type": "string",
        "enum": names,
        "default": "openai",
    })
}

/// AWS credentials of a Bedrock provider, by environment variable name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AwsSettings {
    /// Signing region; taken from the base URL (`bedrock-runtime.{region}.amazonaws.com`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Variable holding the access key id.
    #[serde(default = "default_access_key_env")]
    pub access_key_id_env: String,
    /// Variable holding the secret access key.
    #[serde(default = "default_secret_key_env")]
    pub secret_access_key_env: String,
    /// Variable holding a session token (temporary credentials), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_env: Option<String>,
}

fn default_access_key_env() -> String {
    "AWS_ACCESS_KEY_ID".into()
}

fn default_secret_key_env() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

/// The price of a model, in US dollars per million tokens. Configured prices win over the
/// built-in table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelPrice {
    /// The model name as providers report it, or a prefix ending in `*` (`claude-sonnet-4*`).
    pub model: String,
    /// Only for this provider; all providers when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub input_per_million: f64,
    pub output_per_million: f64,
    /// Cached prompt tokens; the input price when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_million: Option<f64>,
}

/// An upstream LLM provider.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Provider {
    #[schemars(pattern(r"^[A-Za-z0-9._-]{1,64}$"))]
    pub name: String,
    #[serde(default)]
    #[schemars(schema_with = "provider_kind_schema")]
    pub kind: ProviderKind,
    /// The provider template (`openai` when absent): where usage and models are found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Base URL including the version path, e.g. `https://api.openai.com/v1`, or `builtin:mock`
    /// for the mock provider bundled with weir (offline demos).
    #[schemars(pattern(r"^(https?://[^\s/?#@]+([/?][^\s]*)?|builtin:mock)$"))]
    pub base_url: String,
    /// Environment variable holding the provider's API key (never put keys in the file).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The API key itself, as the controller API receives it: kept in the controller's store,
    /// never written out (always `***`). Files should use `api-key-env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<crate::SecretValue>,
    /// The endpoints proxies of this provider expose (`chat/completions`, `completions`,
    /// `embeddings`, `models`); all when absent. Others answer 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Vec<String>>,
    /// Azure OpenAI / AI Foundry: the `api-version` query parameter (a current GA version when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Azure OpenAI: the deployment serving each model (`gpt-4o: my-gpt4o-deployment`); a model
    /// without one uses its own name as the deployment.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub deployments: std::collections::BTreeMap<String, String>,
    /// AWS Bedrock: the signing credentials (the secret access key replaces `api-key-env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSettings>,
    /// Time allowed for the upstream to start answering.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Policies run for every proxy of this provider, before the proxy's own.
    #[serde(default)]
    pub policies: Vec<PolicyRef>,
}

fn default_timeout_ms() -> u64 {
    60_000
}

/// An application-facing endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Proxy {
    #[schemars(pattern(r"^[A-Za-z0-9._-]{1,64}$"))]
    pub name: String,
    /// Path prefix, e.g. `/assistant` serves `/assistant/v1/chat/completions`; `/` serves `/v1/...`.
    #[schemars(pattern(r"^/([A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*)?$"))]
    pub context_path: String,
    /// The provider's name.
    pub provider: String,
    /// Policies of this proxy, run after the provider's.
    #[serde(default)]
    pub policies: Vec<PolicyRef>,
    /// API keys issued for this proxy through the controller (hashes only). When there is one,
    /// the proxy authenticates with them: an `auth` policy with these consumers runs first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<crate::ApiKey>,
    /// When a failed upstream attempt is tried again on the same target, how long to wait, and
    /// the time all attempts of a request may take (the targets come from a `router` policy,
    /// or are the proxy's provider).
    #[serde(default, skip_serializing_if = "is_default")]
    pub retry: weir_core::Retry,
}

/// One policy in a chain.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicyRef {
    /// A built-in policy (`auth`, `token-limit`) or a name from `policies`.
    pub policy: String,
    /// The policy's own configuration, validated by the policy.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Hosts this policy instance may reach through `weir:policy/http-client` (none by
    /// default): host names, IPv4 or IPv6 addresses (`[::1]`), without scheme or port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_hosts: Vec<String>,
    /// Names this entry when its policy appears more than once in one list (required then):
    /// its instance becomes `<policy>@<id>`, and its state keeps that name when the chain is
    /// reordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z0-9._-]{1,64}$"))]
    pub id: Option<String>,
    /// Shares key-value and vector state with every entry that names the same namespace (e.g.
    /// a cache shared by two proxies on purpose). By default each entry has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z0-9._-]{1,64}$"))]
    pub kv_namespace: Option<String>,
    /// A credential the host adds to this entry's outbound requests to one API. Not
    /// configurable: set for the `mcp-translator` entry of an MCP proxy over a REST API.
    #[serde(skip)]
    #[schemars(skip)]
    pub credential: Option<weir_core::isolation::PolicyCredential>,
}

impl PolicyRef {
    /// An entry with this policy and configuration, and every other setting at its default.
    pub fn new(policy: &str, config: serde_json::Value) -> Self {
        Self {
            policy: policy.to_owned(),
            config,
            allow_hosts: Vec::new(),
            id: None,
            kv_namespace: None,
            credential: None,
        }
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}
