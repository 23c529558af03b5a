//! From a gateway configuration to the edge plan and the components to compose.

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};
use weir_config::{ChainEntry, GatewayConfig};
use weir_core::RouteKind;
use weir_core::plan::{
    PLAN_VERSION, Plan, PlanMcpMember, PlanMcpServer, PlanPolicy, PlanProvider, PlanRoute, PlanSlot,
};
use weir_runtime::{ContractVersion, Policy, Runtime, RuntimeOptions};

/// A policy component plugged into a link of the chain.
#[derive(Debug, Clone)]
pub struct PolicyComponent {
    pub name: String,
    pub bytes: Vec<u8>,
    /// The component as loaded (to pre-initialise it).
    pub policy: std::sync::Arc<Policy>,
    /// The configurations (JSON) of the entries this slot serves, in plan order, distinct.
    pub configs: Vec<String>,
}

/// The components loaded so far and the slots (links) they were given.
struct Slots {
    runtime: Runtime,
    available: HashMap<String, Vec<u8>>,
    loaded: HashMap<String, std::sync::Arc<Policy>>,
    components: Vec<PolicyComponent>,
    plan: Vec<PlanSlot>,
}

impl Slots {
    /// The plan entries of a chain, each validated by its component.
    async fn chain(
        &mut self,
        entries: Vec<ChainEntry>,
    ) -> Result<Vec<PlanPolicy>, (String, String)> {
        let mut policies = Vec::new();
        for entry in entries {
            let r = &entry.policy;
            let path = &entry.path;
            let Some(bytes) = self.available.get(&r.policy) else {
                return Err((
                    format!("{path}.policy"),
                    format!("unknown policy `{}`", r.policy),
                ));
            };
            if !self.loaded.contains_key(&r.policy) {
                let policy = self
                    .runtime
                    .load(&r.policy, bytes)
                    .map_err(|e| (format!("{path}.policy"), e.to_string()))?;
                if policy.contract() != ContractVersion::V0_2 {
                    return Err((
                        format!("{path}.policy"),
                        format!(
                            "the policy `{}` was built against weir:policy@{}: the edge apps run \
                             weir:policy@0.2.0 components only (rebuild it against \
                             wit/policy-0.2; the self-hosted weir runs both)",
                            r.policy,
                            policy.contract().as_str()
                        ),
                    ));
                }
                self.loaded.insert(r.policy.clone(), policy);
            }
            let Some(policy) = self.loaded.get(&r.policy) else {
                continue;
            };
            let config_json = r.config.to_string();
            policy
                .validate_entry(path, &entry.config_path, &config_json)
                .await?;
            let slot = match self.components.iter().position(|s| s.name == r.policy) {
                Some(s) => s,
                None => {
                    self.components.push(PolicyComponent {
                        name: r.policy.clone(),
                        bytes: bytes.clone(),
                        policy: policy.clone(),
                        configs: Vec::new(),
                    });
                    self.plan.push(PlanSlot {
                        policy: r.policy.clone(),
                        sha256: hex::encode(Sha256::digest(bytes)),
                        phases: policy.info().phases.clone(),
                        preinitialised: false,
                    });
                    self.components.len() - 1
                }
            };
            let configs = &mut self.components[slot].configs;
            if !configs.contains(&config_json) {
                configs.push(config_json.clone());
            }
            policies.push(PlanPolicy {
                slot: slot as u32,
                instance: entry.instance.clone(),
                namespace: entry.namespace.clone(),
                config: config_json,
                allow_hosts: r.allow_hosts.clone(),
                credential: r.credential.clone(),
            });
        }
        Ok(policies)
    }
}

fn prefix(context_path: &str) -> String {
    if context_path == "/" {
        String::new()
    } else {
        context_path.to_owned()
    }
}

/// Builds the plan; errors are (config field path, message).
pub async fn make_plan(
    config: &GatewayConfig,
    base: &Path,
) -> Result<(Plan, Vec<PolicyComponent>), (String, String)> {
    let runtime = Runtime::new(RuntimeOptions::default())
        .map_err(|e| (String::new(), format!("creating the wasmtime engine: {e}")))?;
    let mut available: HashMap<String, Vec<u8>> = weir_policies::builtins()
        .map(|(n, b)| (n.to_owned(), b.to_vec()))
        .collect();
    for (i, source) in config.policies.iter().enumerate() {
        let path = if source.path.is_absolute() {
            source.path.clone()
        } else {
            base.join(&source.path)
        };
        let bytes = std::fs::read(&path).map_err(|e| {
            (
                format!("policies[{i}].path"),
                format!("cannot read `{}`: {e}", path.display()),
            )
        })?;
        available.insert(source.name.clone(), bytes);
    }
    let mut slots = Slots {
        runtime,
        available,
        loaded: HashMap::new(),
        components: Vec::new(),
        plan: Vec::new(),
    };

    let mut providers = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    for (pi, provider) in config.providers.iter().enumerate() {
        if provider.base_url.starts_with("builtin:") {
            return Err((
                format!("providers[{pi}].base-url"),
                format!(
                    "`{}` runs inside the self-hosted weir only; an edge app needs a provider URL it can reach (e.g. https://api.openai.com/v1)",
                    provider.base_url
                ),
            ));
        }
        if provider.kind == weir_config::ProviderKind::AwsBedrock
            || !provider.deployments.is_empty()
        {
            return Err((
                format!("providers[{pi}].kind"),
                "AWS Bedrock signing and Azure deployment maps are served by the self-hosted weir only for now; at the edge use an OpenAI-compatible, Azure (model name = deployment), Anthropic or Gemini provider".to_owned(),
            ));
        }
        if provider.api_key.is_some() {
            return Err((
                format!("providers[{pi}].api-key"),
                "an edge app reads provider keys from the platform's secrets: use api-key-env"
                    .into(),
            ));
        }
        if let Some(var) = &provider.api_key_env
            && !secrets.contains(var)
        {
            secrets.push(var.clone());
        }
        providers.push(PlanProvider {
            name: provider.name.clone(),
            base_url: provider.base_url.trim_end_matches('/').to_owned(),
            api_key_secret: provider.api_key_env.clone(),
            timeout_ms: provider.timeout_ms,
            expose: provider.expose.clone(),
            kind: provider.kind,
            api_version: provider.api_version.clone(),
        });
    }

    let mut routes = Vec::new();
    for (i, proxy) in config.proxies.iter().enumerate() {
        let policies = slots.chain(config.chain(i)).await?;
        routes.push(PlanRoute {
            name: proxy.name.clone(),
            prefix: prefix(&proxy.context_path),
            kind: RouteKind::Llm,
            provider: Some(proxy.provider.clone()),
            mcp: None,
            policies,
            retry: proxy.retry.clone(),
        });
    }
    for (i, proxy) in config.mcp_proxies.iter().enumerate() {
        // Over a REST API the chain's `mcp-translator` answers every request; the secret
        // holding the API's credential goes to its slot.
        let up = &proxy.upstream;
        let (url, timeout_ms, server) = match (&up.server, &up.openapi) {
            (Some(server), _) => (server.url.clone(), server.timeout_ms(), Some(server)),
            (None, Some(api)) => (api.base_url.clone(), api.timeout_ms.unwrap_or(30_000), None),
            // Several servers: each member has its own.
            (None, None) => (String::new(), 60_000, None),
        };
        let key_envs = server
            .and_then(|s| s.api_key_env.clone())
            .into_iter()
            .chain(up.openapi.as_ref().and_then(|a| a.api_key_env.clone()))
            .chain(up.servers.iter().filter_map(|m| m.api_key_env.clone()));
        for var in key_envs {
            if !secrets.contains(&var) {
                secrets.push(var);
            }
        }
        let members = up
            .servers
            .iter()
            .map(|m| {
                let server = m.server();
                PlanMcpMember {
                    name: m.name.clone(),
                    url: m.url.clone(),
                    timeout_ms: server.timeout_ms(),
                    api_key_secret: m.api_key_env.clone(),
                    api_key_header: m.api_key_env.as_ref().map(|_| server.api_key_header()),
                }
            })
            .collect();
        let policies = slots.chain(config.mcp_chain(i)).await?;
        routes.push(PlanRoute {
            name: proxy.name.clone(),
            prefix: prefix(&proxy.context_path),
            kind: RouteKind::Mcp,
            provider: None,
            mcp: Some(PlanMcpServer {
                url,
                timeout_ms,
                tools: proxy.tools.iter().map(weir_config::McpTool::rule).collect(),
                api_key_secret: server.and_then(|s| s.api_key_env.clone()),
                api_key_header: server
                    .and_then(|s| s.api_key_env.as_ref().map(|_| s.api_key_header())),
                allowed_origins: proxy.allowed_origins.clone(),
                oauth: proxy.oauth.clone(),
                members,
                prefixed: up.prefix != Some(weir_config::McpPrefix::None),
                fail_open: up.fail_open.unwrap_or(true),
            }),
            policies,
            retry: weir_core::Retry::default(),
        });
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    Ok((
        Plan {
            version: PLAN_VERSION,
            max_body_bytes: config.limits.max_body_bytes,
            max_response_bytes: config.limits.max_response_bytes,
            providers,
            routes,
            secrets,
            slots: slots.plan,
        },
        slots.components,
    ))
}

/// Pre-initialises the slots whose component asks for it (the SDK's `Policy::PREINITIALISE`):
/// the component's `validate-config` runs on every configuration of the slot's entries in one
/// instance, and the snapshot of that instance (wasmtime-wizer, as the self-hosted host does per
/// configuration) replaces the component in the composition. A slot that cannot be
/// pre-initialised keeps the component as loaded (its instances parse their configuration at
/// first use), with a warning.
pub async fn preinitialise(
    plan: &mut Plan,
    slots: &mut [PolicyComponent],
    progress: &mut dyn FnMut(&str),
) {
    for (slot, planned) in slots.iter_mut().zip(plan.slots.iter_mut()) {
        if !slot.policy.preinitialises() || slot.configs.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let configs: Vec<&str> = slot.configs.iter().map(String::as_str).collect();
        match slot.policy.edge_preinitialised(&configs).await {
            Ok(Some(bytes)) => {
                progress(&format!(
                    "pre-initialised `{}` with {} configuration(s) in {:.1}s ({} -> {} bytes)",
                    slot.name,
                    configs.len(),
                    started.elapsed().as_secs_f64(),
                    slot.bytes.len(),
                    bytes.len()
                ));
                slot.bytes = bytes;
                planned.preinitialised = true;
            }
            Ok(None) => {}
            Err(e) => progress(&format!(
                "warning: could not pre-initialise `{}` ({e}); the app's instances of it parse \
                 their configuration at first use",
                slot.name
            )),
        }
    }
}
