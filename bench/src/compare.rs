//! Part E: weir side by side with nginx, in one run. The same release mock provider answers
//! (a) directly, (b) through nginx as a reverse proxy (the Debian package: what a bare proxy
//! costs on this machine), and through weir with (c) no policies, (d) `auth` + `token-limit`,
//! (e) the full pipeline `auth` → `pii` → `guardrail` (10 rules) → `prompt` → `cache` (every
//! request new: a miss) → `router` → `token-limit`, (f) the same pipeline answering from its
//! cache (a hit), and (g) a stream of 32 content events through the full pipeline.
//!
//! Three more rows measure the floors of weir's design, so that the targets' ratios can be read
//! against what the design itself costs: (h) `weir-bare-proxy`, the HTTP stack weir is built on
//! (hyper's server and pooled client on Tokio, mimalloc) forwarding the same requests with
//! nothing of weir in it; and weir with (i) two and (j) seven policies that do nothing
//! (`test-policy` in `noop` mode, which takes every phase and returns at once): the cost of
//! creating, calling and returning as many policy instances per request as (d) and (e) have.
//!
//! For each: closed-loop throughput (`--concurrency` connections), the CPU the proxy process
//! used per request meanwhile (nginx: its master and workers), then an open-loop run at half of
//! that row's throughput (p50, p99, time to first byte). The mock alone is also run open-loop at
//! the full pipeline's rate, for the latency the pipeline adds. Every answer must be a 200 (a
//! stream: its 32 events and `[DONE]`); the probes before the runs check that each row measures
//! what it says (`x-weir-cache: miss` / `hit`). Last, `weir`'s start-up with its embedded
//! default configuration (every bundled component): time to accept connections with an empty
//! and then a warm compiled-component cache, and its resident memory when idle; with
//! `--soak-seconds`, its resident memory over a long run of the full pipeline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper::header::HeaderValue;

use crate::http::{Child, Load, Scratch, binary, cpu_ticks, free_port};
use crate::load::{self, Results, Target};
use crate::table::{Table, percentile, us_int};

mod lifecycle;
use lifecycle::{soak, start_weir, startup};

#[derive(Debug, Clone, clap::Args)]
#[group(id = "compare-options")]
pub struct Options {
    /// Connections, lengths and binaries, as part B's.
    #[command(flatten)]
    pub run: crate::http::Options,
    /// nginx (`apt-get install nginx`; `scripts/bench.sh` installs it when missing).
    #[arg(long, default_value = "/usr/sbin/nginx")]
    pub nginx_bin: PathBuf,
    /// After the table: weir's resident memory over an open-loop run of this many seconds of
    /// the full pipeline (cache misses) at half its maximum rate, sampled every 30 s after a
    /// minute of warm-up (0: skipped; the target is for 600).
    #[arg(long, default_value_t = 0)]
    pub soak_seconds: u64,
}

/// Clock ticks of `pid` and of its children (nginx's workers), from `/proc`.
fn tree_ticks(pid: u32) -> Option<u64> {
    let mut total = cpu_ticks(&pid.to_string())?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(child) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            total += cpu_ticks(child).unwrap_or(0);
        }
    }
    Some(total)
}

fn nginx_config(scratch: &std::path::Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    let dir = scratch.display();
    format!(
        "worker_processes auto;
error_log {dir}/nginx-error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-body;
    proxy_temp_path {dir}/nginx-proxy;
    fastcgi_temp_path {dir}/nginx-fastcgi;
    uwsgi_temp_path {dir}/nginx-uwsgi;
    scgi_temp_path {dir}/nginx-scgi;
    upstream mock {{ server {upstream}; keepalive 128; }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
        }}
    }}
}}
"
    )
}

/// `n` entries of `name` (a policy that does nothing: `test-policy` in `noop` mode), each with
/// its own id.
fn do_nothing(name: &str, n: usize) -> String {
    (1..=n)
        .map(|i| format!("\n      - {{id: nothing-{i}, policy: {name}, config: {{mode: noop}}}}"))
        .collect()
}

/// The name under which weir's configuration loads `test-policy` (see [`weir_config`]).
const DO_NOTHING: &str = "do-nothing";

/// weir's configuration: the proxies of the rows, with `test_policy` (the component's file, when
/// given) loaded as [`DO_NOTHING`] for the floor rows.
fn weir_config(
    listen: SocketAddr,
    upstream: SocketAddr,
    test_policy: Option<&std::path::Path>,
) -> String {
    let key_sha256 = crate::sha256_hex(crate::BENCH_KEY);
    let auth = format!(
        "{{policy: auth, config: {{consumers: [{{id: bench, key-sha256: {key_sha256}}}]}}}}"
    );
    let limit = "{policy: token-limit, config: {tokens-per-minute: 1000000000000000, requests-per-minute: 1000000000000000}}";
    let full = format!(
        "
      - {auth}
      - {{policy: pii, config: {{entities: [email, phone, credit-card, iban, ipv4]}}}}
      - policy: guardrail
        config:
          rules:
            - {{id: injection, kind: injection}}
            - {{id: no-secrets, kind: regex, patterns: ['(?i)api[_-]?key\\s*[:=]']}}
            - {{id: passwords, kind: regex, patterns: ['(?i)password\\s*[:=]']}}
            - {{id: no-jailbreak, kind: regex, patterns: ['(?i)ignore (all )?previous instructions'], case-insensitive: true}}
            - {{id: links, kind: url, allowed-hosts: [docs.example.com]}}
            - {{id: request-length, kind: length, max-words: 5000}}
            - {{id: forbidden-answer, kind: regex, applies-to: response, patterns: ['forbidden phrase'], case-insensitive: true}}
            - {{id: budget, kind: regex, applies-to: response, patterns: [budget], action: flag}}
            - {{id: answer-links, kind: url, applies-to: response, allowed-hosts: [docs.example.com]}}
            - {{id: answer-length, kind: length, applies-to: response, max-words: 2000}}
      - {{policy: prompt, config: {{prepend: [{{role: system, content: 'You answer for ACME.'}}]}}}}
      - {{policy: cache, config: {{exact: {{ttl-s: 3600}}}}}}
      - policy: router
        config:
          circuit-breaker: {{enabled: false}}
          routes: [{{strategy: failover, targets: [{{provider: mock, model: mock-gpt}}]}}]
      - {limit}"
    );
    let floors = test_policy.map_or_else(String::new, |_| {
        format!(
            "  - name: nothing-2
    context-path: /nothing-2
    provider: mock
    policies:{}
  - name: nothing-7
    context-path: /nothing-7
    provider: mock
    policies:{}
",
            do_nothing(DO_NOTHING, 2),
            do_nothing(DO_NOTHING, 7)
        )
    });
    let sources = test_policy.map_or_else(String::new, |path| {
        format!(
            "policies:\n  - {{name: {DO_NOTHING}, path: '{}'}}\n",
            path.display()
        )
    });
    format!(
        "listen: {listen}
{sources}providers:
  - name: mock
    base-url: http://{upstream}/v1
proxies:
  - {{name: none, context-path: /none, provider: mock}}
  - name: auth-limit
    context-path: /auth-limit
    provider: mock
    policies:
      - {auth}
      - {limit}
  - name: full
    context-path: /full
    provider: mock
    policies:{full}
{floors}"
    )
}

struct Row {
    label: &'static str,
    target: Arc<Target>,
    /// The process whose CPU counts (weir or nginx), or none for the mock.
    proxy: Option<u32>,
}

struct Measured {
    closed: Results,
    cpu_us: Option<f64>,
    open: Results,
    rate: f64,
}

async fn window(
    target: &Arc<Target>,
    rate: Option<f64>,
    options: &Options,
    seconds: u64,
) -> Results {
    let c = options.run.concurrency.max(1);
    let load = rate.map_or(Load::Closed(c), Load::Open);
    crate::http::window(&load::client(), target, load, seconds, c).await
}

async fn measure(row: &Row, options: &Options, errors: &mut u64) -> Measured {
    crate::progress(&format!(
        "part E: {}: closed loop, {} conns ({} s + {} s)",
        row.label, options.run.concurrency, options.run.warmup_seconds, options.run.seconds
    ));
    let warm = window(&row.target, None, options, options.run.warmup_seconds).await;
    let before = row.proxy.and_then(tree_ticks);
    let closed = window(&row.target, None, options, options.run.seconds).await;
    let cpu_us = match (before, row.proxy.and_then(tree_ticks)) {
        (Some(a), Some(b)) if closed.ok > 0 => {
            Some(b.saturating_sub(a) as f64 / 100.0 * 1e6 / closed.ok as f64)
        }
        _ => None,
    };
    let rate = (closed.rate() / 2.0).max(1.0);
    crate::progress(&format!(
        "part E: {}: open loop at {rate:.0} req/s ({} s)",
        row.label, options.run.seconds
    ));
    let open = window(&row.target, Some(rate), options, options.run.seconds).await;
    for r in [&warm, &closed, &open] {
        *errors += r.errors;
        if let Some(e) = &r.first_error {
            crate::progress(&format!(
                "part E: {}: {} error(s); first: {e}",
                row.label, r.errors
            ));
        }
    }
    Measured {
        closed,
        cpu_us,
        open,
        rate,
    }
}

/// Runs part E; returns its table and the number of failed requests.
pub async fn run(options: &Options) -> anyhow::Result<(Table, u64)> {
    let weir_bin = binary(options.run.weir_bin.as_ref(), "weir")?;
    let mock_bin = binary(options.run.mock_bin.as_ref(), "weir-mock-upstream")?;
    anyhow::ensure!(
        options.nginx_bin.is_file(),
        "{} is missing: install nginx (`apt-get install nginx`, or run scripts/bench.sh, which does) \
         or pass --nginx-bin",
        options.nginx_bin.display()
    );
    let scratch = Scratch::new("weir-bench-e")?;
    let mock_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let nginx_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let weir_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));

    let mock = Child::start(
        "part E",
        "weir-mock-upstream",
        &mock_bin,
        &["--listen".into(), mock_addr.to_string()],
        &scratch.0,
        mock_addr,
    )
    .await?;
    let nginx_conf = scratch.0.join("nginx.conf");
    std::fs::write(&nginx_conf, nginx_config(&scratch.0, nginx_addr, mock_addr))?;
    let nginx = Child::start(
        "part E",
        "nginx",
        &options.nginx_bin,
        &[
            "-p".into(),
            scratch.0.display().to_string(),
            "-c".into(),
            nginx_conf.display().to_string(),
            "-g".into(),
            "daemon off;".into(),
        ],
        &scratch.0,
        nginx_addr,
    )
    .await?;
    let config = scratch.0.join("weir.yaml");
    let test_policy = scratch.0.join("test-policy.wasm");
    std::fs::write(&test_policy, weir_policies::TEST_POLICY)?;
    std::fs::write(
        &config,
        weir_config(weir_addr, mock_addr, Some(&test_policy)),
    )?;
    let mut weir = start_weir(
        "part E",
        &weir_bin,
        Some(&config),
        &scratch.0.join("data"),
        weir_addr,
        &scratch.0,
    )
    .await?;
    let bare_bin = binary(None, "weir-bare-proxy")?;
    let bare_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let bare = Child::start(
        "part E",
        "weir-bare-proxy",
        &bare_bin,
        &[
            "--listen".into(),
            bare_addr.to_string(),
            "--upstream".into(),
            mock_addr.to_string(),
        ],
        &scratch.0,
        bare_addr,
    )
    .await?;

    let body = crate::chat_body();
    let stream_body = {
        let mut v: serde_json::Value = serde_json::from_slice(&body)?;
        v["stream"] = serde_json::json!(true);
        bytes::Bytes::from(v.to_string())
    };
    let target =
        |addr: SocketAddr, path: &str, vary: bool, stream: bool| -> anyhow::Result<Arc<Target>> {
            Ok(Arc::new(Target {
                uri: format!("http://{addr}{path}/v1/chat/completions").parse()?,
                authorization: HeaderValue::from_str(&format!("Bearer {}", crate::BENCH_KEY))?,
                body: if stream {
                    stream_body.clone()
                } else {
                    body.clone()
                },
                vary,
                events: stream.then_some(32),
            }))
        };
    let (weir_pid, nginx_pid, bare_pid) =
        (weir.process.id(), nginx.process.id(), bare.process.id());
    let rows = [
        Row {
            label: "(a) mock, direct",
            target: target(mock_addr, "", false, false)?,
            proxy: None,
        },
        Row {
            label: "(b) nginx, reverse proxy",
            target: target(nginx_addr, "", false, false)?,
            proxy: Some(nginx_pid),
        },
        Row {
            label: "(c) weir, no policies",
            target: target(weir_addr, "/none", false, false)?,
            proxy: Some(weir_pid),
        },
        Row {
            label: "(d) weir, auth + token-limit",
            target: target(weir_addr, "/auth-limit", false, false)?,
            proxy: Some(weir_pid),
        },
        Row {
            label: "(e) weir, full pipeline (cache miss)",
            target: target(weir_addr, "/full", true, false)?,
            proxy: Some(weir_pid),
        },
        Row {
            label: "(f) weir, full pipeline, cache hit",
            target: target(weir_addr, "/full", false, false)?,
            proxy: Some(weir_pid),
        },
        Row {
            label: "(g) weir, full pipeline, stream of 32 events",
            target: target(weir_addr, "/full", true, true)?,
            proxy: Some(weir_pid),
        },
        Row {
            label: "(g) mock, direct, stream of 32 events",
            target: target(mock_addr, "", false, true)?,
            proxy: None,
        },
        Row {
            label: "(h) floor: weir's HTTP stack alone (weir-bare-proxy)",
            target: target(bare_addr, "", false, false)?,
            proxy: Some(bare_pid),
        },
        Row {
            label: "(i) floor: weir, 2 policies that do nothing",
            target: target(weir_addr, "/nothing-2", false, false)?,
            proxy: Some(weir_pid),
        },
        Row {
            label: "(j) floor: weir, 7 policies that do nothing",
            target: target(weir_addr, "/nothing-7", false, false)?,
            proxy: Some(weir_pid),
        },
    ];
    // Every row answers, and the cache rows are what they say.
    let probe = load::client();
    for row in &rows {
        if let Err(e) = load::send(&probe, &row.target).await {
            anyhow::bail!(
                "{}: a probe of {} failed: {e}\nweir's log:\n{}\nnginx's log:\n{}",
                row.label,
                row.target.uri,
                weir.log_tail(),
                nginx.log_tail()
            );
        }
    }
    for (row, want) in [(&rows[4], "miss"), (&rows[5], "hit")] {
        let got = load::send_reading(&probe, &row.target, Some("x-weir-cache"))
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", row.label))?;
        anyhow::ensure!(
            got == want,
            "{}: x-weir-cache: {got:?}, expected {want:?}",
            row.label
        );
    }
    drop(probe);

    let mut errors = 0;
    let mut measured = Vec::new();
    for row in &rows {
        measured.push(measure(row, options, &mut errors).await);
    }
    // The mock alone at the full pipeline's open-loop rate: what the pipeline adds.
    let full_rate = measured[4].rate;
    crate::progress(&format!(
        "part E: the mock alone at {full_rate:.0} req/s ({} s)",
        options.run.seconds
    ));
    let mock_at_full = window(
        &rows[0].target,
        Some(full_rate),
        options,
        options.run.seconds,
    )
    .await;
    errors += mock_at_full.errors;
    if let Some(status) = weir.process.try_wait()? {
        anyhow::bail!(
            "weir exited during the benchmark ({status}):\n{}",
            weir.log_tail()
        );
    }

    let nginx_rate = measured[1].closed.rate().max(1e-9);
    let mut table = Table::new(
        "E. Side by side: the mock, nginx and weir (closed loop for req/s and CPU; open loop at half of each row's req/s for latency)",
        &[
            "target",
            "req/s",
            "vs nginx",
            "proxy CPU µs/req",
            "open-loop req/s",
            "p50 µs",
            "p99 µs",
            "TTFB p50 µs",
            "errors",
        ],
        1,
    );
    for (row, m) in rows.iter().zip(&measured) {
        table.row(vec![
            row.label.to_owned(),
            format!("{:.0}", m.closed.rate()),
            format!("{:.0}%", m.closed.rate() / nginx_rate * 100.0),
            m.cpu_us
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.0}")),
            format!("{:.0}", m.rate),
            us_int(percentile(&m.open.latencies, 50.0), 0),
            us_int(percentile(&m.open.latencies, 99.0), 0),
            us_int(percentile(&m.open.ttfb, 50.0), 0),
            (m.closed.errors + m.open.errors).to_string(),
        ]);
    }
    let pct = |i: usize| measured[i].closed.rate() / nginx_rate * 100.0;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    table.note(format!(
        "Targets (issue 19), throughput vs nginx: no policies {:.0}% (≥ 90%: {}), auth + token-limit {:.0}% \
         (≥ 75%: {}), full pipeline {:.0}% (≥ 60%: {}).",
        pct(2),
        verdict(pct(2) >= 90.0),
        pct(3),
        verdict(pct(3) >= 75.0),
        pct(4),
        verdict(pct(4) >= 60.0),
    ));
    let added_p99 = (percentile(&measured[4].open.latencies, 99.0) as f64
        - percentile(&mock_at_full.latencies, 99.0) as f64)
        / 1000.0;
    table.note(format!(
        "Full pipeline at {full_rate:.0} req/s (half its maximum) vs the mock alone at that rate: p50 {:+.0} µs, \
         p99 {added_p99:+.0} µs (target ≤ 1000 µs: {}).",
        (percentile(&measured[4].open.latencies, 50.0) as f64
            - percentile(&mock_at_full.latencies, 50.0) as f64)
            / 1000.0,
        verdict(added_p99 <= 1000.0),
    ));
    let (stream, stream_mock) = (&measured[6], &measured[7]);
    let ttfb_added = (percentile(&stream.open.ttfb, 50.0) as f64
        - percentile(&stream_mock.open.ttfb, 50.0) as f64)
        / 1000.0;
    let per_event = stream
        .cpu_us
        .zip(measured[4].cpu_us)
        .map(|(s, n)| (s - n) / 32.0);
    table.note(format!(
        "Stream (g): time to first byte through the full pipeline {ttfb_added:+.0} µs over the mock's (p50, each at \
         half its own maximum; target ≤ 1000 µs: {}); weir's CPU per event of the full pipeline: {} \
         (the stream's CPU per request minus the non-streamed request's, over 32 events).",
        verdict(ttfb_added <= 1000.0),
        per_event.map_or_else(|| "n/a".to_owned(), |e| format!("{e:.1} µs")),
    ));
    let cpu = |i: usize| {
        measured[i]
            .cpu_us
            .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.0} µs"))
    };
    table.note(format!(
        "Floors of the design, same run (rows h–j): the HTTP stack alone reaches {:.0}% of nginx ({} of CPU per \
         request; weir without policies: {}); two policy instances that do nothing {:.0}% ({}; target for \
         auth + token-limit: 75%), seven {:.0}% ({}; target for the full pipeline: 60%). A target above its \
         floor cannot be met by faster policies: only by a cheaper HTTP path or fewer, cheaper instances.",
        pct(8),
        cpu(8),
        cpu(2),
        pct(9),
        cpu(9),
        pct(10),
        cpu(10),
    ));
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    table.note(format!(
        "{cores} cores shared by the mock, the proxy under test and this load generator; nginx {} with \
         `worker_processes auto`, keep-alive to the mock, `proxy_buffering off`. CPU µs/req: the proxy's \
         processes (nginx: master and workers), from /proc at 1/100 s resolution. Each run {} s after {} s of \
         warm-up; every answer must be a 200 (a stream: 32 events and [DONE]).",
        nginx_version(&options.nginx_bin),
        options.run.seconds,
        options.run.warmup_seconds,
    ));
    drop(weir);
    drop(nginx);
    drop(bare);
    if options.soak_seconds > 0 {
        let soak = soak(&weir_bin, mock_addr, full_rate, options, &scratch.0).await?;
        errors += soak.errors;
        table.note(soak.note(full_rate, options.soak_seconds));
    }
    drop(mock);
    let start = startup(&weir_bin, &scratch.0).await?;
    table.note(format!(
        "Start-up of `weir` with its embedded default configuration (every bundled component): {:.0} ms to \
         accept connections with an empty compiled-component cache, then {} ms with it warm (runs: {}; target \
         ≤ 200 ms: {}); idle RSS {:.1} MB a second after start (target ≤ 50 MB: {}).",
        start.cold_ms,
        start.warm_ms.iter().map(|m| format!("{m:.0}")).collect::<Vec<_>>().join(", "),
        start.warm_ms.len(),
        verdict(start.warm_ms.iter().all(|m| *m <= 200.0)),
        start.idle_rss_mb,
        verdict(start.idle_rss_mb <= 50.0),
    ));
    Ok((table, errors))
}

fn nginx_version(bin: &std::path::Path) -> String {
    std::process::Command::new(bin)
        .arg("-v")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .trim_start_matches("nginx version: ")
                .to_owned()
        })
        .unwrap_or_default()
}
