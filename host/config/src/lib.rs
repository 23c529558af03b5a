//! The gateway's declarative configuration: YAML (or JSON) in, a validated [`GatewayConfig`] out.
//!
//! Unknown keys are errors, and every error names the field path
//! (`proxies[1].policies[0].policy: unknown policy ...`). Policy configurations are checked here
//! only for shape; the policy components validate their own configs when the runtime loads them.
//!
//! ```
//! let config = weir_config::GatewayConfig::from_yaml(weir_config::DEFAULT_CONFIG).unwrap();
//! assert_eq!(config.proxies[0].name, "demo");
//! ```
#![forbid(unsafe_code)]

pub mod env;
mod model;
mod resources;
mod validate;

pub use model::*;
pub use weir_core::isolation::Scope;

/// One policy of a chain as it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainEntry {
    /// The entry's field path (`providers[0].policies[1]`, `proxies[2].api-keys`).
    pub path: String,
    pub policy: PolicyRef,
    /// Its instance name (`proxy:demo/token-limit`).
    pub instance: String,
    /// Its key-value namespace (its instance name, or `shared:<name>`).
    pub namespace: String,
    /// Where its configuration is written (`<path>.config`, or the section an entry the
    /// gateway adds is configured from), for errors the policy finds in it.
    pub config_path: String,
}

impl ChainEntry {
    fn new(path: String, scope: Scope<'_>, policy: PolicyRef) -> Self {
        let instance = weir_core::isolation::instance(scope, &policy.policy, policy.id.as_deref());
        let namespace = weir_core::isolation::namespace(&instance, policy.kv_namespace.as_deref());
        Self {
            config_path: format!("{path}.config"),
            path,
            policy,
            instance,
            namespace,
        }
    }
}
pub use resources::*;
pub use validate::{BUILTIN_POLICIES, EXPOSABLE, bedrock_region};

/// The embedded default configuration (offline demo route to the bundled mock, plus an OpenAI
/// route used when `OPENAI_API_KEY` is set).
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

/// A configuration problem, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct ConfigError {
    /// Field path such as `proxies[0].context-path`; empty for the whole document.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The JSON Schema of the configuration document, generated from the types above (editors use it
/// to complete and check `gateway.yaml`). `docs/config.schema.json` is this output; a test keeps
/// them equal.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(GatewayConfig);
    let mut out = serde_json::to_string_pretty(&schema).unwrap_or_default();
    out.push('\n');
    out
}

impl GatewayConfig {
    /// Parses and validates a YAML (or JSON, a subset of YAML) document.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let config: GatewayConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::at(
                if path == "." { String::new() } else { path },
                e.into_inner().to_string(),
            )
        })?;
        validate::validate(&config)?;
        Ok(config)
    }

    /// Checks a document built in memory (e.g. by the controller) as `from_yaml` checks a file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self)
    }

    /// The policy chain of proxy `i` as it runs: the provider's policies, then an `auth`
    /// policy holding the proxy's API keys (when it has any; path `proxies[i].api-keys`), then
    /// the proxy's own policies. Each entry carries its instance name and key-value namespace
    /// (weir-core's rules, the same for `weir` and the edge apps).
    pub fn chain(&self, i: usize) -> Vec<ChainEntry> {
        let Some(proxy) = self.proxies.get(i) else {
            return Vec::new();
        };
        let mut chain = Vec::new();
        if let Some((pi, provider)) = self
            .providers
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == proxy.provider)
        {
            for (j, r) in provider.policies.iter().enumerate() {
                chain.push(ChainEntry::new(
                    format!("providers[{pi}].policies[{j}]"),
                    Scope::Provider(&provider.name),
                    r.clone(),
                ));
            }
        }
        if !proxy.api_keys.is_empty() {
            let consumers: Vec<serde_json::Value> = proxy
                .api_keys
                .iter()
                .map(|k| serde_json::json!({ "id": k.consumer, "key-sha256": k.key_sha256 }))
                .collect();
            chain.push(ChainEntry::new(
                format!("proxies[{i}].api-keys"),
                Scope::Proxy(&proxy.name),
                PolicyRef::new("auth", serde_json::json!({ "consumers": consumers })),
            ));
        }
        for (j, r) in proxy.policies.iter().enumerate() {
            chain.push(ChainEntry::new(
                format!("proxies[{i}].policies[{j}]"),
                Scope::Proxy(&proxy.name),
                r.clone(),
            ));
        }
        chain
    }

    /// The policy chain of MCP proxy `i`.
    pub fn mcp_chain(&self, i: usize) -> Vec<ChainEntry> {
        let Some(proxy) = self.mcp_proxies.get(i) else {
            return Vec::new();
        };
        let mut chain: Vec<ChainEntry> = proxy
            .policies
            .iter()
            .enumerate()
            .map(|(j, r)| {
                ChainEntry::new(
                    format!("mcp-proxies[{i}].policies[{j}]"),
                    Scope::Mcp(&proxy.name),
                    r.clone(),
                )
            })
            .collect();
        // A REST API: the translator answers what reaches the end of the chain.
        if let Some(api) = &proxy.upstream.openapi {
            let mut entry = ChainEntry::new(
                format!("mcp-proxies[{i}].upstream.openapi"),
                Scope::Mcp(&proxy.name),
                api.translator(),
            );
            // Its configuration is the section itself (`spec`, `endpoints`, ... are its keys).
            entry.config_path = entry.path.clone();
            chain.push(entry);
        }
        chain
    }

    /// The provider a proxy uses (validated to exist).
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests;
