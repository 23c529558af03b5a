//! From configuration to a ready gateway: load components, validate policy configs, routes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use weir_config::GatewayConfig;
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
pub enum ConfigureError {
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

/// A component by (name, sha256 of its bytes).
type ComponentKey = (String, [u8; 32]);

/// What outlives a configuration: the wasmtime runtime and the components it compiled, the
/// policies' key-value store (counters survive a reload), the upstream client, usage records,
/// metrics and the bundled mock providers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub client: HttpClient,
    pub usage: UsageLog,
    pub metrics: crate::metrics::Metrics,
    runtime: Runtime,
    kv: Arc<dyn KvStore>,
    /// Components loaded so far, by (name, sha256 of the bytes).
    components: tokio::sync::Mutex<HashMap<ComponentKey, Arc<Policy>>>,
    /// The bundled mock provider, started on first use.
    mock: tokio::sync::OnceCell<Arc<weir_mock_upstream::MockServer>>,
}

/// Everything a request needs under one configuration, immutable once built. A reload builds a
/// new one; requests in flight keep the one they started with.
#[derive(Debug)]
pub(crate) struct State {
    pub config: GatewayConfig,
    /// Longest prefix first.
    pub routes: Vec<Route>,
    pub shared: Arc<Shared>,
    /// The policy components this configuration can use, built-in first.
    pub catalogue: Vec<PolicySummary>,
}

/// A policy component as the catalogue lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct PolicySummary {
    /// The name configurations use.
    pub name: String,
    /// The name and version the component declares (`describe`).
    pub declared_name: String,
    pub version: String,
    pub phases: Vec<String>,
    pub sha256: String,
    pub size_bytes: usize,
    pub builtin: bool,
    /// The JSON Schema of the policy's configuration, when the component embeds one (custom
    /// section `weir:config-schema`).
    pub config_schema: Option<serde_json::Value>,
}

impl PolicySummary {
    fn new(name: &str, policy: &Policy, bytes: &[u8], builtin: bool) -> Self {
        use sha2::Digest as _;
        let info = policy.info();
        Self {
            name: name.to_owned(),
            declared_name: info.name.clone(),
            version: info.version.clone(),
            phases: info
                .phases
                .iter()
                .map(|p| p.function().to_owned())
                .collect(),
            sha256: hex_digest(&sha2::Sha256::digest(bytes)),
            size_bytes: bytes.len(),
            builtin,
            config_schema: policy.config_schema().cloned(),
        }
    }
}

fn hex_digest(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Shared {
    /// Whether the key-value store answers (a read of a probe key within a second).
    pub(crate) async fn kv_reachable(&self) -> Result<(), String> {
        match tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.kv.get("weir:readiness-probe"),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("key-value store: {e}")),
            Err(_) => Err("key-value store: no answer within 1 s".into()),
        }
    }

    /// The process-wide parts, sized by the first configuration (`runtime`, `kv` and the data
    /// directory do not change on a reload).
    pub(crate) fn new(
        config: &GatewayConfig,
        options: &GatewayOptions,
    ) -> Result<Self, ConfigureError> {
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
        let usage = UsageLog::new(options.data_dir.as_ref().map(|d| d.join("usage.jsonl")))
            .map_err(|e| ConfigureError::Io(format!("opening the usage log: {e}")))?;
        Ok(Self {
            client,
            usage,
            metrics: crate::metrics::Metrics::default(),
            runtime,
            kv: Arc::new(MemoryStore::new(config.kv.max_entries)),
            components: tokio::sync::Mutex::default(),
            mock: tokio::sync::OnceCell::new(),
        })
    }

    /// The component `name` with these bytes, compiled once per process.
    async fn component(&self, name: &str, bytes: &[u8]) -> Result<Arc<Policy>, ConfigureError> {
        use sha2::Digest as _;
        let key = (name.to_owned(), sha2::Sha256::digest(bytes).into());
        let mut components = self.components.lock().await;
        if let Some(p) = components.get(&key) {
            return Ok(p.clone());
        }
        let policy = self.runtime.load(name, bytes)?;
        components.insert(key, policy.clone());
        Ok(policy)
    }

    /// Loads a component (as an upload would be) and describes it.
    pub(crate) async fn describe(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> Result<PolicySummary, ConfigureError> {
        let policy = self.component(name, bytes).await?;
        Ok(PolicySummary::new(name, &policy, bytes, false))
    }

    async fn mock_url(&self) -> Result<String, ConfigureError> {
        let mock = self
            .mock
            .get_or_try_init(|| async {
                let mock = weir_mock_upstream::MockServer::start(
                    ([127, 0, 0, 1], 0).into(),
                    weir_mock_upstream::MockOptions::default(),
                )
                .await
                .map_err(|e| ConfigureError::Io(format!("starting the bundled mock provider: {e}")))?;
                tracing::info!(url = %mock.base_url(), "started the bundled mock provider");
                Ok::<_, ConfigureError>(Arc::new(mock))
            })
            .await?;
        Ok(format!("{}/v1", mock.base_url()))
    }
}

impl State {
    /// Builds the routes of `config`: loads its components (each compiled once per process),
    /// validates every policy entry's configuration with the policy itself.
    pub(crate) async fn build(
        config: GatewayConfig,
        shared: Arc<Shared>,
    ) -> Result<Self, ConfigureError> {
        let kv = shared.kv.clone();
        let mut policies: HashMap<String, Arc<Policy>> = HashMap::new();
        let mut catalogue = Vec::new();
        for (name, bytes) in weir_policies::builtins() {
            let policy = shared.component(name, bytes).await?;
            catalogue.push(PolicySummary::new(name, &policy, bytes, true));
            policies.insert(name.to_owned(), policy);
        }
        for (i, source) in config.policies.iter().enumerate() {
            let bytes = std::fs::read(&source.path).map_err(|e| ConfigureError::Config {
                path: format!("policies[{i}].path"),
                message: format!("cannot read `{}`: {e}", source.path.display()),
            })?;
            let policy = shared.component(&source.name, &bytes).await?;
            catalogue.push(PolicySummary::new(&source.name, &policy, &bytes, false));
            policies.insert(source.name.clone(), policy);
        }

        let prices = Arc::new(weir_llm::price::PriceTable::new(
            config
                .prices
                .iter()
                .map(|p| weir_llm::price::Price {
                    model: p.model.clone(),
                    provider: p.provider.clone(),
                    input: p.input_per_million,
                    output: p.output_per_million,
                    cached_input: p.cached_input_per_million,
                })
                .collect(),
        ));
        let mut providers: HashMap<String, Arc<Provider>> = HashMap::new();
        for p in &config.providers {
            let kind = p.kind;
            let base_url = if p.base_url == "builtin:mock" {
                let v1 = shared.mock_url().await?;
                match kind {
                    weir_llm::ProviderKind::Openai
                    | weir_llm::ProviderKind::Mistral
                    | weir_llm::ProviderKind::Anthropic => v1,
                    weir_llm::ProviderKind::Gemini => format!("{}beta", v1),
                    _ => v1.trim_end_matches("/v1").to_owned(),
                }
            } else {
                p.base_url.trim_end_matches('/').to_owned()
            };
            let env = |var: &String| match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(v),
                _ => {
                    tracing::warn!(provider = %p.name, variable = %var, "provider credential not set: its routes answer 503 until it is");
                    None
                }
            };
            let mut aws = None;
            let mut bedrock_missing = None;
            if kind == weir_llm::ProviderKind::AwsBedrock {
                let settings = p.aws.clone().unwrap_or(weir_config::AwsSettings {
                    region: None,
                    access_key_id_env: "AWS_ACCESS_KEY_ID".into(),
                    secret_access_key_env: "AWS_SECRET_ACCESS_KEY".into(),
                    session_token_env: None,
                });
                let region = settings
                    .region
                    .clone()
                    .or_else(|| weir_config::bedrock_region(&p.base_url).map(str::to_owned))
                    .unwrap_or_else(|| "us-east-1".into());
                let id = env(&settings.access_key_id_env);
                let secret = env(&settings.secret_access_key_env);
                match (id, secret) {
                    (Some(id), Some(secret)) => {
                        aws = Some(weir_core::AwsAuth {
                            region,
                            access_key_id: id,
                            session_token: settings
                                .session_token_env
                                .as_ref()
                                .and_then(env)
                                .map(Secret::new),
                        });
                        bedrock_missing = Some((Some(Secret::new(secret)), None));
                    }
                    (id, _) => {
                        let var = if id.is_none() {
                            settings.access_key_id_env
                        } else {
                            settings.secret_access_key_env
                        };
                        bedrock_missing = Some((None, Some(var)));
                    }
                }
            }
            let (api_key, missing_key_env) = if let Some(b) = bedrock_missing {
                b
            } else {
                match (&p.api_key, &p.api_key_env) {
                    (Some(key), _) => (Some(Secret::new(key.expose().to_owned())), None),
                    (None, Some(var)) => match std::env::var(var) {
                        Ok(v) if !v.is_empty() => (Some(Secret::new(v)), None),
                        _ => {
                            tracing::warn!(provider = %p.name, variable = %var, "provider key not set: its routes answer 503 until it is");
                            (None, Some(var.clone()))
                        }
                    },
                    (None, None) => (None, None),
                }
            };
            providers.insert(
                p.name.clone(),
                Arc::new(Provider {
                    name: p.name.clone(),
                    base_url,
                    api_key,
                    missing_key_env,
                    timeout_ms: p.timeout_ms,
                    kind,
                    api_version: p.api_version.clone(),
                    deployments: p
                        .deployments
                        .iter()
                        .map(|(m, d)| (m.clone(), d.clone()))
                        .collect(),
                    aws,
                    prices: prices.clone(),
                }),
            );
        }

        let mut routes = Vec::new();
        for (i, proxy) in config.proxies.iter().enumerate() {
            let chain = config.chain(i);
            let mut slots = Vec::new();
            for (k, (path, r)) in chain.iter().enumerate() {
                let policy =
                    policies
                        .get(&r.policy)
                        .cloned()
                        .ok_or_else(|| ConfigureError::Config {
                            path: format!("{path}.policy"),
                            message: format!("unknown policy `{}`", r.policy),
                        })?;
                let config_json = r.config.to_string();
                policy
                    .validate_entry(path, &config_json)
                    .await
                    .map_err(|(path, message)| ConfigureError::Config { path, message })?;
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
                    .ok_or_else(|| ConfigureError::Config {
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
                    exposed: config.provider(&proxy.provider).and_then(|p| {
                        p.expose.as_ref().map(|names| {
                            names
                                .iter()
                                .filter_map(|n| weir_core::Endpoint::from_name(n))
                                .collect()
                        })
                    }),
                },
                chain: Arc::new(ChainSpec::new(slots)),
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Self {
            config,
            routes,
            shared,
            catalogue,
        })
    }
}
