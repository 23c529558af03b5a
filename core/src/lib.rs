//! The portable request loop of Weir.
//!
//! Everything between "an HTTP request arrived" and "the answer is sent and its usage recorded"
//! happens here, once, for every target: matching the route and endpoint, checking the body,
//! running the policy chain's phases and applying their decisions (edits, denials, answers,
//! targets, stream events), the upstream attempts (key injection, translation to the provider's
//! format, no client credentials forwarded, failover before anything was billed), mapping
//! upstream failures, relaying streams event by event, on-complete and the usage record exactly
//! once.
//!
//! It does no I/O of its own and needs no runtime: the caller supplies a [`Platform`] (upstream
//! HTTP, clock, usage sink) and a [`Chain`] (single calls into the policy instances of one
//! request). The `weir` server drives it with hyper + wasmtime; the edge `gateway` component
//! (components/gateway) compiles the same code to WebAssembly and drives it with the platform's
//! `fetch` and the composed policy components.
//!
//! ```text
//! serve ─▶ check (route, size, JSON) ─▶ request phase ─▶ attempts ─▶ response phase ─▶ finish
//!                                          │ answer/deny/respond          │ stream
//!                                          └──────────▶ finish            └▶ StreamSession ─▶ settle ─▶ finish
//! ```
#![forbid(unsafe_code)]

mod call;
pub mod chain;
mod error;
pub mod isolation;
pub mod mcp;
pub mod mcp_bridge;
pub mod mcp_multi;
pub mod mcp_sessions;
pub mod mcp_tools;
mod mcp_upstream;
mod mcp_wire;
pub mod plan;
mod platform;
pub mod render;
mod retry;
mod route;
mod serve;
mod stream;
mod types;
mod upstream;
pub mod vectors;

pub use call::{Call, Settlement};
pub use chain::Chain;
pub use error::GatewayError;
pub use platform::*;
pub use retry::{DEFAULT_RETRY_STATUSES, Retry, retry_after};
pub use route::*;
pub use serve::serve;
pub use stream::{SessionKind, StreamBody, StreamEnd, StreamSession};
pub use types::*;

/// The start of a streamed answer: send `status` and `headers`, then drive `session` with the
/// bytes of `body` as they arrive.
#[allow(
    missing_debug_implementations,
    reason = "holds the platform's body and session, which need not be Debug"
)]
pub struct StreamStart<P: Platform, C> {
    pub status: u16,
    pub headers: Headers,
    pub body: StreamBody<P::Body>,
    pub session: StreamSession<P, C>,
}

/// What the loop answers.
#[expect(
    clippy::large_enum_variant,
    reason = "one value per request, moved once; boxing would add an allocation per answer"
)]
pub enum Answer<P: Platform, C> {
    Full(Response),
    Stream(StreamStart<P, C>),
}

impl<P: Platform, C> std::fmt::Debug for Answer<P, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full(r) => f.debug_tuple("Full").field(r).finish(),
            Self::Stream(s) => f
                .debug_struct("Stream")
                .field("status", &s.status)
                .finish_non_exhaustive(),
        }
    }
}
