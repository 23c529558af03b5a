//! Part B: end-to-end throughput and latency over HTTP, straight to the mock provider and
//! through weir (`auth` + `token-limit`), with the release binaries run as child processes.
//!
//! The children are killed when this part ends, also on error (they are owned by guards whose
//! `Drop` kills them); their logs go to a scratch directory that is removed afterwards.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hyper::header::HeaderValue;

use crate::load::{self, HttpClient, Results, Target};
use crate::table::{Table, percentile, us_int};

#[derive(Debug, Clone, clap::Args)]
#[group(id = "http-options")]
pub struct Options {
    /// Part B: concurrent connections of the closed-loop runs.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Part B: length of each measurement, in seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Part B: unmeasured load before each measurement, in seconds.
    #[arg(long, default_value_t = 2)]
    pub warmup_seconds: u64,
    /// The `weir` binary (default: `weir` next to this binary, i.e. target/release/weir).
    #[arg(long)]
    pub weir_bin: Option<PathBuf>,
    /// The mock provider binary (default: `weir-mock-upstream` next to this binary).
    #[arg(long)]
    pub mock_bin: Option<PathBuf>,
}

/// A scratch directory removed on drop.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    /// A new directory under the system's temporary directory, named after `label`.
    pub(crate) fn new(label: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop.
pub(crate) struct Child {
    name: &'static str,
    pub(crate) process: std::process::Child,
    log: PathBuf,
}

impl Child {
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        scratch: &Path,
    ) -> anyhow::Result<Self> {
        let log = scratch.join(format!("{name}.log"));
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let process = Command::new(program)
            .args(args)
            .env("WEIR_LOG", "warn")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with `cargo build --release -p weir -p weir-mock-upstream`, \
                     or pass --weir-bin/--mock-bin)",
                    program.display()
                )
            })?;
        Ok(Self { name, process, log })
    }

    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Starts `program` as [`Child::spawn`] does, says so (`part`: which part of the benchmark),
    /// and waits until it listens on `addr`.
    pub(crate) async fn start(
        part: &str,
        name: &'static str,
        program: &Path,
        args: &[String],
        scratch: &Path,
        addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        crate::progress(&format!("{part}: starting {} on {addr}", program.display()));
        let mut child = Self::spawn(name, program, args, scratch)?;
        child.wait_listening(addr).await?;
        Ok(child)
    }

    /// Waits until `addr` accepts connections, failing if the child exits first.
    pub(crate) async fn wait_listening(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.process.try_wait()? {
                anyhow::bail!(
                    "{} exited ({status}) before listening:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} is not listening on {addr} after 120 s",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Child {
    /// Asks the process to stop (SIGTERM: nginx's master then stops its workers, which a
    /// SIGKILL of the master leaves running), and kills it if it has not exited after 5 s.
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.process.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Ok(None) = self.process.try_wait() {
                if Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

pub(crate) fn binary(given: Option<&PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().context("locating weir-bench")?;
    let dir = exe.parent().context("weir-bench has no directory")?;
    Ok(dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn gateway_config(listen: SocketAddr, upstream: SocketAddr) -> String {
    let key_sha256 = crate::sha256_hex(crate::BENCH_KEY);
    format!(
        "listen: {listen}
providers:
  - name: mock
    base-url: http://{upstream}/v1
proxies:
  - name: bench
    context-path: /
    provider: mock
    policies:
      - policy: auth
        config:
          consumers:
            - id: bench
              key-sha256: {key_sha256}
      - policy: token-limit
        config:
          tokens-per-minute: 1000000000000000
          requests-per-minute: 1000000000000000
  - name: routed
    context-path: /routed
    provider: mock
    policies:
      - policy: auth
        config: {{consumers: [{{id: bench, key-sha256: {key_sha256}}}]}}
      - policy: router
        config:
          circuit-breaker: {{enabled: false}}
          routes: [{{strategy: failover, targets: [{{provider: mock, model: mock-gpt}}]}}]
  - name: failover
    context-path: /failover
    provider: mock
    policies:
      - policy: auth
        config: {{consumers: [{{id: bench, key-sha256: {key_sha256}}}]}}
      - policy: router
        config:
          circuit-breaker: {{enabled: false}}
          routes:
            - strategy: failover
              targets: [{{provider: mock, model: 'mock-fault:status-503'}}, {{provider: mock, model: mock-gpt}}]
  - name: plain
    context-path: /plain
    provider: mock
    policies:
      - policy: auth
        config: {{consumers: [{{id: bench, key-sha256: {key_sha256}}}]}}
  - name: exact
    context-path: /exact
    provider: mock
    policies:
      - policy: auth
        config: {{consumers: [{{id: bench, key-sha256: {key_sha256}}}]}}
      - policy: cache
        config: {{exact: {{ttl-s: 3600}}}}
  - name: semantic
    context-path: /semantic
    provider: mock
    policies:
      - policy: auth
        config: {{consumers: [{{id: bench, key-sha256: {key_sha256}}}]}}
      - policy: cache
        config: {{exact: null, semantic: {{provider: mock, model: mock-words, ttl-s: 3600}}}}
mcp-proxies:
  - name: mcp
    context-path: /mcp
    upstream: {{server: {{url: http://{upstream}/mcp}}}}
    policies:
      - policy: auth
        config: {{consumers: [{{id: bench, key-sha256: {key_sha256}}}]}}
  - name: rest
    context-path: /rest
    upstream:
      openapi:
        base-url: http://{upstream}
        endpoints:
          - name: add
            method: POST
            url: /rest/add
            input-schema: {{type: object, properties: {{a: {{type: integer}}, b: {{type: integer}}}}, required: [a, b]}}
    policies:
      - policy: auth
        config: {{consumers: [{{id: bench, key-sha256: {key_sha256}}}]}}
"
    )
}

/// CPU time (user + system, clock ticks) of a process so far, from `/proc` (Linux only).
pub(crate) fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, utime 14, stime 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU use of the three processes over a window.
struct Cpu {
    pids: [String; 3],
    before: [Option<u64>; 3],
    started: Instant,
}

impl Cpu {
    fn start(weir: u32, mock: u32) -> Self {
        let pids = [weir.to_string(), mock.to_string(), "self".to_owned()];
        let before = [
            cpu_ticks(&pids[0]),
            cpu_ticks(&pids[1]),
            cpu_ticks(&pids[2]),
        ];
        Self {
            pids,
            before,
            started: Instant::now(),
        }
    }

    /// Percent of one core used by weir, the mock and the benchmark (`USER_HZ` = 100 assumed),
    /// and weir's CPU seconds.
    fn finish(self) -> ([String; 3], Option<f64>) {
        let seconds = self.started.elapsed().as_secs_f64();
        let mut out: [String; 3] = Default::default();
        let mut weir = None;
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = match (self.before[i], cpu_ticks(&self.pids[i])) {
                (Some(a), Some(b)) => {
                    let used = (b.saturating_sub(a)) as f64 / 100.0;
                    if i == 0 {
                        weir = Some(used);
                    }
                    format!("{:.0}%", used / seconds * 100.0)
                }
                _ => "n/a".to_owned(),
            };
        }
        (out, weir)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Load {
    Closed(usize),
    Open(f64),
}

struct Bench<'a> {
    options: &'a Options,
    weir_pid: u32,
    mock_pid: u32,
    errors: u64,
}

/// One window of `load` on `target` (open loop: at most `concurrency` × 8 in flight).
pub(crate) async fn window(
    client: &HttpClient,
    target: &Arc<Target>,
    load: Load,
    seconds: u64,
    concurrency: usize,
) -> Results {
    let duration = Duration::from_secs(seconds);
    match load {
        Load::Closed(c) => load::closed_loop(client, target, c, duration).await,
        Load::Open(rate) => {
            load::open_loop(client, target, rate, (concurrency * 8).max(256), duration).await
        }
    }
}

impl Bench<'_> {
    /// Warm-up, then a measured window; adds a row to `table` and returns the results.
    async fn scenario(
        &mut self,
        table: &mut Table,
        label: &str,
        target: &Arc<Target>,
        load: Load,
    ) -> Results {
        let what = match load {
            Load::Closed(c) => format!("closed loop, {c} conns"),
            Load::Open(rate) => format!("open loop, {rate:.0} req/s"),
        };
        crate::progress(&format!(
            "part B: {label}, {what} ({} s + {} s)",
            self.options.warmup_seconds, self.options.seconds
        ));
        let client = load::client();
        let warmup = window(
            &client,
            target,
            load,
            self.options.warmup_seconds,
            self.options.concurrency,
        )
        .await;
        let cpu = Cpu::start(self.weir_pid, self.mock_pid);
        let results = window(
            &client,
            target,
            load,
            self.options.seconds,
            self.options.concurrency,
        )
        .await;
        let ([cpu_weir, cpu_mock, cpu_bench], weir_seconds) = cpu.finish();
        // 1/100 s clock ticks: at least a few thousand requests make this figure meaningful.
        let per_request = match weir_seconds {
            Some(s) if results.ok > 0 => format!("{:.0}", s * 1e6 / results.ok as f64),
            _ => "n/a".to_owned(),
        };
        let errors = warmup.errors + results.errors;
        if let Some(e) = results.first_error.as_ref().or(warmup.first_error.as_ref()) {
            crate::progress(&format!("part B: {label}: {errors} error(s); first: {e}"));
        }
        self.errors += errors;
        table.row(vec![
            label.to_owned(),
            what,
            format!("{:.0}", results.rate()),
            us_int(percentile(&results.latencies, 50.0), 0),
            us_int(percentile(&results.latencies, 99.0), 0),
            results.ok.to_string(),
            errors.to_string(),
            cpu_weir,
            per_request,
            cpu_mock,
            cpu_bench,
        ]);
        results
    }
}

/// How much later `slower` answered than `base` at percentile `p`, e.g. `+143 µs`.
fn added_latency(slower: &Results, base: &Results, p: f64) -> String {
    let (a, b) = (
        percentile(&slower.latencies, p) as f64,
        percentile(&base.latencies, p) as f64,
    );
    format!("{:+.0} µs", (a - b) / 1000.0)
}

/// Runs part B; returns its table and the number of failed requests.
pub async fn run(options: &Options) -> anyhow::Result<(Table, u64)> {
    let weir_bin = binary(options.weir_bin.as_ref(), "weir")?;
    let mock_bin = binary(options.mock_bin.as_ref(), "weir-mock-upstream")?;
    let scratch = Scratch::new("weir-bench")?;

    let mock_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let weir_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let config = scratch.0.join("weir.yaml");
    std::fs::write(&config, gateway_config(weir_addr, mock_addr))?;

    let mock = Child::start(
        "part B",
        "weir-mock-upstream",
        &mock_bin,
        &["--listen".into(), mock_addr.to_string()],
        &scratch.0,
        mock_addr,
    )
    .await?;
    let weir_args = [
        "--config".to_owned(),
        config.display().to_string(),
        "--data-dir".to_owned(),
        scratch.0.join("data").display().to_string(),
        "--listen".to_owned(),
        weir_addr.to_string(),
    ];
    let mut weir = Child::start(
        "part B", "weir", &weir_bin, &weir_args, &scratch.0, weir_addr,
    )
    .await?;

    let body = crate::chat_body();
    let target = |addr: SocketAddr, prefix: &str, vary: bool| -> anyhow::Result<Arc<Target>> {
        Ok(Arc::new(Target {
            uri: format!("http://{addr}{prefix}/v1/chat/completions").parse()?,
            authorization: HeaderValue::from_str(&format!("Bearer {}", crate::BENCH_KEY))?,
            body: body.clone(),
            vary,
            events: None,
        }))
    };
    let at = |addr: SocketAddr, prefix: &str| target(addr, prefix, false);
    let (to_mock, to_weir) = (at(mock_addr, "")?, at(weir_addr, "")?);
    let (routed, failover) = (at(weir_addr, "/routed")?, at(weir_addr, "/failover")?);
    let plain = target(weir_addr, "/plain", true)?;
    let (exact_miss, exact_hit) = (target(weir_addr, "/exact", true)?, at(weir_addr, "/exact")?);
    let semantic_hit = at(weir_addr, "/semantic")?;
    // MCP: a `tools/call` of `add`, to the mock's MCP server directly and through an MCP proxy;
    // the same call through the translator, against the mock's REST endpoint directly.
    let call = Bytes::from_static(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}"#,
    );
    let post = |uri: String, body: &Bytes| -> anyhow::Result<Arc<Target>> {
        Ok(Arc::new(Target {
            uri: uri.parse()?,
            authorization: HeaderValue::from_str(&format!("Bearer {}", crate::BENCH_KEY))?,
            body: body.clone(),
            vary: false,
            events: None,
        }))
    };
    let mcp_direct = post(format!("http://{mock_addr}/mcp"), &call)?;
    let mcp_proxied = post(format!("http://{weir_addr}/mcp"), &call)?;
    let rest_direct = post(
        format!("http://{mock_addr}/rest/add"),
        &Bytes::from_static(br#"{"a":1,"b":2}"#),
    )?;
    let rest_translated = post(format!("http://{weir_addr}/rest"), &call)?;
    let probe = load::client();
    load::send(&probe, &to_mock)
        .await
        .map_err(|e| anyhow::anyhow!("the mock's answer to a probe: {e}"))?;
    for t in [&mcp_direct, &rest_direct] {
        load::send(&probe, t)
            .await
            .map_err(|e| anyhow::anyhow!("the mock's answer to a probe of {}: {e}", t.uri))?;
    }
    for t in [
        &to_weir,
        &routed,
        &failover,
        &plain,
        &mcp_proxied,
        &rest_translated,
    ] {
        if let Err(e) = load::send(&probe, t).await {
            anyhow::bail!(
                "weir's answer to a probe of {}: {e}\nweir's log:\n{}",
                t.uri,
                weir.log_tail()
            );
        }
    }
    // The cache rows measure what they say: a new question is a miss, an old one a hit.
    for (t, expected) in [
        (&exact_miss, ["miss", "miss"]),
        (&exact_hit, ["miss", "hit"]),
        (&semantic_hit, ["miss", "hit"]),
    ] {
        for want in expected {
            let got = load::send_reading(&probe, t, Some("x-weir-cache"))
                .await
                .map_err(|e| anyhow::anyhow!("weir's answer to a probe of {}: {e}", t.uri))?;
            anyhow::ensure!(
                got == want,
                "a probe of {} answered x-weir-cache: {got:?}, expected {want:?}\nweir's log:\n{}",
                t.uri,
                weir.log_tail()
            );
        }
    }
    drop(probe);

    let mut table = Table::new(
        "B. End-to-end over HTTP (mock provider; weir with auth + token-limit unless the row says otherwise)",
        &[
            "target",
            "load",
            "req/s",
            "p50 µs",
            "p99 µs",
            "200s",
            "errors",
            "CPU weir",
            "weir CPU µs/req",
            "CPU mock",
            "CPU bench",
        ],
        2,
    );
    let mut bench = Bench {
        options,
        weir_pid: weir.process.id(),
        mock_pid: mock.process.id(),
        errors: 0,
    };
    let c = options.concurrency.max(1);
    let direct = bench
        .scenario(&mut table, "(a) mock, direct", &to_mock, Load::Closed(c))
        .await;
    let through = bench
        .scenario(&mut table, "(b) through weir", &to_weir, Load::Closed(c))
        .await;
    let rate = (through.rate() / 2.0).max(1.0);
    let mock_half = bench
        .scenario(&mut table, "(c) mock, direct", &to_mock, Load::Open(rate))
        .await;
    let weir_half = bench
        .scenario(&mut table, "(c) through weir", &to_weir, Load::Open(rate))
        .await;
    // One connection: the latency of a lone request, without queueing.
    let one_target = bench
        .scenario(
            &mut table,
            "(d) weir, router, 1 target",
            &routed,
            Load::Closed(1),
        )
        .await;
    let failed_over = bench
        .scenario(
            &mut table,
            "(d) weir, router, failover after a 503",
            &failover,
            Load::Closed(1),
        )
        .await;
    // One connection again: a lone request's latency without a cache, with a miss, with hits.
    let uncached = bench
        .scenario(&mut table, "(e) weir, auth", &plain, Load::Closed(1))
        .await;
    let missed = bench
        .scenario(
            &mut table,
            "(e) weir, auth + cache, exact miss",
            &exact_miss,
            Load::Closed(1),
        )
        .await;
    let exact = bench
        .scenario(
            &mut table,
            "(e) weir, auth + cache, exact hit",
            &exact_hit,
            Load::Closed(1),
        )
        .await;
    let semantic = bench
        .scenario(
            &mut table,
            "(e) weir, auth + cache, semantic hit",
            &semantic_hit,
            Load::Closed(1),
        )
        .await;
    let exact_many = bench
        .scenario(
            &mut table,
            "(f) weir, auth + cache, exact hit",
            &exact_hit,
            Load::Closed(c),
        )
        .await;

    // One connection: a lone tool call's latency.
    let mcp_alone = bench
        .scenario(
            &mut table,
            "(g) MCP server (mock), direct: tools/call",
            &mcp_direct,
            Load::Closed(1),
        )
        .await;
    let mcp_through = bench
        .scenario(
            &mut table,
            "(g) weir MCP proxy, auth: tools/call",
            &mcp_proxied,
            Load::Closed(1),
        )
        .await;
    let rest_alone = bench
        .scenario(
            &mut table,
            "(g) REST endpoint (mock), direct",
            &rest_direct,
            Load::Closed(1),
        )
        .await;
    let translated = bench
        .scenario(
            &mut table,
            "(g) weir, auth + mcp-translator: tools/call -> REST",
            &rest_translated,
            Load::Closed(1),
        )
        .await;

    if let Some(status) = weir.process.try_wait()? {
        anyhow::bail!(
            "weir exited during the benchmark ({status}):\n{}",
            weir.log_tail()
        );
    }
    let added = |p: f64| added_latency(&weir_half, &mock_half, p);
    table.note(format!(
        "Latency added by weir at {rate:.0} req/s (half of (b)'s maximum), vs the mock alone at the same rate: \
         p50 {}, p99 {}.",
        added(50.0),
        added(99.0)
    ));
    table.note(format!(
        "Closed-loop throughput: weir reaches {:.0}% of the mock's direct rate ({:.0} vs {:.0} req/s).",
        through.rate() / direct.rate().max(1e-9) * 100.0,
        through.rate(),
        direct.rate()
    ));
    let failover_added = |p: f64| added_latency(&failed_over, &one_target, p);
    table.note(format!(
        "Failover (d): auth + router (breaker off); the first target answers 503 at once, the second 200. \
         Added over one target that answers: p50 {}, p99 {} (a second upstream round trip and the attempt \
         bookkeeping; a real provider's time to fail comes on top).",
        failover_added(50.0),
        failover_added(99.0)
    ));
    let vs_uncached = |r: &Results, p: f64| added_latency(r, &uncached, p);
    table.note(format!(
        "Cache (e), one connection, against auth alone (each request new, so the provider answers every one): \
         an exact miss adds p50 {}, p99 {} (hashing the request, one KV lookup, storing the answer); an exact \
         hit answers in p50 {} / p99 {} µs and a semantic hit (exact layer off; the mock's `mock-words` \
         embeddings over HTTP, the in-memory index, the word check) in p50 {} / p99 {} µs, without the provider. \
         (f): exact hits at {} connections: {:.0}% of (b)'s rate (auth + token-limit to the provider).",
        vs_uncached(&missed, 50.0),
        vs_uncached(&missed, 99.0),
        us_int(percentile(&exact.latencies, 50.0), 0),
        us_int(percentile(&exact.latencies, 99.0), 0),
        us_int(percentile(&semantic.latencies, 50.0), 0),
        us_int(percentile(&semantic.latencies, 99.0), 0),
        c,
        exact_many.rate() / through.rate().max(1e-9) * 100.0,
    ));
    table.note(format!(
        "MCP (g), one connection: a `tools/call` through an MCP proxy with auth adds p50 {}, p99 {} over calling \
         the mock's MCP server directly; through the translator (auth + mcp-translator, the call made a REST \
         request through the policy's http-client) it adds p50 {}, p99 {} over calling the REST endpoint directly.",
        added_latency(&mcp_through, &mcp_alone, 50.0),
        added_latency(&mcp_through, &mcp_alone, 99.0),
        added_latency(&translated, &rest_alone, 50.0),
        added_latency(&translated, &rest_alone, 99.0),
    ));
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    table.note(format!(
        "{cores} cores shared by weir, the mock and this load generator (one Tokio runtime, {} worker thread(s)). \
         CPU columns are % of one core during the window (Linux /proc); weir alone on a machine would go further.",
        tokio::runtime::Handle::current().metrics().num_workers()
    ));
    table.note(format!(
        "Each run: {} s warm-up then {} s measured; HTTP/1.1 keep-alive; POST /v1/chat/completions, {} B JSON body, \
         non-streaming, max_tokens 32, `Authorization: Bearer <key>`; every answer must be a 200.",
        options.warmup_seconds,
        options.seconds,
        body.len()
    ));
    table.note(format!(
        "Open loop: requests sent on a fixed schedule whatever the answers (1 ms timer granularity, so in small \
         bursts); latency from the actual send. Send lag behind the schedule, p99: mock {} µs, weir {} µs.",
        us_int(percentile(&mock_half.send_lag, 99.0), 0),
        us_int(percentile(&weir_half.send_lag, 99.0), 0),
    ));
    let errors = bench.errors;
    drop(weir);
    drop(mock);
    Ok((table, errors))
}
