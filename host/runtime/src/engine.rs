//! The engine, the linker and loaded policies.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};

use crate::PolicyInfo;
use crate::bindings::{v0_1, v0_2};
use crate::error::{LoadError, PolicyFailure};
use crate::imports::{
    Embedder, NoEmbedder, NoMetrics, NoOutbound, OutboundHttp, PolicyMetrics, SlotState, StoreData,
};
use weir_core::RequestState;

/// What policies' imports reach outside the runtime: outbound HTTP, embeddings and metrics.
#[derive(Clone)]
pub struct Services {
    pub http: Arc<dyn OutboundHttp>,
    pub embedder: Arc<dyn Embedder>,
    pub metrics: Arc<dyn PolicyMetrics>,
}

impl Default for Services {
    fn default() -> Self {
        Self {
            http: Arc::new(NoOutbound),
            embedder: Arc::new(NoEmbedder),
            metrics: Arc::new(NoMetrics),
        }
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Services")
    }
}

/// The contract version a component was built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractVersion {
    V0_1,
    V0_2,
}

impl ContractVersion {
    /// `0.2.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_1 => "0.1.0",
            Self::V0_2 => "0.2.0",
        }
    }
}

/// The pre-instantiated component, bound to the world of its version.
pub(crate) enum Pre {
    V0_1(v0_1::PolicyComponentPre<StoreData>),
    V0_2(v0_2::PolicyComponentPre<StoreData>),
}

/// An instance of either version.
pub(crate) enum Bindings {
    V0_1(v0_1::PolicyComponent),
    V0_2(v0_2::PolicyComponent),
}

impl Pre {
    /// A bare instance (see `exports.rs`): the per-request path.
    pub(crate) async fn instantiate_bare(
        &self,
        store: &mut Store<StoreData>,
    ) -> wasmtime::Result<wasmtime::component::Instance> {
        match self {
            Self::V0_1(p) => p.instance_pre().instantiate_async(store).await,
            Self::V0_2(p) => p.instance_pre().instantiate_async(store).await,
        }
    }

    /// An instance with the bindings of every export (describe, validate-config).
    pub(crate) async fn instantiate(
        &self,
        store: &mut Store<StoreData>,
    ) -> wasmtime::Result<Bindings> {
        Ok(match self {
            Self::V0_1(p) => Bindings::V0_1(p.instantiate_async(store).await?),
            Self::V0_2(p) => Bindings::V0_2(p.instantiate_async(store).await?),
        })
    }
}

/// How policy memories are laid out in the address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemoryLayout {
    /// Each memory slot reserves the whole 4 GiB a 32-bit index can reach, plus a guard region:
    /// compiled code needs no bounds check on loads and stores (a stray access hits unmapped
    /// pages and traps). Part A: the content policies 13–15% faster than with `Compact`.
    Guarded,
    /// Each slot reserves only the memory limit: every load and store checks its bounds.
    Compact,
}

/// Address space the policy memories' slots may reserve in all (`Guarded` needs about 8 TiB for
/// the default 1000 instances of two memories each; x86-64 gives a process 128 TiB). Where the
/// reservation fails anyway (a smaller virtual address space, `ulimit -v`), the runtime falls
/// back to `Compact`.
const GUARDED_BUDGET: u64 = 48 << 40;
const GUARD_BYTES: u64 = 32 << 20;

impl MemoryLayout {
    fn for_options(options: &RuntimeOptions) -> Self {
        let slots = u64::from(options.max_instances.max(1)) * MEMORIES_PER_INSTANCE;
        if cfg!(target_pointer_width = "64") && slots * ((4 << 30) + GUARD_BYTES) <= GUARDED_BUDGET
        {
            Self::Guarded
        } else {
            Self::Compact
        }
    }
}

const MEMORIES_PER_INSTANCE: u64 = 2;

/// The engine's configuration: pooling allocator, limits, epoch interruption.
fn engine_config(options: &RuntimeOptions, layout: MemoryLayout) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    let n = options.max_instances.max(1);
    pool.total_component_instances(n)
        .total_core_instances(n * 8)
        .total_memories(n * MEMORIES_PER_INSTANCE as u32)
        .total_tables(n * 4)
        .total_stacks(n)
        .max_memories_per_component(MEMORIES_PER_INSTANCE as u32)
        .max_tables_per_component(4)
        .max_memory_size(options.memory_limit_bytes)
        // Reset recycled slots by rewriting what the last instance dirtied instead of
        // unmapping and faulting the pages in again on every request.
        .linear_memory_keep_resident(4 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto)
        // Decommits that remain (pages beyond keep-resident) are batched: fewer madvise
        // calls, so fewer TLB shootdowns across the worker threads.
        .decommit_batch_size(16);
    let reservation = match layout {
        MemoryLayout::Guarded => 4 << 30,
        MemoryLayout::Compact => options.memory_limit_bytes as u64,
    };
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .async_stack_size(1 << 20)
        .max_wasm_stack(512 << 10)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_reservation(reservation)
        .memory_guard_size(GUARD_BYTES)
        .memory_reservation_for_growth(0);
    // `WEIR_PROFILE_WASM=perfmap`: writes /tmp/perf-<pid>.map so that `perf report` names
    // the policies' compiled functions (profiling a policy; not for production).
    if std::env::var("WEIR_PROFILE_WASM").is_ok_and(|v| v == "perfmap") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// Milliseconds per epoch tick: the resolution of the CPU-time deadline.
const TICK_MS: u64 = 1;

/// Settings of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// CPU time a single policy call may take, its waits for the host left out (checked at
    /// epoch deadlines; see `meter.rs`).
    pub call_timeout: Duration,
    /// Linear memory a policy instance may use.
    pub memory_limit_bytes: usize,
    /// Policy instances alive at once (pooling slots); beyond, instantiation fails fast.
    pub max_instances: u32,
    /// Directory for compiled components; `None` compiles in memory every start.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_millis(100),
            memory_limit_bytes: 64 << 20,
            max_instances: 1000,
            cache_dir: None,
        }
    }
}

struct Shared {
    engine: Engine,
    linker: Linker<StoreData>,
    options: RuntimeOptions,
    services: Services,
}

/// The wasmtime engine with the policy linker. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Creates the engine and starts the epoch ticker thread. Policies get no outbound HTTP,
    /// embeddings or metrics.
    pub fn new(options: RuntimeOptions) -> Result<Self, LoadError> {
        Self::with_services(options, Services::default())
    }

    /// Like [`Runtime::new`], with what policies' imports reach.
    pub fn with_services(options: RuntimeOptions, services: Services) -> Result<Self, LoadError> {
        let layout = MemoryLayout::for_options(&options);
        if layout == MemoryLayout::Compact {
            tracing::warn!(
                max_instances = options.max_instances,
                "runtime.max-instances needs more than 48 TiB of address space at 4 GiB per policy memory; policy memories are bounds-checked instead (slower)"
            );
        }
        let engine = match Engine::new(&engine_config(&options, layout)) {
            Ok(engine) => engine,
            // The address space may be capped (`ulimit -v`): the compact layout needs far
            // less of it (the memory limit plus a guard region per slot).
            Err(e) if layout == MemoryLayout::Guarded => {
                tracing::warn!(error = %e, "could not reserve 4 GiB of address space per policy memory; policy memories are bounds-checked instead (slower)");
                Engine::new(&engine_config(&options, MemoryLayout::Compact))
                    .map_err(LoadError::Engine)?
            }
            Err(e) => return Err(LoadError::Engine(e)),
        };

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(LoadError::Engine)?;
        // Every published version of the contract, side by side.
        v0_2::PolicyComponent::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |s| s)
            .map_err(LoadError::Engine)?;
        v0_1::PolicyComponent::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |s| s)
            .map_err(LoadError::Engine)?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(Duration::from_millis(TICK_MS));
                }
            })
            .map_err(|e| LoadError::Engine(wasmtime::Error::msg(e.to_string())))?;

        Ok(Self {
            shared: Arc::new(Shared {
                engine,
                linker,
                options,
                services,
            }),
        })
    }

    /// The options the runtime was created with.
    pub fn options(&self) -> &RuntimeOptions {
        &self.shared.options
    }

    pub(crate) fn services(&self) -> &Services {
        &self.shared.services
    }

    /// Compiles (or loads from the cache), links and pre-instantiates a policy component, and
    /// reads its `describe`.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Arc<Policy>, LoadError> {
        let started = std::time::Instant::now();
        let config_schema = crate::schema::config_schema(bytes)
            .map_err(|message| LoadError::ConfigSchema {
                name: name.into(),
                message,
            })?
            .map(Arc::new);
        let (component, cached) = crate::cache::compile(
            &self.shared.engine,
            self.shared.options.cache_dir.as_deref(),
            bytes,
        )
        .map_err(|source| LoadError::Compile {
            name: name.into(),
            source,
        })?;
        let version =
            contract_version(&self.shared.engine, &component).ok_or_else(|| LoadError::World {
                name: name.into(),
                source: wasmtime::Error::msg(
                    "it exports neither weir:policy/policy@0.2.0 nor weir:policy/policy@0.1.0",
                ),
            })?;
        let world = |source| LoadError::World {
            name: name.into(),
            source,
        };
        let base = Arc::new(self.variant(&component, version).map_err(world)?);
        // Only components of the 0.2 SDK (which keeps what validate-config prepared) ask.
        let preinitialise = version == ContractVersion::V0_2
            && crate::preinit::wanted(bytes).map_err(|message| LoadError::ConfigSchema {
                name: name.into(),
                message,
            })?;
        let mut policy = Policy {
            cached,
            version,
            name: name.into(),
            runtime: self.clone(),
            base,
            snapshots: crate::preinit::Snapshots::new(preinitialise.then_some(bytes)),
            config_schema,
            info: PolicyInfo {
                name: name.into(),
                version: String::new(),
                phases: Vec::new(),
            },
        };
        let info = policy
            .describe_blocking()
            .map_err(|failure| LoadError::Describe {
                name: name.into(),
                failure,
            })?;
        tracing::info!(policy = name, version = %info.version, contract = version.as_str(), cached, elapsed_ms = started.elapsed().as_millis() as u64, "loaded policy component");
        policy.info = info;
        Ok(Arc::new(policy))
    }

    /// A component linked and pre-instantiated, with the indices of its policy exports.
    pub(crate) fn variant(
        &self,
        component: &wasmtime::component::Component,
        version: ContractVersion,
    ) -> wasmtime::Result<crate::preinit::Variant> {
        let instance_pre = self.shared.linker.instantiate_pre(component)?;
        let pre = match version {
            ContractVersion::V0_2 => Pre::V0_2(v0_2::PolicyComponentPre::new(instance_pre)?),
            ContractVersion::V0_1 => Pre::V0_1(v0_1::PolicyComponentPre::new(instance_pre)?),
        };
        let exports = crate::exports::ExportIndices::new(component, version)?;
        Ok(crate::preinit::Variant { pre, exports })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    pub(crate) fn linker(&self) -> &Linker<StoreData> {
        &self.shared.linker
    }

    /// A fresh store for one policy instance of one request.
    pub(crate) fn new_store(
        &self,
        slot: Arc<SlotState>,
        request: Arc<std::sync::Mutex<RequestState>>,
    ) -> Store<StoreData> {
        let opts = &self.shared.options;
        let mut store = Store::new(
            &self.shared.engine,
            StoreData::new(slot, request, opts.memory_limit_bytes, self.clone()),
        );
        store.limiter(|d| &mut d.limiter);
        // At each deadline the limit is checked against the CPU time the call used (see
        // `meter.rs`): not used up, the next deadline is the time left. Outside metered calls
        // (loading, validating a configuration) it is wall time minus the waits for the host.
        let limit = opts.call_timeout;
        store.epoch_deadline_callback(move |mut ctx| {
            let data = ctx.data_mut();
            let left = match data.meter.left(limit, Duration::from_millis(TICK_MS)) {
                Some(left) => left,
                None => std::mem::take(&mut data.waited),
            };
            let ticks = left.as_millis() as u64 / TICK_MS;
            Ok(if ticks == 0 {
                wasmtime::UpdateDeadline::Interrupt
            } else {
                wasmtime::UpdateDeadline::Continue(ticks)
            })
        });
        store.set_epoch_deadline(self.deadline_ticks());
        store
    }

    pub(crate) fn deadline_ticks(&self) -> u64 {
        (self.shared.options.call_timeout.as_millis() as u64 / TICK_MS).max(1)
    }

    pub(crate) fn timeout_ms(&self) -> u64 {
        self.shared.options.call_timeout.as_millis() as u64
    }

    pub(crate) fn memory_mib(&self) -> u64 {
        (self.shared.options.memory_limit_bytes >> 20) as u64
    }
}

/// The contract version a component's exports name.
fn contract_version(
    engine: &Engine,
    component: &wasmtime::component::Component,
) -> Option<ContractVersion> {
    let ty = component.component_type();
    let names: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
    if names.iter().any(|n| n == "weir:policy/policy@0.2.0") {
        Some(ContractVersion::V0_2)
    } else if names.iter().any(|n| n == "weir:policy/policy@0.1.0") {
        Some(ContractVersion::V0_1)
    } else {
        None
    }
}

/// A loaded, pre-instantiated policy component.
pub struct Policy {
    cached: bool,
    version: ContractVersion,
    name: String,
    runtime: Runtime,
    /// The component as loaded.
    pub(crate) base: Arc<crate::preinit::Variant>,
    /// Its pre-initialised snapshots, by configuration (when the component asks for them).
    pub(crate) snapshots: crate::preinit::Snapshots,
    info: PolicyInfo,
    config_schema: Option<Arc<serde_json::Value>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// What the component says about itself.
    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }

    /// The contract version it was built against.
    pub fn contract(&self) -> ContractVersion {
        self.version
    }

    /// The JSON Schema of the policy's configuration, if the component embeds one.
    pub fn config_schema(&self) -> Option<&serde_json::Value> {
        self.config_schema.as_deref()
    }

    /// Whether the compiled artefact came from the on-disk cache (no compilation at this load).
    pub fn from_cache(&self) -> bool {
        self.cached
    }

    /// Whether the component asks to be pre-initialised once per configuration (the custom
    /// section `weir:preinitialise`, from the SDK's `Policy::PREINITIALISE`).
    pub fn preinitialises(&self) -> bool {
        self.snapshots.wanted()
    }

    /// For an edge app (`weir build`): the component pre-initialised with `configs` (every
    /// configuration its entries in the app use), as a new component to compose instead of
    /// this one; `None` when the component does not ask for pre-initialisation
    /// ([`Policy::preinitialises`]). The same component and configurations give the same bytes.
    pub async fn edge_preinitialised(&self, configs: &[&str]) -> Result<Option<Vec<u8>>, String> {
        crate::preinit::edge_snapshot(&self.runtime, &self.name, self.snapshots.bytes(), configs)
            .await
            .map_err(|e| format!("{e:#}"))
    }

    /// The name the policy was loaded under.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// A fresh instance outside any request (no key-value store, empty context).
    async fn detached_instance(&self) -> Result<(Store<StoreData>, Bindings), PolicyFailure> {
        let slot = Arc::new(SlotState::detached(&self.name));
        let request = Arc::new(std::sync::Mutex::new(RequestState::detached()));
        let mut store = self.runtime.new_store(slot, request);
        let instance = self
            .base
            .pre
            .instantiate(&mut store)
            .await
            .map_err(|e| PolicyFailure::Instantiate(e.to_string()))?;
        Ok((store, instance))
    }

    /// Runs the component's `validate-config` on a configuration.
    pub async fn validate_config(
        &self,
        config_json: &str,
    ) -> Result<Result<(), (String, String)>, PolicyFailure> {
        let (mut store, instance) = self.detached_instance().await?;
        let result = match &instance {
            Bindings::V0_2(b) => b
                .weir_policy_policy()
                .call_validate_config(&mut store, config_json)
                .await
                .map(|r| r.map_err(|e| (e.path, e.message))),
            Bindings::V0_1(b) => b
                .weir_policy_policy()
                .call_validate_config(&mut store, config_json)
                .await
                .map(|r| r.map_err(|e| (e.path, e.message))),
        };
        result.map_err(|e| crate::imports::classify(&store, &e))
    }

    /// Validates the configuration of the policy entry at `entry` (a config field path such as
    /// `proxies[0].policies[1]`); the error is the field path at fault (`….config.<field>`, or
    /// `….policy` when the component itself failed) and the policy's message.
    pub async fn validate_entry(
        &self,
        entry: &str,
        config_path: &str,
        config_json: &str,
    ) -> Result<(), (String, String)> {
        match self.validate_config(config_json).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((field, message))) if field.is_empty() => Err((config_path.to_owned(), message)),
            Ok(Err((field, message))) => Err((format!("{config_path}.{field}"), message)),
            Err(failure) => Err((
                format!("{entry}.policy"),
                format!(
                    "policy `{}` failed to validate its configuration: {failure}",
                    self.name
                ),
            )),
        }
    }

    fn describe_blocking(&self) -> Result<PolicyInfo, PolicyFailure> {
        futures::executor::block_on(async {
            let (mut store, instance) = self.detached_instance().await?;
            let info = match &instance {
                Bindings::V0_2(b) => b
                    .weir_policy_policy()
                    .call_describe(&mut store)
                    .await
                    .map(crate::convert::info),
                Bindings::V0_1(b) => b
                    .weir_policy_policy()
                    .call_describe(&mut store)
                    .await
                    .map(crate::convert::v0_1::info),
            };
            info.map_err(|e| crate::imports::classify(&store, &e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_are_guarded_unless_the_instances_need_too_much_address_space() {
        let with = |max_instances| RuntimeOptions {
            max_instances,
            ..RuntimeOptions::default()
        };
        assert_eq!(
            MemoryLayout::for_options(&RuntimeOptions::default()),
            MemoryLayout::Guarded
        );
        assert_eq!(
            MemoryLayout::for_options(&with(6000)),
            MemoryLayout::Guarded
        );
        assert_eq!(
            MemoryLayout::for_options(&with(6200)),
            MemoryLayout::Compact
        );
    }
}
