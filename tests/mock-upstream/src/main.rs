//! `weir-mock-upstream` binary: serves the mock OpenAI-compatible provider for benchmarks and
//! manual testing. Prints `listening on http://ADDR` on stdout once bound; stops on ctrl-c or
//! SIGTERM.

use anyhow::Context as _;
use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;
use weir_mock_upstream::{MockOptions, MockServer};

/// A mock OpenAI-compatible LLM provider (chat completions, embeddings, models, fault injection).
#[derive(Debug, Parser)]
#[command(name = "weir-mock-upstream", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Require `Authorization: Bearer <KEY>` on every /v1 request.
    #[arg(long, env = "MOCK_API_KEY")]
    api_key: Option<String>,
    /// Latency added before every /v1 response, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Delay between the events of a stream, in milliseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Bedrock: require SigV4 signatures made with this access key id (and the secret below).
    #[arg(
        long,
        env = "MOCK_AWS_ACCESS_KEY_ID",
        requires = "aws_secret_access_key"
    )]
    aws_access_key_id: Option<String>,
    #[arg(long, env = "MOCK_AWS_SECRET_ACCESS_KEY")]
    aws_secret_access_key: Option<String>,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    runtime
        .build()
        .context("starting the Tokio runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let opts = MockOptions {
        api_key: args.api_key,
        latency: Duration::from_millis(args.latency_ms),
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        aws_credentials: args.aws_access_key_id.zip(args.aws_secret_access_key),
    };
    let server = MockServer::start(args.listen, opts).await?;
    announce(server.addr());
    wait_for_signal().await?;
    tracing::info!(stats = ?server.stats(), "shutting down");
    server.shutdown().await;
    Ok(())
}

#[expect(
    clippy::print_stdout,
    reason = "the bound address is the binary's output, read by benchmark scripts"
)]
fn announce(addr: SocketAddr) {
    println!("listening on http://{addr}");
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        res = tokio::signal::ctrl_c() => res.context("waiting for ctrl-c"),
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("waiting for ctrl-c")
}
