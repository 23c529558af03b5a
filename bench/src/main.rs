//! `weir-bench`: Weir's benchmark (not a test). It prints its results as markdown tables.
//!
//! ```text
//! cargo build --release -p weir -p weir-mock-upstream -p weir-bench
//! cargo run --release -p weir-bench -- all          # both parts (about 1 minute)
//! cargo run --release -p weir-bench -- policies     # part A only
//! cargo run --release -p weir-bench -- translate    # part C only
//! cargo run --release -p weir-bench -- vectors      # part D only
//! cargo run --release -p weir-bench -- http --concurrency 32 --seconds 10
//! cargo run --release -p weir-bench -- compare      # part E (about 6 minutes; needs nginx)
//! ```
//!
//! **A. Per-policy cost, in-process** ([`policies`]). The policy components embedded in
//! `weir-policies` are loaded into a [`weir_runtime::Runtime`] (compiled once, not measured) and
//! one request at a time is run through small chains: the empty chain (host overhead only),
//! `test-policy` in `noop` mode (the bare cost of a policy: a fresh instance out of the pooling
//! allocator and one call), `auth`, `token-limit` (on-request and on-complete) and
//! `auth + token-limit`. One sample is a whole request as the gateway runs it:
//! `ChainRun::new`, its phases, and dropping the run (the instances go back to the pool).
//! Median and p99 over `--iterations` samples (20 000) after `--warmup-iterations` (2 000).
//!
//! **B. End-to-end HTTP** ([`http`]). Spawns the release `weir-mock-upstream` and `weir` binaries
//! (by default next to `weir-bench` itself, i.e. `target/release/`; see `--weir-bin` and
//! `--mock-bin`) with a generated configuration: one proxy on `/` with `auth` (one consumer)
//! and `token-limit` (limits that are never reached) in front of the mock. An in-process load
//! generator ([`load`]: hyper-util's legacy client, HTTP/1.1 keep-alive) sends ~2 KB
//! non-streaming chat-completions requests and measures requests/s, p50 and p99 latency:
//! (a) straight to the mock and (b) through weir, both closed-loop with `--concurrency`
//! connections for `--seconds` after `--warmup-seconds`; then (c) open-loop at half of (b)'s
//! throughput, through weir and straight to the mock, which gives the latency weir adds at a
//! load it sustains; (d) the router with one target and with a failover; (e) one connection
//! through `auth` alone, and through `auth` + `cache`: an exact miss (every request new), an
//! exact hit and a semantic hit (probed first: the bench stops if `x-weir-cache` says
//! otherwise); (f) exact hits closed-loop. Every response must be a 200; failures are counted (and make the exit
//! status non-zero). The three processes share the machine's cores, so the figures are a
//! lower bound of what weir does on a machine of its own; the tables say how many cores there
//! were and how much CPU each process used.
//!
//! **C. Provider translation, in-process** ([`translate`]): request, answer and a 32-event
//! stream of the Anthropic, Gemini and Bedrock dialects.
//!
//! **D. Vector index, in-process** ([`vectors`]): the semantic cache's nearest-neighbour lookup
//! at 10,000 and 100,000 vectors of 384 dimensions, and its recall against an exhaustive search.
//!
//! **E. Side by side** ([`compare`]): the mock direct, nginx as a reverse proxy in front of it,
//! and weir with no policies, `auth` + `token-limit`, the full pipeline (a cache miss and a
//! hit) and a 32-event stream: throughput, proxy CPU per request, open-loop latency and time to
//! first byte, and the ratios to nginx against the targets of issue 19; and the floors of weir's
//! design in the same run: `weir-bare-proxy` (this crate's second binary: the HTTP stack weir is
//! built on, with nothing of weir in it) and weir with two and seven policies that do nothing.
//!
//! `--threads` sets the worker threads of the benchmark's single Tokio runtime (default: one per
//! core, like the servers).

mod compare;
mod http;
mod load;
mod policies;
mod table;
mod translate;
mod vectors;

use clap::{Parser, Subcommand};

/// The API key of the benchmark's consumer (part A's `auth` configuration and part B's).
pub(crate) const BENCH_KEY: &str = "weir-bench-key-0123456789";

/// Weir's benchmark: per-policy cost in-process, and end-to-end HTTP throughput and latency.
#[derive(Parser, Debug)]
#[command(name = "weir-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Worker threads of the benchmark's Tokio runtime (policies and load generator); default:
    /// one per core.
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Part A: the cost of each policy per request, in-process.
    Policies(policies::Options),
    /// Part B: throughput and latency over HTTP, straight to the mock and through weir.
    Http(http::Options),
    /// Part C: the cost of provider translation per request, in-process.
    Translate(translate::Options),
    /// Part D: vector index lookups (the semantic cache's), in-process.
    Vectors(vectors::Options),
    /// Part E: the mock, nginx as a reverse proxy and weir (no policies, auth + token-limit, the
    /// full pipeline, a cache hit, a stream) side by side.
    Compare(compare::Options),
    /// All parts.
    All {
        #[command(flatten)]
        policies: policies::Options,
        #[command(flatten)]
        http: http::Options,
        #[command(flatten)]
        translate: translate::Options,
        #[command(flatten)]
        vectors: vectors::Options,
    },
}

/// The SHA-256 of a key, hex-encoded (what `auth` stores).
pub(crate) fn sha256_hex(key: &str) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()))
}

/// A ~2 KB non-streaming chat-completions request body (the mock's `mock-gpt` model).
pub(crate) fn chat_body() -> bytes::Bytes {
    let filler =
        "The quick brown fox jumps over the lazy dog while the gateway counts tokens. ".repeat(24);
    let body = serde_json::json!({
        "model": "mock-gpt",
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in one short paragraph."},
            {"role": "user", "content": filler},
        ],
        "max_tokens": 32,
        "temperature": 0.2,
        "stream": false,
    });
    bytes::Bytes::from(body.to_string())
}

#[expect(clippy::print_stderr, reason = "progress of a long-running benchmark")]
pub(crate) fn progress(message: &str) {
    eprintln!("[weir-bench] {message}");
}

#[expect(clippy::print_stdout, reason = "the benchmark's output")]
fn emit(text: &str) {
    println!("{text}");
}

fn machine_line() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    format!(
        "Machine: {cores} cores ({} {}); weir-bench {} (release build: {}).",
        std::env::consts::OS,
        std::env::consts::ARCH,
        env!("CARGO_PKG_VERSION"),
        !cfg!(debug_assertions),
    )
}

async fn run(command: Command) -> anyhow::Result<()> {
    emit(&format!("# Weir benchmark\n\n{}\n", machine_line()));
    let (policies, http, translate, vectors) = match command {
        Command::Policies(p) => (Some(p), None, None, None),
        Command::Http(h) => (None, Some(h), None, None),
        Command::Translate(t) => (None, None, Some(t), None),
        Command::Vectors(v) => (None, None, None, Some(v)),
        Command::Compare(options) => {
            let (table, errors) = compare::run(&options).await?;
            emit(&table.render());
            anyhow::ensure!(
                errors == 0,
                "{errors} request(s) failed (see the table and the messages above)"
            );
            return Ok(());
        }
        Command::All {
            policies,
            http,
            translate,
            vectors,
        } => (Some(policies), Some(http), Some(translate), Some(vectors)),
    };
    if let Some(options) = policies {
        emit(&policies::run(&options).await?.render());
    }
    if let Some(options) = translate {
        emit(&translate::run(&options)?.render());
    }
    if let Some(options) = vectors {
        emit(&vectors::run(&options)?.render());
    }
    if let Some(options) = http {
        let (table, errors) = http::run(&options).await?;
        emit(&table.render());
        anyhow::ensure!(
            errors == 0,
            "{errors} request(s) failed (see the table and the messages above)"
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cfg!(debug_assertions) {
        progress("warning: this is a debug build; run with `cargo run --release -p weir-bench`");
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.max(1));
    }
    runtime
        .enable_all()
        .build()?
        .block_on(Box::pin(run(cli.command)))
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (a debug build of `weir-bench all` once panicked on two
    /// flattened argument groups with the same id).
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
