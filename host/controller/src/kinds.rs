//! The resource kinds of the API, each a list in the configuration document.

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_config::{GatewayConfig, McpProxy, Provider, ProviderTemplate, Proxy};

use crate::error::ApiError;

/// A kind of resource: a named list in the document.
pub(crate) trait Kind: 'static {
    type Item: Serialize + DeserializeOwned + Clone + JsonSchema + Send + Sync;
    /// Path segment of the API (`llm-providers`).
    const PATH: &'static str;
    /// The document's field (`providers`).
    const FIELD: &'static str;
    /// Singular, for messages (`provider`).
    const NOUN: &'static str;

    fn items(doc: &GatewayConfig) -> &Vec<Self::Item>;
    fn items_mut(doc: &mut GatewayConfig) -> &mut Vec<Self::Item>;
    fn name(item: &Self::Item) -> &str;

    /// Read-only items that exist without being in the document (built-in templates).
    fn builtins() -> Vec<Self::Item> {
        Vec::new()
    }

    /// Fits an incoming item to the stored one it replaces (`None` on create).
    fn incoming(_old: Option<&Self::Item>, _new: &mut Self::Item) -> Result<(), ApiError> {
        Ok(())
    }

    /// Why `name` cannot be deleted, if something uses it.
    fn in_use(_doc: &GatewayConfig, _name: &str) -> Option<String> {
        None
    }
}

/// The `kind/name` key of a resource (revisions, ETags).
pub(crate) fn key(kind: &str, name: &str) -> String {
    format!("{kind}/{name}")
}

/// Every resource key in a document.
pub(crate) fn resource_keys(doc: &GatewayConfig) -> Vec<String> {
    let mut keys = Vec::new();
    keys.extend(
        Templates::items(doc)
            .iter()
            .map(|i| key(Templates::PATH, &i.name)),
    );
    keys.extend(
        Providers::items(doc)
            .iter()
            .map(|i| key(Providers::PATH, &i.name)),
    );
    keys.extend(
        Proxies::items(doc)
            .iter()
            .map(|i| key(Proxies::PATH, &i.name)),
    );
    keys.extend(
        McpProxies::items(doc)
            .iter()
            .map(|i| key(McpProxies::PATH, &i.name)),
    );
    keys.extend(doc.policies.iter().map(|p| key("policies", &p.name)));
    keys
}

/// The resource a change is about: errors inside it get paths relative to it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Focus {
    /// The document field and the name (`providers`, `openai`).
    pub target: Option<(&'static str, String)>,
}

impl Focus {
    pub fn on<K: Kind>(name: &str) -> Self {
        Self {
            target: Some((K::FIELD, name.to_owned())),
        }
    }

    /// A 422 for a document error at `path` (`providers[2].base-url`): relative to the focused
    /// resource when it is inside it (`base-url`), else the document path.
    pub fn error(&self, doc: &GatewayConfig, path: &str, message: String) -> ApiError {
        if let Some((field, name)) = &self.target
            && let Some(index) = index_of(doc, field, name)
        {
            let prefix = format!("{field}[{index}]");
            if path == prefix {
                return ApiError::invalid("", message);
            }
            if let Some(rest) = path.strip_prefix(&format!("{prefix}.")) {
                return ApiError::invalid(rest, message);
            }
        }
        ApiError::invalid(path, message)
    }
}

fn index_of(doc: &GatewayConfig, field: &str, name: &str) -> Option<usize> {
    match field {
        "llm-provider-templates" => doc
            .llm_provider_templates
            .iter()
            .position(|t| t.name == name),
        "providers" => doc.providers.iter().position(|p| p.name == name),
        "proxies" => doc.proxies.iter().position(|p| p.name == name),
        "mcp-proxies" => doc.mcp_proxies.iter().position(|p| p.name == name),
        "policies" => doc.policies.iter().position(|p| p.name == name),
        _ => None,
    }
}

// === kinds ===

#[derive(Debug)]
pub(crate) struct Templates;
#[derive(Debug)]
pub(crate) struct Providers;
#[derive(Debug)]
pub(crate) struct Proxies;
#[derive(Debug)]
pub(crate) struct McpProxies;

impl Kind for Templates {
    type Item = ProviderTemplate;
    const PATH: &'static str = "llm-provider-templates";
    const FIELD: &'static str = "llm-provider-templates";
    const NOUN: &'static str = "provider template";

    fn items(doc: &GatewayConfig) -> &Vec<Self::Item> {
        &doc.llm_provider_templates
    }
    fn items_mut(doc: &mut GatewayConfig) -> &mut Vec<Self::Item> {
        &mut doc.llm_provider_templates
    }
    fn name(item: &Self::Item) -> &str {
        &item.name
    }
    fn builtins() -> Vec<Self::Item> {
        weir_config::builtin_templates()
    }
    fn in_use(doc: &GatewayConfig, name: &str) -> Option<String> {
        doc.providers
            .iter()
            .find(|p| p.template.as_deref() == Some(name))
            .map(|p| format!("provider `{}` uses it", p.name))
    }
}

impl Kind for Providers {
    type Item = Provider;
    const PATH: &'static str = "llm-providers";
    const FIELD: &'static str = "providers";
    const NOUN: &'static str = "provider";

    fn items(doc: &GatewayConfig) -> &Vec<Self::Item> {
        &doc.providers
    }
    fn items_mut(doc: &mut GatewayConfig) -> &mut Vec<Self::Item> {
        &mut doc.providers
    }
    fn name(item: &Self::Item) -> &str {
        &item.name
    }
    /// `api-key: "***"` keeps the stored key.
    fn incoming(old: Option<&Self::Item>, new: &mut Self::Item) -> Result<(), ApiError> {
        if new.api_key.as_ref().is_some_and(|k| k.is_redacted()) {
            match old.and_then(|o| o.api_key.clone()) {
                Some(stored) => new.api_key = Some(stored),
                None => {
                    return Err(ApiError::invalid(
                        "api-key",
                        "`***` keeps the stored key, but this provider has none: send the key",
                    ));
                }
            }
        }
        Ok(())
    }
    fn in_use(doc: &GatewayConfig, name: &str) -> Option<String> {
        doc.proxies
            .iter()
            .find(|p| p.provider == name)
            .map(|p| format!("proxy `{}` uses it", p.name))
    }
}

impl Kind for Proxies {
    type Item = Proxy;
    const PATH: &'static str = "llm-proxies";
    const FIELD: &'static str = "proxies";
    const NOUN: &'static str = "proxy";

    fn items(doc: &GatewayConfig) -> &Vec<Self::Item> {
        &doc.proxies
    }
    fn items_mut(doc: &mut GatewayConfig) -> &mut Vec<Self::Item> {
        &mut doc.proxies
    }
    fn name(item: &Self::Item) -> &str {
        &item.name
    }
    /// API keys are managed under `/llm-proxies/{name}/api-keys`: a write keeps the stored ones.
    fn incoming(old: Option<&Self::Item>, new: &mut Self::Item) -> Result<(), ApiError> {
        new.api_keys = old.map(|o| o.api_keys.clone()).unwrap_or_default();
        Ok(())
    }
}

impl Kind for McpProxies {
    type Item = McpProxy;
    const PATH: &'static str = "mcp-proxies";
    const FIELD: &'static str = "mcp-proxies";
    const NOUN: &'static str = "MCP proxy";

    fn items(doc: &GatewayConfig) -> &Vec<Self::Item> {
        &doc.mcp_proxies
    }
    fn items_mut(doc: &mut GatewayConfig) -> &mut Vec<Self::Item> {
        &mut doc.mcp_proxies
    }
    fn name(item: &Self::Item) -> &str {
        &item.name
    }
}
