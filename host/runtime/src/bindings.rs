//! The one place host bindings are generated: one module per published version of the
//! contract (`wit/policy-0.1`, `wit/policy-0.2`). Each version's `context` and `message`
//! resources map to the same host representations, so one request's state serves policies of
//! both versions in one chain.

/// `weir:policy@0.2.0`, the current contract.
pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../../wit/policy-0.2",
        world: "weir:policy/policy-component@0.2.0",
        imports: {
            "weir:policy/kv": async,
            "weir:policy/http-client": async,
            "weir:policy/embeddings": async,
            "weir:policy/vectors": async,
            default: trappable,
        },
        exports: { default: async },
        with: {
            "weir:policy/types.context": crate::imports::ContextRep,
            "weir:policy/types.message": crate::imports::MessageRep,
        },
    });

    pub(crate) use weir::policy::{embeddings, http_client, kv, log, metrics, types, vectors};
}

/// `weir:policy@0.1.0`: components built against it keep loading, with the 0.1 meaning of
/// every call (see `imports_v0_1.rs`).
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit/policy-0.1",
        world: "weir:policy/policy-component@0.1.0",
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

    pub(crate) use weir::policy::types;
    pub(crate) use weir::policy::{http_client, kv, log};
}
