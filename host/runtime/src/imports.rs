//! Host side of the contract: the store data and the imported interfaces.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use weir_state::Namespaced;

use crate::bindings::{http_client, kv, log, types};
use crate::engine::Runtime;
use crate::error::PolicyFailure;
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
    /// e.g. `token-limit#1` (unique in the chain).
    pub(crate) instance: String,
    /// e.g. `demo/token-limit#1` (unique in the gateway), used in logs and errors.
    pub(crate) qualified: String,
    pub(crate) config: String,
    pub(crate) kv: Option<Namespaced>,
    pub(crate) allow_hosts: Vec<String>,
}

impl SlotState {
    pub(crate) fn detached(policy: &str) -> Self {
        Self {
            instance: format!("{policy}#0"),
            qualified: format!("{policy}#0"),
            config: "{}".into(),
            kv: None,
            allow_hosts: Vec::new(),
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
    wasi: WasiCtx,
    pub(crate) limiter: Limiter,
    pub(crate) slot: Arc<SlotState>,
    pub(crate) request: Arc<Mutex<RequestState>>,
    pub(crate) message: Option<Arc<MessageView>>,
    runtime: Runtime,
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
            wasi: WasiCtx::builder().build(),
            limiter: Limiter {
                max_bytes: memory,
                refused: false,
            },
            slot,
            request,
            message: None,
            runtime,
        }
    }

    pub(crate) fn push_handles(
        &mut self,
    ) -> wasmtime::Result<(Resource<ContextRep>, Resource<MessageRep>)> {
        Ok((self.table.push(ContextRep)?, self.table.push(MessageRep)?))
    }

    pub(crate) fn runtime_deadline(&self) -> u64 {
        self.runtime.deadline_ticks()
    }

    pub(crate) fn push_context(&mut self) -> wasmtime::Result<Resource<ContextRep>> {
        Ok(self.table.push(ContextRep)?)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RequestState> {
        self.request
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
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
        let mut state = self.state();
        if state.attributes.len() >= 256 && !state.attributes.contains_key(&key) {
            return Err(wasmtime::Error::msg("too many context attributes (256)"));
        }
        state.attributes.insert(key, value);
        Ok(())
    }

    fn instance(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<String> {
        Ok(self.slot.instance.clone())
    }

    fn config(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<String> {
        Ok(self.slot.config.clone())
    }

    fn llm(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<Option<types::LlmRequest>> {
        Ok(self.state().llm.as_ref().map(|l| types::LlmRequest {
            model: l.model.clone(),
            max_tokens: l.max_tokens,
            stream: l.stream,
            estimated_prompt_tokens: l.estimated_prompt_tokens,
        }))
    }

    fn received_at_ms(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<u64> {
        Ok(self.state().received_at_ms)
    }

    fn drop(&mut self, rep: Resource<ContextRep>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl StoreData {
    fn message(&self) -> wasmtime::Result<&MessageView> {
        self.message
            .as_deref()
            .ok_or_else(|| wasmtime::Error::msg("no message in this phase"))
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

    fn drop(&mut self, rep: Resource<MessageRep>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

// === impl kv ===

fn kv_error(e: weir_state::KvError) -> kv::KvError {
    match e {
        weir_state::KvError::Unavailable(m) => kv::KvError::Unavailable(m),
        weir_state::KvError::Invalid(m) => kv::KvError::Invalid(m),
    }
}

impl StoreData {
    fn kv(&self) -> Result<&Namespaced, kv::KvError> {
        self.slot
            .kv
            .as_ref()
            .ok_or_else(|| kv::KvError::Unavailable("no key-value store outside a request".into()))
    }
}

const MAX_KEY: usize = 1024;
const MAX_VALUE: usize = 1 << 20;

impl kv::Host for StoreData {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::KvError> {
        self.kv()?.get(&key).await.map_err(kv_error)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), kv::KvError> {
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(kv::KvError::Invalid(format!(
                "keys are limited to {MAX_KEY} bytes and values to {MAX_VALUE}"
            )));
        }
        self.kv()?
            .set(&key, value, ttl_ms.map(Duration::from_millis))
            .await
            .map_err(kv_error)
    }

    async fn delete(&mut self, key: String) -> Result<(), kv::KvError> {
        self.kv()?.delete(&key).await.map_err(kv_error)
    }

    async fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, kv::KvError> {
        if key.len() > MAX_KEY {
            return Err(kv::KvError::Invalid(format!(
                "keys are limited to {MAX_KEY} bytes"
            )));
        }
        self.kv()?
            .increment(&key, delta, ttl_ms.map(Duration::from_millis))
            .await
            .map_err(kv_error)
    }
}

// === impl log ===

impl log::Host for StoreData {
    fn emit(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let request_id = self.state().request_id.clone();
        let policy = &self.slot.qualified;
        let message: String = message.chars().take(4096).collect();
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "weir::policy", policy, request_id, "{message}");
            }
            log::Level::Debug => {
                tracing::debug!(target: "weir::policy", policy, request_id, "{message}");
            }
            log::Level::Info => {
                tracing::info!(target: "weir::policy", policy, request_id, "{message}");
            }
            log::Level::Warn => {
                tracing::warn!(target: "weir::policy", policy, request_id, "{message}");
            }
            log::Level::Error => {
                tracing::error!(target: "weir::policy", policy, request_id, "{message}");
            }
        }
        Ok(())
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

fn host_of(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(host.split(':').next().unwrap_or(host))
}

impl http_client::Host for StoreData {
    async fn send(
        &mut self,
        request: http_client::OutgoingRequest,
    ) -> Result<http_client::IncomingResponse, http_client::HttpError> {
        let Some(host) = host_of(&request.url) else {
            return Err(http_client::HttpError::Denied(
                "only http:// and https:// URLs are allowed".into(),
            ));
        };
        if !self
            .slot
            .allow_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
        {
            return Err(http_client::HttpError::Denied(format!(
                "policy `{}` may not reach `{host}`: add it to the policy's `allow-hosts` in the gateway configuration",
                self.slot.qualified
            )));
        }
        let timeout = Duration::from_millis(u64::from(request.timeout_ms).clamp(1, 30_000));
        let outbound = self.runtime.outbound().clone();
        let req = HttpRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout,
        };
        match tokio::time::timeout(timeout, outbound.send(req)).await {
            Err(_) | Ok(Err(OutboundHttpError::Timeout)) => Err(http_client::HttpError::Timeout),
            Ok(Err(OutboundHttpError::Failed(m))) => Err(http_client::HttpError::Failed(m)),
            Ok(Ok(r)) => Ok(http_client::IncomingResponse {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_urls() {
        assert_eq!(
            super::host_of("https://api.example.com:443/x?y"),
            Some("api.example.com")
        );
        assert_eq!(super::host_of("http://u:p@h/x"), Some("h"));
        assert_eq!(super::host_of("file:///etc/passwd"), None);
    }
}
