//! The one place host bindings for `wit/policy.wit` are generated.

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "weir:policy/policy-component",
        imports: {
            "weir:policy/kv": async,
            "weir:policy/http-client": async,
            default: trappable,
        },
        exports: { default: async },
        with: {
            "weir:policy/types.context": crate::imports::ContextRep,
            "weir:policy/types.message": crate::imports::MessageRep,
        },
    });
}

pub(crate) use generated::PolicyComponent;
pub use generated::PolicyComponentPre;
pub use generated::weir::policy::types::{
    ChunkVerdict, Completion, Denial, Edits, Outcome, Phase, PolicyInfo, Reply, RouteKind,
    StreamChunk, Usage, Verdict,
};
pub(crate) use generated::weir::policy::{http_client, kv, log, types};
