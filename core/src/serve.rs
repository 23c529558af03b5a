//! The loop of an LLM route: [`serve`] takes a request through its checks, the request phase,
//! the upstream attempts, the response phase or the start of a stream. Every way out of an
//! admitted request ends in [`Call::finish`] (on-complete + usage record, once), and every
//! error becomes a response in the client's format in one place ([`Response::error`]).

use bytes::Bytes;
use serde_json::Value;

use crate::call::{Call, Settlement};
use crate::chain::{self, Admission, Chain, Stop};
use crate::render;
use crate::stream::{SessionKind, StreamBody, StreamSession};
use crate::upstream::{self, Targets};
use crate::*;

/// How an admitted request leaves the loop.
enum Exit<B> {
    /// A complete answer (or refusal), to be settled now.
    Full {
        response: Response,
        end: End,
        settlement: Settlement,
    },
    /// A stream: settled by its session when it ends.
    Stream {
        status: u16,
        headers: Headers,
        body: StreamBody<B>,
        /// The policies before this position take part in the stream phases.
        limit: usize,
        answered: bool,
    },
}

/// Serves one request on a matched LLM route and endpoint: everything after the body was read.
///
/// `make_chain` creates the request's policy chain from its initial state. `started_ms` is
/// [`Platform::monotonic_ms`] when the request arrived.
pub async fn serve<P: Platform, C: Chain>(
    platform: P,
    route: &RouteInfo,
    endpoint: Endpoint,
    request: ClientRequest,
    request_id: String,
    started_ms: u64,
    make_chain: impl FnOnce(RequestState) -> C,
) -> Answer<P, C> {
    let wire = endpoint.wire();
    let (request, llm) = match check(route, endpoint, request) {
        Ok(checked) => checked,
        Err(err) => return Answer::Full(Response::error(wire, &err, &request_id)),
    };
    let chain = make_chain(RequestState {
        request_id: request_id.clone(),
        route: route.name.clone(),
        route_kind: RouteKind::Llm,
        endpoint: endpoint.name().to_owned(),
        consumer: None,
        attributes: Default::default(),
        llm: llm.clone(),
        received_at_ms: platform.now_ms(),
    });
    let call = Call {
        platform,
        route: route.clone(),
        endpoint_name: endpoint.name().to_owned(),
        endpoint: Some(endpoint),
        wire,
        request_id,
        started_ms,
        llm: llm.unwrap_or_default(),
        upstream: None,
        attempts: Vec::new(),
        upstream_ms: None,
        tool: None,
    };
    run(call, chain, endpoint, request).await
}

/// The checks before any policy runs (not admitted: no usage record).
fn check(
    route: &RouteInfo,
    endpoint: Endpoint,
    mut request: ClientRequest,
) -> Result<(ClientRequest, Option<weir_llm::LlmRequestInfo>), GatewayError> {
    if route
        .exposed
        .as_ref()
        .is_some_and(|e| !e.contains(&endpoint))
    {
        return Err(GatewayError::client(
            404,
            "endpoint_not_exposed",
            format!(
                "Proxy `{}` does not expose `{}`.",
                route.name,
                endpoint.name()
            ),
        ));
    }
    if request.body.len() > route.limits.max_body_bytes {
        return Err(too_large(route.limits.max_body_bytes));
    }
    let invalid = |message: String, param: Option<&'static str>| GatewayError::Client {
        status: 400,
        code: "invalid_request_body",
        message,
        param,
    };
    if endpoint == Endpoint::Messages {
        // Anthropic clients: the rest of the gateway (policies included) sees OpenAI format.
        let translated = serde_json::from_slice::<Value>(&request.body)
            .map_err(|e| format!("We could not parse the JSON body of your request: {e}"))
            .and_then(|v| {
                weir_llm::translate::anthropic::inbound::request(&v).map_err(|e| e.to_string())
            })
            .and_then(|v| serde_json::to_vec(&v).map_err(|e| e.to_string()));
        request.body = Bytes::from(translated.map_err(|m| invalid(m, None))?);
    }
    if endpoint == Endpoint::Models {
        return Ok((request, None));
    }
    let info = weir_llm::inspect::chat_request(&request.body).map_err(|e| {
        let param = match &e {
            weir_llm::RequestError::InvalidField { field, .. } => Some(*field),
            weir_llm::RequestError::InvalidJson(_) => None,
        };
        invalid(e.to_string(), param)
    })?;
    if endpoint == Endpoint::Embeddings && info.stream {
        return Err(GatewayError::client(
            400,
            "invalid_request_body",
            "Embeddings cannot stream.",
        ));
    }
    Ok((request, Some(info)))
}

/// The one exit of an admitted request.
async fn run<P: Platform, C: Chain>(
    mut call: Call<P>,
    mut chain: C,
    endpoint: Endpoint,
    request: ClientRequest,
) -> Answer<P, C> {
    let mut exit = admitted(&mut call, &mut chain, endpoint, request).await;
    if let Some(cache) = chain
        .attribute(crate::types::CACHE_ATTRIBUTE)
        .and_then(|v| crate::types::CacheRecord::parse(&v))
    {
        // What a cache policy did, for the client (a hit's own headers stay as they are).
        let headers = match &mut exit {
            Ok(Exit::Full { response, .. }) => Some(&mut response.headers),
            Ok(Exit::Stream { headers, .. }) => Some(headers),
            Err(_) => None,
        };
        if let Some(headers) = headers
            && !headers.iter().any(|(n, _)| n == "x-weir-cache")
        {
            headers.extend(cache.headers());
        }
    }
    match exit {
        Ok(Exit::Full {
            response,
            end,
            settlement,
        }) => {
            call.finish(&mut chain, end, settlement).await;
            Answer::Full(response)
        }
        Ok(Exit::Stream {
            status,
            headers,
            body,
            limit,
            answered,
        }) => {
            let kind = SessionKind::llm(&call, &body, answered);
            Answer::Stream(StreamStart {
                status,
                headers,
                body,
                session: StreamSession::new(call, chain, limit, kind),
            })
        }
        Err(err) => {
            call.log_error(&err);
            let response = Response::error(call.wire, &err, &call.request_id);
            call.finish(&mut chain, Call::<P>::end_of(&err), Settlement::default())
                .await;
            Answer::Full(response)
        }
    }
}

async fn admitted<P: Platform, C: Chain>(
    call: &mut Call<P>,
    chain: &mut C,
    endpoint: Endpoint,
    request: ClientRequest,
) -> Result<Exit<P::Body>, GatewayError> {
    let mut message = MessageView {
        method: request.method,
        path: request.path,
        status: 0,
        headers: request.headers,
        body: request.body,
    };
    let mut admission = Admission {
        llm: (endpoint != Endpoint::Models).then(|| call.llm.clone()),
        targets: None,
    };
    let stop = chain::request_phase(chain, &mut message, &mut admission).await?;
    if let Some(llm) = admission.llm {
        call.llm = llm;
    }
    if let Some(stop) = stop {
        return stopped(call, chain, stop, None).await;
    }
    let targets = match admission.targets {
        Some((i, list)) => Targets {
            chooser: Some(chain.name(i).to_owned()),
            list,
        },
        None => Targets {
            chooser: None,
            list: vec![Target {
                provider: call.route.upstream.name.clone(),
                model: None,
            }],
        },
    };
    let resp = upstream::attempt(call, endpoint, &message, targets).await?;
    answered_upstream(call, chain, resp).await
}

/// A request phase (or response phase) that a policy stopped.
async fn stopped<P: Platform, C: Chain>(
    call: &mut Call<P>,
    chain: &mut C,
    stop: Stop,
    upstream: Option<Settlement>,
) -> Result<Exit<P::Body>, GatewayError> {
    let settlement = upstream.clone().unwrap_or_default();
    match stop {
        Stop::Deny { policy, denial } => {
            call.platform
                .denied(&call.route.name, chain.name(policy), &denial.code);
            let response = render::denial_response(call.wire, &denial, &call.request_id);
            Ok(Exit::Full {
                end: End::new(response.status, Outcome::Denied),
                response,
                settlement,
            })
        }
        Stop::Respond { reply, .. } => {
            let response = render::reply_response(reply, &call.request_id);
            let outcome = if upstream.is_some() {
                Outcome::Success
            } else {
                Outcome::Answered
            };
            Ok(Exit::Full {
                end: End::new(response.status, outcome),
                response,
                settlement,
            })
        }
        Stop::Answer { policy, answer } => {
            let completion: Value = serde_json::from_str(&answer.completion)
                .ok()
                .filter(|v: &Value| v.get("choices").is_some_and(Value::is_array))
                .ok_or_else(|| {
                    GatewayError::Policy(PolicyFault {
                        code: "policy_invalid_answer",
                        message: format!(
                            "policy `{}` answered with something that is not an OpenAI chat completion",
                            chain.name(policy)
                        ),
                    })
                })?;
            let mut headers: Headers = Vec::new();
            render::add_headers(&mut headers, &answer.headers);
            headers.push(("x-request-id".into(), call.request_id.clone()));
            if upstream.is_none() && call.llm.stream {
                headers.push(("content-type".into(), "text/event-stream".into()));
                return Ok(Exit::Stream {
                    status: 200,
                    headers,
                    body: StreamBody::Ready(render::completion_stream(&completion)),
                    limit: policy,
                    answered: true,
                });
            }
            headers.push(("content-type".into(), "application/json".into()));
            let mut message = MessageView {
                status: 200,
                headers,
                body: Bytes::from(answer.completion),
                ..Default::default()
            };
            let (end, settlement) = match upstream {
                Some(s) => (End::new(200, Outcome::Success), s),
                None => {
                    if let Some(stop) = chain::response_phase(chain, &mut message, policy).await? {
                        return Box::pin(stopped(call, chain, stop, None)).await;
                    }
                    let (saved, model) = weir_llm::usage::from_json(&message.body);
                    let settlement = Settlement {
                        saved,
                        model,
                        ..Settlement::default()
                    };
                    (End::new(200, Outcome::Answered), settlement)
                }
            };
            Ok(Exit::Full {
                response: finish_message(call, message),
                end,
                settlement,
            })
        }
    }
}

/// The final response from a message after the response phase: the request id, and the
/// answer in the client's format.
fn finish_message<P: Platform>(call: &Call<P>, message: MessageView) -> Response {
    let mut headers = message.headers;
    headers.retain(|(n, _)| n != "x-request-id");
    headers.push(("x-request-id".into(), call.request_id.clone()));
    let body = if (200..300).contains(&message.status) {
        render::completion_body(call.wire, message.body)
    } else {
        message.body
    };
    Response {
        status: message.status,
        headers,
        body,
    }
}

/// The upstream answered: a stream starts, or the whole answer is read, translated and put
/// through the response phase.
async fn answered_upstream<P: Platform, C: Chain>(
    call: &mut Call<P>,
    chain: &mut C,
    resp: UpstreamResponse<upstream::Body<P::Body>>,
) -> Result<Exit<P::Body>, GatewayError> {
    let Some(upstream) = call.upstream.clone() else {
        return Err(GatewayError::Unavailable {
            code: "internal_error",
            message: "No upstream answered.".into(),
        });
    };
    let kind = upstream.kind;
    let is_stream = upstream::is_stream(&upstream, &resp);
    let translated = !kind.is_openai_compatible() || call.wire != Wire::Openai;
    let mut headers: Headers = resp
        .headers
        .into_iter()
        .filter(|(n, _)| keep_response_header(n))
        .filter(|(n, _)| !(translated && n == "content-type"))
        .collect();
    headers.push(("x-request-id".into(), call.request_id.clone()));
    let body = match resp.body {
        upstream::Body::Unread { body, .. } if (200..300).contains(&resp.status) && is_stream => {
            if translated {
                headers.push(("content-type".into(), "text/event-stream".into()));
            }
            return Ok(Exit::Stream {
                status: resp.status,
                headers,
                body: StreamBody::Upstream(body),
                limit: chain.len(),
                answered: false,
            });
        }
        upstream::Body::Unread { body, timeout_ms } => {
            let max = call.route.limits.max_response_bytes;
            match call.platform.read_body(body, max, timeout_ms).await {
                Ok(bytes) => bytes,
                Err(failure) => {
                    let err = upstream::broke_off(&upstream, failure);
                    // The attempt that answered did not finish: its record says so.
                    if let Some(a) = call.attempts.last_mut() {
                        a.error = Some(err.code());
                    }
                    return Err(err);
                }
            }
        }
        upstream::Body::Read(bytes) => bytes,
    };
    let mut status = resp.status;
    if status == 401 || status == 403 {
        // The upstream refused *our* credential: the client cannot fix that.
        return Err(GatewayError::Upstream {
            status: 502,
            code: "upstream_auth_failed",
            message: format!(
                "The upstream provider `{}` rejected the gateway's credentials.",
                upstream.name
            ),
            detail: Some(format!("the provider answered {status}")),
        });
    }
    let ok = (200..300).contains(&status);
    let mut body = body;
    if translated {
        headers.push(("content-type".into(), "application/json".into()));
    }
    if ok && !kind.is_openai_compatible() {
        let created = call.platform.now_ms() / 1000;
        let model = call.llm.model.clone().unwrap_or_default();
        body = weir_llm::translate::response(kind, body, created, &model).map_err(|e| {
            GatewayError::Upstream {
                status: 502,
                code: "upstream_invalid_response",
                message: format!(
                    "The upstream provider `{}` sent an answer weir could not read.",
                    upstream.name
                ),
                detail: Some(e.to_string()),
            }
        })?;
    } else if !ok && (translated || kind != weir_llm::ProviderKind::Openai) {
        // The provider's message, in the client's format, with the provider's status.
        let e = weir_llm::translate::error(kind, status, &headers, &body);
        status = weir_llm::translate::client_status(status);
        let code = e.kind.as_deref().unwrap_or("upstream_error");
        body = Bytes::from(
            call.wire
                .error_body(status, code, &e.message, None, &call.request_id),
        );
    }
    let (usage, model) = if ok {
        weir_llm::usage::from_json(&body)
    } else {
        (None, None)
    };
    let settlement = Settlement {
        usage,
        model,
        ttft_ms: None,
        saved: None,
    };
    if !ok {
        return Ok(Exit::Full {
            response: Response {
                status,
                headers,
                body,
            },
            end: End::failed(status, Outcome::UpstreamError, "upstream_http_error"),
            settlement,
        });
    }
    let mut message = MessageView {
        status,
        headers,
        body,
        ..Default::default()
    };
    if let Some(stop) = chain::response_phase(chain, &mut message, chain.len()).await? {
        return stopped(call, chain, stop, Some(settlement)).await;
    }
    Ok(Exit::Full {
        response: finish_message(call, message),
        end: End::new(status, Outcome::Success),
        settlement,
    })
}
