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
mod validate;

pub use model::*;
pub use validate::BUILTIN_POLICIES;

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

    /// The provider a proxy uses (validated to exist).
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests;
