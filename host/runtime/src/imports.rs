//! The host side of the contract: the store data of one policy instance and the interfaces it
//! imports (`weir:policy@0.2.0` here; the 0.1 ones delegate to these in `imports_v0_1.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use weir_state::{Namespaced, VectorStore};

use crate::bindings::v0_2::{embeddings, http_client, kv, log, metrics, types, vectors};
use crate::engine::Runtime;
use crate::error::PolicyFailure;
use crate::meter::CpuMeter;
use weir_core::{MessageView, RequestState};

/// Marker stored in the resource table for the `context` handle of a call.
#[derive(Debug)]
pub struct ContextRep;

/// Marker stored in the resource table for the `message` handle of a call.
#[derive(Debug)]
pub struct MessageRep;

/// What one policy instance of a chain knows about itself.
#[derive(Debug)]
pub struct SlotState {
    /// The policy's name (`token-limit`).
    pub(crate) policy: String,
    /// The instance name (`proxy:demo/token-limit`): logs, errors, `context.instance()`.
    pub(crate) instance: String,
    /// The proxy, for metric labels.
    pub(crate) route: String,
    pub(crate) config: String,
    pub(crate) kv: Option<Namespaced>,
    /// The vector store and this instance's namespace in it.
    pub(crate) vectors: Option<(Arc<dyn VectorStore>, String)>,
    pub(crate) allow_hosts: Vec<String>,
    /// A credential the host adds to the policy's requests to one API, and its key (`None`
    /// when its variable is not set).
    pub(crate) credential: Option<(
        weir_core::isolation::PolicyCredential,
        Option<weir_core::Secret>,
    )>,
}

impl SlotState {
    pub(crate) fn detached(policy: &str) -> Self {
        Self {
            policy: policy.to_owned(),
            instance: policy.to_owned(),
            route: String::new(),
            config: "{}".into(),
            kv: None,
            vectors: None,
            allow_hosts: Vec::new(),
            credential: None,
        }
    }
}

/// Memory limit that remembers it refused to grow, to tell a memory bomb from other traps.
#[derive(Debug)]
pub(crate) struct Limiter {
    max_bytes: usize,
    pub(crate) refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_bytes;
        if !ok {
            self.refused = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The data of one policy instance's store.
pub struct StoreData {
    table: ResourceTable,
    /// Made on the first WASI call: most policy instances make none (a panic message, a hash
    /// map's seed or the clock do).
    wasi: Option<WasiCtx>,
    pub(crate) limiter: Limiter,
    pub(crate) slot: Arc<SlotState>,
    pub(crate) request: Arc<Mutex<RequestState>>,
    pub(crate) message: Option<Arc<MessageView>>,
    runtime: Runtime,
    /// Time spent waiting for the host (key-value store, outbound HTTP, embeddings, vectors)
    /// since the deadline was last set: it does not count against the policy's time limit
    /// (wall-time deadline, outside metered calls).
    pub(crate) waited: Duration,
    /// CPU time of the current call: the time limit of calls made for a request.
    pub(crate) meter: CpuMeter,
}

impl StoreData {
    pub(crate) fn new(
        slot: Arc<SlotState>,
        request: Arc<Mutex<RequestState>>,
        memory: usize,
        runtime: Runtime,
    ) -> Self {
        Self {
            table: ResourceTable::new(),
            wasi: None,
            limiter: Limiter {
                max_bytes: memory,
                refused: false,
            },
            slot,
            request,
            message: None,
            runtime,
            waited: Duration::ZERO,
            meter: CpuMeter::default(),
        }
    }

    /// A `context` handle for one call (dropped by the guest, or with the store).
    pub(crate) fn context(&mut self) -> wasmtime::Result<Resource<ContextRep>> {
        Ok(self.table.push(ContextRep)?)
    }

    /// A `message` handle for one call.
    pub(crate) fn message_handle(&mut self) -> wasmtime::Result<Resource<MessageRep>> {
        Ok(self.table.push(MessageRep)?)
    }

    /// Awaits `f`, a host operation; its time does not count against the policy's time limit.
    pub(crate) async fn waiting<T>(&mut self, f: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = self.meter.host(f).await;
        self.waited += started.elapsed();
        out
    }

    pub(crate) fn runtime_deadline(&self) -> u64 {
        self.runtime.deadline_ticks()
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, RequestState> {
        self.request
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn message(&self) -> wasmtime::Result<&MessageView> {
        self.message
            .as_deref()
            .ok_or_else(|| wasmtime::Error::msg("no message in this phase"))
    }

    pub(crate) fn drop_handle<T: 'static>(&mut self, rep: Resource<T>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }

    pub(crate) fn set_attribute_checked(
        &mut self,
        key: String,
        value: String,
    ) -> wasmtime::Result<()> {
        let mut state = self.state();
        if state.attributes.len() >= RequestState::MAX_ATTRIBUTES
            && !state.attributes.contains_key(&key)
        {
            return Err(wasmtime::Error::msg(format!(
                "too many context attributes ({})",
                RequestState::MAX_ATTRIBUTES
            )));
        }
        state.attributes.insert(key, value);
        Ok(())
    }

    /// This instance's key-value namespace (a cheap handle, usable across awaits).
    pub(crate) fn kv_handle(&self) -> Result<Namespaced, weir_state::KvError> {
        self.slot.kv.clone().ok_or_else(|| {
            weir_state::KvError::Unavailable("no key-value store outside a request".into())
        })
    }

    pub(crate) fn log_line(&self, level: u8, message: &str) {
        let request_id = self.state().request_id.clone();
        let policy = &self.slot.instance;
        let message: String = message.chars().take(4096).collect();
        match level {
            0 => tracing::trace!(target: "weir::policy", policy, request_id, "{message}"),
            1 => tracing::debug!(target: "weir::policy", policy, request_id, "{message}"),
            2 => tracing::info!(target: "weir::policy", policy, request_id, "{message}"),
            3 => tracing::warn!(target: "weir::policy", policy, request_id, "{message}"),
            _ => tracing::error!(target: "weir::policy", policy, request_id, "{message}"),
        }
    }

    /// The client for an outbound request of the policy, if its URL is within the policy's
    /// allow-hosts; the request gets the slot's credential if it goes to that API.
    pub(crate) fn outbound_for(
        &self,
        request: &mut HttpRequest,
    ) -> Result<Arc<dyn OutboundHttp>, FetchError> {
        weir_core::isolation::check_host(&request.url, &self.slot.allow_hosts)
            .map_err(|m| FetchError::Denied(format!("policy `{}`: {m}", self.slot.instance)))?;
        if let Some((credential, key)) = &self.slot.credential
            && credential.applies_to(&request.url)
        {
            let Some(key) = key else {
                return Err(FetchError::Failed(format!(
                    "the credential of {} is not set: set {} and restart the gateway",
                    credential.url_prefix, credential.secret
                )));
            };
            credential.apply(&mut request.headers, key.expose());
        }
        Ok(self.runtime.services().http.clone())
    }
}

/// Sends a policy's outbound request (allowed by [`StoreData::outbound_for`]).
pub(crate) async fn fetch(
    outbound: Arc<dyn OutboundHttp>,
    request: HttpRequest,
) -> Result<HttpResponse, FetchError> {
    let timeout = request.timeout;
    match tokio::time::timeout(timeout, outbound.send(request)).await {
        Err(_) | Ok(Err(OutboundHttpError::Timeout)) => Err(FetchError::Timeout),
        Ok(Err(OutboundHttpError::Failed(m))) => Err(FetchError::Failed(m)),
        Ok(Ok(r)) => Ok(r),
    }
}

/// Why a policy's outbound request failed.
pub(crate) enum FetchError {
    Denied(String),
    Timeout,
    Failed(String),
}

impl StoreData {
    /// WASI whose hash-map seed (`wasi:random/insecure-seed`) is `seed`: a snapshot made in
    /// this store is then a function of its inputs (`weir build` is reproducible).
    pub(crate) fn seed_wasi(&mut self, seed: u128) {
        self.wasi = Some(WasiCtx::builder().insecure_random_seed(seed).build());
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| WasiCtx::builder().build()),
            table: &mut self.table,
        }
    }
}

/// Turns a call error into a failure naming what went wrong.
pub(crate) fn classify(store: &Store<StoreData>, error: &wasmtime::Error) -> PolicyFailure {
    let runtime = &store.data().runtime;
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return PolicyFailure::Timeout(runtime.timeout_ms());
    }
    if store.data().limiter.refused {
        return PolicyFailure::MemoryLimit(runtime.memory_mib());
    }
    match error.downcast_ref::<Trap>() {
        Some(trap) => PolicyFailure::Trap(trap.to_string()),
        None => PolicyFailure::Trap(error.root_cause().to_string()),
    }
}

// === impl types ===

impl types::Host for StoreData {}

impl types::HostContext for StoreData {
    fn request_id(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<String> {
        Ok(self.state().request_id.clone())
    }

    fn route(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<String> {
        Ok(self.state().route.clone())
    }

    fn route_kind(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<types::RouteKind> {
        Ok(crate::convert::route_kind(self.state().route_kind))
    }

    fn endpoint(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<String> {
        Ok(self.state().endpoint.clone())
    }

    fn consumer(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<Option<String>> {
        Ok(self.state().consumer.clone())
    }

    fn set_consumer(&mut self, _: Resource<ContextRep>, id: String) -> wasmtime::Result<()> {
        self.state().consumer = Some(id);
        Ok(())
    }

    fn attribute(
        &mut self,
        _: Resource<ContextRep>,
        key: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.state().attributes.get(&key).cloned())
    }

    fn set_attribute(
        &mut self,
        _: Resource<ContextRep>,
        key: String,
        value: String,
    ) -> wasmtime::Result<()> {
        self.set_attribute_checked(key, value)
    }

    fn instance(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<String> {
        Ok(self.slot.instance.clone())
    }

    fn config(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<String> {
        Ok(self.slot.config.clone())
    }

    fn llm(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<Option<types::LlmRequest>> {
        Ok(self.state().llm.as_ref().map(crate::convert::llm_request))
    }

    fn received_at_ms(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<u64> {
        Ok(self.state().received_at_ms)
    }

    fn drop(&mut self, rep: Resource<ContextRep>) -> wasmtime::Result<()> {
        self.drop_handle(rep)
    }
}

impl types::HostMessage for StoreData {
    fn method(&mut self, _: Resource<MessageRep>) -> wasmtime::Result<String> {
        Ok(self.message()?.method.clone())
    }

    fn path(&mut self, _: Resource<MessageRep>) -> wasmtime::Result<String> {
        Ok(self.message()?.path.clone())
    }

    fn status(&mut self, _: Resource<MessageRep>) -> wasmtime::Result<u16> {
        Ok(self.message()?.status)
    }

    fn header(
        &mut self,
        _: Resource<MessageRep>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.message()?.header(&name).map(str::to_owned))
    }

    fn headers(&mut self, _: Resource<MessageRep>) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.message()?.headers.clone())
    }

    fn body(&mut self, _: Resource<MessageRep>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.message()?.body.to_vec())
    }

    fn chat_messages(
        &mut self,
        _: Resource<MessageRep>,
    ) -> wasmtime::Result<Vec<types::ChatMessage>> {
        Ok(weir_llm::view::chat_messages(&self.message()?.body)
            .into_iter()
            .map(crate::convert::chat_message_out)
            .collect())
    }

    fn answer(&mut self, _: Resource<MessageRep>) -> wasmtime::Result<Option<types::LlmAnswer>> {
        Ok(weir_llm::view::answer(&self.message()?.body).map(crate::convert::answer))
    }

    fn rpc(&mut self, _: Resource<MessageRep>) -> wasmtime::Result<Vec<types::RpcMessage>> {
        Ok(weir_core::mcp::rpc_messages(&self.message()?.body)
            .into_iter()
            .map(crate::convert::rpc_message)
            .collect())
    }

    fn drop(&mut self, rep: Resource<MessageRep>) -> wasmtime::Result<()> {
        self.drop_handle(rep)
    }
}

// === impl kv ===

fn kv_error(e: weir_state::KvError) -> kv::KvError {
    match e {
        weir_state::KvError::Unavailable(m) => kv::KvError::Unavailable(m),
        weir_state::KvError::Invalid(m) => kv::KvError::Invalid(m),
    }
}

pub(crate) const MAX_KEY: usize = 1024;
pub(crate) const MAX_VALUE: usize = 1 << 20;

/// The checks of a `kv.set` / `kv.increment` key and value.
pub(crate) fn check_kv(key: &str, value: Option<&[u8]>) -> Result<(), weir_state::KvError> {
    if key.len() > MAX_KEY || value.is_some_and(|v| v.len() > MAX_VALUE) {
        return Err(weir_state::KvError::Invalid(format!(
            "keys are limited to {MAX_KEY} bytes and values to {MAX_VALUE}"
        )));
    }
    Ok(())
}

impl kv::Host for StoreData {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::KvError> {
        let kv = self.kv_handle().map_err(kv_error)?;
        self.waiting(kv.get(&key)).await.map_err(kv_error)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), kv::KvError> {
        check_kv(&key, Some(&value)).map_err(kv_error)?;
        let kv = self.kv_handle().map_err(kv_error)?;
        self.waiting(kv.set(&key, value, ttl_ms.map(Duration::from_millis)))
            .await
            .map_err(kv_error)
    }

    async fn delete(&mut self, key: String) -> Result<(), kv::KvError> {
        let kv = self.kv_handle().map_err(kv_error)?;
        self.waiting(kv.delete(&key)).await.map_err(kv_error)
    }

    async fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, kv::KvError> {
        check_kv(&key, None).map_err(kv_error)?;
        let kv = self.kv_handle().map_err(kv_error)?;
        self.waiting(kv.increment(&key, delta, ttl_ms.map(Duration::from_millis)))
            .await
            .map_err(kv_error)
    }
}

// === impl log ===

impl log::Host for StoreData {
    fn emit(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => 0,
            log::Level::Debug => 1,
            log::Level::Info => 2,
            log::Level::Warn => 3,
            log::Level::Error => 4,
        };
        self.log_line(level, &message);
        Ok(())
    }
}

// === impl metrics ===

impl StoreData {
    fn metric(
        &self,
        name: &str,
        labels: &[(String, String)],
        record: impl FnOnce(&dyn PolicyMetrics),
    ) {
        match weir_core::isolation::check_metric(name, labels) {
            Ok(()) => record(self.runtime.services().metrics.as_ref()),
            Err(e) => self.log_line(3, &format!("metric dropped: {e}")),
        }
    }
}

impl metrics::Host for StoreData {
    fn counter_add(
        &mut self,
        name: String,
        value: u64,
        labels: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let (policy, route) = (self.slot.policy.clone(), self.slot.route.clone());
        self.metric(&name, &labels, |m| {
            m.counter_add(&policy, &route, &name, value, &labels);
        });
        Ok(())
    }

    fn observe(
        &mut self,
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let (policy, route) = (self.slot.policy.clone(), self.slot.route.clone());
        self.metric(&name, &labels, |m| {
            m.observe(&policy, &route, &name, value, &labels);
        });
        Ok(())
    }
}

// === impl embeddings ===

/// Why embeddings could not be computed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Invalid(String),
}

/// Computes embeddings with a configured provider (its credentials stay in the host).
pub trait Embedder: Send + Sync + 'static {
    fn embed(
        &self,
        provider: &str,
        model: &str,
        texts: Vec<String>,
    ) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>>;
}

/// No embeddings provider.
#[derive(Debug)]
pub(crate) struct NoEmbedder;

impl Embedder for NoEmbedder {
    fn embed(
        &self,
        provider: &str,
        _: &str,
        _: Vec<String>,
    ) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>> {
        let message = format!("no provider `{provider}` for embeddings");
        Box::pin(async move { Err(EmbedError::NotFound(message)) })
    }
}

impl embeddings::Host for StoreData {
    async fn embed(
        &mut self,
        provider: String,
        model: String,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, embeddings::EmbedError> {
        let embedder = self.runtime.services().embedder.clone();
        let call = embedder.embed(&provider, &model, texts);
        match self
            .waiting(tokio::time::timeout(Duration::from_secs(30), call))
            .await
        {
            Err(_) => Err(embeddings::EmbedError::Unavailable(format!(
                "provider `{provider}` did not answer within 30 s"
            ))),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(EmbedError::NotFound(m))) => Err(embeddings::EmbedError::NotFound(m)),
            Ok(Err(EmbedError::Unavailable(m))) => Err(embeddings::EmbedError::Unavailable(m)),
            Ok(Err(EmbedError::Invalid(m))) => Err(embeddings::EmbedError::Invalid(m)),
        }
    }
}

// === impl vectors ===

impl StoreData {
    fn vector_index(
        &self,
        index: &str,
    ) -> Result<(Arc<dyn VectorStore>, String), vectors::VectorError> {
        let (store, namespace) = self.slot.vectors.as_ref().ok_or_else(|| {
            vectors::VectorError::Unavailable("no vector store outside a request".into())
        })?;
        if index.is_empty() || index.len() > MAX_KEY {
            return Err(vectors::VectorError::Invalid(format!(
                "index names are 1 to {MAX_KEY} bytes"
            )));
        }
        Ok((
            store.clone(),
            weir_core::isolation::kv_key(namespace, index),
        ))
    }
}

fn vector_error(e: weir_state::KvError) -> vectors::VectorError {
    match e {
        weir_state::KvError::Unavailable(m) => vectors::VectorError::Unavailable(m),
        weir_state::KvError::Invalid(m) => vectors::VectorError::Invalid(m),
    }
}

impl vectors::Host for StoreData {
    async fn upsert(
        &mut self,
        index: String,
        id: String,
        vector: Vec<f32>,
        metadata: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), vectors::VectorError> {
        let (store, index) = self.vector_index(&index)?;
        self.waiting(store.upsert(
            &index,
            &id,
            vector,
            metadata,
            ttl_ms.map(Duration::from_millis),
        ))
        .await
        .map_err(vector_error)
    }

    async fn query(
        &mut self,
        index: String,
        vector: Vec<f32>,
        limit: u32,
        min_score: f32,
    ) -> Result<Vec<vectors::Neighbour>, vectors::VectorError> {
        let (store, index) = self.vector_index(&index)?;
        let hits = self
            .waiting(store.query(&index, vector, limit.min(1000) as usize, min_score))
            .await
            .map_err(vector_error)?;
        Ok(hits
            .into_iter()
            .map(|h| vectors::Neighbour {
                id: h.id,
                score: h.score,
                metadata: h.metadata,
            })
            .collect())
    }

    async fn delete(&mut self, index: String, id: String) -> Result<(), vectors::VectorError> {
        let (store, index) = self.vector_index(&index)?;
        self.waiting(store.delete(&index, &id))
            .await
            .map_err(vector_error)
    }
}

// === impl http-client ===

/// An outbound request made by a policy.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// The answer to an outbound request.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why an outbound request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutboundHttpError {
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Failed(String),
}

/// The HTTP client policies use; the data plane provides one.
pub trait OutboundHttp: Send + Sync + 'static {
    fn send(
        &self,
        request: HttpRequest,
    ) -> BoxFuture<'static, Result<HttpResponse, OutboundHttpError>>;
}

/// Refuses every outbound request.
#[derive(Debug)]
pub(crate) struct NoOutbound;

impl OutboundHttp for NoOutbound {
    fn send(&self, _: HttpRequest) -> BoxFuture<'static, Result<HttpResponse, OutboundHttpError>> {
        Box::pin(async {
            Err(OutboundHttpError::Failed(
                "outbound HTTP is not available".into(),
            ))
        })
    }
}

/// Where policies' metrics go (the server's Prometheus registry).
pub trait PolicyMetrics: Send + Sync + 'static {
    fn counter_add(
        &self,
        policy: &str,
        proxy: &str,
        name: &str,
        value: u64,
        labels: &[(String, String)],
    );
    fn observe(
        &self,
        policy: &str,
        proxy: &str,
        name: &str,
        value: f64,
        labels: &[(String, String)],
    );
}

/// Drops every metric.
#[derive(Debug)]
pub(crate) struct NoMetrics;

impl PolicyMetrics for NoMetrics {
    fn counter_add(&self, _: &str, _: &str, _: &str, _: u64, _: &[(String, String)]) {}
    fn observe(&self, _: &str, _: &str, _: &str, _: f64, _: &[(String, String)]) {}
}

pub(crate) fn outgoing(request: http_client::OutgoingRequest) -> HttpRequest {
    HttpRequest {
        method: request.method,
        url: request.url,
        headers: request.headers,
        body: request.body,
        timeout: Duration::from_millis(u64::from(request.timeout_ms).clamp(1, 30_000)),
    }
}

impl http_client::Host for StoreData {
    async fn send(
        &mut self,
        request: http_client::OutgoingRequest,
    ) -> Result<http_client::IncomingResponse, http_client::HttpError> {
        let mut request = outgoing(request);
        let sent = match self.outbound_for(&mut request) {
            Ok(outbound) => self.waiting(fetch(outbound, request)).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(r) => Ok(http_client::IncomingResponse {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(FetchError::Denied(m)) => Err(http_client::HttpError::Denied(m)),
            Err(FetchError::Timeout) => Err(http_client::HttpError::Timeout),
            Err(FetchError::Failed(m)) => Err(http_client::HttpError::Failed(m)),
        }
    }
}
