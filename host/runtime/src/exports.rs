//! Calling the exports of a request's policy instance.
//!
//! The bindings' own `instantiate` looks up and type-checks every export of the policy
//! interface on every instantiation; a request usually calls one or two of them. Here an
//! instance is created bare, the export indices are found once per component, and a call
//! looks up (and type-checks) only the function it calls. The whole interface was type-checked
//! once when the component was loaded (`PolicyComponentPre::new`).

use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, Instance, Lift, Lower, TypedFunc,
};
use wasmtime::{AsContextMut, Store};

use crate::engine::ContractVersion;
use crate::imports::StoreData;

/// The exports of the policy interface, by function.
#[derive(Debug, Clone)]
pub(crate) struct ExportIndices {
    pub on_request: ComponentExportIndex,
    pub on_response: ComponentExportIndex,
    pub on_stream_chunk: ComponentExportIndex,
    /// 0.2 and later.
    pub on_stream_end: Option<ComponentExportIndex>,
    pub on_complete: ComponentExportIndex,
}

impl ExportIndices {
    pub(crate) fn new(component: &Component, version: ContractVersion) -> wasmtime::Result<Self> {
        let interface = match version {
            ContractVersion::V0_1 => "weir:policy/policy@0.1.0",
            ContractVersion::V0_2 => "weir:policy/policy@0.2.0",
        };
        let iface = component
            .get_export_index(None, interface)
            .ok_or_else(|| wasmtime::format_err!("no export `{interface}`"))?;
        let func = |name: &str| {
            component
                .get_export_index(Some(&iface), name)
                .ok_or_else(|| wasmtime::format_err!("no export `{interface}#{name}`"))
        };
        Ok(Self {
            on_request: func("on-request")?,
            on_response: func("on-response")?,
            on_stream_chunk: func("on-stream-chunk")?,
            on_stream_end: match version {
                ContractVersion::V0_1 => None,
                ContractVersion::V0_2 => Some(func("on-stream-end")?),
            },
            on_complete: func("on-complete")?,
        })
    }
}

/// Calls the export `index` of `instance` with `params`.
pub(crate) async fn call<P, R>(
    store: &mut Store<StoreData>,
    instance: &Instance,
    index: &ComponentExportIndex,
    params: P,
) -> wasmtime::Result<R>
where
    P: ComponentNamedList + Lower + Send + Sync,
    R: ComponentNamedList + Lift + Send + Sync + 'static,
{
    let func: TypedFunc<P, R> = instance.get_typed_func(store.as_context_mut(), index)?;
    call_typed(store, func, params).await
}

/// Calls `func`, already looked up and type-checked, with `params`, under the call's meter.
pub(crate) async fn call_typed<P, R>(
    store: &mut Store<StoreData>,
    func: TypedFunc<P, R>,
    params: P,
) -> wasmtime::Result<R>
where
    P: ComponentNamedList + Lower + Send + Sync,
    R: ComponentNamedList + Lift + Send + Sync + 'static,
{
    let meter = store.data().meter.clone();
    meter
        .run(func.call_async(store.as_context_mut(), params))
        .await
}
