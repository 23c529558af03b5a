//! From configuration to a ready gateway: load components, validate policy configs, routes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use weir_config::{GatewayConfig, PolicyRef};
use weir_runtime::{ChainSpec, Policy, Runtime, RuntimeOptions, SlotSpec};
use weir_state::{KvStore, MemoryStore, Namespaced};

use crate::upstream::{self, HttpClient, PolicyHttp, Provider, Secret};
use crate::usage::UsageLog;

/// Settings that are not part of the declarative configuration.
#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    /// Where compiled components and usage records are kept; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
}

/// Why the gateway could not start. Each names the configuration field at fault.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    #[error(transparent)]
    Load(#[from] weir_runtime::LoadError),
    #[error("{0}")]
    Io(String),
}

/// One proxy's route.
#[derive(Debug)]
pub(crate) struct Route {
    /// `""` for `/`, else `/assistant`.
    pub prefix: String,
    /// Name, provider and limits, as the portable loop sees them.
    pub info: weir_core::RouteInfo,
    pub chain: Arc<ChainSpec>,
}

/// Everything a request needs, immutable once built.
#[derive(Debug)]
pub(crate) struct State {
    pub config: GatewayConfig,
    /// Longest prefix first.
    pub routes: Vec<Route>,
    pub client: HttpClient,
    pub usage: UsageLog,
    pub metrics: crate::metrics::Metrics,
    _mocks: Vec<Arc<weir_mock_upstream::MockServer>>,
}

impl State {
    pub(crate) async fn build(
        config: GatewayConfig,
        options: GatewayOptions,
    ) -> Result<Self, BuildError> {
        let client = upstream::client();
        let runtime = Runtime::with_outbound(
            RuntimeOptions {
                call_timeout: Duration::from_millis(config.runtime.policy_timeout_ms),
                memory_limit_bytes: usize::try_from(config.runtime.policy_memory_mib << 20)
                    .unwrap_or(usize::MAX),
                max_instances: config.runtime.max_instances,
                cache_dir: options.data_dir.as_ref().map(|d| d.join("cache")),
            },
            Arc::new(PolicyHttp(client.clone())),
        )?;

        // Load every component once.
        let mut policies: HashMap<String, Arc<Policy>> = HashMap::new();
        for (name, bytes) in weir_policies::builtins() {
            policies.insert(name.to_owned(), runtime.load(name, bytes)?);
        }
        for (i, source) in config.policies.iter().enumerate() {
            let bytes = std::fs::read(&source.path).map_err(|e| BuildError::Config {
                path: format!("policies[{i}].path"),
                message: format!("cannot read `{}`: {e}", source.path.display()),
            })?;
            policies.insert(source.name.clone(), runtime.load(&source.name, &bytes)?);
        }

        let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::new(config.kv.max_entries));
        let mut mocks = Vec::new();
        let mut providers: HashMap<String, Arc<Provider>> = HashMap::new();
        for p in &config.providers {
            let base_url = if p.base_url == "builtin:mock" {
                let mock = weir_mock_upstream::MockServer::start(
                    ([127, 0, 0, 1], 0).into(),
                    weir_mock_upstream::MockOptions::default(),
                )
                .await
                .map_err(|e| BuildError::Io(format!("starting the bundled mock provider: {e}")))?;
                let url = format!("{}/v1", mock.base_url());
                tracing::info!(provider = %p.name, url, "started the bundled mock provider");
                mocks.push(Arc::new(mock));
                url
            } else {
                p.base_url.trim_end_matches('/').to_owned()
            };
            let (api_key, missing_key_env) = match &p.api_key_env {
                Some(var) => match std::env::var(var) {
                    Ok(v) if !v.is_empty() => (Some(Secret::new(v)), None),
                    _ => {
                        tracing::warn!(provider = %p.name, variable = %var, "provider key not set: its routes answer 503 until it is");
                        (None, Some(var.clone()))
                    }
                },
                None => (None, None),
            };
            providers.insert(
                p.name.clone(),
                Arc::new(Provider {
                    name: p.name.clone(),
                    base_url,
                    api_key,
                    missing_key_env,
                    timeout_ms: p.timeout_ms,
                }),
            );
        }

        let mut routes = Vec::new();
        for (i, proxy) in config.proxies.iter().enumerate() {
            let provider_index = config
                .providers
                .iter()
                .position(|p| p.name == proxy.provider)
                .unwrap_or(0);
            let provider_cfg = &config.providers[provider_index];
            let mut chain: Vec<(String, &PolicyRef)> = Vec::new();
            for (j, r) in provider_cfg.policies.iter().enumerate() {
                chain.push((format!("providers[{provider_index}].policies[{j}]"), r));
            }
            for (j, r) in proxy.policies.iter().enumerate() {
                chain.push((format!("proxies[{i}].policies[{j}]"), r));
            }
            let mut slots = Vec::new();
            for (k, (path, r)) in chain.into_iter().enumerate() {
                let policy =
                    policies
                        .get(&r.policy)
                        .cloned()
                        .ok_or_else(|| BuildError::Config {
                            path: format!("{path}.policy"),
                            message: format!("unknown policy `{}`", r.policy),
                        })?;
                let config_json = r.config.to_string();
                policy
                    .validate_entry(&path, &config_json)
                    .await
                    .map_err(|(path, message)| BuildError::Config { path, message })?;
                let instance = format!("{}#{k}", r.policy);
                let qualified = format!("{}/{instance}", proxy.name);
                slots.push(SlotSpec {
                    kv: Namespaced::new(kv.clone(), &qualified),
                    policy,
                    instance,
                    qualified,
                    config_json,
                    allow_hosts: r.allow_hosts.clone(),
                });
            }
            let provider =
                providers
                    .get(&proxy.provider)
                    .cloned()
                    .ok_or_else(|| BuildError::Config {
                        path: format!("proxies[{i}].provider"),
                        message: format!("unknown provider `{}`", proxy.provider),
                    })?;
            routes.push(Route {
                prefix: if proxy.context_path == "/" {
                    String::new()
                } else {
                    proxy.context_path.clone()
                },
                info: weir_core::RouteInfo {
                    name: proxy.name.clone(),
                    provider,
                    limits: weir_core::Limits {
                        max_body_bytes: config.limits.max_body_bytes,
                        max_response_bytes: config.limits.max_response_bytes,
                    },
                },
                chain: Arc::new(ChainSpec::new(slots)),
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));

        let usage = UsageLog::new(options.data_dir.as_ref().map(|d| d.join("usage.jsonl")))
            .map_err(|e| BuildError::Io(format!("opening the usage log: {e}")))?;
        Ok(Self {
            config,
            routes,
            client,
            usage,
            metrics: crate::metrics::Metrics::default(),
            _mocks: mocks,
        })
    }
}
