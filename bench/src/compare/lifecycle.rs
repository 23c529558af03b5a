//! Part E's measurements of `weir` as a process over time: its memory over a long run of the
//! full pipeline (`--soak-seconds`), and its start-up with its embedded default configuration.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use hyper::header::HeaderValue;

use super::{Options, weir_config};
use crate::http::{Child, Load, free_port};
use crate::load::{self, Target};
use crate::table::percentile;

/// Entries of the key-value store of the soak's weir: small enough for the cache to fill it
/// during the warm-up, so that the soak measures the memory of a store at its bound.
const SOAK_MAX_ENTRIES: u32 = 20_000;
/// Seconds between two samples of the soak.
const SOAK_SAMPLE_SECONDS: u64 = 30;
/// Seconds of load before the soak's first sample.
const SOAK_WARMUP_SECONDS: u64 = 60;

/// The arguments of `weir` serving on `addr` with `config` (none: its embedded default
/// configuration) and `data` as its data directory.
pub(super) fn weir_args(
    config: Option<&std::path::Path>,
    data: &std::path::Path,
    addr: SocketAddr,
) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(config) = config {
        args.extend(["--config".to_owned(), config.display().to_string()]);
    }
    args.extend([
        "--data-dir".to_owned(),
        data.display().to_string(),
        "--listen".to_owned(),
        addr.to_string(),
    ]);
    args
}

/// Starts `weir` (see [`weir_args`]) and waits until it listens.
pub(super) async fn start_weir(
    part: &str,
    bin: &std::path::Path,
    config: Option<&std::path::Path>,
    data: &std::path::Path,
    addr: SocketAddr,
    scratch: &std::path::Path,
) -> anyhow::Result<Child> {
    let args = weir_args(config, data, addr);
    Child::start(part, "weir", bin, &args, scratch, addr).await
}

/// Resident memory of `weir` over a long run.
pub(super) struct Soak {
    /// (seconds into the soak, MB) at each sample.
    samples: Vec<(u64, f64)>,
    /// p99 latency (µs) of the first and the last sample's window.
    p99_first_last: (f64, f64),
    ok: u64,
    pub(super) errors: u64,
}

impl Soak {
    pub(super) fn note(&self, rate: f64, seconds: u64) -> String {
        let first = self.samples.first().map_or(0.0, |s| s.1);
        let (min, max) = self
            .samples
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), s| (lo.min(s.1), hi.max(s.1)));
        let last = self.samples.last().map_or(0.0, |s| s.1);
        let flat =
            first > 0.0 && (max - first).abs() <= first * 0.1 && (first - min).abs() <= first * 0.1;
        format!(
            "RSS over {seconds} s of the full pipeline (cache misses; key-value store bound: {SOAK_MAX_ENTRIES} \
             entries) open loop at {rate:.0} req/s, after {SOAK_WARMUP_SECONDS} s of warm-up, sampled every \
             {SOAK_SAMPLE_SECONDS} s: first {first:.1} MB, min {min:.1}, max {max:.1}, last {last:.1} (target \
             flat within ±10%: {}); p99 of the first and last {SOAK_SAMPLE_SECONDS} s: {:.0} and {:.0} µs; {} \
             answers, {} errors. Samples (s: MB): {}.",
            if flat { "met" } else { "NOT met" },
            self.p99_first_last.0,
            self.p99_first_last.1,
            self.ok,
            self.errors,
            self.samples
                .iter()
                .map(|(t, mb)| format!("{t}: {mb:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}

/// The resident set of process `pid`, in MB.
pub(super) fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS missing from /proc/<pid>/status")?;
    Ok(kb / 1024.0)
}

/// A fresh `weir` (the bench configuration, its store bound lowered) loaded open-loop with
/// full-pipeline cache misses at `rate` for `--soak-seconds`, its RSS sampled between windows.
pub(super) async fn soak(
    weir_bin: &std::path::Path,
    mock_addr: SocketAddr,
    rate: f64,
    options: &Options,
    scratch: &std::path::Path,
) -> anyhow::Result<Soak> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let config = scratch.join("weir-soak.yaml");
    std::fs::write(
        &config,
        format!(
            "{}kv: {{ max-entries: {SOAK_MAX_ENTRIES} }}\n",
            weir_config(addr, mock_addr, None)
        ),
    )?;
    let mut weir = start_weir(
        "part E: soak",
        weir_bin,
        Some(&config),
        &scratch.join("soak-data"),
        addr,
        scratch,
    )
    .await?;
    let body = crate::chat_body();
    let target = Arc::new(Target {
        uri: format!("http://{addr}/full/v1/chat/completions").parse()?,
        authorization: HeaderValue::from_str(&format!("Bearer {}", crate::BENCH_KEY))?,
        body,
        vary: true,
        events: None,
    });
    let client = load::client();
    let c = options.run.concurrency.max(1);
    crate::progress(&format!(
        "part E: soak: {SOAK_WARMUP_SECONDS} s of warm-up at {rate:.0} req/s"
    ));
    let warm =
        crate::http::window(&client, &target, Load::Open(rate), SOAK_WARMUP_SECONDS, c).await;
    let mut soak = Soak {
        samples: vec![(0, rss_mb(weir.process.id())?)],
        p99_first_last: (0.0, 0.0),
        ok: 0,
        errors: warm.errors,
    };
    let mut elapsed = 0;
    while elapsed < options.soak_seconds {
        let step = SOAK_SAMPLE_SECONDS.min(options.soak_seconds - elapsed);
        let r = crate::http::window(&client, &target, Load::Open(rate), step, c).await;
        elapsed += step;
        if let Some(status) = weir.process.try_wait()? {
            anyhow::bail!(
                "weir exited during the soak ({status}):\n{}",
                weir.log_tail()
            );
        }
        let mb = rss_mb(weir.process.id())?;
        let p99 = percentile(&r.latencies, 99.0) as f64 / 1000.0;
        if soak.samples.len() == 1 {
            soak.p99_first_last.0 = p99;
        }
        soak.p99_first_last.1 = p99;
        soak.ok += r.ok;
        soak.errors += r.errors;
        if let Some(e) = &r.first_error {
            crate::progress(&format!("part E: soak: {} error(s); first: {e}", r.errors));
        }
        crate::progress(&format!(
            "part E: soak: {elapsed} of {} s: RSS {mb:.1} MB, {:.0} req/s, p99 {p99:.0} µs",
            options.soak_seconds,
            r.rate()
        ));
        soak.samples.push((elapsed, mb));
    }
    Ok(soak)
}

/// Cold start and idle memory of `weir`.
pub(super) struct Startup {
    pub(super) cold_ms: f64,
    pub(super) warm_ms: Vec<f64>,
    pub(super) idle_rss_mb: f64,
}

/// Starts `weir` with its embedded default configuration four times on one data directory
/// (the first compiles every component into the cache) and times each until it accepts
/// connections; measures the last one's resident memory after a second of idleness.
pub(super) async fn startup(
    weir_bin: &std::path::Path,
    scratch: &std::path::Path,
) -> anyhow::Result<Startup> {
    let data = scratch.join("startup-data");
    let mut times = Vec::new();
    let mut idle_rss_mb = 0.0;
    for run in 0..4 {
        crate::progress(&format!("part E: start-up of weir, run {} of 4", run + 1));
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let started = std::time::Instant::now();
        let mut weir = Child::spawn("weir", weir_bin, &weir_args(None, &data, addr), scratch)?;
        loop {
            if let Some(status) = weir.process.try_wait()? {
                anyhow::bail!(
                    "weir exited ({status}) during start-up:\n{}",
                    weir.log_tail()
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < std::time::Duration::from_secs(120),
                "weir is not listening on {addr} after 120 s:\n{}",
                weir.log_tail()
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if run == 3 {
            // Idle for a second (measured, not waited on): then its resident set.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            idle_rss_mb = rss_mb(weir.process.id())?;
        }
    }
    Ok(Startup {
        cold_ms: times[0],
        warm_ms: times[1..].to_vec(),
        idle_rss_mb,
    })
}
