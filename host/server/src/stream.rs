//! Relaying a streaming (SSE) answer event by event.
//!
//! A spawned task reads the upstream body, lets the portable [`StreamRelay`] (weir-llm) frame
//! events and keep usage, runs on-stream-chunk if a policy wants it, and forwards each event through a small bounded channel (backpressure, no buffering of the
//! answer). If the client goes away the task keeps reading the upstream until its final usage
//! chunk, so on-complete and the usage record always see the real usage. A stream that ends
//! without `[DONE]` or breaks off ends with an explicit error event, never a clean-looking end.

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use weir_llm::relay::{Ending, RelayEvent, StreamRelay};
use weir_llm::sse::data_event;
use weir_runtime::{ChainRun, ChunkDecision, Outcome, Phase};

use crate::body::{self, Body};
use crate::proxy::{Call, copy_response_headers};

pub(crate) fn relay(call: Call, run: ChainRun, upstream: Response<Incoming>) -> Response<Body> {
    let (parts, incoming) = upstream.into_parts();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let mut resp = Response::new(body::channel(rx));
    *resp.status_mut() = parts.status;
    copy_response_headers(&parts.headers, resp.headers_mut());
    if let Ok(v) = HeaderValue::from_str(&call.request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    tokio::spawn(pump(call, run, incoming, tx));
    resp
}

fn error_event(code: &str, message: &str, request_id: &str) -> Bytes {
    let body = weir_llm::error::openai_error(502, code, message, None, request_id);
    data_event(&String::from_utf8_lossy(&body))
}

struct Sink {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    client_gone: bool,
}

impl Sink {
    async fn send(&mut self, bytes: Bytes) {
        if !self.client_gone && self.tx.send(bytes).await.is_err() {
            self.client_gone = true;
        }
    }
}

async fn pump(
    call: Call,
    mut run: ChainRun,
    mut body: Incoming,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let mut sink = Sink {
        tx,
        client_gone: false,
    };
    let mut relay = StreamRelay::new(call.llm.client_wants_stream_usage);
    let mut index: u32 = 0;
    let mut aborted = false;
    let mut failure: Option<(&'static str, String)> = None;
    let mut ttft_ms = None;
    let wants_chunks = run.has_phase(Phase::StreamChunk);
    let timeout = call.provider.timeout;

    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::warn!(request_id = %call.request_id, error = %e, "upstream stream broke off");
                failure = Some((
                    "upstream_stream_cut",
                    "The upstream stream broke off before the answer was complete.".into(),
                ));
                break;
            }
            Err(_) => {
                failure = Some((
                    "upstream_timeout",
                    format!(
                        "The upstream stream stalled for {} ms.",
                        timeout.as_millis()
                    ),
                ));
                break;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for event in relay.push(&data) {
            if ttft_ms.is_none() {
                ttft_ms = Some(call.started.elapsed().as_millis() as u64);
            }
            if aborted {
                // Keep reading for the usage, but send nothing more.
                continue;
            }
            let (data, raw) = match event {
                RelayEvent::Done(raw) => {
                    sink.send(raw).await;
                    continue;
                }
                RelayEvent::Chunk { data, raw } => (data, raw),
            };
            if !wants_chunks {
                sink.send(raw).await;
                continue;
            }
            match run.on_stream_chunk(index, data.clone()).await {
                Ok(ChunkDecision::Send(new)) if new == data => sink.send(raw).await,
                Ok(ChunkDecision::Send(new)) => sink.send(data_event(&new)).await,
                Ok(ChunkDecision::Drop) => {}
                Ok(ChunkDecision::Abort { denial, .. }) => {
                    let body = weir_llm::error::openai_error(
                        denial.status,
                        &denial.code,
                        &denial.message,
                        None,
                        &call.request_id,
                    );
                    sink.send(data_event(&String::from_utf8_lossy(&body))).await;
                    aborted = true;
                }
                Err(e) => {
                    tracing::warn!(request_id = %call.request_id, error = %e, "policy failed on a stream chunk");
                    let body = weir_llm::error::openai_error(
                        500,
                        e.code(),
                        &e.to_string(),
                        None,
                        &call.request_id,
                    );
                    sink.send(data_event(&String::from_utf8_lossy(&body))).await;
                    aborted = true;
                }
            }
            index = index.saturating_add(1);
        }
    }
    let usage = relay.usage();
    let model = relay.model().map(str::to_owned);

    if failure.is_none() && relay.ending() == Ending::Incomplete {
        failure = Some((
            "upstream_stream_incomplete",
            "The upstream stream ended without completing the answer.".into(),
        ));
    }
    if let Some((code, message)) = &failure {
        sink.send(error_event(code, message, &call.request_id))
            .await;
    }
    let outcome = if failure.is_some() {
        Outcome::UpstreamError
    } else if aborted {
        Outcome::Denied
    } else if sink.client_gone {
        Outcome::ClientCancelled
    } else {
        Outcome::Success
    };
    let status = if failure.is_some() { 502 } else { 200 };
    // Close the client's stream before settling, so the client does not wait on policies.
    drop(sink);
    call.finish(&mut run, status, outcome, usage, model, ttft_ms)
        .await;
}
