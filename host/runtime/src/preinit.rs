//! Pre-initialisation: a policy instance whose configuration is already parsed and prepared,
//! for every request to start from.
//!
//! A request gets a fresh instance of each policy (requests never share guest state), so a
//! policy that parses its configuration and compiles patterns pays for that in every request.
//! A component that asks for it (the custom section `weir:preinitialise`, written by the SDK's
//! `export_policy!` from `Policy::PREINITIALISE`) is pre-initialised once per configuration:
//! `wasmtime-wizer` instruments it, an instance runs `validate-config` on the configuration
//! (the SDK parses, checks and prepares it there, and keeps it), and the instance's memories and
//! globals are written into a new component whose data segments hold that state. Instances of
//! the new component start from that image (copy-on-write in the pooling allocator): each
//! request still gets its own instance, all of them identical to the snapshot.
//!
//! Compiling the snapshot takes as long as compiling the component, so it runs off the request
//! path ([`crate::ChainSpec::preinitialise`]), is cached on disk by component and
//! configuration, and until it is ready (or if it fails) requests use the plain component.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::{Instance, WasmList};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use crate::bindings::v0_2;
use crate::engine::{Pre, Runtime};
use crate::exports::ExportIndices;
use crate::imports::{SlotState, StoreData};
use weir_core::RequestState;

/// The custom section in which a component asks to be pre-initialised (one byte: 1).
pub const SECTION: &str = "weir:preinitialise";

/// Whether the component's `weir:preinitialise` section asks for pre-initialisation.
pub(crate) fn wanted(bytes: &[u8]) -> Result<bool, String> {
    Ok(crate::schema::custom_section(bytes, SECTION)?.is_some_and(|data| data == [1]))
}

/// A compiled form of a policy component, ready to instantiate: the component as loaded, or
/// a pre-initialised snapshot of it.
pub(crate) struct Variant {
    pub(crate) pre: Pre,
    pub(crate) exports: ExportIndices,
}

impl std::fmt::Debug for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variant").finish_non_exhaustive()
    }
}

/// The snapshots of one component, by configuration (SHA-256 of its text).
#[derive(Default)]
pub(crate) struct Snapshots {
    bytes: Option<Arc<[u8]>>,
    done: Mutex<HashMap<[u8; 32], Arc<Variant>>>,
}

impl Snapshots {
    /// For a component that asks for pre-initialisation: keeps its bytes to instrument.
    pub(crate) fn new(bytes: Option<&[u8]>) -> Self {
        Self {
            bytes: bytes.map(Arc::from),
            done: Mutex::default(),
        }
    }

    pub(crate) fn wanted(&self) -> bool {
        self.bytes.is_some()
    }

    /// The component's bytes, when it asks for pre-initialisation.
    pub(crate) fn bytes(&self) -> Option<&[u8]> {
        self.bytes.as_deref()
    }

    /// The snapshot of the component with `config` prepared, made (or loaded from the disk
    /// cache) on first use. Blocking: compiles. `Ok(None)` when the component does not ask for
    /// pre-initialisation. The flag says whether it came from the disk cache.
    pub(crate) fn get(
        &self,
        runtime: &Runtime,
        name: &str,
        config: &str,
    ) -> wasmtime::Result<Option<(Arc<Variant>, bool)>> {
        let Some(bytes) = &self.bytes else {
            return Ok(None);
        };
        let config_hash: [u8; 32] = Sha256::digest(config.as_bytes()).into();
        let lock = || {
            self.done
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(v) = lock().get(&config_hash) {
            return Ok(Some((v.clone(), true)));
        }
        let mut key = Sha256::new();
        key.update(b"weir-preinitialised\0");
        key.update(Sha256::digest(bytes));
        key.update(config_hash);
        let (component, cached) = crate::cache::compile_keyed(
            runtime.engine(),
            runtime.options().cache_dir.as_deref(),
            &key.finalize(),
            || futures::executor::block_on(snapshot(runtime, name, bytes, &[config], None)),
        )?;
        let variant = Arc::new(runtime.variant(&component, crate::ContractVersion::V0_2)?);
        let mut done = lock();
        // Configurations come and go with the controller: keep a bounded number.
        if done.len() >= 64 {
            done.clear();
        }
        done.insert(config_hash, variant.clone());
        Ok(Some((variant, cached)))
    }
}

/// For an edge app (`weir build`): the component pre-initialised with every configuration
/// its entries in the app use (`validate-config` on each, in one instance: at the edge one
/// component instance serves all of them), as a new component; `None` when the component does
/// not ask for pre-initialisation. Its WASI hash-map seed is derived from the component and the
/// configurations, so that the same inputs give the same bytes.
pub(crate) async fn edge_snapshot(
    runtime: &Runtime,
    name: &str,
    bytes: Option<&[u8]>,
    configs: &[&str],
) -> wasmtime::Result<Option<Vec<u8>>> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let mut seed = Sha256::new();
    seed.update(b"weir-edge-preinitialised\0");
    seed.update(Sha256::digest(bytes));
    for config in configs {
        seed.update(Sha256::digest(config.as_bytes()));
    }
    let seed: [u8; 32] = seed.finalize().into();
    let mut first = [0u8; 16];
    first.copy_from_slice(&seed[..16]);
    snapshot(
        runtime,
        name,
        bytes,
        configs,
        Some(u128::from_le_bytes(first)),
    )
    .await
    .map(Some)
}

/// Instruments the component, runs `validate-config` on each configuration in an instance of
/// it and writes the instance's state into a new component. `seed`: the WASI hash-map seed
/// (else a random one).
async fn snapshot(
    runtime: &Runtime,
    name: &str,
    bytes: &[u8],
    configs: &[&str],
    seed: Option<u128>,
) -> wasmtime::Result<Vec<u8>> {
    let wizer = Wizer::new();
    let (cx, instrumented) = wizer.instrument_component(bytes)?;
    let (component, _) = crate::cache::compile(
        runtime.engine(),
        runtime.options().cache_dir.as_deref(),
        &instrumented,
    )?;
    let slot = Arc::new(SlotState::detached(name));
    let request = Arc::new(Mutex::new(RequestState::detached()));
    let mut store = runtime.new_store(slot, request);
    if let Some(seed) = seed {
        store.data_mut().seed_wasi(seed);
    }
    let instance = runtime
        .linker()
        .instantiate_async(&mut store, &component)
        .await?;
    let bindings = v0_2::PolicyComponent::new(&mut store, &instance)?;
    for config in configs {
        if let Err(e) = bindings
            .weir_policy_policy()
            .call_validate_config(&mut store, config)
            .await?
        {
            wasmtime::bail!(
                "validate-config refused the configuration at `{}`: {}",
                e.path,
                e.message
            );
        }
    }
    let mut access = Access {
        store: &mut store,
        instance,
        error: None,
    };
    let snapshot = wizer.snapshot_component(&cx, &mut access).await?;
    match access.error {
        Some(e) => Err(e),
        None => Ok(snapshot),
    }
}

/// Reads an instrumented instance's state through the `wasmtime:wizer/access` exports the
/// instrumentation added. The first failure is kept (the trait's methods cannot return one).
struct Access<'a> {
    store: &'a mut Store<StoreData>,
    instance: Instance,
    error: Option<wasmtime::Error>,
}

impl Access<'_> {
    async fn call<R>(&mut self, interface: &str, func: &str) -> Option<R>
    where
        R: wasmtime::component::Lift + Send + Sync + 'static,
    {
        if self.error.is_some() {
            return None;
        }
        let result = async {
            let iface = self
                .instance
                .get_export_index(&mut *self.store, None, interface)
                .ok_or_else(|| wasmtime::format_err!("no export `{interface}`"))?;
            let index = self
                .instance
                .get_export_index(&mut *self.store, Some(&iface), func)
                .ok_or_else(|| wasmtime::format_err!("no export `{interface}#{func}`"))?;
            let f = self
                .instance
                .get_typed_func::<(), (R,)>(&mut *self.store, index)?;
            Ok::<_, wasmtime::Error>(f.call_async(&mut *self.store, ()).await?.0)
        }
        .await;
        match result {
            Ok(r) => Some(r),
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

impl ComponentInstanceState for Access<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        match self.call::<WasmList<u8>>(instance, func).await {
            Some(list) => contents(list.as_le_slice(&*self.store)),
            None => contents(&[]),
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func).await.unwrap_or_default()
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func).await.unwrap_or_default()
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call::<f32>(instance, func)
            .await
            .unwrap_or_default()
            .to_bits()
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call::<f64>(instance, func)
            .await
            .unwrap_or_default()
            .to_bits()
    }
}
