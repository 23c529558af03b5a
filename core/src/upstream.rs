//! The upstream call of an LLM request: the targets (the route's provider, or what a policy
//! chose), one attempt after the other until one answers, and each attempt's request in the
//! provider's own format with the gateway's credential.
//!
//! Attempts belong to the loop, choices to policies: a policy orders the targets, the loop
//! retries a target (with backoff, see [`crate::Retry`]) or moves to the next one only when an
//! attempt failed before anything was billed or sent to the client (connection failure,
//! timeout before the response headers, or a status that means "not now": by default 429,
//! 500, 502, 503, 504, 529), and after an accepted answer broke off only where the operator
//! allowed it. Every attempt is in the usage record and in on-complete.

use std::sync::Arc;

use bytes::Bytes;

use crate::call::Call;
use crate::platform::{CLIENT_SECRETS, HOP_BY_HOP, Platform, UpstreamRequest, UpstreamResponse};
use crate::retry::retry_after;
use crate::route::{Endpoint, Upstream};
use crate::types::{Attempt, Headers, MessageView, PolicyFault, Target};
use crate::{GatewayError, UpstreamFailure};

/// The targets chosen by policy `chooser` (its name), or the route's provider.
pub(crate) struct Targets {
    pub chooser: Option<String>,
    pub list: Vec<Target>,
}

/// An answer's body: still to be read, or read already (when a broken-off answer would have
/// been retried, see [`crate::Retry::after_accepted`]).
#[derive(Debug)]
pub(crate) enum Body<B> {
    /// To be read within `timeout_ms` (the attempt's timeout, cut to the time budget).
    Unread {
        body: B,
        timeout_ms: u64,
    },
    Read(Bytes),
}

/// A failed answer kept as the client's answer should the budget end first.
struct Failed<B> {
    resp: UpstreamResponse<B>,
    upstream: Arc<Upstream>,
    model: Option<String>,
    timeout_ms: u64,
}

/// What to do after a failed attempt.
enum Next {
    /// The same target again, after this wait.
    Retry(u64),
    /// The next target (or, after the last, give up).
    Move,
}

/// Tries the targets in order, each up to `1 + retry.attempts` times; returns the first answer
/// that is not a failed attempt (the last answer when every attempt failed with a status).
pub(crate) async fn attempt<P: Platform>(
    call: &mut Call<P>,
    endpoint: Endpoint,
    message: &MessageView,
    targets: Targets,
) -> Result<UpstreamResponse<Body<P::Body>>, GatewayError> {
    let retry = call.route.retry.clone();
    let started = call.platform.monotonic_ms();
    let left = |now: u64| {
        (retry.budget_ms > 0).then(|| retry.budget_ms.saturating_sub(now.saturating_sub(started)))
    };
    let mut last: Option<GatewayError> = None;
    // The most recent failed answer (a status in `on-status`), returned as it is when the
    // budget ends before another attempt: the client gets the provider's own word.
    let mut last_answer: Option<Failed<P::Body>> = None;
    let n = targets.list.len();
    'targets: for (k, target) in targets.list.iter().enumerate() {
        let more = k + 1 < n;
        let Some(upstream) = call.route.upstreams.get(&target.provider).cloned() else {
            return Err(GatewayError::Policy(PolicyFault {
                code: "policy_invalid_target",
                message: format!(
                    "policy `{}` chose the provider `{}`, which is not in the gateway configuration",
                    targets.chooser.as_deref().unwrap_or("?"),
                    target.provider
                ),
            }));
        };
        call.upstream = Some(upstream.clone());
        let model = target.model.clone().or_else(|| call.llm.model.clone());
        let mut tries: u32 = 0;
        loop {
            let budget = left(call.platform.monotonic_ms());
            if budget == Some(0) && last.is_some() {
                break 'targets;
            }
            let mut record = Attempt {
                provider: upstream.name.clone(),
                model: model.clone(),
                status: None,
                error: None,
                latency_ms: 0,
                billed: false,
            };
            let prepared = prepare(call, &upstream, endpoint, message, target, model.as_deref());
            let mut request = match prepared {
                Ok(r) => r,
                Err(err) => {
                    record.error = Some(err.code());
                    call.attempts.push(record);
                    if more && err.retry_safe() {
                        last = Some(err);
                        continue 'targets;
                    }
                    return Err(err);
                }
            };
            if let Some(b) = budget {
                request.timeout_ms = request.timeout_ms.min(b.max(1));
            }
            let timeout_ms = request.timeout_ms;
            call.llm.model = model.clone();
            last_answer = None;
            let sent_ms = call.platform.monotonic_ms();
            let sent = call.platform.send(request).await;
            let latency = call.platform.monotonic_ms().saturating_sub(sent_ms);
            record.latency_ms = latency;
            call.upstream_ms = Some(latency);
            let next = match sent {
                Ok(resp) if !retry.on_status.contains(&resp.status) => {
                    let ok = (200..300).contains(&resp.status);
                    record.status = Some(resp.status);
                    record.billed = ok;
                    if !ok {
                        record.error = Some("upstream_http_error");
                    }
                    let max = call.route.limits.max_response_bytes;
                    // An answer announced larger than the limit fails the same way every time.
                    let too_large = resp.headers.iter().any(|(n, v)| {
                        n == "content-length" && v.parse::<usize>().is_ok_and(|l| l > max)
                    });
                    if !(ok
                        && retry.after_accepted(endpoint)
                        && !call.llm.stream
                        && !is_stream(&upstream, &resp)
                        && !too_large)
                    {
                        call.attempts.push(record);
                        return Ok(UpstreamResponse {
                            status: resp.status,
                            headers: resp.headers,
                            body: Body::Unread {
                                body: resp.body,
                                timeout_ms,
                            },
                        });
                    }
                    // The operator allows a retry of an answer that breaks off here: read it.
                    match call.platform.read_body(resp.body, max, timeout_ms).await {
                        Ok(bytes) => {
                            call.attempts.push(record);
                            return Ok(UpstreamResponse {
                                status: resp.status,
                                headers: resp.headers,
                                body: Body::Read(bytes),
                            });
                        }
                        Err(failure) => {
                            let again = !matches!(failure, UpstreamFailure::TooLarge(_));
                            let err = broke_off(&upstream, failure);
                            record.error = Some(err.code());
                            call.attempts.push(record);
                            call.log_error(&err);
                            if !again {
                                // As large again next time: the client gets the error.
                                return Err(err);
                            }
                            last = Some(err);
                            fit(
                                backoff(&retry, &call.request_id, call.attempts.len(), tries, None),
                                left(call.platform.monotonic_ms()),
                            )
                        }
                    }
                }
                Ok(resp) => {
                    record.status = Some(resp.status);
                    record.error = Some("upstream_http_error");
                    call.attempts.push(record);
                    let hint = retry_after(&resp.headers);
                    let next = fit(
                        backoff(&retry, &call.request_id, call.attempts.len(), tries, hint),
                        left(call.platform.monotonic_ms()),
                    );
                    if !more && matches!(next, Next::Move) {
                        // The last word: the client gets the provider's own answer.
                        return Ok(UpstreamResponse {
                            status: resp.status,
                            headers: resp.headers,
                            body: Body::Unread {
                                body: resp.body,
                                timeout_ms,
                            },
                        });
                    }
                    last = Some(GatewayError::Upstream {
                        status: 502,
                        code: "upstream_http_error",
                        message: format!(
                            "The upstream provider `{}` answered {}.",
                            upstream.name, resp.status
                        ),
                        detail: None,
                    });
                    last_answer = Some(Failed {
                        resp,
                        upstream: upstream.clone(),
                        model: model.clone(),
                        timeout_ms,
                    });
                    next
                }
                Err(failure) => {
                    let err = failed(&upstream, failure, timeout_ms);
                    record.error = Some(err.code());
                    call.attempts.push(record);
                    call.log_error(&err);
                    last = Some(err);
                    fit(
                        backoff(&retry, &call.request_id, call.attempts.len(), tries, None),
                        left(call.platform.monotonic_ms()),
                    )
                }
            };
            match next {
                Next::Retry(wait) => {
                    tries += 1;
                    call.platform.sleep(wait).await;
                }
                Next::Move => continue 'targets,
            }
        }
    }
    if let Some(Failed {
        resp,
        upstream,
        model,
        timeout_ms,
    }) = last_answer
    {
        // The answer is translated as its provider's.
        call.upstream = Some(upstream);
        call.llm.model = model;
        return Ok(UpstreamResponse {
            status: resp.status,
            headers: resp.headers,
            body: Body::Unread {
                body: resp.body,
                timeout_ms,
            },
        });
    }
    Err(last.unwrap_or_else(|| GatewayError::Unavailable {
        code: "no_target",
        message: "No upstream target to try.".into(),
    }))
}

/// A retry whose wait would end the time budget (`left`, when there is one) moves on instead;
/// decided once, from one reading of the clock.
fn fit(next: Next, left: Option<u64>) -> Next {
    match next {
        Next::Retry(wait) if left.is_some_and(|b| wait >= b) => Next::Move,
        next => next,
    }
}

/// After failed try number `tries` of a target: wait and retry it, or move on. A provider's
/// `retry-after` longer than `max-backoff-ms` moves on at once.
fn backoff(
    retry: &crate::Retry,
    request_id: &str,
    attempts: usize,
    tries: u32,
    hint: Option<u64>,
) -> Next {
    if tries >= retry.attempts {
        return Next::Move;
    }
    match hint {
        Some(ms) if ms > retry.max_backoff_ms => Next::Move,
        Some(ms) => Next::Retry(ms),
        None => Next::Retry(retry.backoff(tries, crate::retry::seed(request_id, attempts))),
    }
}

/// Whether an answer is a stream (its bytes go to the client as they come).
pub(crate) fn is_stream<B>(upstream: &Upstream, resp: &UpstreamResponse<B>) -> bool {
    resp.headers.iter().any(|(n, v)| {
        n == "content-type"
            && (v.starts_with("text/event-stream")
                || (upstream.kind == weir_llm::ProviderKind::AwsBedrock
                    && v.starts_with("application/vnd.amazon.eventstream")))
    })
}

/// The error for an answer whose body could not be read to its end.
pub(crate) fn broke_off(upstream: &Upstream, failure: UpstreamFailure) -> GatewayError {
    match failure {
        UpstreamFailure::Unreachable(detail) => GatewayError::Upstream {
            status: 502,
            code: "upstream_response_failed",
            message: format!(
                "The upstream provider `{}` broke off its response.",
                upstream.name
            ),
            detail: Some(detail),
        },
        UpstreamFailure::Timeout => GatewayError::Upstream {
            status: 504,
            code: "upstream_timeout",
            message: format!(
                "The upstream provider `{}` did not finish its response in time.",
                upstream.name
            ),
            detail: None,
        },
        UpstreamFailure::TooLarge(max) => too_large_answer(upstream, max),
    }
}

fn too_large_answer(upstream: &Upstream, max: usize) -> GatewayError {
    GatewayError::Upstream {
        status: 502,
        code: "upstream_response_too_large",
        message: format!(
            "The upstream provider `{}` answered more than {max} bytes (limits.max-response-bytes).",
            upstream.name
        ),
        detail: None,
    }
}

fn failed(upstream: &Upstream, failure: UpstreamFailure, timeout_ms: u64) -> GatewayError {
    match failure {
        UpstreamFailure::Unreachable(detail) => GatewayError::Upstream {
            status: 502,
            code: "upstream_unavailable",
            message: format!(
                "The upstream provider `{}` could not be reached or closed the connection.",
                upstream.name
            ),
            detail: Some(detail),
        },
        UpstreamFailure::Timeout => GatewayError::Upstream {
            status: 504,
            code: "upstream_timeout",
            message: format!(
                "The upstream provider `{}` did not answer within {timeout_ms} ms.",
                upstream.name
            ),
            detail: None,
        },
        UpstreamFailure::TooLarge(max) => too_large_answer(upstream, max),
    }
}

/// The request for one target: its checks, the body for it (model, usage on streams), the
/// translation to its format and its credential.
fn prepare<P: Platform>(
    call: &Call<P>,
    upstream: &Arc<Upstream>,
    endpoint: Endpoint,
    message: &MessageView,
    target: &Target,
    model: Option<&str>,
) -> Result<UpstreamRequest, GatewayError> {
    if !upstream.kind.supports(endpoint.upstream_path()) {
        return Err(GatewayError::client(
            404,
            "endpoint_not_supported",
            format!(
                "Provider `{}` ({}) does not serve `{}`.",
                upstream.name,
                upstream.kind.name(),
                endpoint.upstream_path()
            ),
        ));
    }
    if let Some(var) = &upstream.missing_key_env {
        return Err(GatewayError::Unavailable {
            code: "provider_not_configured",
            message: format!(
                "Provider `{}` has no API key: set the variable {var} and restart.",
                upstream.name
            ),
        });
    }
    let invalid = |e: String| GatewayError::Client {
        status: 400,
        code: "invalid_request_body",
        message: format!(
            "{e} (the request cannot be sent to a {} provider)",
            upstream.kind.name()
        ),
        param: None,
    };
    let mut body = message.body.clone();
    if endpoint != Endpoint::Models {
        if let Some(m) = &target.model {
            let edited =
                weir_llm::view::apply_edits(&body, &[weir_llm::view::LlmEdit::SetModel(m.clone())])
                    .map_err(|e| invalid(e.to_string()))?;
            body = Bytes::from(edited);
        }
        if call.llm.stream
            && let Some(b) =
                weir_llm::inspect::with_stream_usage(&body).map_err(|e| invalid(e.to_string()))?
        {
            body = Bytes::from(b);
        }
    }
    request(call, upstream, endpoint, message, body, model).map_err(|e| invalid(e.to_string()))
}

fn request<P: Platform>(
    call: &Call<P>,
    upstream: &Upstream,
    endpoint: Endpoint,
    message: &MessageView,
    body: Bytes,
    model: Option<&str>,
) -> Result<UpstreamRequest, weir_llm::translate::TranslateError> {
    use weir_llm::ProviderKind as K;
    let kind = upstream.kind;
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
    let endpoint = endpoint.upstream();
    let (url, body) = if kind == K::Openai {
        // The common case, byte for byte: no translation.
        if endpoint != Endpoint::Models {
            headers.push(("content-type".into(), "application/json".into()));
        }
        (
            format!("{}/{}", upstream.base_url, endpoint.upstream_path()),
            body,
        )
    } else {
        let model = model.unwrap_or_default();
        let deployment = upstream
            .deployments
            .iter()
            .find(|(m, _)| m == model)
            .map(|(_, d)| d.as_str());
        let target = weir_llm::translate::Target {
            api_version: upstream.api_version.as_deref(),
            deployment,
        };
        let native = weir_llm::translate::request(
            kind,
            endpoint.upstream_path(),
            target,
            &body,
            call.llm.stream,
        )?;
        headers.extend(native.headers);
        (
            format!("{}{}", upstream.base_url, native.path),
            Bytes::from(native.body),
        )
    };
    if let Some(key) = &upstream.api_key {
        match kind {
            K::Openai | K::Mistral => {
                headers.push(("authorization".into(), format!("Bearer {}", key.expose())));
            }
            K::AzureOpenai | K::AzureAiFoundry => {
                headers.push(("api-key".into(), key.expose().to_owned()));
            }
            K::Anthropic => headers.push(("x-api-key".into(), key.expose().to_owned())),
            K::Gemini => headers.push(("x-goog-api-key".into(), key.expose().to_owned())),
            K::AwsBedrock => {
                if let Some(aws) = &upstream.aws {
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
                        call.platform.now_ms() / 1000,
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
        timeout_ms: upstream.timeout_ms,
    })
}

/// The `Host` header value (authority without a default port) and the path of a URL.
pub(crate) fn split_url(url: &str) -> (&str, &str) {
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
