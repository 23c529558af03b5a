//! From a gateway configuration to the edge plan and the components to compose.

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};
use weir_config::GatewayConfig;
use weir_core::plan::{PLAN_VERSION, Plan, PlanPolicy, PlanProvider, PlanRoute, PlanSlot};
use weir_runtime::{Runtime, RuntimeOptions};

/// The number of policy slots of the gateway component (`wit/edge/edge.wit`).
pub const SLOTS: usize = 6;

/// A policy component plugged into a slot.
#[derive(Debug, Clone)]
pub struct PolicyComponent {
    pub name: String,
    pub bytes: Vec<u8>,
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

    let mut slots: Vec<PolicyComponent> = Vec::new();
    let mut plan_slots: Vec<PlanSlot> = Vec::new();
    let mut loaded = HashMap::new();
    let mut routes = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    for (i, proxy) in config.proxies.iter().enumerate() {
        let Some((pi, provider)) = config
            .providers
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == proxy.provider)
        else {
            return Err((
                format!("proxies[{i}].provider"),
                format!("unknown provider `{}`", proxy.provider),
            ));
        };
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
        if let Some(var) = &provider.api_key_env
            && !secrets.contains(var)
        {
            secrets.push(var.clone());
        }
        if provider.api_key.is_some() {
            return Err((
                format!("providers[{pi}].api-key"),
                "an edge app reads provider keys from the platform's secrets: use api-key-env"
                    .into(),
            ));
        }
        let chain = config.chain(i);
        let mut policies = Vec::new();
        for (k, (path, r)) in chain.iter().enumerate() {
            let Some(bytes) = available.get(&r.policy) else {
                return Err((
                    format!("{path}.policy"),
                    format!("unknown policy `{}`", r.policy),
                ));
            };
            if !loaded.contains_key(&r.policy) {
                let policy = runtime
                    .load(&r.policy, bytes)
                    .map_err(|e| (format!("{path}.policy"), e.to_string()))?;
                loaded.insert(r.policy.clone(), policy);
            }
            let Some(policy) = loaded.get(&r.policy) else {
                continue;
            };
            let config_json = r.config.to_string();
            policy.validate_entry(path, &config_json).await?;
            let slot = match slots.iter().position(|s| s.name == r.policy) {
                Some(s) => s,
                None => {
                    if slots.len() == SLOTS {
                        return Err((
                            format!("{path}.policy"),
                            format!(
                                "an edge app can use at most {SLOTS} different policy components"
                            ),
                        ));
                    }
                    slots.push(PolicyComponent {
                        name: r.policy.clone(),
                        bytes: bytes.clone(),
                    });
                    plan_slots.push(PlanSlot {
                        policy: r.policy.clone(),
                        sha256: hex::encode(Sha256::digest(bytes)),
                        phases: policy.info().phases.clone(),
                    });
                    slots.len() - 1
                }
            };
            policies.push(PlanPolicy {
                slot: slot as u32,
                instance: format!("{}/{}#{k}", proxy.name, r.policy),
                config: config_json,
                allow_hosts: r.allow_hosts.clone(),
            });
        }
        routes.push(PlanRoute {
            name: proxy.name.clone(),
            prefix: if proxy.context_path == "/" {
                String::new()
            } else {
                proxy.context_path.clone()
            },
            provider: PlanProvider {
                name: provider.name.clone(),
                base_url: provider.base_url.trim_end_matches('/').to_owned(),
                api_key_secret: provider.api_key_env.clone(),
                timeout_ms: provider.timeout_ms,
                expose: provider.expose.clone(),
                kind: serde_json::to_value(provider.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .filter(|k| k != "openai"),
                api_version: provider.api_version.clone(),
            },
            policies,
        });
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    Ok((
        Plan {
            version: PLAN_VERSION,
            max_body_bytes: config.limits.max_body_bytes,
            max_response_bytes: config.limits.max_response_bytes,
            routes,
            secrets,
            slots: plan_slots,
        },
        slots,
    ))
}
