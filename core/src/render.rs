//! Responses built by the gateway itself: denials, policies' replies and answers, in the
//! client's format.

use bytes::Bytes;
use serde_json::Value;

use crate::platform::Response;
use crate::route::Wire;
use crate::types::{Denial, Headers, Reply};

/// The response for a policy's denial in the client's format, with its extra headers.
pub fn denial_response(wire: Wire, denial: &Denial, request_id: &str) -> Response {
    let status = if (400..600).contains(&denial.status) {
        denial.status
    } else {
        403
    };
    let body = wire.error_body(status, &denial.code, &denial.message, None, request_id);
    let mut resp = Response::json(status, body, request_id);
    add_headers(&mut resp.headers, &denial.headers);
    resp
}

/// Sets `extra` headers (lower-cased), replacing same-named ones; never the request id.
pub(crate) fn add_headers(headers: &mut Headers, extra: &Headers) {
    for (n, v) in extra {
        let n = n.to_ascii_lowercase();
        if n == "x-request-id" {
            continue;
        }
        headers.retain(|(h, _)| *h != n);
        headers.push((n, v.clone()));
    }
}

/// A policy's own HTTP reply, with the request id.
pub fn reply_response(reply: Reply, request_id: &str) -> Response {
    let status = if (100..600).contains(&reply.status) {
        reply.status
    } else {
        200
    };
    let mut headers: Headers = Vec::new();
    add_headers(&mut headers, &reply.headers);
    headers.push(("x-request-id".into(), request_id.to_owned()));
    Response {
        status,
        headers,
        body: Bytes::from(reply.body),
    }
}

/// An OpenAI chat completion body in the client's format: as it is, or as an Anthropic message.
pub fn completion_body(wire: Wire, body: Bytes) -> Bytes {
    if wire != Wire::Anthropic {
        return body;
    }
    serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| weir_llm::translate::anthropic::inbound::response(&v).ok())
        .and_then(|m| serde_json::to_vec(&m).ok())
        .map_or(body, Bytes::from)
}

/// A chat completion as a server-sent event stream in OpenAI's format (the session encodes it
/// for Anthropic clients): role, content, finish, usage, `[DONE]`.
pub fn completion_stream(completion: &Value) -> Bytes {
    let mut out = String::new();
    for chunk in weir_llm::view::completion_chunks(completion, true) {
        out.push_str("data: ");
        out.push_str(&chunk);
        out.push_str("\n\n");
    }
    out.push_str("data: [DONE]\n\n");
    Bytes::from(out)
}
