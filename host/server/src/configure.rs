//! From configuration to a ready gateway: load components, validate policy configs, routes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use weir_config::GatewayConfig;
use weir_core::{Upstream, Upstreams};
use weir_runtime::{ChainSpec, Policy, Runtime, RuntimeOptions, Services, SlotSpec};
use weir_state::{KvStore, MemoryVectors, Namespaced, VectorStore};

/// Vectors one index holds (the semantic cache keeps one index per model, parameters and scope).
const VECTORS_PER_INDEX: usize = 100_000;
/// Indexes the gateway holds.
const VECTOR_INDEXES: usize = 100_000;
/// Memory all vector indexes may hold (about 160,000 vectors of 384 dimensions).
const VECTOR_MEMORY_MIB: usize = 256;

use crate::upstream::{self, HttpClient, PolicyHttp, Secret, UpstreamEmbedder};
use crate::usage::UsageLog;

/// Upstreams built into the binary that runs the gateway (`base-url: builtin:<name>`), e.g.
/// the `weir` binary's bundled mock provider for offline demos.
pub trait BuiltinUpstreams: Send + Sync + std::fmt::Debug + 'static {
    /// The base URL (`http://127.0.0.1:PORT`) of the built-in upstream `name`, started on first
    /// use; an error says why it is not available.
    fn base_url(&self, name: &str) -> BoxFuture<'_, Result<String, String>>;
}

/// Settings that are not part of the declarative configuration.
#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    /// Where compiled components and usage records are kept; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Where compiled components (and pre-initialised snapshots) are kept instead of
    /// `<data_dir>/cache`: a directory several gateways of the same build may share.
    pub cache_dir: Option<PathBuf>,
    /// What `builtin:` base URLs resolve to; none: such providers are refused.
    pub builtins: Option<Arc<dyn BuiltinUpstreams>>,
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

/// One proxy's route (LLM or MCP).
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
/// policies' key-value and vector stores (state survives a reload), the upstream client, usage
/// records, metrics and the built-in upstreams.
#[derive(Debug)]
pub(crate) struct Shared {
    pub client: HttpClient,
    pub usage: UsageLog,
    pub metrics: Arc<crate::metrics::Metrics>,
    runtime: Runtime,
    pub(crate) kv: Arc<dyn KvStore>,
    vectors: Arc<dyn VectorStore>,
    /// The providers of the configuration being served (embeddings for policies use them).
    pub upstreams: Arc<arc_swap::ArcSwap<Upstreams>>,
    /// Components loaded so far, by (name, sha256 of the bytes).
    components: tokio::sync::Mutex<HashMap<ComponentKey, Arc<Policy>>>,
    builtins: Option<Arc<dyn BuiltinUpstreams>>,
    /// Shutting down: `/ready` says so, so that load balancers stop sending requests.
    pub draining: std::sync::atomic::AtomicBool,
}

/// Everything a request needs under one configuration, immutable once built. A reload builds a
/// new one; requests in flight keep the one they started with.
#[derive(Debug)]
pub(crate) struct State {
    pub config: GatewayConfig,
    /// Longest prefix first.
    pub routes: Vec<Route>,
    /// Every provider, by name.
    pub upstreams: Arc<Upstreams>,
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
    pub(crate) async fn new(
        config: &GatewayConfig,
        options: &GatewayOptions,
    ) -> Result<Self, ConfigureError> {
        let client = upstream::client();
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let upstreams: Arc<arc_swap::ArcSwap<Upstreams>> = Arc::default();
        let runtime = Runtime::with_services(
            RuntimeOptions {
                call_timeout: Duration::from_millis(config.runtime.policy_timeout_ms),
                memory_limit_bytes: usize::try_from(config.runtime.policy_memory_mib << 20)
                    .unwrap_or(usize::MAX),
                max_instances: config.runtime.max_instances,
                cache_dir: options
                    .cache_dir
                    .clone()
                    .or_else(|| options.data_dir.as_ref().map(|d| d.join("cache"))),
            },
            Services {
                http: Arc::new(PolicyHttp(client.clone())),
                embedder: Arc::new(UpstreamEmbedder {
                    client: client.clone(),
                    upstreams: upstreams.clone(),
                }),
                metrics: metrics.clone(),
            },
        )?;
        let mut usage = UsageLog::new(options.data_dir.as_ref().map(|d| d.join("usage.jsonl")))
            .map_err(|e| ConfigureError::Io(format!("opening the usage log: {e}")))?;
        let kv = crate::kv::open(&config.kv, metrics.clone()).await?;
        // Vector indexes (the semantic cache's): in memory, bounded; with Redis, every replica's
        // in-memory copy follows the indexes' change streams in Redis (weir_state::RedisVectors).
        let local =
            MemoryVectors::bounded(VECTORS_PER_INDEX, VECTOR_INDEXES, VECTOR_MEMORY_MIB << 20);
        let vectors: Arc<dyn VectorStore> = if config.kv.backend == weir_config::KvBackend::Redis {
            Arc::new(
                weir_state::RedisVectors::connect(
                    &crate::kv::redis_options(&config.kv)?,
                    local,
                    VECTORS_PER_INDEX,
                )
                .await
                .map_err(|e| ConfigureError::Config {
                    path: "kv.url".into(),
                    message: format!("cannot use the key-value store for vector indexes: {e}"),
                })?,
            )
        } else {
            Arc::new(local)
        };
        if config.kv.backend == weir_config::KvBackend::Redis {
            let totals =
                weir_state::SharedTotals::connect(&crate::kv::redis_options(&config.kv)?, "usage")
                    .await
                    .map_err(|e| ConfigureError::Config {
                        path: "kv.url".into(),
                        message: format!("cannot use the key-value store for usage totals: {e}"),
                    })?;
            usage.share(totals);
        }
        Ok(Self {
            client,
            usage,
            metrics,
            runtime,
            kv,
            vectors,
            upstreams,
            components: tokio::sync::Mutex::default(),
            builtins: options.builtins.clone(),
            draining: std::sync::atomic::AtomicBool::new(false),
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
        // Compiling takes long: never on an async worker thread.
        let runtime = self.runtime.clone();
        let (name, owned) = (name.to_owned(), bytes.to_vec());
        let policy = tokio::task::spawn_blocking(move || runtime.load(&name, &owned))
            .await
            .map_err(|e| ConfigureError::Io(format!("compiling a policy component: {e}")))??;
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

    /// The base URL of `builtin:<name>`.
    async fn builtin_url(&self, path: &str, url: &str) -> Result<String, ConfigureError> {
        let name = url.strip_prefix("builtin:").unwrap_or(url);
        let Some(builtins) = &self.builtins else {
            return Err(ConfigureError::Config {
                path: path.to_owned(),
                message: format!(
                    "`{url}` is only available in the `weir` binary (its bundled mock provider)"
                ),
            });
        };
        builtins
            .base_url(name)
            .await
            .map_err(|message| ConfigureError::Config {
                path: path.to_owned(),
                message,
            })
    }
}

impl State {
    /// Builds the routes of `config`: loads its components (each compiled once per process),
    /// validates every policy entry's configuration with the policy itself.
    pub(crate) async fn build(
        config: GatewayConfig,
        shared: Arc<Shared>,
    ) -> Result<Self, ConfigureError> {
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
        let mut providers: Upstreams = Upstreams::new();
        for (pi, p) in config.providers.iter().enumerate() {
            let kind = p.kind;
            let base_url = if p.base_url.starts_with("builtin:") {
                let root = shared
                    .builtin_url(&format!("providers[{pi}].base-url"), &p.base_url)
                    .await?;
                match kind {
                    weir_llm::ProviderKind::Openai
                    | weir_llm::ProviderKind::Mistral
                    | weir_llm::ProviderKind::Anthropic => format!("{root}/v1"),
                    weir_llm::ProviderKind::Gemini => format!("{root}/v1beta"),
                    _ => root,
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
                Arc::new(Upstream {
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

        let upstreams = Arc::new(providers);
        let limits = weir_core::Limits {
            max_body_bytes: config.limits.max_body_bytes,
            max_response_bytes: config.limits.max_response_bytes,
        };
        let prefix = |context_path: &str| {
            if context_path == "/" {
                String::new()
            } else {
                context_path.to_owned()
            }
        };
        let mut routes = Vec::new();
        for (i, proxy) in config.proxies.iter().enumerate() {
            let chain = build_chain(&shared, &policies, &proxy.name, config.chain(i)).await?;
            let upstream =
                upstreams
                    .get(&proxy.provider)
                    .cloned()
                    .ok_or_else(|| ConfigureError::Config {
                        path: format!("proxies[{i}].provider"),
                        message: format!("unknown provider `{}`", proxy.provider),
                    })?;
            routes.push(Route {
                prefix: prefix(&proxy.context_path),
                info: weir_core::RouteInfo {
                    name: proxy.name.clone(),
                    kind: weir_core::RouteKind::Llm,
                    upstream,
                    upstreams: upstreams.clone(),
                    mcp: None,
                    limits,
                    retry: Arc::new(proxy.retry.clone()),
                    exposed: config.provider(&proxy.provider).and_then(|p| {
                        p.expose.as_ref().map(|names| {
                            names
                                .iter()
                                .filter_map(|n| weir_core::Endpoint::from_name(n))
                                .collect()
                        })
                    }),
                },
                chain,
            });
        }
        for (i, proxy) in config.mcp_proxies.iter().enumerate() {
            let up = &proxy.upstream;
            let (url, timeout_ms, server) = match (&up.server, &up.openapi) {
                (Some(server), _) => (server.url.clone(), server.timeout_ms(), Some(server)),
                // The chain's `mcp-translator` answers every request (and holds the credential).
                (None, Some(api)) => (api.base_url.clone(), api.timeout_ms.unwrap_or(30_000), None),
                // Several servers: each member has its own (below).
                (None, None) => (String::new(), 60_000, None),
            };
            let credential = server.and_then(|s| mcp_credential(&proxy.name, s));
            let members = up
                .servers
                .iter()
                .map(|m| {
                    let server = m.server();
                    weir_core::McpMember {
                        name: m.name.clone(),
                        url: m.url.clone(),
                        timeout_ms: server.timeout_ms(),
                        credential: mcp_credential(&proxy.name, &server),
                    }
                })
                .collect();
            let chain = build_chain(&shared, &policies, &proxy.name, config.mcp_chain(i)).await?;
            routes.push(Route {
                prefix: prefix(&proxy.context_path),
                info: weir_core::RouteInfo {
                    name: proxy.name.clone(),
                    kind: weir_core::RouteKind::Mcp,
                    upstream: Arc::new(Upstream::default()),
                    upstreams: upstreams.clone(),
                    mcp: Some(weir_core::McpServer {
                        url,
                        timeout_ms,
                        tools: proxy.tools.iter().map(weir_config::McpTool::rule).collect(),
                        credential,
                        allowed_origins: proxy.allowed_origins.clone(),
                        oauth: proxy.oauth.clone(),
                        prefix: prefix(&proxy.context_path),
                        members,
                        prefixed: up.prefix != Some(weir_config::McpPrefix::None),
                        fail_open: up.fail_open.unwrap_or(true),
                    }),
                    limits,
                    exposed: None,
                    retry: Arc::default(),
                },
                chain,
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Self {
            config,
            routes,
            upstreams,
            shared,
            catalogue,
        })
    }
}

impl State {
    /// The chains with entries whose component asks to be pre-initialised (see
    /// `weir_runtime::ChainSpec::preinitialise`) and are not yet.
    fn to_preinitialise(&self) -> Vec<Arc<ChainSpec>> {
        self.routes
            .iter()
            .map(|r| r.chain.clone())
            .filter(|c| c.wants_preinitialisation())
            .collect()
    }

    /// Pre-initialises those entries (at start: the first requests are served by them).
    pub async fn preinitialise(&self) {
        if let Some(task) = self.preinitialise_in_background() {
            let _ = task.await;
        }
    }

    /// Pre-initialises those entries in a blocking task (after a change: the configuration is
    /// served at once, each entry's requests parse its configuration until it is ready); none
    /// when there is nothing to do.
    pub fn preinitialise_in_background(&self) -> Option<tokio::task::JoinHandle<()>> {
        let chains = self.to_preinitialise();
        (!chains.is_empty()).then(|| {
            tokio::task::spawn_blocking(move || {
                for chain in chains {
                    chain.preinitialise();
                }
            })
        })
    }
}

/// The credential an MCP proxy sends `server`, from its `api-key-env`.
fn mcp_credential(
    proxy: &str,
    server: &weir_config::McpServerUpstream,
) -> Option<weir_core::McpCredential> {
    let var = server.api_key_env.as_ref()?;
    let key = std::env::var(var).ok().filter(|v| !v.is_empty());
    if key.is_none() {
        tracing::warn!(proxy, variable = %var, "MCP server credential not set: the proxy answers 503 until it is");
    }
    Some(weir_core::McpCredential {
        header: server.api_key_header(),
        missing_env: key.is_none().then(|| var.clone()),
        key: key.map(Secret::new),
    })
}

/// The chain of one proxy: each entry's component, its configuration validated by the
/// component, its instance name and namespaces.
async fn build_chain(
    shared: &Shared,
    policies: &HashMap<String, Arc<Policy>>,
    route: &str,
    entries: Vec<weir_config::ChainEntry>,
) -> Result<Arc<ChainSpec>, ConfigureError> {
    let mut slots = Vec::new();
    for entry in entries {
        let r = &entry.policy;
        let policy = policies
            .get(&r.policy)
            .cloned()
            .ok_or_else(|| ConfigureError::Config {
                path: format!("{}.policy", entry.path),
                message: format!("unknown policy `{}`", r.policy),
            })?;
        let config_json = r.config.to_string();
        policy
            .validate_entry(&entry.path, &entry.config_path, &config_json)
            .await
            .map_err(|(path, message)| ConfigureError::Config { path, message })?;
        slots.push(SlotSpec {
            kv: Namespaced::new(shared.kv.clone(), &entry.namespace),
            vectors: Some((
                shared.vectors.clone(),
                weir_core::isolation::vectors_namespace(&entry.namespace),
            )),
            policy,
            instance: entry.instance,
            route: route.to_owned(),
            config_json,
            allow_hosts: r.allow_hosts.clone(),
            credential: r.credential.clone().map(|c| {
                let key = std::env::var(&c.secret).ok().filter(|v| !v.is_empty());
                if key.is_none() {
                    tracing::warn!(route, variable = %c.secret, "REST API credential not set: tool calls fail until it is");
                }
                (c, key.map(Secret::new))
            }),
        });
    }
    Ok(Arc::new(ChainSpec::new(slots)))
}
