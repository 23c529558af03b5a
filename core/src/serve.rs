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
    let wire = endpoint.wire();
    let refuse = |err: GatewayError| Answer::Full(Response::error_in(wire, &err, &request_id));
    if route
        .exposed
        .as_ref()
        .is_some_and(|e| !e.contains(&endpoint))
    {
        return refuse(GatewayError::client(
            404,
            "endpoint_not_exposed",
            format!(
                "Proxy `{}` does not expose `{}`.",
                route.name,
                endpoint.name()
            ),
        ));
    }
    if !route.provider.dialect.supports(endpoint.upstream_path()) {
        return refuse(GatewayError::client(
            404,
            "endpoint_not_supported",
            format!(
                "Provider `{}` ({}) does not serve `{}`.",
                route.provider.name,
                route.provider.dialect.name(),
                endpoint.upstream_path()
            ),
        ));
    }
    if request.body.len() > route.limits.max_body_bytes {
        return refuse(too_large(route.limits.max_body_bytes));
    }
    let mut request = request;
    if endpoint == Endpoint::Messages {
        // Anthropic clients: the rest of the gateway (policies included) sees OpenAI format.
        let translated = serde_json::from_slice::<serde_json::Value>(&request.body)
            .map_err(|e| format!("We could not parse the JSON body of your request: {e}"))
            .and_then(|v| {
                weir_llm::translate::anthropic::inbound::request(&v).map_err(|e| e.to_string())
            });
        match translated {
            Ok(v) => request.body = Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
            Err(message) => {
                return refuse(GatewayError::Client {
                    status: 400,
                    code: "invalid_request_body",
                    message,
                    param: None,
                });
            }
        }
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
                return refuse(GatewayError::Client {
                    status: 400,
                    code: "invalid_request_body",
                    message: e.to_string(),
                    param,
                });
            }
        }
    };
    if endpoint == Endpoint::Embeddings && llm.as_ref().is_some_and(|l| l.stream) {
        return refuse(GatewayError::client(
            400,
            "invalid_request_body",
            "Embeddings cannot stream.",
        ));
    }

    let mut chain = make_chain(RequestState {
        request_id: request_id.clone(),
        route: route.name.clone(),
        route_kind: RouteKind::Llm,
        endpoint: endpoint.name().to_owned(),
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
        Err((err, request_id)) => Answer::Full(Response::error_in(wire, &err, &request_id)),
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
            let resp = denial_response_in(call.endpoint.wire(), &denial, &call.request_id);
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
    let upstream = match upstream_request(&call, &message, body) {
        Ok(u) => u,
        Err(e) => {
            let err = GatewayError::Client {
                status: 400,
                code: "invalid_request_body",
                message: format!(
                    "{e} (the request cannot be sent to a {} provider)",
                    provider.dialect.name()
                ),
                param: None,
            };
            let err = call.fail(chain, err).await;
            return Err(fail(err, &call));
        }
    };
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

    let dialect = provider.dialect;
    let is_stream = resp.headers.iter().any(|(n, v)| {
        n == "content-type"
            && (v.starts_with("text/event-stream")
                || (dialect == weir_llm::Dialect::Bedrock
                    && v.starts_with("application/vnd.amazon.eventstream")))
    });
    let translated = !dialect.is_openai_compatible() || call.endpoint.wire() != Wire::Openai;
    let mut headers: Headers = resp
        .headers
        .into_iter()
        .filter(|(n, _)| keep_response_header(n))
        .filter(|(n, _)| !(translated && n == "content-type"))
        .collect();
    headers.push(("x-request-id".into(), call.request_id.clone()));
    if (200..300).contains(&resp.status) && is_stream {
        if translated {
            headers.push(("content-type".into(), "text/event-stream".into()));
        }
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
    let mut status = status;
    let mut body = body;
    if translated {
        headers.push(("content-type".into(), "application/json".into()));
    }
    if ok && !dialect.is_openai_compatible() {
        let created = call.host.now_ms() / 1000;
        let model = call.llm.model.clone().unwrap_or_default();
        match weir_llm::translate::response(dialect, body, created, &model) {
            Ok(b) => body = b,
            Err(e) => {
                call.host.warn(
                    &call.request_id,
                    &format!("upstream `{}` answer could not be read: {e}", provider.name),
                );
                let err = GatewayError::Upstream {
                    status: 502,
                    code: "upstream_invalid_response",
                    message: format!(
                        "The upstream provider `{}` sent an answer weir could not read.",
                        provider.name
                    ),
                };
                let err = call.fail(chain, err).await;
                return Err(fail(err, &call));
            }
        }
    } else if !ok && (translated || dialect != weir_llm::Dialect::Openai) {
        // The provider's message, in the client's format, with the provider's status.
        let e = weir_llm::translate::error(dialect, status, &headers, &body);
        status = weir_llm::translate::client_status(status);
        let code = e.kind.as_deref().unwrap_or("upstream_error");
        body = Bytes::from(call.endpoint.wire().error_body(
            status,
            code,
            &e.message,
            None,
            &call.request_id,
        ));
    }
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
                return Ok(Admitted::Full(denial_response_in(
                    call.endpoint.wire(),
                    &denial,
                    &call.request_id,
                )));
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
    if ok && call.endpoint.wire() == Wire::Anthropic {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| weir_llm::translate::anthropic::inbound::response(&v).ok());
        if let Some(m) = message {
            body = Bytes::from(serde_json::to_vec(&m).unwrap_or_default());
        }
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

fn upstream_request<H: Host>(
    call: &Call<H>,
    message: &MessageView,
    body: Bytes,
) -> Result<UpstreamRequest, weir_llm::translate::TranslateError> {
    let provider = &call.provider;
    let dialect = provider.dialect;
    let mut headers: Headers = message
        .headers
        .iter()
        .filter(|(n, _)| {
            let n = n.as_str();
            !(HOP_BY_HOP.contains(&n)
                || CLIENT_SECRETS.contains(&n)
                || n == "x-request-id"
                || n == "content-type"
                || n == "anthropic-version"
                || n.starts_with("x-amz-")
                || n == "x-goog-api-key")
        })
        .cloned()
        .collect();
    let endpoint = call.endpoint.upstream();
    let (url, body) = if dialect == weir_llm::Dialect::Openai {
        // The common case, byte for byte: no translation.
        if endpoint != Endpoint::Models {
            headers.push(("content-type".into(), "application/json".into()));
        }
        (
            format!("{}/{}", provider.base_url, endpoint.upstream_path()),
            body,
        )
    } else {
        let model = call.llm.model.as_deref().unwrap_or_default();
        let deployment = provider
            .deployments
            .iter()
            .find(|(m, _)| m == model)
            .map(|(_, d)| d.as_str());
        let target = weir_llm::translate::Target {
            api_version: provider.api_version.as_deref(),
            deployment,
        };
        let native = weir_llm::translate::request(
            dialect,
            endpoint.upstream_path(),
            target,
            &body,
            call.llm.stream,
        )?;
        headers.extend(native.headers);
        (
            format!("{}{}", provider.base_url, native.path),
            Bytes::from(native.body),
        )
    };
    if let Some(key) = &provider.api_key {
        use weir_llm::Dialect as D;
        match dialect {
            D::Openai | D::Mistral => {
                headers.push(("authorization".into(), format!("Bearer {}", key.expose())));
            }
            D::AzureOpenai | D::AzureAiFoundry => {
                headers.push(("api-key".into(), key.expose().to_owned()));
            }
            D::Anthropic => headers.push(("x-api-key".into(), key.expose().to_owned())),
            D::Gemini => headers.push(("x-goog-api-key".into(), key.expose().to_owned())),
            D::Bedrock => {
                if let Some(aws) = &provider.aws {
                    let credentials = weir_llm::sigv4::Credentials {
                        access_key_id: aws.access_key_id.clone(),
                        secret_access_key: key.expose().to_owned(),
                        session_token: aws.session_token.as_ref().map(|t| t.expose().to_owned()),
                    };
                    let (host, path) = split_url(&url);
                    let signed = weir_llm::sigv4::sign(
                        &credentials,
                        &aws.region,
                        "bedrock",
                        "POST",
                        host,
                        path,
                        &[("content-type".to_owned(), "application/json".to_owned())],
                        &body,
                        call.host.now_ms() / 1000,
                    );
                    headers.extend(signed);
                }
            }
        }
    }
    headers.push(("x-request-id".into(), call.request_id.clone()));
    Ok(UpstreamRequest {
        method: endpoint.method(),
        url,
        headers,
        body,
        timeout_ms: provider.timeout_ms,
    })
}

/// The `Host` header value (authority without a default port) and the path of a URL.
fn split_url(url: &str) -> (&str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if scheme == "http" { ":80" } else { ":443" };
    (
        authority.strip_suffix(default_port).unwrap_or(authority),
        path,
    )
}

/// The OpenAI-format response for a policy's denial, with its extra headers.
pub fn denial_response(denial: &Denial, request_id: &str) -> Response {
    denial_response_in(Wire::Openai, denial, request_id)
}

/// The response for a policy's denial in the client's format, with its extra headers.
pub fn denial_response_in(wire: Wire, denial: &Denial, request_id: &str) -> Response {
    let status = if (400..600).contains(&denial.status) {
        denial.status
    } else {
        403
    };
    let body = wire.error_body(status, &denial.code, &denial.message, None, request_id);
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
