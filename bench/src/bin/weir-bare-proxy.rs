//! `weir-bare-proxy`: the HTTP stack weir is built on, with nothing of weir in it — the floor of
//! weir's design for part E of `weir-bench` (`compare`).
//!
//! It serves HTTP/1.1 the way `weir` does (hyper-util's server with the same settings, Tokio's
//! multi-thread runtime with one worker per core, mimalloc), reads each request's body whole (as
//! weir does, to inspect it), forwards it to `--upstream` over a pooled keep-alive client
//! (hyper-util's legacy client, as weir's) and streams the answer back. No routing, no JSON, no
//! policies, no usage or metrics: what weir's proxying costs above this is weir's own work.
//!
//! ```text
//! weir-bare-proxy --listen 127.0.0.1:9000 --upstream 127.0.0.1:9001
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Upstream = Client<HttpConnector, Full<Bytes>>;
type Answer = hyper::Response<BoxBody<Bytes, hyper::Error>>;

/// The command line: `--listen ADDR --upstream ADDR`.
fn arguments() -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let usage = "usage: weir-bare-proxy --listen HOST:PORT --upstream HOST:PORT";
    let (mut listen, mut upstream) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value; {usage}"))?;
        let addr: SocketAddr = value
            .parse()
            .with_context(|| format!("{flag} {value}: not a HOST:PORT address; {usage}"))?;
        match flag.as_str() {
            "--listen" => listen = Some(addr),
            "--upstream" => upstream = Some(addr),
            _ => anyhow::bail!("unknown argument {flag}; {usage}"),
        }
    }
    Ok((listen.context(usage)?, upstream.context(usage)?))
}

fn failure(status: hyper::StatusCode, message: String) -> Answer {
    let mut answer = hyper::Response::new(
        Full::new(Bytes::from(message))
            .map_err(|never| match never {})
            .boxed(),
    );
    *answer.status_mut() = status;
    answer
}

/// Forwards one request: its body read whole, then sent on; the answer streamed back.
async fn forward(
    client: Upstream,
    upstream: SocketAddr,
    request: hyper::Request<Incoming>,
) -> Answer {
    let (mut parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return failure(
                hyper::StatusCode::BAD_REQUEST,
                format!("reading the request: {e}"),
            );
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str);
    parts.uri = match format!("http://{upstream}{path}").parse() {
        Ok(uri) => uri,
        Err(e) => {
            return failure(
                hyper::StatusCode::BAD_REQUEST,
                format!("request target: {e}"),
            );
        }
    };
    parts.headers.remove(hyper::header::HOST);
    match client
        .request(hyper::Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(answer) => answer.map(BodyExt::boxed),
        Err(e) => failure(hyper::StatusCode::BAD_GATEWAY, format!("upstream: {e}")),
    }
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    loop {
        let (stream, _) = listener.accept().await.context("accepting a connection")?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let service = hyper::service::service_fn(move |request| {
            let client = client.clone();
            async move { Ok::<_, Infallible>(forward(client, upstream, request).await) }
        });
        tokio::spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(hyper_util::rt::TokioTimer::new());
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() -> anyhow::Result<()> {
    let (listen, upstream) = arguments()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?
        .block_on(serve(listen, upstream))
}
