//! The wasmtime side of weir: runs policy components.
//!
//! - [`Runtime`] owns the engine (pooling allocator, epoch interruption), compiles components
//!   once and caches the compiled artefacts on disk keyed by content hash, and pre-instantiates
//!   them ([`Policy`]).
//! - [`ChainSpec`] is a configured chain of policy instances (policy + its JSON config + a
//!   key-value namespace); [`ChainRun`] makes the single policy calls of one request that
//!   weir-core's loop asks for ([`weir_core::Chain`]).
//! - Every published version of the contract is bound side by side (`wit/policy-0.1`,
//!   `wit/policy-0.2`): a component built against 0.1 keeps working next to 0.2 ones.
//!
//! **Isolation.** Each request gets a fresh instance of each policy it uses (one `Store` per
//! policy per request, created from the pre-instantiated component out of the pooling
//! allocator's slots), kept for the phases of that request and dropped at its end, so no guest
//! memory or context outlives a request. A component that asks for it is pre-initialised once
//! per configuration (`preinit.rs`): its instances then start from a snapshot taken after
//! `validate-config`, identical for every request. Each call runs under an epoch deadline (time per call) and a
//! memory limit; a trap, a loop or a memory bomb fails that request with a [`PolicyError`]
//! naming the policy, and the runtime stays healthy.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use weir_runtime::{Runtime, RuntimeOptions};
//! let runtime = Runtime::new(RuntimeOptions::default())?;
//! let auth = runtime.load("auth", &std::fs::read("auth.wasm")?)?;
//! assert_eq!(auth.info().name, "auth");
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]

mod bindings;
mod cache;
mod chain;
mod convert;
mod engine;
mod error;
mod exports;
mod imports;
mod imports_v0_1;
mod meter;
mod preinit;
pub mod schema;

pub use chain::{ChainRun, ChainSpec, SlotSpec};
pub use engine::{ContractVersion, Policy, Runtime, RuntimeOptions, Services};
pub use error::{LoadError, PolicyError, PolicyFailure};
pub use imports::{
    EmbedError, Embedder, HttpRequest, HttpResponse, OutboundHttp, OutboundHttpError, PolicyMetrics,
};
pub use weir_core::{
    ChunkVerdict, CompletionInfo, Denial, Edits, MessageView, Outcome, Phase, Reply, RequestState,
    RouteKind, Verdict,
};

/// What a policy says about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
    pub phases: Vec<Phase>,
}
