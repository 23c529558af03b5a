//! MCP routes: JSON-RPC messages over Streamable HTTP, through the same chain and the same
//! single exit as LLM requests. Refusals are JSON-RPC error objects (with the request's `id`).
//!
//! The loop forwards the client's POST to the MCP server (both protocol eras: the session and
//! protocol-version headers pass through, client credentials never do) and relays its answer:
//! a JSON answer goes through the response phase, an event stream is relayed as it comes.

use bytes::Bytes;
use serde_json::Value;

use crate::call::{Call, Settlement};
use crate::chain::{self, Admission, Chain, Stop};
use crate::mcp_bridge;
use crate::mcp_multi;
use crate::mcp_sessions::{find_session, map_session};
use crate::render;
use crate::stream::{SessionKind, StreamBody, StreamSession};
use crate::*;

pub(crate) use crate::mcp_upstream::{add_credential, cancel_request, read, relays, send};
pub(crate) use crate::mcp_wire::header;
pub use crate::mcp_wire::{
    FORWARDED, METADATA_PATH, McpOAuth, RpcError, RpcMessage, error_body, metadata, rpc_messages,
};
use crate::mcp_wire::{header_mismatch, origin_refused, resource_urls};

/// Serves one request on an MCP route (`rest` is the path below the route's context path).
pub async fn serve<P: Platform, C: Chain>(
    platform: P,
    route: &RouteInfo,
    request: ClientRequest,
    request_id: String,
    started_ms: u64,
    make_chain: impl FnOnce(RequestState) -> C,
) -> Answer<P, C> {
    let wire = Wire::JsonRpc;
    if !matches!(request.method.as_str(), "POST" | "GET" | "DELETE") {
        let err = GatewayError::client(
            405,
            "method_not_allowed",
            "This MCP endpoint accepts POST (messages), GET (the server's stream) and DELETE (the \
             end of a session).",
        );
        return Answer::Full(Response::error(wire, &err, &request_id));
    }
    if let Some(refused) = origin_refused(route, &request, &request_id) {
        return Answer::Full(refused);
    }
    if request.method != "POST" {
        // The initialize era's server stream (GET) and end of a session (DELETE), through the
        // chain (auth) and relayed as they are: a server of the stateless revision answers
        // them 405 itself.
        let endpoint = request.method.clone();
        let (call, chain) = begin(
            platform, route, request_id, started_ms, endpoint, None, make_chain,
        );
        return run(call, chain, request, None).await;
    }
    if request.body.len() > route.limits.max_body_bytes {
        return Answer::Full(Response::error(
            wire,
            &too_large(route.limits.max_body_bytes),
            &request_id,
        ));
    }
    let parsed: Value = match serde_json::from_slice(&request.body) {
        Ok(v) => v,
        Err(e) => {
            let body = error_body(
                None,
                400,
                "parse_error",
                &format!("The body is not JSON: {e}"),
                &request_id,
            );
            return Answer::Full(Response::json(400, body, &request_id));
        }
    };
    let messages = rpc_messages(&request.body);
    let Some(first) = messages.first() else {
        let body = error_body(
            None,
            400,
            "invalid_request",
            "The body is not a JSON-RPC 2.0 message.",
            &request_id,
        );
        return Answer::Full(Response::json(400, body, &request_id));
    };
    let endpoint = first
        .method
        .clone()
        .unwrap_or_else(|| "response".to_owned());
    let id = match &parsed {
        Value::Object(o) => o.get("id").cloned(),
        _ => None,
    };
    if let Some(message) = header_mismatch(&request.headers, &parsed) {
        let body = error_body(id.as_ref(), 400, "header_mismatch", &message, &request_id);
        return Answer::Full(Response::json(400, body, &request_id));
    }
    let tool = first.tool_name.clone();
    let (call, chain) = begin(
        platform, route, request_id, started_ms, endpoint, tool, make_chain,
    );
    run(call, chain, request, id).await
}

/// The chain and the call of an admitted MCP request (`endpoint`: its method, or `GET` /
/// `DELETE`).
fn begin<P: Platform, C: Chain>(
    platform: P,
    route: &RouteInfo,
    request_id: String,
    started_ms: u64,
    endpoint: String,
    tool: Option<String>,
    make_chain: impl FnOnce(RequestState) -> C,
) -> (Call<P>, C) {
    let chain = make_chain(RequestState {
        request_id: request_id.clone(),
        route: route.name.clone(),
        route_kind: RouteKind::Mcp,
        endpoint: endpoint.clone(),
        consumer: None,
        attributes: Default::default(),
        llm: None,
        received_at_ms: platform.now_ms(),
    });
    let call = Call {
        platform,
        route: route.clone(),
        endpoint_name: endpoint,
        endpoint: None,
        wire: Wire::JsonRpc,
        request_id,
        started_ms,
        llm: Default::default(),
        upstream: None,
        attempts: Vec::new(),
        upstream_ms: None,
        tool,
    };
    (call, chain)
}

async fn run<P: Platform, C: Chain>(
    mut call: Call<P>,
    mut chain: C,
    request: ClientRequest,
    id: Option<Value>,
) -> Answer<P, C> {
    match admitted(&mut call, &mut chain, request, id.as_ref()).await {
        Ok(Exit::Full(response, end)) => {
            call.finish(&mut chain, end, Settlement::default()).await;
            Answer::Full(response)
        }
        Ok(Exit::Stream(relayed)) => {
            let Relayed {
                status,
                mut headers,
                body,
                cancel,
                rewrite,
            } = relayed;
            headers.retain(|(n, _)| n != "x-request-id");
            headers.push(("x-request-id".into(), call.request_id.clone()));
            let mut session = StreamSession::new(call, chain, 0, SessionKind::Raw(rewrite));
            if let Some(cancel) = cancel {
                session.cancel_on_client_gone(cancel);
            }
            Answer::Stream(StreamStart {
                status,
                headers,
                body: StreamBody::Upstream(body),
                session,
            })
        }
        Err(err) => {
            call.log_error(&err);
            let body = error_body(
                id.as_ref(),
                err.status(),
                err.code(),
                &err.to_string(),
                &call.request_id,
            );
            let response = Response::json(err.status(), body, &call.request_id);
            call.finish(&mut chain, Call::<P>::end_of(&err), Settlement::default())
                .await;
            Answer::Full(response)
        }
    }
}

enum Exit<B> {
    Full(Response, End),
    /// A tool call's (or the GET) event stream, relayed as it comes.
    Stream(Relayed<B>),
}

/// A server's event stream to relay to the client.
pub(crate) struct Relayed<B> {
    pub status: u16,
    pub headers: Headers,
    pub body: B,
    /// What tells the server to stop if the client leaves.
    pub cancel: Option<UpstreamRequest>,
    /// For a client of the stateless revision in front of a server of the initialize era.
    pub rewrite: Option<mcp_bridge::AnswerRewrite>,
}

impl<B> Relayed<B> {
    /// A tool call's event stream from a server the gateway speaks to in a session of its own
    /// (the bridges, several servers): the client gets none of the server's headers.
    pub(crate) fn tool_call(
        status: u16,
        body: B,
        cancel: UpstreamRequest,
        rewrite: Option<mcp_bridge::AnswerRewrite>,
    ) -> Self {
        Self {
            status,
            headers: stream_headers(),
            body,
            cancel: Some(cancel),
            rewrite,
        }
    }
}

/// What the bridge and several servers give back: a whole answer, or a tool call's event
/// stream (progress notifications relayed as they come).
pub(crate) enum Reply<B> {
    Full(Full),
    Stream(Relayed<B>),
}

/// The headers of a relayed event stream (none of the server's session headers).
fn stream_headers() -> Headers {
    vec![
        ("content-type".into(), "text/event-stream".into()),
        ("cache-control".into(), "no-cache".into()),
    ]
}

/// A policy's refusal as a JSON-RPC error. A refusal the client acts on at the HTTP level keeps
/// its status (401: authenticate; 429: back off; 5xx); any other (a tool not allowed...) is a
/// JSON-RPC error in a 200 answer, as MCP servers answer refused requests, with the policy's
/// status in `data.status`.
fn refusal(
    id: Option<&Value>,
    denial: &Denial,
    request_id: &str,
    metadata_url: Option<&str>,
) -> Response {
    let status = if (400..600).contains(&denial.status) {
        denial.status
    } else {
        403
    };
    let body = error_body(id, status, &denial.code, &denial.message, request_id);
    let http = if status == 401 || status == 429 || status >= 500 {
        status
    } else {
        200
    };
    let mut resp = Response::json(http, body, request_id);
    render::add_headers(&mut resp.headers, &denial.headers);
    // OAuth clients find where to get a token from the 401 (RFC 9728 §5.1), keeping what the
    // policy said (`error="invalid_token"`).
    if status == 401
        && let Some(url) = metadata_url
    {
        let said = resp
            .headers
            .iter()
            .position(|(n, _)| n == "www-authenticate")
            .map(|i| resp.headers.remove(i).1);
        let params = said
            .as_deref()
            .and_then(|v| v.strip_prefix("Bearer"))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| format!(", {p}"))
            .unwrap_or_default();
        resp.headers.push((
            "www-authenticate".into(),
            format!("Bearer resource_metadata=\"{url}\"{params}"),
        ));
    }
    resp
}

fn stopped<P: Platform, C: Chain>(
    call: &Call<P>,
    chain: &C,
    stop: Stop,
    id: Option<&Value>,
    upstream_called: bool,
    metadata_url: Option<&str>,
) -> Exit<P::Body> {
    match stop {
        Stop::Deny { policy, denial } => {
            call.platform
                .denied(&call.route.name, chain.name(policy), &denial.code);
            let resp = refusal(id, &denial, &call.request_id, metadata_url);
            let end = End::new(resp.status, Outcome::Denied);
            Exit::Full(resp, end)
        }
        Stop::Respond { reply, .. } => {
            let resp = render::reply_response(reply, &call.request_id);
            let outcome = if upstream_called {
                Outcome::Success
            } else {
                Outcome::Answered
            };
            let end = End::new(resp.status, outcome);
            Exit::Full(resp, end)
        }
        Stop::Answer { answer, .. } => {
            // An MCP answer is a JSON-RPC message: sent as it is.
            let mut resp = Response::json(200, answer.completion.into_bytes(), &call.request_id);
            render::add_headers(&mut resp.headers, &answer.headers);
            let outcome = if upstream_called {
                Outcome::Success
            } else {
                Outcome::Answered
            };
            Exit::Full(resp, End::new(200, outcome))
        }
    }
}

/// The refusal of a request that calls a tool the consumer may not use.
fn tool_refusal<P: Platform>(
    call: &Call<P>,
    server: &McpServer,
    messages: &[RpcMessage],
    consumer: Option<&str>,
    id: Option<&Value>,
) -> Option<Exit<P::Body>> {
    if server.tools.is_empty() {
        return None;
    }
    let tool = messages.iter().find_map(|m| {
        let tool = m.tool_name.as_deref()?;
        (!mcp_tools::allowed(&server.tools, tool, consumer)).then_some(tool)
    })?;
    let denial = Denial {
        status: 403,
        code: "tool_not_allowed".into(),
        message: format!(
            "Tool `{tool}` is not available to this consumer on MCP proxy `{}`.",
            call.route.name
        ),
        headers: Vec::new(),
    };
    call.platform
        .denied(&call.route.name, "mcp-tools", &denial.code);
    let resp = refusal(id, &denial, &call.request_id, None);
    let end = End::new(resp.status, Outcome::Denied);
    Some(Exit::Full(resp, end))
}

async fn admitted<P: Platform, C: Chain>(
    call: &mut Call<P>,
    chain: &mut C,
    request: ClientRequest,
    id: Option<&Value>,
) -> Result<Exit<P::Body>, GatewayError> {
    let mut message = MessageView {
        method: request.method,
        path: request.path,
        status: 0,
        headers: request.headers,
        body: request.body,
    };
    let metadata_url = call
        .route
        .mcp
        .as_ref()
        .and_then(|m| Some(resource_urls(m.oauth.as_ref()?, &m.prefix, &message.headers).1));
    let mut admission = Admission::default();
    let stop = chain::request_phase(chain, &mut message, &mut admission).await?;
    let Some(server) = call.route.mcp.clone() else {
        return Err(GatewayError::Unavailable {
            code: "mcp_server_not_configured",
            message: format!("MCP proxy `{}` has no server.", call.route.name),
        });
    };
    // Tool access control, on the request as the policies left it: it holds whoever answers
    // (the server, or a policy such as `mcp-translator`).
    let consumer = chain.consumer();
    let messages = rpc_messages(&message.body);
    let answered = matches!(stop, Some(Stop::Respond { .. } | Stop::Answer { .. }));
    if (stop.is_none() || answered)
        && let Some(refused) = tool_refusal(call, &server, &messages, consumer.as_deref(), id)
    {
        return Ok(refused);
    }
    let filter_list = !server.tools.is_empty()
        && messages
            .iter()
            .any(|m| m.method.as_deref() == Some("tools/list"));
    if let Some(stop) = stop {
        let mut exit = stopped(call, chain, stop, id, false, metadata_url.as_deref());
        if answered
            && filter_list
            && let Exit::Full(resp, _) = &mut exit
            && let Some(filtered) =
                mcp_tools::filter_list(&resp.body, false, &server.tools, consumer.as_deref())
        {
            resp.headers.retain(|(n, _)| n != "content-length");
            resp.body = filtered.into();
        }
        return Ok(exit);
    }
    // Sessions of the initialize era are the gateway's (crate::mcp_sessions): the client's id
    // is looked up, checked against the consumer and replaced by the server's.
    let session = match header(&message.headers, "mcp-session-id") {
        Some(sid) => match find_session(call, sid, consumer.as_deref()).await? {
            Some(s) => Some((sid.to_owned(), s)),
            None => {
                let body = error_body(
                    id,
                    404,
                    "session_not_found",
                    "Session not found (expired, ended, or not this consumer's): start a new \
                     one with initialize.",
                    &call.request_id,
                );
                let resp = Response::json(404, body, &call.request_id);
                return Ok(Exit::Full(resp, End::new(404, Outcome::Denied)));
            }
        },
        None => None,
    };
    let mut headers: Headers = message
        .headers
        .iter()
        .filter(|(n, _)| FORWARDED.contains(&n.as_str()) && n != "mcp-session-id")
        .cloned()
        .collect();
    if let Some((_, s)) = &session {
        headers.push(("mcp-session-id".into(), s.upstream.clone()));
    }
    let method = match message.method.as_str() {
        "GET" => "GET",
        "DELETE" => "DELETE",
        _ => "POST",
    };
    if method == "POST" && !headers.iter().any(|(n, _)| n == "content-type") {
        headers.push(("content-type".into(), "application/json".into()));
    }
    if !headers.iter().any(|(n, _)| n == "accept") {
        let accept = if method == "GET" {
            "text/event-stream"
        } else {
            "application/json, text/event-stream"
        };
        headers.push(("accept".into(), accept.into()));
    }
    headers.push(("x-request-id".into(), call.request_id.clone()));
    if !server.members.is_empty() {
        // Several servers: the gateway answers, asking each (crate::mcp_multi).
        let answer = mcp_multi::serve(
            call,
            &server,
            &message,
            &headers,
            consumer.as_deref(),
            session.as_ref().map(|(sid, _)| sid.as_str()),
        )
        .await?;
        return finish_reply(
            call,
            chain,
            &server,
            answer,
            consumer.as_deref(),
            filter_list,
            id,
        )
        .await;
    }
    add_credential(call, server.credential.as_ref(), &mut headers)?;
    // A session of the gateway's over a server of the stateless revision (mcp_bridge).
    if let Some((sid, s)) = &session
        && s.upstream.is_empty()
    {
        let answer = mcp_bridge::to_stateless(call, &server, &headers, &message, sid).await?;
        return finish_reply(
            call,
            chain,
            &server,
            answer,
            consumer.as_deref(),
            filter_list,
            id,
        )
        .await;
    }
    let body = if method == "POST" {
        message.body.clone()
    } else {
        Default::default()
    };
    // A client of the stateless revision in front of a server of the initialize era: the
    // server refuses a request without a session (400/404/405), and the gateway speaks that era
    // for the client (crate::mcp_bridge).
    let modern =
        session.is_none() && method == "POST" && mcp_bridge::modern_client(&message.headers);
    let mut bridged = modern && mcp_bridge::known_initialize_era(call).await;
    let resp = if bridged {
        None
    } else {
        let resp = send(call, &server, method, headers.clone(), body).await?;
        if modern && matches!(resp.status, 400 | 404 | 405) {
            let _ = call
                .platform
                .read_body(resp.body, 64 * 1024, server.timeout_ms)
                .await;
            bridged = true;
            None
        } else {
            Some(resp)
        }
    };
    let Some(resp) = resp.filter(|_| !bridged) else {
        let answer =
            mcp_bridge::bridge(call, &server, &headers, &message.body, consumer.as_deref()).await?;
        return finish_reply(
            call,
            chain,
            &server,
            answer,
            consumer.as_deref(),
            filter_list,
            id,
        )
        .await;
    };
    // A client of the initialize era whose `initialize` the server refuses: if the server speaks
    // the stateless revision, the gateway holds the session and speaks that revision to it.
    let initializing = messages.first().and_then(|m| m.method.as_deref()) == Some("initialize");
    if initializing && session.is_none() && (400..500).contains(&resp.status) {
        let status = resp.status;
        let kept: Headers = resp
            .headers
            .into_iter()
            .filter(|(n, _)| keep_response_header(n))
            .collect();
        let refused = read(call, &server, resp.body).await?;
        let answer = match mcp_bridge::discover(call, &server, &headers).await? {
            Some(found) => {
                mcp_bridge::initialize_over_stateless(
                    call,
                    &message.body,
                    &found,
                    consumer.as_deref(),
                )
                .await?
            }
            None => Full {
                status,
                headers: kept,
                body: refused,
                is_stream: false,
            },
        };
        return finish_full(
            call,
            chain,
            &server,
            answer,
            consumer.as_deref(),
            filter_list,
            id,
        )
        .await;
    }
    // If the client leaves during the call's stream, the server is told to stop (MCP: a
    // disconnection alone is not a cancellation).
    let cancel = id
        .filter(|_| method == "POST")
        .map(|rid| cancel_request(&server.url, &headers, rid, None, server.timeout_ms));
    let mut headers: Headers = resp
        .headers
        .into_iter()
        .filter(|(n, _)| keep_response_header(n))
        .collect();
    headers.push(("x-request-id".into(), call.request_id.clone()));
    map_session(
        call,
        &mut headers,
        session.as_ref(),
        consumer.as_deref(),
        method,
        resp.status,
    )
    .await?;
    let is_stream = headers
        .iter()
        .any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream"));
    // Only a tool call's event stream is relayed as it comes (progress notifications, the
    // server's requests of the initialize era); the answers to other requests (lists, reads,
    // `initialize`) are short and end with the answer: read whole, so that the response phase
    // and the tool rules see them.
    let calls_tool = messages
        .iter()
        .any(|m| m.method.as_deref() == Some("tools/call"));
    if is_stream && (200..300).contains(&resp.status) && (calls_tool || method == "GET") {
        return Ok(Exit::Stream(Relayed {
            status: resp.status,
            headers,
            body: resp.body,
            cancel: cancel.filter(|_| calls_tool),
            rewrite: None,
        }));
    }
    let body = read(call, &server, resp.body).await?;
    let answer = Full {
        status: resp.status,
        headers,
        body,
        is_stream,
    };
    finish_full(
        call,
        chain,
        &server,
        answer,
        consumer.as_deref(),
        filter_list,
        id,
    )
    .await
}

/// A whole answer of the server (or of the bridge).
pub(crate) struct Full {
    pub status: u16,
    pub headers: Headers,
    pub body: Bytes,
    pub is_stream: bool,
}

/// The bridge's (or several servers') answer: relayed if it is a stream, else as a whole one.
async fn finish_reply<P: Platform, C: Chain>(
    call: &Call<P>,
    chain: &mut C,
    server: &McpServer,
    reply: Reply<P::Body>,
    consumer: Option<&str>,
    filter_list: bool,
    id: Option<&Value>,
) -> Result<Exit<P::Body>, GatewayError> {
    match reply {
        Reply::Full(answer) => {
            finish_full(call, chain, server, answer, consumer, filter_list, id).await
        }
        Reply::Stream(relayed) => Ok(Exit::Stream(relayed)),
    }
}

/// A whole answer through the tool rules and the response phase.
async fn finish_full<P: Platform, C: Chain>(
    call: &Call<P>,
    chain: &mut C,
    server: &McpServer,
    answer: Full,
    consumer: Option<&str>,
    filter_list: bool,
    id: Option<&Value>,
) -> Result<Exit<P::Body>, GatewayError> {
    let Full {
        status,
        mut headers,
        body,
        is_stream,
    } = answer;
    let body = match filter_list
        .then(|| mcp_tools::filter_list(&body, is_stream, &server.tools, consumer))
        .flatten()
    {
        Some(filtered) => {
            headers.retain(|(n, _)| n != "content-length");
            filtered.into()
        }
        None => body,
    };
    let mut message = MessageView {
        status,
        headers,
        body,
        ..Default::default()
    };
    if (200..300).contains(&status)
        && let Some(stop) = chain::response_phase(chain, &mut message, chain.len()).await?
    {
        return Ok(stopped(call, chain, stop, id, true, None));
    }
    let outcome = if (200..300).contains(&status) || status == 202 {
        Outcome::Success
    } else {
        Outcome::UpstreamError
    };
    let mut headers = message.headers;
    headers.retain(|(n, _)| n != "x-request-id");
    headers.push(("x-request-id".into(), call.request_id.clone()));
    Ok(Exit::Full(
        Response {
            status,
            headers,
            body: message.body,
        },
        End::new(status, outcome),
    ))
}
