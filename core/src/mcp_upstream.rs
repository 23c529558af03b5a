//! The MCP loop's exchanges with a server: sending (its credential added, failures as the
//! gateway's errors), reading a whole answer within the limit, telling a server to cancel a
//! request, and whether an answer is a stream to relay.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::call::Call;
use crate::mcp_wire::header;
use crate::*;

/// Whether a server's answer is an event stream to relay as it comes (a tool call's).
pub(crate) fn relays(resp_headers: &Headers, status: u16) -> bool {
    (200..300).contains(&status)
        && header(resp_headers, "content-type").is_some_and(|v| v.starts_with("text/event-stream"))
}

/// The request that tells a server to stop request `rid`, sent with `headers` (the call's
/// session, revision and credential) to `url`.
pub(crate) fn cancel_request(
    url: &str,
    headers: &Headers,
    rid: &Value,
    meta: Option<Value>,
    timeout_ms: u64,
) -> UpstreamRequest {
    let mut h: Headers = headers
        .iter()
        .filter(|(n, _)| n != "mcp-method" && n != "mcp-name" && n != "content-length")
        .cloned()
        .collect();
    if header(headers, "mcp-method").is_some() {
        h.push(("mcp-method".into(), "notifications/cancelled".into()));
    }
    let mut params = json!({"requestId": rid, "reason": "The client went away."});
    if let Some(meta) = meta {
        params["_meta"] = meta;
    }
    let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params});
    UpstreamRequest {
        method: "POST",
        url: url.to_owned(),
        headers: h,
        body: Bytes::from(note.to_string()),
        timeout_ms: timeout_ms.min(10_000),
    }
}

/// The whole answer of a server (at most `limits.max-response-bytes`).
pub(crate) async fn read<P: Platform>(
    call: &Call<P>,
    server: &McpServer,
    body: P::Body,
) -> Result<Bytes, GatewayError> {
    call.platform
        .read_body(
            body,
            call.route.limits.max_response_bytes,
            server.timeout_ms,
        )
        .await
        .map_err(|_| GatewayError::Upstream {
            status: 502,
            code: "upstream_response_failed",
            message: format!(
                "The MCP server of `{}` broke off its response.",
                call.route.name
            ),
            detail: None,
        })
}

/// `headers` with the credential the gateway sends a server (503 when its variable is unset).
pub(crate) fn add_credential<P: Platform>(
    call: &Call<P>,
    credential: Option<&McpCredential>,
    headers: &mut Headers,
) -> Result<(), GatewayError> {
    let Some(credential) = credential else {
        return Ok(());
    };
    let pair = credential
        .header_pair()
        .map_err(|var| GatewayError::Unavailable {
            code: "mcp_server_not_configured",
            message: format!(
                "MCP proxy `{}` has no credential for its server: set {var} and restart.",
                call.route.name
            ),
        })?;
    headers.push(pair);
    Ok(())
}

/// Sends a request to the proxy's server; failures become the gateway's errors.
pub(crate) async fn send<P: Platform>(
    call: &mut Call<P>,
    server: &McpServer,
    method: &'static str,
    headers: Headers,
    body: Bytes,
) -> Result<UpstreamResponse<P::Body>, GatewayError> {
    let sent_ms = call.platform.monotonic_ms();
    let sent = call
        .platform
        .send(UpstreamRequest {
            method,
            url: server.url.clone(),
            headers,
            body,
            timeout_ms: server.timeout_ms,
        })
        .await;
    let latency = call.platform.monotonic_ms().saturating_sub(sent_ms);
    call.upstream_ms = Some(call.upstream_ms.unwrap_or(0) + latency);
    sent.map_err(|failure| match failure {
        UpstreamFailure::Unreachable(detail) => GatewayError::Upstream {
            status: 502,
            code: "upstream_unavailable",
            message: format!(
                "The MCP server of `{}` could not be reached.",
                call.route.name
            ),
            detail: Some(detail),
        },
        UpstreamFailure::Timeout => GatewayError::Upstream {
            status: 504,
            code: "upstream_timeout",
            message: format!(
                "The MCP server of `{}` did not answer within {} ms.",
                call.route.name, server.timeout_ms
            ),
            detail: None,
        },
        UpstreamFailure::TooLarge(max) => GatewayError::Upstream {
            status: 502,
            code: "upstream_response_too_large",
            message: format!(
                "The MCP server of `{}` answered more than {max} bytes (limits.max-response-bytes).",
                call.route.name
            ),
            detail: None,
        },
    })
}
