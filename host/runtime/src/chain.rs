//! One request's policy instances: [`ChainRun`] makes the single policy calls weir-core's loop
//! asks for ([`weir_core::Chain`]), on components of either contract version.

use std::sync::{Arc, Mutex, OnceLock};

use wasmtime::Store;

use weir_core::{
    ChunkVerdict, CompletionInfo, MessageView, Phase, PolicyFault, RequestState, StreamEvent,
    Verdict,
};

use wasmtime::component::{Instance, Resource, TypedFunc};

use crate::bindings::{v0_1, v0_2};
use crate::convert;
use crate::engine::{ContractVersion, Policy};
use crate::error::{PolicyError, PolicyFailure};
use crate::exports::{call, call_typed};
use crate::imports::ContextRep;
use crate::imports::{SlotState, StoreData};
use crate::preinit::Variant;

/// One configured policy instance of a chain.
#[derive(Debug, Clone)]
pub struct SlotSpec {
    pub policy: Arc<Policy>,
    /// The instance name (`proxy:demo/token-limit`, see `weir_core::isolation::instance`).
    pub instance: String,
    /// The proxy (metric labels).
    pub route: String,
    pub config_json: String,
    pub kv: weir_state::Namespaced,
    /// The vector store, and this instance's namespace in it.
    pub vectors: Option<(Arc<dyn weir_state::VectorStore>, String)>,
    pub allow_hosts: Vec<String>,
    /// A credential the host adds to the policy's requests to one API, with its key.
    pub credential: Option<(
        weir_core::isolation::PolicyCredential,
        Option<weir_core::Secret>,
    )>,
}

/// A configured chain: the policies of a provider, then those of a proxy.
#[derive(Debug)]
pub struct ChainSpec {
    slots: Vec<(Arc<Policy>, Arc<SlotState>, Prepared)>,
}

/// An entry's pre-initialised snapshot, once made (see `preinit.rs`).
type Prepared = Arc<OnceLock<Arc<Variant>>>;

impl ChainSpec {
    pub fn new(slots: Vec<SlotSpec>) -> Self {
        Self {
            slots: slots
                .into_iter()
                .map(|s| {
                    let state = SlotState {
                        policy: s.policy.name().to_owned(),
                        instance: s.instance,
                        route: s.route,
                        config: s.config_json,
                        kv: Some(s.kv),
                        vectors: s.vectors,
                        allow_hosts: s.allow_hosts,
                        credential: s.credential,
                    };
                    (s.policy, Arc::new(state), Prepared::default())
                })
                .collect(),
        }
    }

    /// A chain of only the entries of policy `name` (e.g. the `mcp-translator` that serves an
    /// MCP proxy's tools, asked outside any client request); `None` when there is none.
    pub fn only(&self, name: &str) -> Option<ChainSpec> {
        let slots: Vec<_> = self
            .slots
            .iter()
            .filter(|(p, _, _)| p.name() == name)
            .cloned()
            .collect();
        (!slots.is_empty()).then_some(ChainSpec { slots })
    }

    /// The component and configuration (JSON) of the first entry of policy `name`.
    pub fn entry(&self, name: &str) -> Option<(Arc<Policy>, String)> {
        self.slots
            .iter()
            .find(|(p, _, _)| p.name() == name)
            .map(|(p, s, _)| (p.clone(), s.config.clone()))
    }

    /// Whether any policy takes part in `phase`.
    pub fn has_phase(&self, phase: Phase) -> bool {
        self.slots
            .iter()
            .any(|(p, _, _)| p.info().phases.contains(&phase))
    }

    /// Pre-initialises the entries whose component asks for it (`Policy::preinitialises`):
    /// from then on their instances start from a snapshot with the configuration already
    /// parsed and prepared. Blocking (it compiles, about as long as loading the component, or
    /// loads the snapshot from the disk cache): run it off the request path. Entries not done
    /// yet, or whose pre-initialisation failed (logged), parse their configuration in each
    /// request as before. Returns how many entries start from a snapshot.
    pub fn preinitialise(&self) -> usize {
        let mut ready = 0;
        for (policy, slot, prepared) in &self.slots {
            if prepared.get().is_some() {
                ready += 1;
                continue;
            }
            if !policy.preinitialises() {
                continue;
            }
            let started = std::time::Instant::now();
            let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                policy
                    .snapshots
                    .get(policy.runtime(), policy.name(), &slot.config)
            }));
            match made {
                Ok(Ok(Some((variant, cached)))) => {
                    let _ = prepared.set(variant);
                    ready += 1;
                    tracing::info!(policy = policy.name(), instance = %slot.instance, cached, elapsed_ms = started.elapsed().as_millis() as u64, "pre-initialised policy instance");
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(policy = policy.name(), instance = %slot.instance, error = %e, "could not pre-initialise the policy instance: its requests parse the configuration each time");
                }
                Err(_) => {
                    tracing::warn!(policy = policy.name(), instance = %slot.instance, "pre-initialising the policy instance panicked: its requests parse the configuration each time");
                }
            }
        }
        ready
    }

    /// Whether an entry's component asks to be pre-initialised and is not yet.
    pub fn wants_preinitialisation(&self) -> bool {
        self.slots
            .iter()
            .any(|(p, _, prepared)| p.preinitialises() && prepared.get().is_none())
    }

    /// Whether entry `i` starts its instances from a pre-initialised snapshot.
    pub fn is_preinitialised(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|(_, _, p)| p.get().is_some())
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// `on-stream-chunk` of a 0.2 instance, the event passed by value (so the type has no
/// lifetime and can be kept).
type StreamChunkFunc =
    TypedFunc<(Resource<ContextRep>, v0_2::types::StreamEvent), (v0_2::types::ChunkVerdict,)>;

struct Live {
    store: Store<StoreData>,
    instance: Instance,
    version: ContractVersion,
    /// What the instance was made from (its export indices).
    variant: Arc<Variant>,
    /// `on-stream-chunk`, looked up and type-checked at the first event: a stream calls it once
    /// per event, and the type check was ~2% of a streamed request's CPU.
    stream_chunk: Option<StreamChunkFunc>,
}

/// One request's run through a chain. Instances are created on first use and live until the
/// policy's last declared phase (or the run's end), so the phases of a request share guest
/// state but requests never do.
pub struct ChainRun {
    spec: Arc<ChainSpec>,
    request: Arc<Mutex<RequestState>>,
    live: Vec<Option<Live>>,
    /// Instances that failed: not called again in this request.
    failed: Vec<bool>,
}

impl std::fmt::Debug for ChainRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainRun")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl ChainRun {
    pub fn new(spec: Arc<ChainSpec>, state: RequestState) -> Self {
        let n = spec.slots.len();
        Self {
            spec,
            request: Arc::new(Mutex::new(state)),
            live: (0..n).map(|_| None).collect(),
            failed: vec![false; n],
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RequestState> {
        self.request
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A snapshot of the shared request state (consumer, attributes...).
    pub fn state(&self) -> RequestState {
        self.lock().clone()
    }

    fn error(&self, i: usize, phase: Phase, failure: PolicyFailure) -> PolicyFault {
        let (policy, slot, _) = &self.spec.slots[i];
        PolicyError {
            policy: policy.name().to_owned(),
            instance: slot.instance.clone(),
            phase: phase.function(),
            failure,
        }
        .into()
    }

    async fn live(&mut self, i: usize, phase: Phase) -> Result<&mut Live, PolicyFault> {
        if self.failed[i] {
            return Err(self.error(
                i,
                phase,
                PolicyFailure::Instantiate("it failed earlier in this request".into()),
            ));
        }
        if self.live[i].is_none() {
            let (policy, slot, prepared) = &self.spec.slots[i];
            let variant = prepared.get().unwrap_or(&policy.base).clone();
            let mut store = policy
                .runtime()
                .new_store(slot.clone(), self.request.clone());
            let version = policy.contract();
            let meter = store.data().meter.clone();
            match meter.run(variant.pre.instantiate_bare(&mut store)).await {
                Ok(instance) => {
                    self.live[i] = Some(Live {
                        store,
                        instance,
                        version,
                        variant,
                        stream_chunk: None,
                    });
                }
                Err(e) => {
                    self.failed[i] = true;
                    let failure = match crate::imports::classify(&store, &e) {
                        PolicyFailure::Trap(m) => PolicyFailure::Instantiate(m),
                        other => other,
                    };
                    return Err(self.error(i, phase, failure));
                }
            }
        }
        if self.live[i].is_none() {
            return Err(self.error(
                i,
                phase,
                PolicyFailure::Instantiate("instance missing".into()),
            ));
        }
        let Some(live) = self.live[i].as_mut() else {
            unreachable!("checked above")
        };
        let ticks = live.store.data().runtime_deadline();
        live.store.data_mut().waited = std::time::Duration::ZERO;
        live.store.set_epoch_deadline(ticks);
        Ok(live)
    }

    /// Returns an instance to the pool once its last declared phase has run, so that the pool's
    /// slots are recycled while they are still hot in the caches (an `auth` instance is gone
    /// before the upstream call starts).
    fn release_after(&mut self, i: usize, phase: Phase) {
        let phases = &self.spec.slots[i].0.info().phases;
        if !phase.later().iter().any(|p| phases.contains(p)) {
            self.live[i] = None;
        }
    }

    fn fail(&mut self, i: usize, phase: Phase, e: &wasmtime::Error) -> PolicyFault {
        let failure = match &self.live[i] {
            Some(live) => crate::imports::classify(&live.store, e),
            None => PolicyFailure::Trap(e.to_string()),
        };
        // A trapped instance cannot be called again; drop it now (its slot returns to the pool).
        self.live[i] = None;
        self.failed[i] = true;
        self.error(i, phase, failure)
    }

    async fn message_call(
        &mut self,
        i: usize,
        phase: Phase,
        message: &mut MessageView,
    ) -> Result<Verdict, PolicyFault> {
        let shared = Arc::new(std::mem::take(message));
        let live = match self.live(i, phase).await {
            Ok(l) => l,
            Err(e) => {
                *message = Arc::try_unwrap(shared).unwrap_or_else(|a| (*a).clone());
                return Err(e);
            }
        };
        let index = match phase {
            Phase::Request => live.variant.exports.on_request,
            _ => live.variant.exports.on_response,
        };
        let index = &index;
        live.store.data_mut().message = Some(shared.clone());
        let result = async {
            let data = live.store.data_mut();
            let (cx, msg) = (data.context()?, data.message_handle()?);
            let params = (cx, msg);
            Ok::<_, wasmtime::Error>(match live.version {
                ContractVersion::V0_2 => {
                    let (v,): (v0_2::types::Verdict,) =
                        call(&mut live.store, &live.instance, index, params).await?;
                    convert::verdict(v)
                }
                ContractVersion::V0_1 => {
                    let (v,): (v0_1::types::Verdict,) =
                        call(&mut live.store, &live.instance, index, params).await?;
                    convert::v0_1::verdict(v)
                }
            })
        }
        .await;
        if let Some(live) = self.live[i].as_mut() {
            live.store.data_mut().message = None;
        }
        *message = Arc::try_unwrap(shared).unwrap_or_else(|a| (*a).clone());
        match result {
            Ok(v) => {
                if phase == Phase::Request {
                    self.release_after(i, phase);
                }
                Ok(v)
            }
            Err(e) => Err(self.fail(i, phase, &e)),
        }
    }
}

impl From<PolicyError> for PolicyFault {
    fn from(e: PolicyError) -> Self {
        Self {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// The wasmtime chain under weir-core's portable request loop.
impl weir_core::Chain for ChainRun {
    fn len(&self) -> usize {
        self.spec.slots.len()
    }

    fn wants(&self, i: usize, phase: Phase) -> bool {
        !self.failed[i] && self.spec.slots[i].0.info().phases.contains(&phase)
    }

    fn name(&self, i: usize) -> &str {
        &self.spec.slots[i].1.instance
    }

    async fn on_request(
        &mut self,
        i: usize,
        message: &mut MessageView,
    ) -> Result<Verdict, PolicyFault> {
        self.message_call(i, Phase::Request, message).await
    }

    async fn on_response(
        &mut self,
        i: usize,
        message: &mut MessageView,
    ) -> Result<Verdict, PolicyFault> {
        self.message_call(i, Phase::Response, message).await
    }

    async fn on_stream_chunk(
        &mut self,
        i: usize,
        event: &StreamEvent,
    ) -> Result<ChunkVerdict, PolicyFault> {
        let phase = Phase::StreamChunk;
        let live = self.live(i, phase).await?;
        let index = live.variant.exports.on_stream_chunk;
        let result = async {
            let cx: Resource<ContextRep> = live.store.data_mut().context()?;
            Ok::<_, wasmtime::Error>(match live.version {
                ContractVersion::V0_2 => {
                    let func = match live.stream_chunk {
                        Some(f) => f,
                        None => *live
                            .stream_chunk
                            .insert(live.instance.get_typed_func(&mut live.store, index)?),
                    };
                    let event = convert::stream_event(event);
                    let (v,) = call_typed(&mut live.store, func, (cx, event)).await?;
                    convert::chunk_verdict(v)
                }
                ContractVersion::V0_1 => {
                    let chunk = v0_1::types::StreamChunk {
                        index: event.index,
                        data: event.data.clone(),
                    };
                    let (v,): (v0_1::types::ChunkVerdict,) =
                        call(&mut live.store, &live.instance, &index, (cx, &chunk)).await?;
                    convert::v0_1::chunk_verdict(v)
                }
            })
        }
        .await;
        result.map_err(|e| self.fail(i, phase, &e))
    }

    async fn on_stream_end(&mut self, i: usize) -> Result<ChunkVerdict, PolicyFault> {
        let phase = Phase::StreamEnd;
        // 0.1 has no such phase (and never declares it).
        if self.spec.slots[i].0.base.exports.on_stream_end.is_none() {
            return Ok(ChunkVerdict::Pass);
        }
        let live = self.live(i, phase).await?;
        let Some(index) = live.variant.exports.on_stream_end else {
            return Ok(ChunkVerdict::Pass);
        };
        let result = async {
            let cx: Resource<ContextRep> = live.store.data_mut().context()?;
            let (v,): (v0_2::types::ChunkVerdict,) =
                call(&mut live.store, &live.instance, &index, (cx,)).await?;
            Ok::<_, wasmtime::Error>(convert::chunk_verdict(v))
        }
        .await;
        result.map_err(|e| self.fail(i, phase, &e))
    }

    async fn on_complete(&mut self, i: usize, info: &CompletionInfo) -> Result<(), PolicyFault> {
        let phase = Phase::Complete;
        let live = self.live(i, phase).await?;
        let index = live.variant.exports.on_complete;
        let result = async {
            let cx: Resource<ContextRep> = live.store.data_mut().context()?;
            match live.version {
                ContractVersion::V0_2 => {
                    let done = convert::completion(info);
                    call::<_, ()>(&mut live.store, &live.instance, &index, (cx, &done)).await
                }
                ContractVersion::V0_1 => {
                    let done = convert::v0_1::completion(info);
                    call::<_, ()>(&mut live.store, &live.instance, &index, (cx, &done)).await
                }
            }
        }
        .await;
        match result {
            Ok(()) => {
                self.release_after(i, phase);
                Ok(())
            }
            Err(e) => Err(self.fail(i, phase, &e)),
        }
    }

    fn set_llm(&mut self, llm: Option<&weir_llm::LlmRequestInfo>) {
        self.lock().llm = llm.cloned();
    }

    fn consumer(&self) -> Option<String> {
        self.lock().consumer.clone()
    }

    fn attribute(&self, key: &str) -> Option<String> {
        self.lock().attributes.get(key).cloned()
    }
}
