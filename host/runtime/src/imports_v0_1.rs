//! The interfaces of `weir:policy@0.1.0`, for components built against it: each call has its
//! 0.1 meaning and is served by the same host code as 0.2 (see `imports.rs`).

use wasmtime::component::Resource;

use crate::bindings::v0_1::{http_client, kv, log, types};
use std::time::Duration;

use crate::imports::{ContextRep, FetchError, MessageRep, StoreData, check_kv, fetch};

impl types::Host for StoreData {}

impl types::HostContext for StoreData {
    fn request_id(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<String> {
        Ok(self.state().request_id.clone())
    }

    fn route(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<String> {
        Ok(self.state().route.clone())
    }

    fn route_kind(&mut self, _: Resource<ContextRep>) -> wasmtime::Result<types::RouteKind> {
        Ok(match self.state().route_kind {
            weir_core::RouteKind::Llm => types::RouteKind::Llm,
            weir_core::RouteKind::Mcp => types::RouteKind::Mcp,
        })
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

    fn drop(&mut self, rep: Resource<MessageRep>) -> wasmtime::Result<()> {
        self.drop_handle(rep)
    }
}

fn kv_error(e: weir_state::KvError) -> kv::KvError {
    match e {
        weir_state::KvError::Unavailable(m) => kv::KvError::Unavailable(m),
        weir_state::KvError::Invalid(m) => kv::KvError::Invalid(m),
    }
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

impl http_client::Host for StoreData {
    async fn send(
        &mut self,
        request: http_client::OutgoingRequest,
    ) -> Result<http_client::IncomingResponse, http_client::HttpError> {
        let mut request = crate::imports::HttpRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout: Duration::from_millis(u64::from(request.timeout_ms).clamp(1, 30_000)),
        };
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
