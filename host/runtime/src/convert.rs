//! Conversions between the generated WIT types and weir-core's runtime-independent ones.

use crate::bindings as g;

pub(crate) fn phase(p: g::Phase) -> weir_core::Phase {
    match p {
        g::Phase::Request => weir_core::Phase::Request,
        g::Phase::Response => weir_core::Phase::Response,
        g::Phase::StreamChunk => weir_core::Phase::StreamChunk,
        g::Phase::Complete => weir_core::Phase::Complete,
    }
}

pub(crate) fn info(i: g::PolicyInfo) -> crate::PolicyInfo {
    crate::PolicyInfo {
        name: i.name,
        version: i.version,
        phases: i.phases.into_iter().map(phase).collect(),
    }
}

pub(crate) fn outcome(o: weir_core::Outcome) -> g::Outcome {
    match o {
        weir_core::Outcome::Success => g::Outcome::Success,
        weir_core::Outcome::UpstreamError => g::Outcome::UpstreamError,
        weir_core::Outcome::Denied => g::Outcome::Denied,
        weir_core::Outcome::ClientCancelled => g::Outcome::ClientCancelled,
        weir_core::Outcome::GatewayError => g::Outcome::GatewayError,
    }
}

pub(crate) fn route_kind(k: weir_core::RouteKind) -> g::RouteKind {
    match k {
        weir_core::RouteKind::Llm => g::RouteKind::Llm,
        weir_core::RouteKind::Mcp => g::RouteKind::Mcp,
    }
}

pub(crate) fn denial(d: g::Denial) -> weir_core::Denial {
    weir_core::Denial {
        status: d.status,
        code: d.code,
        message: d.message,
        headers: d.headers,
    }
}

pub(crate) fn reply(r: g::Reply) -> weir_core::Reply {
    weir_core::Reply {
        status: r.status,
        headers: r.headers,
        body: r.body,
    }
}

pub(crate) fn edits(e: g::Edits) -> weir_core::Edits {
    weir_core::Edits {
        set_headers: e.set_headers,
        remove_headers: e.remove_headers,
        body: e.body,
    }
}
