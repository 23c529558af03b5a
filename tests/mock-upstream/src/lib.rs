//! `weir-mock-upstream`: a mock OpenAI-compatible LLM provider for Weir's end-to-end tests
//! (in-process, through [`MockServer`]) and benchmarks (the `weir-mock-upstream` binary).
//!
//! It speaks the real OpenAI wire protocol — `POST /v1/chat/completions` (plain and
//! server-sent-event streams, with `stream_options.include_usage`), `POST /v1/embeddings`,
//! `GET /v1/models` — including its failure modes, which any request can ask for through the
//! `x-mock-fault` header or a `mock-fault:<spec>` model name (see [`fault`] for the specs:
//! `status-429`, `status-500`, `status-503`, `reset`, `cut-after-N`, `latency-MS`).
//!
//! It also speaks the native protocols of Anthropic, Gemini, Bedrock Converse (SigV4 checked,
//! event-stream framing), Azure OpenAI and Azure AI Foundry: see [`native`](crate::native) for
//! paths, credentials and their faults.
//!
//! Everything is deterministic so tests can compute expected results: the reply to a chat
//! request is `"mock0 mock1 …"` ([`reply_text`]) with one word per completion token
//! (`max_completion_tokens`, else `max_tokens`, else 16, capped at 4096), prompt tokens are
//! [`count_prompt_tokens`], and embeddings derive from a hash of their input.
//!
//! [`Stats`] counts what the mock *billed*: tokens are added only for responses whose usage
//! reached hyper (a non-stream 200 body, or a stream whose final usage chunk was written).
//! Extra endpoints: `GET /mock/stats` (the [`Stats`] as JSON), `GET /mock/requests` (the bodies
//! of the last [`RECORDED_REQUESTS`] POST requests, so tests can check what left the gateway),
//! `POST /v1/moderations` (OpenAI's moderation format, see `service.rs`) and `GET /health`. Models
//! named [`ECHO_MODEL_PREFIX`]`*` answer with the last user message, [`ECHO_PIECE_CHARS`]
//! characters per stream event.
//!
//! Performance: a hyper 1 server (`hyper_util::server::conn::auto`, HTTP/1.1 and HTTP/2),
//! one task per connection, atomics for statistics, responses built with a single serialisation.

pub mod fault;

mod body;
mod embeddings;
mod native;
mod native_auth;
mod native_request;
mod protocol;
mod service;
mod tools;

pub use embeddings::{DEFAULT_EMBEDDING_DIMENSIONS, MAX_EMBEDDING_DIMENSIONS, embedding_for_text};
pub use fault::{FAULT_HEADER, FAULT_MODEL_PREFIX, LATENCY_HEADER};
pub use protocol::{
    DEFAULT_COMPLETION_TOKENS, ECHO_MODEL_PREFIX, ECHO_PIECE_CHARS, MAX_COMPLETION_TOKENS,
    MODEL_IDS, count_prompt_tokens, count_text_tokens, echo_pieces, reply_piece, reply_text,
};

use anyhow::Context as _;
use hyper::HeaderMap;
use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a [`MockServer`] behaves. The default checks no key and adds no latency.
#[derive(Debug, Clone, Default)]
pub struct MockOptions {
    /// When set, every `/v1/*` request must carry `Authorization: Bearer <api_key>`, else 401.
    pub api_key: Option<String>,
    /// Sleep before every `/v1/*` response.
    pub latency: Duration,
    /// Sleep between the events of a stream.
    pub chunk_delay: Duration,
    /// When set, Bedrock requests must be SigV4-signed with this (access key id, secret).
    pub aws_credentials: Option<(String, String)>,
}

/// A snapshot of what a [`MockServer`] served and billed.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct Stats {
    /// `/v1/*` requests received (whatever their outcome).
    pub requests: u64,
    /// Prompt tokens of responses whose usage was sent.
    pub prompt_tokens: u64,
    /// Completion tokens of responses whose usage was sent.
    pub completion_tokens: u64,
    /// Streams that ran to `data: [DONE]`.
    pub completed_streams: u64,
    /// Responses aborted by a `cut-after-N` fault.
    pub cut_streams: u64,
}

/// State shared by every connection of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) opts: MockOptions,
    /// `Bearer <api_key>`, when a key is required.
    pub(crate) expected_auth: Option<HeaderValue>,
    pub(crate) requests: AtomicU64,
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) completion_tokens: AtomicU64,
    pub(crate) completed_streams: AtomicU64,
    pub(crate) cut_streams: AtomicU64,
    last_headers: Mutex<HeaderMap>,
    /// Requests seen per fault spec carrying `first-N`.
    pub(crate) first_counts: Mutex<std::collections::HashMap<String, u64>>,
    /// The bodies of the most recent POST requests (`GET /mock/requests`), newest last.
    bodies: Mutex<std::collections::VecDeque<(String, bytes::Bytes)>>,
}

/// How many request bodies `GET /mock/requests` keeps.
pub const RECORDED_REQUESTS: usize = 64;

impl Shared {
    fn new(opts: MockOptions) -> anyhow::Result<Self> {
        let expected_auth = opts
            .api_key
            .as_ref()
            .map(|k| HeaderValue::from_str(&format!("Bearer {k}")))
            .transpose()
            .context("API key is not a valid header value")?;
        Ok(Self {
            opts,
            expected_auth,
            requests: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            completed_streams: AtomicU64::new(0),
            cut_streams: AtomicU64::new(0),
            bodies: Mutex::new(std::collections::VecDeque::new()),
            last_headers: Mutex::new(HeaderMap::new()),
            first_counts: Mutex::default(),
        })
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: self.completion_tokens.load(Ordering::Relaxed),
            completed_streams: self.completed_streams.load(Ordering::Relaxed),
            cut_streams: self.cut_streams.load(Ordering::Relaxed),
        }
    }

    /// Keeps a POST body for `GET /mock/requests`.
    pub(crate) fn record_body(&self, path: &str, body: &bytes::Bytes) {
        let mut bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        if bodies.len() == RECORDED_REQUESTS {
            bodies.pop_front();
        }
        bodies.push_back((path.to_owned(), body.clone()));
    }

    /// The recorded requests as JSON: `{"requests": [{"path": …, "body": <JSON or string>}]}`.
    pub(crate) fn recorded(&self) -> Vec<u8> {
        let bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        let requests: Vec<serde_json::Value> = bodies
            .iter()
            .map(|(path, body)| {
                let body = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
                });
                serde_json::json!({ "path": path, "body": body })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "requests": requests })).unwrap_or_default()
    }

    pub(crate) fn record_headers(&self, headers: &HeaderMap) {
        // Header values are reference-counted bytes: this clone is cheap.
        let copy = headers.clone();
        *self
            .last_headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = copy;
    }
}

/// A running mock provider. Dropping it or calling [`MockServer::shutdown`] stops it.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Binds `addr` (port 0 picks a free port) and starts serving on the current Tokio runtime.
    pub async fn start(addr: SocketAddr, opts: MockOptions) -> anyhow::Result<MockServer> {
        let shared = Arc::new(Shared::new(opts)?);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stopped));
        Ok(MockServer {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, with an unspecified bind address replaced by loopback.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The headers of the most recent `/v1/*` request (names lower-case, values lossily UTF-8).
    pub fn last_request_headers(&self) -> Vec<(String, String)> {
        let headers = self
            .shared
            .last_headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    }

    /// Stops accepting connections, asks open connections to close once their in-flight
    /// requests finish, and waits until the listener is closed.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            // A panicked or cancelled accept loop is stopped as well.
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let stream = tokio::select! {
            biased;
            () = stop_requested(&mut stopped) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Typically EMFILE under benchmark load: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let builder = Arc::clone(&builder);
        let shared = Arc::clone(&shared);
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| service::handle(Arc::clone(&shared), req));
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = stop_requested(&mut stopped) => {
                    conn.as_mut().graceful_shutdown();
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
            }
        });
    }
}

/// Resolves once a stop was requested (or the [`MockServer`] is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped, which also means stop.
    let _ = stopped.wait_for(|s| *s).await;
}
