//! The loop itself: [`serve`] takes a request on a matched route through admission (body
//! checks, on-request), the upstream call, on-response or the start of a stream, and the
//! error exits; every exit settles on-complete and the usage record through [`Call`].

use bytes::Bytes;

use crate::*;

/// Serves one request on a matched route and endpoint: everything after the body was read.
///
/// `make_chain` creates the request's policy chain from its initial state. `started_ms` is
/// [`Host::monotonic_ms`] when the request arrived.
pub async fn serve<H: Host, C: Chain>(
    host: H,
    route: &RouteInfo,
    endpoint: Endpoint,
    request: ClientRequest,
    request_id: String,
    started_ms: u64,
    make_chain: impl FnOnce(RequestState) -> C,
) -> Answer<H, C> {
    if route
        .exposed
        .as_ref()
        .is_some_and(|e| !e.contains(&endpoint))
    {
        let err = GatewayError::client(
            404,
            "endpoint_not_exposed",
            format!(
                "Proxy `{}` does not expose `{}`.",
                route.name,
                endpoint.upstream_path()
            ),
        );
        return Answer::Full(Response::error(&err, &request_id));
    }
    if request.body.len() > route.limits.max_body_bytes {
        return Answer::Full(Response::error(
            &too_large(route.limits.max_body_bytes),
            &request_id,
        ));
    }
    let llm = if endpoint == Endpoint::Models {
        None
    } else {
        match weir_llm::inspect::chat_request(&request.body) {
            Ok(info) => Some(info),
            Err(e) => {
                let param = match &e {
                    weir_llm::RequestError::InvalidField { field, .. } => Some(*field),
                    weir_llm::RequestError::InvalidJson(_) => None,
                };
                let err = GatewayError::Client {
                    status: 400,
                    code: "invalid_request_body",
                    message: e.to_string(),
                    param,
                };
                return Answer::Full(Response::error(&err, &request_id));
            }
        }
    };
    if endpoint == Endpoint::Embeddings && llm.as_ref().is_some_and(|l| l.stream) {
        let err = GatewayError::client(400, "invalid_request_body", "Embeddings cannot stream.");
        return Answer::Full(Response::error(&err, &request_id));
    }

    let mut chain = make_chain(RequestState {
        request_id: request_id.clone(),
        route: route.name.clone(),
        route_kind: RouteKind::Llm,
        endpoint: endpoint.upstream_path().to_owned(),
        consumer: None,
        attributes: Default::default(),
        llm: llm.clone(),
        received_at_ms: host.now_ms(),
    });
    let call = Call {
        host,
        route: route.name.clone(),
        provider: route.provider.clone(),
        endpoint,
        request_id,
        started_ms,
        llm: llm.unwrap_or_default(),
        upstream_ms: None,
    };
    match admitted(call, &mut chain, route.limits, request).await {
        Ok(Admitted::Full(resp)) => Answer::Full(resp),
        Ok(Admitted::Stream {
            call,
            status,
            headers,
            body,
        }) => Answer::Stream(StreamStart {
            status,
            headers,
            body,
            session: StreamSession::new(call, chain),
        }),
        Err((err, request_id)) => Answer::Full(Response::error(&err, &request_id)),
    }
}

#[allow(
    missing_debug_implementations,
    reason = "holds the host's body, which need not be Debug"
)]
enum Admitted<H: Host> {
    Full(Response),
    Stream {
        call: Call<H>,
        status: u16,
        headers: Headers,
        body: H::Body,
    },
}

/// The part of [`serve`] after the chain exists: every exit records usage exactly once.
async fn admitted<H: Host, C: Chain>(
    mut call: Call<H>,
    chain: &mut C,
    limits: Limits,
    request: ClientRequest,
) -> Result<Admitted<H>, (GatewayError, String)> {
    let fail = |err: GatewayError, call: &Call<H>| (err, call.request_id.clone());
    let message = MessageView {
        method: request.method,
        path: request.path,
        status: 0,
        headers: request.headers,
        body: request.body,
    };
    let message = match chain.on_request(message).await {
        Ok(Decision::Continue(m)) => m,
        Ok(Decision::Deny { policy, denial }) => {
            call.host.denied(&call.route, &policy, &denial.code);
            let resp = denial_response(&denial, &call.request_id);
            call.finish(
                chain,
                End::new(denial.status, Outcome::Denied),
                None,
                None,
                None,
            )
            .await;
            return Ok(Admitted::Full(resp));
        }
        Ok(Decision::Respond { reply, .. }) => {
            let resp = reply_response(reply, &call.request_id);
            call.finish(
                chain,
                End::new(resp.status, Outcome::Denied),
                None,
                None,
                None,
            )
            .await;
            return Ok(Admitted::Full(resp));
        }
        Err(e) => {
            call.host
                .warn(&call.request_id, &format!("policy failed: {e}"));
            let err = call.fail(chain, GatewayError::Policy(e)).await;
            return Err(fail(err, &call));
        }
    };

    let provider = call.provider.clone();
    if let Some(var) = &provider.missing_key_env {
        let err = GatewayError::Unavailable {
            code: "provider_not_configured",
            message: format!(
                "Provider `{}` has no API key: set the variable {var} and restart.",
                provider.name
            ),
        };
        let err = call.fail(chain, err).await;
        return Err(fail(err, &call));
    }

    let body = if call.llm.stream {
        match weir_llm::inspect::with_stream_usage(&message.body) {
            Ok(Some(b)) => Bytes::from(b),
            Ok(None) => message.body.clone(),
            Err(e) => {
                let err = GatewayError::client(400, "invalid_request_body", e.to_string());
                let err = call.fail(chain, err).await;
                return Err(fail(err, &call));
            }
        }
    } else {
        message.body.clone()
    };
    let upstream = upstream_request(&call, &message, body);
    let sent_ms = call.host.monotonic_ms();
    let sent = call.host.send(upstream).await;
    call.upstream_ms = Some(call.host.monotonic_ms().saturating_sub(sent_ms));
    let resp = match sent {
        Ok(r) => r,
        Err(UpstreamFailure::Unreachable(detail)) => {
            call.host.warn(
                &call.request_id,
                &format!("upstream `{}` request failed: {detail}", provider.name),
            );
            let err = GatewayError::Upstream {
                status: 502,
                code: "upstream_unavailable",
                message: format!(
                    "The upstream provider `{}` could not be reached or closed the connection.",
                    provider.name
                ),
            };
            let err = call.fail(chain, err).await;
            return Err(fail(err, &call));
        }
        Err(UpstreamFailure::Timeout) => {
            let err = GatewayError::Upstream {
                status: 504,
                code: "upstream_timeout",
                message: format!(
                    "The upstream provider `{}` did not answer within {} ms.",
                    provider.name, provider.timeout_ms
                ),
            };
            let err = call.fail(chain, err).await;
            return Err(fail(err, &call));
        }
    };

    let is_sse = resp
        .headers
        .iter()
        .any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream"));
    let mut headers: Headers = resp
        .headers
        .into_iter()
        .filter(|(n, _)| keep_response_header(n))
        .collect();
    headers.push(("x-request-id".into(), call.request_id.clone()));
    if (200..300).contains(&resp.status) && is_sse {
        return Ok(Admitted::Stream {
            call,
            status: resp.status,
            headers,
            body: resp.body,
        });
    }

    let body = match call
        .host
        .read_body(resp.body, limits.max_response_bytes, provider.timeout_ms)
        .await
    {
        Ok(b) => b,
        Err(failure) => {
            let err = match failure {
                UpstreamFailure::Unreachable(detail) => {
                    call.host.warn(
                        &call.request_id,
                        &format!("reading the upstream response failed: {detail}"),
                    );
                    GatewayError::Upstream {
                        status: 502,
                        code: "upstream_response_failed",
                        message: format!(
                            "The upstream provider `{}` broke off its response.",
                            provider.name
                        ),
                    }
                }
                UpstreamFailure::Timeout => GatewayError::Upstream {
                    status: 504,
                    code: "upstream_timeout",
                    message: format!(
                        "The upstream provider `{}` did not finish its response in time.",
                        provider.name
                    ),
                },
            };
            let err = call.fail(chain, err).await;
            return Err(fail(err, &call));
        }
    };
    let status = resp.status;
    if status == 401 || status == 403 {
        // The upstream refused *our* credential: the client cannot fix that.
        call.host.warn(
            &call.request_id,
            &format!(
                "upstream `{}` rejected the provider credential ({status})",
                provider.name
            ),
        );
        let err = GatewayError::Upstream {
            status: 502,
            code: "upstream_auth_failed",
            message: format!(
                "The upstream provider `{}` rejected the gateway's credentials.",
                provider.name
            ),
        };
        let err = call.fail(chain, err).await;
        return Err(fail(err, &call));
    }
    let ok = (200..300).contains(&status);
    let (usage, model) = if ok {
        weir_llm::usage::from_json(&body)
    } else {
        (None, None)
    };
    let outcome = if ok {
        Outcome::Success
    } else {
        Outcome::UpstreamError
    };

    let mut body = body;
    if ok && chain.has_phase(Phase::Response) {
        let view = MessageView {
            method: String::new(),
            path: String::new(),
            status,
            headers: std::mem::take(&mut headers),
            body,
        };
        match chain.on_response(view).await {
            Ok(Decision::Continue(m)) => {
                headers = m.headers;
                body = m.body;
            }
            Ok(Decision::Deny { policy, denial }) => {
                call.host.denied(&call.route, &policy, &denial.code);
                call.finish(
                    chain,
                    End::new(denial.status, Outcome::Denied),
                    usage,
                    model,
                    None,
                )
                .await;
                return Ok(Admitted::Full(denial_response(&denial, &call.request_id)));
            }
            Ok(Decision::Respond { reply, .. }) => {
                let resp = reply_response(reply, &call.request_id);
                call.finish(
                    chain,
                    End::new(resp.status, Outcome::Success),
                    usage,
                    model,
                    None,
                )
                .await;
                return Ok(Admitted::Full(resp));
            }
            Err(e) => {
                call.finish(
                    chain,
                    End::failed(500, Outcome::GatewayError, "policy_failed"),
                    usage,
                    model,
                    None,
                )
                .await;
                return Err(fail(GatewayError::Policy(e), &call));
            }
        }
        headers.retain(|(n, _)| n != "x-request-id");
        headers.push(("x-request-id".into(), call.request_id.clone()));
    }
    call.finish(
        chain,
        End {
            status,
            outcome,
            error: (!ok).then_some("upstream_http_error"),
        },
        usage,
        model,
        None,
    )
    .await;
    Ok(Admitted::Full(Response {
        status,
        headers,
        body,
    }))
}

fn upstream_request<H>(call: &Call<H>, message: &MessageView, body: Bytes) -> UpstreamRequest {
    let mut headers: Headers = message
        .headers
        .iter()
        .filter(|(n, _)| {
            let n = n.as_str();
            !(HOP_BY_HOP.contains(&n) || CLIENT_SECRETS.contains(&n) || n == "x-request-id")
        })
        .cloned()
        .collect();
    if let Some(key) = &call.provider.api_key {
        headers.push(("authorization".into(), format!("Bearer {}", key.expose())));
    }
    if call.endpoint != Endpoint::Models {
        headers.retain(|(n, _)| n != "content-type");
        headers.push(("content-type".into(), "application/json".into()));
    }
    headers.push(("x-request-id".into(), call.request_id.clone()));
    UpstreamRequest {
        method: call.endpoint.method(),
        url: format!(
            "{}/{}",
            call.provider.base_url,
            call.endpoint.upstream_path()
        ),
        headers,
        body,
        timeout_ms: call.provider.timeout_ms,
    }
}

/// The OpenAI-format response for a policy's denial, with its extra headers.
pub fn denial_response(denial: &Denial, request_id: &str) -> Response {
    let status = if (400..600).contains(&denial.status) {
        denial.status
    } else {
        403
    };
    let body =
        weir_llm::error::openai_error(status, &denial.code, &denial.message, None, request_id);
    let mut resp = Response::json(status, body, request_id);
    for (n, v) in &denial.headers {
        let n = n.to_ascii_lowercase();
        resp.headers.retain(|(h, _)| *h != n);
        resp.headers.push((n, v.clone()));
    }
    resp
}

/// A policy's own reply, with the request id.
pub fn reply_response(reply: Reply, request_id: &str) -> Response {
    let status = if (100..600).contains(&reply.status) {
        reply.status
    } else {
        200
    };
    let mut headers: Headers = reply
        .headers
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .filter(|(n, _)| n != "x-request-id")
        .collect();
    headers.push(("x-request-id".into(), request_id.to_owned()));
    Response {
        status,
        headers,
        body: Bytes::from(reply.body),
    }
}
