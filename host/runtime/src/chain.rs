//! Running one request through a chain of policy instances.

use std::sync::{Arc, Mutex};

use wasmtime::Store;

use weir_core::{ChunkDecision, CompletionInfo, Decision, MessageView, Phase, RequestState};

use crate::bindings::{ChunkVerdict, Completion, PolicyComponent, StreamChunk, Usage, Verdict};
use crate::convert;
use crate::engine::Policy;
use crate::error::{PolicyError, PolicyFailure};
use crate::imports::{SlotState, StoreData};

/// One configured policy instance of a chain.
#[derive(Debug, Clone)]
pub struct SlotSpec {
    pub policy: Arc<Policy>,
    /// Unique in the chain: `token-limit#1`.
    pub instance: String,
    /// Unique in the gateway: `demo/token-limit#1`.
    pub qualified: String,
    pub config_json: String,
    pub kv: weir_state::Namespaced,
    pub allow_hosts: Vec<String>,
}

/// A configured chain: the policies of a provider, then those of a proxy.
#[derive(Debug)]
pub struct ChainSpec {
    slots: Vec<(Arc<Policy>, Arc<SlotState>)>,
}

impl ChainSpec {
    pub fn new(slots: Vec<SlotSpec>) -> Self {
        Self {
            slots: slots
                .into_iter()
                .map(|s| {
                    let state = SlotState {
                        instance: s.instance,
                        qualified: s.qualified,
                        config: s.config_json,
                        kv: Some(s.kv),
                        allow_hosts: s.allow_hosts,
                    };
                    (s.policy, Arc::new(state))
                })
                .collect(),
        }
    }

    /// Whether any policy takes part in `phase`.
    pub fn has_phase(&self, phase: Phase) -> bool {
        self.slots
            .iter()
            .any(|(p, _)| p.info().phases.contains(&phase))
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

fn error_for(spec: &ChainSpec, i: usize, phase: Phase, failure: PolicyFailure) -> PolicyError {
    let (policy, slot) = &spec.slots[i];
    PolicyError {
        policy: policy.name().to_owned(),
        instance: slot.qualified.clone(),
        phase: phase.function(),
        failure,
    }
}

struct Live {
    store: Store<StoreData>,
    bindings: PolicyComponent,
}

/// One request's run through a chain. Instances are created on first use and live until the
/// run is dropped, so the phases of a request share guest state but requests never do.
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

    /// A snapshot of the shared request state (consumer, attributes...).
    pub fn state(&self) -> RequestState {
        self.request
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The consumer set by an authentication policy.
    pub fn consumer(&self) -> Option<String> {
        self.request
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .consumer
            .clone()
    }

    pub fn has_phase(&self, phase: Phase) -> bool {
        self.spec.has_phase(phase)
    }

    fn error(&self, i: usize, phase: Phase, failure: PolicyFailure) -> PolicyError {
        error_for(&self.spec, i, phase, failure)
    }

    async fn live(&mut self, i: usize, phase: Phase) -> Result<&mut Live, PolicyError> {
        if self.live[i].is_none() {
            let (policy, slot) = &self.spec.slots[i];
            let mut store = policy
                .runtime()
                .new_store(slot.clone(), self.request.clone());
            match policy.pre.instantiate_async(&mut store).await {
                Ok(bindings) => self.live[i] = Some(Live { store, bindings }),
                Err(e) => {
                    self.failed[i] = true;
                    let failure = crate::imports::classify(&store, &e);
                    let failure = match failure {
                        PolicyFailure::Trap(m) => PolicyFailure::Instantiate(m),
                        other => other,
                    };
                    return Err(self.error(i, phase, failure));
                }
            }
        }
        match self.live[i].as_mut() {
            Some(live) => {
                let ticks = live.store.data().runtime_deadline();
                live.store.set_epoch_deadline(ticks);
                Ok(live)
            }
            None => Err(error_for(
                &self.spec,
                i,
                phase,
                PolicyFailure::Instantiate("instance missing".into()),
            )),
        }
    }

    /// Returns an instance to the pool once its last declared phase has run, so that the pool's
    /// slots are recycled while they are still hot in the caches (an `auth` instance is gone
    /// before the upstream call starts).
    fn release_after(&mut self, i: usize, phase: Phase) {
        let phases = &self.spec.slots[i].0.info().phases;
        let later = match phase {
            Phase::Request => &[Phase::Response, Phase::StreamChunk, Phase::Complete][..],
            Phase::Response | Phase::StreamChunk => &[Phase::StreamChunk, Phase::Complete][..],
            Phase::Complete => &[][..],
        };
        if !later.iter().any(|p| phases.contains(p)) {
            self.live[i] = None;
        }
    }

    fn wants(&self, i: usize, phase: Phase) -> bool {
        !self.failed[i] && self.spec.slots[i].0.info().phases.contains(&phase)
    }

    fn fail(&mut self, i: usize, phase: Phase, e: &wasmtime::Error) -> PolicyError {
        let failure = match &self.live[i] {
            Some(live) => crate::imports::classify(&live.store, e),
            None => PolicyFailure::Trap(e.to_string()),
        };
        // A trapped instance cannot be called again; drop it now (its slot returns to the pool).
        self.live[i] = None;
        self.failed[i] = true;
        self.error(i, phase, failure)
    }

    /// Runs on-request in chain order. Each policy sees the edits of the ones before it.
    pub async fn on_request(&mut self, message: MessageView) -> Result<Decision, PolicyError> {
        self.message_phase(Phase::Request, message, false).await
    }

    /// Runs on-response in reverse chain order.
    pub async fn on_response(&mut self, message: MessageView) -> Result<Decision, PolicyError> {
        self.message_phase(Phase::Response, message, true).await
    }

    async fn message_phase(
        &mut self,
        phase: Phase,
        mut message: MessageView,
        reverse: bool,
    ) -> Result<Decision, PolicyError> {
        let n = self.spec.slots.len();
        for k in 0..n {
            let i = if reverse { n - 1 - k } else { k };
            if !self.wants(i, phase) {
                continue;
            }
            let shared = Arc::new(message);
            let live = self.live(i, phase).await?;
            live.store.data_mut().message = Some(shared.clone());
            let result = async {
                let (cx, msg) = live.store.data_mut().push_handles()?;
                let api = live.bindings.weir_policy_policy();
                let verdict = match phase {
                    Phase::Request => api.call_on_request(&mut live.store, cx, msg).await?,
                    _ => api.call_on_response(&mut live.store, cx, msg).await?,
                };
                Ok::<_, wasmtime::Error>(verdict)
            }
            .await;
            if let Some(live) = self.live[i].as_mut() {
                live.store.data_mut().message = None;
            }
            message = Arc::try_unwrap(shared).unwrap_or_else(|a| (*a).clone());
            if result.is_ok() && phase == Phase::Request {
                self.release_after(i, phase);
            }
            match result {
                Ok(Verdict::Continue(edits)) => message.apply(convert::edits(edits)),
                Ok(Verdict::Deny(denial)) => {
                    return Ok(Decision::Deny {
                        policy: self.spec.slots[i].1.qualified.clone(),
                        denial: convert::denial(denial),
                    });
                }
                Ok(Verdict::Respond(reply)) => {
                    return Ok(Decision::Respond {
                        policy: self.spec.slots[i].1.qualified.clone(),
                        reply: convert::reply(reply),
                    });
                }
                Err(e) => return Err(self.fail(i, phase, &e)),
            }
        }
        Ok(Decision::Continue(message))
    }

    /// Runs on-stream-chunk in reverse chain order for one event.
    pub async fn on_stream_chunk(
        &mut self,
        index: u32,
        data: String,
    ) -> Result<ChunkDecision, PolicyError> {
        let mut data = data;
        let n = self.spec.slots.len();
        for k in 0..n {
            let i = n - 1 - k;
            if !self.wants(i, Phase::StreamChunk) {
                continue;
            }
            let live = self.live(i, Phase::StreamChunk).await?;
            let result = async {
                let cx = live.store.data_mut().push_context()?;
                let chunk = StreamChunk {
                    index,
                    data: data.clone(),
                };
                live.bindings
                    .weir_policy_policy()
                    .call_on_stream_chunk(&mut live.store, cx, &chunk)
                    .await
            }
            .await;
            match result {
                Ok(ChunkVerdict::Pass) => {}
                Ok(ChunkVerdict::Replace(new)) => data = new,
                Ok(ChunkVerdict::Drop) => return Ok(ChunkDecision::Drop),
                Ok(ChunkVerdict::Abort(denial)) => {
                    return Ok(ChunkDecision::Abort {
                        policy: self.spec.slots[i].1.qualified.clone(),
                        denial: convert::denial(denial),
                    });
                }
                Err(e) => return Err(self.fail(i, Phase::StreamChunk, &e)),
            }
        }
        Ok(ChunkDecision::Send(data))
    }

    /// Runs on-complete in reverse chain order. Failures are logged, not returned: the answer
    /// has been sent already, and every other policy must still settle.
    pub async fn on_complete(&mut self, info: &CompletionInfo) -> Vec<PolicyError> {
        let done = Completion {
            status: info.status,
            outcome: convert::outcome(info.outcome),
            model: info.model.clone(),
            usage: info.usage.map(|u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u.total_tokens,
                cached_prompt_tokens: u.cached_prompt_tokens,
            }),
            latency_ms: info.latency_ms,
        };
        let mut errors = Vec::new();
        let n = self.spec.slots.len();
        for k in 0..n {
            let i = n - 1 - k;
            if !self.wants(i, Phase::Complete) {
                continue;
            }
            let live = match self.live(i, Phase::Complete).await {
                Ok(l) => l,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let result = async {
                let cx = live.store.data_mut().push_context()?;
                live.bindings
                    .weir_policy_policy()
                    .call_on_complete(&mut live.store, cx, &done)
                    .await
            }
            .await;
            match result {
                Ok(()) => self.release_after(i, Phase::Complete),
                Err(e) => errors.push(self.fail(i, Phase::Complete, &e)),
            }
        }
        errors
    }
}

impl From<PolicyError> for weir_core::PolicyFault {
    fn from(e: PolicyError) -> Self {
        Self {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// The wasmtime chain drives weir-core's portable request loop.
impl weir_core::Chain for ChainRun {
    async fn on_request(
        &mut self,
        message: MessageView,
    ) -> Result<Decision, weir_core::PolicyFault> {
        Ok(ChainRun::on_request(self, message).await?)
    }

    async fn on_response(
        &mut self,
        message: MessageView,
    ) -> Result<Decision, weir_core::PolicyFault> {
        Ok(ChainRun::on_response(self, message).await?)
    }

    async fn on_stream_chunk(
        &mut self,
        index: u32,
        data: String,
    ) -> Result<ChunkDecision, weir_core::PolicyFault> {
        Ok(ChainRun::on_stream_chunk(self, index, data).await?)
    }

    async fn on_complete(&mut self, info: &CompletionInfo) -> Vec<weir_core::PolicyFault> {
        ChainRun::on_complete(self, info)
            .await
            .into_iter()
            .map(Into::into)
            .collect()
    }

    fn has_phase(&self, phase: Phase) -> bool {
        ChainRun::has_phase(self, phase)
    }

    fn consumer(&self) -> Option<String> {
        ChainRun::consumer(self)
    }
}
