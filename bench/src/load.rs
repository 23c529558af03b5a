//! The HTTP load generator: hyper-util's legacy client (HTTP/1.1, keep-alive, `TCP_NODELAY`),
//! in the benchmark's single Tokio runtime.
//!
//! - [`closed_loop`]: `concurrency` tasks, each sending its next request as soon as the previous
//!   one is answered (so at most `concurrency` connections). Measures the maximum throughput.
//! - [`open_loop`]: requests issued on a fixed schedule (`rate` per second) whatever the answers,
//!   each in its own task, up to `max_in_flight` at once. Measures latency at a given load.
//!
//! Latency is from just before the request is handed to the client to the end of the response
//! body; the time to the first byte, to the first frame of the body. Only requests that complete inside the window count for throughput and latency; every
//! non-200 answer or transport error, whenever it happens, counts as an error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client with an unbounded keep-alive pool (one connection per concurrent request).
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(120))
        .build(connector)
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Target {
    pub uri: Uri,
    pub authorization: HeaderValue,
    /// A JSON object.
    pub body: Bytes,
    /// Make every request a new one: a `"seed"` counter is added to the body (it is part of a
    /// cache's exact key), so a cache never has the answer.
    pub vary: bool,
    /// A streamed answer: at least this many `data:` events before `data: [DONE]`, which must
    /// end it (else the answer counts as an error).
    pub events: Option<usize>,
}

/// The next `"seed"` of a varying target (process-wide, so no two requests share one).
static SEED: AtomicU64 = AtomicU64::new(1);

impl Target {
    fn body(&self) -> Bytes {
        if !self.vary {
            return self.body.clone();
        }
        let seed = SEED.fetch_add(1, Ordering::Relaxed);
        let object = self.body.strip_suffix(b"}").unwrap_or(&self.body);
        let mut body = Vec::with_capacity(object.len() + 32);
        body.extend_from_slice(object);
        body.extend_from_slice(format!(",\"seed\":{seed}}}").as_bytes());
        Bytes::from(body)
    }

    fn request(&self) -> Result<Request<Full<Bytes>>, String> {
        Request::post(self.uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(AUTHORIZATION, self.authorization.clone())
            .body(Full::new(self.body()))
            .map_err(|e| e.to_string())
    }
}

/// Sends one request and reads the whole answer; `Err` unless it is a 200 (and, for a stream,
/// a complete one). Returns the time to the first byte of the body.
pub async fn send(client: &HttpClient, target: &Target) -> Result<Duration, String> {
    exchange(client, target, None).await.map(|(_, ttfb)| ttfb)
}

/// Like [`send`], and returns the value of the response header `header` (empty if absent).
pub async fn send_reading(
    client: &HttpClient,
    target: &Target,
    header: Option<&str>,
) -> Result<String, String> {
    exchange(client, target, header).await.map(|(read, _)| read)
}

async fn exchange(
    client: &HttpClient,
    target: &Target,
    header: Option<&str>,
) -> Result<(String, Duration), String> {
    let started = Instant::now();
    let response = client
        .request(target.request()?)
        .await
        .map_err(|e| format!("transport error: {e:?}"))?;
    let status = response.status();
    let read = header
        .and_then(|h| response.headers().get(h))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    let mut ttfb = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the body: {e}"))?;
        if let Ok(data) = frame.into_data() {
            ttfb.get_or_insert_with(|| started.elapsed());
            bytes.extend_from_slice(&data);
        }
    }
    if status != StatusCode::OK {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
        return Err(format!("status {status}: {shown}"));
    }
    if bytes.is_empty() {
        return Err("empty 200 body".into());
    }
    if let Some(min) = target.events {
        let text = String::from_utf8_lossy(&bytes);
        let events = text.matches("data: ").count().saturating_sub(1);
        if !text.trim_end().ends_with("data: [DONE]") || events < min {
            return Err(format!(
                "an incomplete stream: {events} event(s) (expected at least {min}) and {} [DONE]",
                if text.contains("[DONE]") { "a" } else { "no" }
            ));
        }
    }
    Ok((read, ttfb.unwrap_or_else(|| started.elapsed())))
}

/// The results of one measurement window.
#[derive(Debug, Default)]
pub struct Results {
    /// 200s completed inside the window.
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Latencies (nanoseconds) of the counted 200s; sorted by [`Results::finish`].
    pub latencies: Vec<u64>,
    /// Their times to the first byte of the body (nanoseconds), sorted.
    pub ttfb: Vec<u64>,
    /// Open loop: how late requests were handed to the client (nanoseconds), sorted.
    pub send_lag: Vec<u64>,
    pub window: Duration,
}

impl Results {
    fn record(&mut self, result: Result<Duration, String>, latency: Duration, counted: bool) {
        match result {
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
            Ok(ttfb) if counted => {
                self.ok += 1;
                self.latencies.push(nanos(latency));
                self.ttfb.push(nanos(ttfb));
            }
            Ok(_) => {}
        }
    }

    fn merge(&mut self, other: Self) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
        self.ttfb.extend(other.ttfb);
        self.send_lag.extend(other.send_lag);
    }

    fn finish(mut self, window: Duration) -> Self {
        self.latencies.sort_unstable();
        self.ttfb.sort_unstable();
        self.send_lag.sort_unstable();
        self.window = window;
        self
    }

    /// Completed 200s per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `concurrency` connections, each sending back to back, for `duration`.
pub async fn closed_loop(
    client: &HttpClient,
    target: &Arc<Target>,
    concurrency: usize,
    duration: Duration,
) -> Results {
    let end = Instant::now() + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, target) = (client.clone(), target.clone());
        tasks.spawn(async move {
            let mut results = Results::default();
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let result = send(&client, &target).await;
                let done = Instant::now();
                results.record(result, done - started, done <= end);
            }
            results
        });
    }
    let mut total = Results::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(results) => total.merge(results),
            Err(e) => total.record(Err(format!("load task failed: {e}")), Duration::ZERO, false),
        }
    }
    total.finish(duration)
}

/// `rate` requests per second on a fixed schedule for `duration`, at most `max_in_flight` at once.
pub async fn open_loop(
    client: &HttpClient,
    target: &Arc<Target>,
    rate: f64,
    max_in_flight: usize,
    duration: Duration,
) -> Results {
    let shared = Arc::new(Mutex::new(Results::default()));
    let permits = u32::try_from(max_in_flight.max(1)).unwrap_or(u32::MAX);
    let semaphore = Arc::new(Semaphore::new(permits as usize));
    let start = Instant::now();
    let end = start + duration;
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let mut scheduled = start;
    while scheduled < end {
        if scheduled > Instant::now() {
            tokio::time::sleep_until(scheduled.into()).await;
        }
        let Ok(permit) = semaphore.clone().acquire_owned().await else {
            break;
        };
        let (client, target, shared) = (client.clone(), target.clone(), shared.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let result = send(&client, &target).await;
            let done = Instant::now();
            let mut results = shared.lock().unwrap_or_else(PoisonError::into_inner);
            results.record(result, done - started, done <= end);
            results
                .send_lag
                .push(nanos(started.saturating_duration_since(scheduled)));
            drop(permit);
        });
        scheduled += period;
    }
    // Wait for the requests still in flight (their errors count, their latencies too if in time).
    let _all = semaphore.acquire_many(permits).await;
    let results = std::mem::take(&mut *shared.lock().unwrap_or_else(PoisonError::into_inner));
    results.finish(duration)
}
