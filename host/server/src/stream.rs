//! Relaying a streaming (SSE) answer: the tokio side of weir-core's [`StreamSession`].
//!
//! A spawned task reads the upstream body and pushes each frame into the session, which frames
//! events, keeps usage and runs on-stream-chunk; what it returns goes to the client through a
//! small bounded channel (backpressure, no buffering of the answer). If the client goes away the
//! task keeps reading the upstream until its final usage chunk, so on-complete and the usage
//! record always see the real usage. A stream that ends without `[DONE]` or breaks off ends with
//! an explicit error event, never a clean-looking end.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use weir_core::{StreamBody, StreamEnd, StreamSession, StreamStart};
use weir_runtime::ChainRun;

use crate::body::{self, Body};
use crate::proxy::{ServerPlatform, set_pairs};

pub(crate) fn relay(start: StreamStart<ServerPlatform, ChainRun>) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let mut resp = Response::new(body::channel(rx));
    *resp.status_mut() = StatusCode::from_u16(start.status).unwrap_or(StatusCode::OK);
    set_pairs(&start.headers, resp.headers_mut());
    tokio::spawn(pump(start.session, start.body, tx));
    resp
}

async fn pump(
    mut session: StreamSession<ServerPlatform, ChainRun>,
    body: StreamBody<Incoming>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let mut client_gone = false;
    let mut body = match body {
        StreamBody::Upstream(b) => b,
        StreamBody::Ready(bytes) => {
            // An answer the gateway already has: through the session in one push.
            for out in session.push(&bytes).await {
                if !client_gone && tx.send(out).await.is_err() {
                    client_gone = true;
                }
            }
            finish(session, StreamEnd::Ended, tx, client_gone).await;
            return;
        }
    };
    let timeout = std::time::Duration::from_millis(session.timeout_ms());
    let end = 'relay: loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break StreamEnd::Ended,
            Ok(Some(Err(e))) => {
                let error = crate::proxy::with_causes(&e);
                tracing::warn!(request_id = %session.request_id(), error, "upstream stream broke off");
                break StreamEnd::Cut;
            }
            Err(_) => break StreamEnd::Stalled,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for bytes in session.push(&data).await {
            if !client_gone && tx.send(bytes).await.is_err() {
                client_gone = true;
                // An MCP tool call: the server is told to stop, and nothing more is read.
                if session.client_gone().await {
                    break 'relay StreamEnd::Ended;
                }
            }
        }
    };
    finish(session, end, tx, client_gone).await;
}

/// The last bytes (what policies still hold, an error event if the stream did not complete),
/// then the client's stream is closed, then the session settles.
async fn finish(
    mut session: StreamSession<ServerPlatform, ChainRun>,
    end: StreamEnd,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    mut client_gone: bool,
) {
    for last in session.closing(end).await {
        if !client_gone && tx.send(last).await.is_err() {
            client_gone = true;
        }
    }
    // Close the client's stream before settling, so the client does not wait on policies.
    drop(tx);
    session.settle(end, client_gone).await;
}
