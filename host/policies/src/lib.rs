//! The policy components that ship with weir, embedded in the binary.
//!
//! `build.rs` compiles `components/` for `wasm32-wasip2`; this crate exposes the bytes, so the
//! `weir` binary works from a fresh clone with no separate component build step. The
//! `test-policy` component (deliberately misbehaving) is exposed for tests but not registered as
//! a built-in by the gateway. `EDGE_GATEWAY`, `EDGE_RUNTIME`, `EDGE_CHAIN_LINK` and `EDGE_CHAIN_END` are the edge build's components
//! (see `wit/edge/edge.wit`), composed with policies by `weir build`.
//!
//! ```
//! assert!(weir_policies::AUTH.starts_with(b"\0asm"));
//! ```
#![forbid(unsafe_code)]

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// Built-in policies registered by the gateway (the test and noop policies are not among them).
pub fn builtins() -> impl Iterator<Item = (&'static str, &'static [u8])> {
    ALL.iter()
        .copied()
        .filter(|(name, _)| *name != "test-policy" && *name != "noop")
}
