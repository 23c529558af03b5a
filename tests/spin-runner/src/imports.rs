//! The per-request store and the Spin imports beyond standard WASI: `wasi:keyvalue` (store,
//! atomics) over [`Stores`] and `fermyon:spin/variables` over the manifest's component
//! variables. Outbound HTTP is wasmtime-wasi-http's, limited to `allowed_outbound_hosts`.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::kv::{Snapshot, Stores};
use crate::manifest;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "weir:spin-runner/spin-imports",
        with: {
            "wasi:keyvalue/store.bucket": crate::imports::Bucket,
            "wasi:keyvalue/atomics.cas": crate::imports::Cas,
        },
    });
}

pub use bindings::SpinImports;
use bindings::fermyon::spin::variables;
use bindings::wasi::keyvalue::{atomics, store};

/// An open store.
#[derive(Debug)]
pub struct Bucket {
    label: String,
}

/// A compare-and-swap in progress.
#[derive(Debug)]
pub struct Cas {
    label: String,
    key: String,
    seen: Snapshot,
}

/// What every request shares.
#[derive(Debug, Clone)]
pub struct Shared {
    pub stores: Stores,
    pub variables: Arc<BTreeMap<String, String>>,
    pub allowed_outbound_hosts: Arc<Vec<String>>,
}

/// The store data of one request.
pub struct State {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub hooks: Outbound,
    pub shared: Shared,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Outbound HTTP as Spin allows it: only to `allowed_outbound_hosts`.
#[derive(Debug)]
pub struct Outbound {
    pub allowed: Arc<Vec<String>>,
}

/// The future of a response, as wasi-http's hooks return it.
type ResponseFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> ResponseFuture {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        if !manifest::outbound_allowed(&self.allowed, &scheme, &host, port) {
            eprintln!(
                "spin-runner: outbound request to {scheme}://{host}:{port} denied (not in allowed_outbound_hosts)"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        drop(fut);
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

fn store_error(message: String) -> store::Error {
    store::Error::Other(message)
}

impl store::Host for State {
    fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
        if !self.shared.stores.allowed(&identifier) {
            return Err(store::Error::AccessDenied);
        }
        self.table
            .push(Bucket { label: identifier })
            .map_err(|e| store_error(e.to_string()))
    }
}

impl State {
    fn label(&self, bucket: &Resource<Bucket>) -> Result<String, store::Error> {
        self.table
            .get(bucket)
            .map(|b| b.label.clone())
            .map_err(|e| store_error(e.to_string()))
    }
}

impl store::HostBucket for State {
    fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        let label = self.label(&bucket)?;
        Ok(self.shared.stores.get(&label, &key))
    }

    fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        let label = self.label(&bucket)?;
        self.shared
            .stores
            .set(&label, &key, value)
            .map_err(store_error)
    }

    fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        let label = self.label(&bucket)?;
        self.shared.stores.delete(&label, &key).map_err(store_error)
    }

    fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, store::Error> {
        let label = self.label(&bucket)?;
        Ok(self.shared.stores.get(&label, &key).is_some())
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        _cursor: Option<String>,
    ) -> Result<store::KeyResponse, store::Error> {
        let label = self.label(&bucket)?;
        Ok(store::KeyResponse {
            keys: self.shared.stores.keys(&label),
            cursor: None,
        })
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for State {
    fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Result<i64, store::Error> {
        let label = self.label(&bucket)?;
        self.shared
            .stores
            .increment(&label, &key, delta)
            .map_err(store_error)
    }

    fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> Result<(), atomics::CasError> {
        let op = self
            .table
            .delete(cas)
            .map_err(|e| atomics::CasError::StoreError(store_error(e.to_string())))?;
        match self.shared.stores.swap(&op.label, &op.key, &op.seen, value) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(now)) => {
                let fresh = self
                    .table
                    .push(Cas {
                        label: op.label,
                        key: op.key,
                        seen: now,
                    })
                    .map_err(|e| atomics::CasError::StoreError(store_error(e.to_string())))?;
                Err(atomics::CasError::CasFailed(fresh))
            }
            Err(e) => Err(atomics::CasError::StoreError(store_error(e))),
        }
    }
}

impl atomics::HostCas for State {
    fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Resource<Cas>, store::Error> {
        let label = self.label(&bucket)?;
        let seen = self.shared.stores.snapshot(&label, &key);
        self.table
            .push(Cas { label, key, seen })
            .map_err(|e| store_error(e.to_string()))
    }

    fn current(&mut self, cas: Resource<Cas>) -> Result<Option<Vec<u8>>, store::Error> {
        let op = self
            .table
            .get(&cas)
            .map_err(|e| store_error(e.to_string()))?;
        Ok(op.seen.as_ref().map(|(_, v)| v.clone()))
    }

    fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl variables::Host for State {
    fn get(&mut self, name: String) -> Result<String, variables::Error> {
        self.shared
            .variables
            .get(&name)
            .cloned()
            .ok_or(variables::Error::Undefined(format!(
                "no component variable `{name}`"
            )))
    }
}
