//! Part A: the cost of policies per request, in-process.
//!
//! The components embedded in `weir-policies` are loaded once into a [`Runtime`] with the
//! gateway's default [`RuntimeOptions`] (pooling allocator, epoch deadline, 64 MiB memory limit)
//! and an in-memory key-value store. For each chain, requests are run one after the other on the
//! Tokio runtime; one sample is `ChainRun::new` + the phases + dropping the run, i.e. fresh
//! instances of every policy of the chain, their calls, and the instances' return to the pool,
//! as the gateway does per request. The request is the ~2 KB chat completion of part B with
//! `Authorization: Bearer <key>`; `token-limit` gets limits that are never reached, and its
//! on-complete settles a 532-token usage.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use weir_core::{Phase, StreamEvent};
use weir_runtime::{
    ChainRun, ChainSpec, CompletionInfo, MessageView, Outcome, Policy, RequestState, RouteKind,
    Runtime, RuntimeOptions, SlotSpec,
};
use weir_state::{KvStore, MemoryStore, Namespaced};

use crate::table::{Table, mean, percentile, us, us_int};

mod beyond;

#[derive(Debug, Clone, clap::Args)]
#[group(id = "policies-options")]
pub struct Options {
    /// Part A: measured requests per chain.
    #[arg(long, default_value_t = 20_000)]
    pub iterations: usize,
    /// Part A: unmeasured requests run first per chain.
    #[arg(long, default_value_t = 2_000)]
    pub warmup_iterations: usize,
    /// Part A: also measure the conformance policy in JavaScript and in Python
    /// (`conformance-js.wasm`, `conformance-py.wasm` of this directory, written by
    /// `scripts/build-language-policies.sh`).
    #[arg(long)]
    pub language_policies: Option<std::path::PathBuf>,
    /// Part A: measured requests per language policy (each costs milliseconds).
    #[arg(long, default_value_t = 200)]
    pub language_iterations: usize,
    /// Part A: also measure token-limit and auth + token-limit with their state in Redis at this
    /// URL (`redis://127.0.0.1:6379/0`), or `local` to start a `redis-server` from the PATH on a
    /// free port for the run. Keys are prefixed `weir-bench:`.
    #[arg(long)]
    pub redis: Option<String>,
    /// Part A: measure only the chains whose label contains this text (e.g. `noop`, to profile
    /// one chain with `perf record`).
    #[arg(long)]
    pub only: Option<String>,
    /// Part A: do not pre-initialise the components that ask for it (measures what each
    /// request costs when it parses and prepares the configuration itself, as before).
    #[arg(long)]
    pub no_preinitialise: bool,
}

/// A `redis-server` started for the run (stopped when dropped).
struct LocalRedis(std::process::Child);

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Redis to use: `url`, or a local `redis-server` started now for `local`.
fn redis_url(url: &str) -> anyhow::Result<(String, Option<LocalRedis>)> {
    if url != "local" {
        return Ok((url.to_owned(), None));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting `redis-server` (apt-get install redis-server, or pass --redis URL)")?;
    let guard = LocalRedis(child);
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "redis-server did not listen on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok((format!("redis://127.0.0.1:{port}/0"), Some(guard)))
}

/// One measured chain.
struct Case {
    label: &'static str,
    policies: &'static [&'static str],
    /// Whether on-complete is run too (after on-request).
    complete: bool,
    /// The consumer already known (as if authenticated before the chain).
    consumer: Option<&'static str>,
    /// Events of a streamed answer each policy sees after on-request (then on-stream-end).
    stream_events: usize,
    /// The chain answers the request itself (a cache hit): an answer is stored first, by one
    /// request and its response phase, and every measured request must be answered.
    answers: bool,
    /// The response phase runs too (after on-request, before on-complete), with a ~1 KB
    /// answer; each request is a new one (a `seed` in its body), so a cache misses and stores.
    response: bool,
}

const CASES: &[Case] = &[
    Case {
        label: "empty chain (host overhead only)",
        policies: &[],
        complete: true,
        consumer: None,
        stream_events: 0,
        answers: false,
        response: false,
    },
    Case {
        label: "test-policy `noop` (bare instance + call)",
        policies: &["test-policy"],
        complete: false,
        consumer: None,
        stream_events: 0,
        answers: false,
        response: false,
    },
    Case {
        label: "test-policy `noop`, every phase of a non-streamed request (3 calls)",
        policies: &["test-policy"],
        complete: true,
        consumer: None,
        stream_events: 0,
        answers: false,
        response: true,
    },
    Case {
        label: "auth",
        policies: &["auth"],
        complete: false,
        consumer: None,
        stream_events: 0,
        answers: false,
        response: false,
    },
    Case {
        label: "token-limit",
        policies: &["token-limit"],
        complete: true,
        consumer: Some("bench"),
        stream_events: 0,
        answers: false,
        response: false,
    },
    Case {
        label: "auth + token-limit",
        policies: &["auth", "token-limit"],
        complete: true,
        consumer: None,
        stream_events: 0,
        answers: false,
        response: false,
    },
    Case {
        label: "pii (all built-in entities)",
        policies: &["pii"],
        complete: false,
        consumer: None,
        stream_events: 0,
        answers: false,
        response: false,
    },
    Case {
        label: "guardrail (10 rules)",
        policies: &["guardrail"],
        complete: false,
        consumer: None,
        stream_events: 0,
        answers: false,
        response: false,
    },
    Case {
        label: "prompt (decorators)",
        policies: &["prompt"],
        complete: false,
        consumer: None,
        stream_events: 0,
        answers: false,
        response: false,
    },
    Case {
        label: "router (weighted, 3 targets, circuit breaker)",
        policies: &["router"],
        complete: true,
        consumer: None,
        stream_events: 0,
        answers: false,
        response: false,
    },
    Case {
        label: "cache (exact layer, miss: key, lookup, pending entry)",
        policies: &["cache"],
        complete: true,
        consumer: Some("bench"),
        stream_events: 0,
        answers: false,
        response: false,
    },
    Case {
        label: "cache (exact layer, miss, with the response phase: the answer stored)",
        policies: &["cache"],
        complete: true,
        consumer: Some("bench"),
        stream_events: 0,
        answers: false,
        response: true,
    },
    Case {
        label: "cache (exact layer, hit: the stored answer)",
        policies: &["cache"],
        complete: false,
        consumer: Some("bench"),
        stream_events: 0,
        answers: true,
        response: false,
    },
    Case {
        label: "auth + pii + guardrail + prompt + token-limit",
        policies: &["auth", "pii", "guardrail", "prompt", "token-limit"],
        complete: true,
        consumer: None,
        stream_events: 0,
        answers: false,
        response: false,
    },
    Case {
        label: "pii + guardrail, 32-event stream",
        policies: &["pii", "guardrail"],
        complete: false,
        consumer: None,
        stream_events: 32,
        answers: false,
        response: false,
    },
    Case {
        label: "auth + pii + guardrail + prompt + token-limit, 32-event stream",
        policies: &["auth", "pii", "guardrail", "prompt", "token-limit"],
        complete: true,
        consumer: None,
        stream_events: 32,
        answers: false,
        response: false,
    },
    Case {
        label: "part E's full pipeline (cache miss), with the response phase",
        policies: &[
            "auth",
            "pii",
            "guardrail",
            "prompt",
            "cache",
            "router",
            "token-limit",
        ],
        complete: true,
        consumer: None,
        stream_events: 0,
        answers: false,
        response: true,
    },
];

/// The request of the stream cases: the 2 KB request with an e-mail address in it, so `pii`
/// masks and then restores in every event.
fn stream_event(i: usize) -> StreamEvent {
    let text = if i % 8 == 3 {
        " [EMAIL_1] "
    } else {
        " and some more words"
    };
    StreamEvent {
        index: i as u32,
        data: format!(
            r#"{{"id":"c","object":"chat.completion.chunk","created":1,"model":"mock-gpt","choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":null}}]}}"#
        ),
        text: Some(text.to_owned()),
        finish_reason: None,
    }
}

/// The guardrail configuration of the benchmark: ten rules, six of them on the request.
const GUARDRAIL_CONFIG: &str = r#"{"rules":[
  {"id":"injection","kind":"injection"},
  {"id":"no-keys","kind":"regex","patterns":["sk-[A-Za-z0-9]{20,}","AKIA[0-9A-Z]{16}"]},
  {"id":"no-passwords","kind":"regex","patterns":["(?i)password\\s*[:=]"]},
  {"id":"banned-words","kind":"regex","patterns":["(?i)\\b(?:darkweb|exploit kit)\\b"],"action":"flag"},
  {"id":"size","kind":"length","max-words":5000,"max-sentences":500},
  {"id":"topic","kind":"regex","mode":"allow-list","patterns":["."],"case-insensitive":true},
  {"id":"answer-words","kind":"regex","applies-to":"response","patterns":["(?i)forbidden phrase"]},
  {"id":"answer-length","kind":"length","applies-to":"response","max-chars":100000},
  {"id":"links","kind":"url","allowed-hosts":["docs.example.com"]},
  {"id":"shape","kind":"json-schema","from-request":true}
]}"#;

/// The router configuration of the benchmark: a content route that does not apply, then a
/// weighted route over three targets, each checked against its circuit breaker (memory store).
const ROUTER_CONFIG: &str = r#"{"routes":[
  {"name":"long","when":{"min-prompt-tokens":100000},"targets":[{"provider":"big"}]},
  {"name":"main","targets":[
    {"provider":"a","model":"m1","weight":3},
    {"provider":"b","model":"m2","weight":1},
    {"provider":"c","model":"m3","weight":0}]}
]}"#;

/// Component bytes and configuration of a policy.
fn policy_source(name: &str) -> anyhow::Result<(&'static [u8], String)> {
    Ok(match name {
        "test-policy" => (weir_policies::TEST_POLICY, r#"{"mode":"noop"}"#.to_owned()),
        "auth" => (
            weir_policies::AUTH,
            format!(
                r#"{{"consumers":[{{"id":"bench","key-sha256":"{}"}}]}}"#,
                crate::sha256_hex(crate::BENCH_KEY)
            ),
        ),
        "pii" => (weir_policies::PII, "{}".to_owned()),
        "guardrail" => (weir_policies::GUARDRAIL, GUARDRAIL_CONFIG.to_owned()),
        "prompt" => (
            weir_policies::PROMPT,
            r#"{"prepend":[{"role":"system","content":"You are ACME's assistant."}],"append":[{"role":"user","content":"Answer in English."}]}"#
                .to_owned(),
        ),
        "router" => (weir_policies::ROUTER, ROUTER_CONFIG.to_owned()),
        "cache" => (weir_policies::CACHE, r#"{"exact":{"ttl-s":3600}}"#.to_owned()),
        "mcp-guard" => (weir_policies::MCP_GUARD, "{}".to_owned()),
        "token-limit" => (
            weir_policies::TOKEN_LIMIT,
            r#"{"tokens-per-minute":1000000000000000,"requests-per-minute":1000000000000000}"#
                .to_owned(),
        ),
        other => anyhow::bail!("unknown policy `{other}`"),
    })
}

fn request_state(i: usize, consumer: Option<&str>) -> RequestState {
    RequestState {
        request_id: format!("bench-{i}"),
        route: "bench".into(),
        route_kind: RouteKind::Llm,
        endpoint: "chat/completions".into(),
        consumer: consumer.map(str::to_owned),
        attributes: Default::default(),
        llm: Some(weir_llm::LlmRequestInfo {
            model: Some("mock-gpt".into()),
            max_tokens: Some(32),
            stream: false,
            client_wants_stream_usage: false,
            estimated_prompt_tokens: 500,
            ..Default::default()
        }),
        received_at_ms: 1_700_000_000_000,
    }
}

fn message(body: &bytes::Bytes) -> MessageView {
    let header = |n: &str, v: &str| (n.to_owned(), v.to_owned());
    MessageView {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        status: 0,
        headers: vec![
            header("host", "127.0.0.1:8080"),
            header("user-agent", "weir-bench"),
            header("content-type", "application/json"),
            header("accept", "application/json"),
            header("authorization", &format!("Bearer {}", crate::BENCH_KEY)),
        ],
        body: body.clone(),
    }
}

fn completion() -> CompletionInfo {
    CompletionInfo {
        status: 200,
        outcome: Outcome::Success,
        model: Some("mock-gpt".into()),
        usage: Some(weir_llm::Usage {
            prompt_tokens: 500,
            completion_tokens: 32,
            total_tokens: 532,
            cached_prompt_tokens: 0,
        }),
        latency_ms: 5,
        error: None,
        // One answered attempt (the router's on-complete records it against its breaker).
        attempts: vec![weir_core::Attempt {
            provider: "a".into(),
            model: Some("m1".into()),
            status: Some(200),
            error: None,
            latency_ms: 4,
            billed: true,
        }],
    }
}

/// The stream phases of one answer: each event through the policies that take part, in reverse
/// chain order (as the core does), then on-stream-end.
async fn stream(run: &mut ChainRun, events: usize) -> anyhow::Result<()> {
    use weir_core::Chain as _;
    for e in 0..events {
        let event = stream_event(e);
        for i in (0..run.len()).rev() {
            if run.wants(i, Phase::StreamChunk) {
                run.on_stream_chunk(i, &event).await?;
            }
        }
    }
    for i in (0..run.len()).rev() {
        if run.wants(i, Phase::StreamEnd) {
            run.on_stream_end(i).await?;
        }
    }
    Ok(())
}

/// The upstream's answer of the response phase: a chat completion of 32 words.
fn answer() -> MessageView {
    let answer = serde_json::json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "mock-gpt",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "mock ".repeat(32)}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 500, "completion_tokens": 32, "total_tokens": 532},
    });
    MessageView {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: bytes::Bytes::from(answer.to_string()),
        ..MessageView::default()
    }
}

/// `body` with a `seed` no other request of the run has: a new request for a cache.
fn new_request(body: &bytes::Bytes) -> bytes::Bytes {
    static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let seed = SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let object = body.strip_suffix(b"}").unwrap_or(body);
    let mut out = Vec::with_capacity(object.len() + 32);
    out.extend_from_slice(object);
    out.extend_from_slice(format!(",\"seed\":{seed}}}").as_bytes());
    bytes::Bytes::from(out)
}

/// One request and its response phase with an answer (what a cache stores on a miss).
async fn store_answer(
    spec: &Arc<ChainSpec>,
    case: &Case,
    body: &bytes::Bytes,
) -> anyhow::Result<()> {
    let mut run = ChainRun::new(spec.clone(), request_state(usize::MAX, case.consumer));
    let mut msg = message(body);
    let mut admission = weir_core::chain::Admission::default();
    if let Some(stop) = weir_core::chain::request_phase(&mut run, &mut msg, &mut admission).await? {
        anyhow::bail!("the first request was not let through: {stop:?}");
    }
    let mut response = answer();
    let len = {
        use weir_core::Chain as _;
        run.len()
    };
    weir_core::chain::response_phase(&mut run, &mut response, len).await?;
    Ok(())
}

/// Runs `n` requests through `spec`; the duration of each in nanoseconds, sorted.
async fn measure(
    spec: &Arc<ChainSpec>,
    case: &Case,
    n: usize,
    body: &bytes::Bytes,
) -> anyhow::Result<Vec<u64>> {
    let info = completion();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let state = request_state(i, case.consumer);
        let mut msg = if case.response {
            message(&new_request(body))
        } else {
            message(body)
        };
        let mut response = case.response.then(answer);
        let started = Instant::now();
        let mut run = ChainRun::new(spec.clone(), state);
        let mut admission = weir_core::chain::Admission::default();
        let decision = weir_core::chain::request_phase(&mut run, &mut msg, &mut admission).await;
        if let Some(response) = &mut response
            && matches!(decision, Ok(None))
        {
            let len = {
                use weir_core::Chain as _;
                run.len()
            };
            weir_core::chain::response_phase(&mut run, response, len)
                .await
                .with_context(|| format!("{}: response of request {i}", case.label))?;
        }
        if case.stream_events > 0 && matches!(decision, Ok(None)) {
            stream(&mut run, case.stream_events)
                .await
                .with_context(|| format!("{}: stream of request {i}", case.label))?;
        }
        let errors = if case.complete && matches!(decision, Ok(None)) {
            weir_core::chain::complete_phase(&mut run, &info).await
        } else {
            Vec::new()
        };
        drop(run);
        let elapsed = started.elapsed();
        match decision.with_context(|| format!("{}: request {i}", case.label))? {
            Some(weir_core::chain::Stop::Answer { .. }) if case.answers => {}
            Some(stop) => {
                anyhow::bail!("{}: request {i} was not let through: {stop:?}", case.label)
            }
            None if case.answers => anyhow::bail!("{}: request {i} was not answered", case.label),
            None => {}
        }
        if let Some(e) = errors.first() {
            anyhow::bail!("{}: on-complete of request {i} failed: {e}", case.label);
        }
        samples.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }
    samples.sort_unstable();
    Ok(samples)
}

/// Runs part A and returns its table.
pub async fn run(options: &Options) -> anyhow::Result<Table> {
    crate::progress("part A: loading the policy components (compiling, not measured)");
    let runtime =
        Runtime::new(RuntimeOptions::default()).context("creating the wasmtime runtime")?;
    let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::new(1_000_000));
    let mut loaded: Vec<(&str, Arc<Policy>, String)> = Vec::new();
    for name in [
        "test-policy",
        "auth",
        "token-limit",
        "pii",
        "guardrail",
        "prompt",
        "router",
        "cache",
        "mcp-guard",
    ] {
        let (bytes, config) = policy_source(name)?;
        let policy = runtime
            .load(name, bytes)
            .with_context(|| format!("loading `{name}`"))?;
        if let Err((path, message)) = policy
            .validate_config(&config)
            .await
            .with_context(|| format!("validating `{name}`"))?
        {
            anyhow::bail!("`{name}` rejects its benchmark configuration at `{path}`: {message}");
        }
        loaded.push((name, policy, config));
    }

    let body = crate::chat_body();
    let mut table = Table::new(
        "A. Per-policy cost per request (in-process)",
        &[
            "chain",
            "policies",
            "phases",
            "median µs",
            "p99 µs",
            "mean µs",
            "median µs / policy",
        ],
        3,
    );
    // The stream cases' request has an e-mail address for `pii` to mask and restore.
    let stream_body = bytes::Bytes::from(String::from_utf8_lossy(&body).replacen(
        "lazy dog",
        "lazy dog of jane@example.com",
        1,
    ));
    let chosen = |label: &str| options.only.as_deref().is_none_or(|o| label.contains(o));
    for (c, case) in CASES.iter().enumerate() {
        if !chosen(case.label) {
            continue;
        }
        let body = if case.stream_events > 0 {
            &stream_body
        } else {
            &body
        };
        measure_case(c, case, case.label, &kv, &loaded, options, body, &mut table).await?;
    }
    if chosen("mcp-guard") {
        beyond::mcp_guard(&kv, &loaded, options, &mut table).await?;
    }
    if let Some(url) = &options.redis {
        let (url, _local) = redis_url(url)?;
        crate::progress(&format!(
            "part A: the same chains with their state in Redis ({url})"
        ));
        let redis: Arc<dyn KvStore> = Arc::new(
            weir_state::RedisStore::connect(weir_state::RedisOptions {
                url,
                password: None,
                prefix: "weir-bench:".into(),
                timeout: std::time::Duration::from_millis(250),
                connections: 4,
            })
            .await
            .context("connecting to Redis")?,
        );
        for (c, case) in CASES.iter().enumerate() {
            if case.policies.contains(&"token-limit") {
                let label = format!("{} (Redis kv)", case.label);
                measure_case(c, case, &label, &redis, &loaded, options, &body, &mut table).await?;
            }
        }
    }
    if let Some(dir) = &options.language_policies {
        beyond::languages(&runtime, &kv, dir, options, &body, &mut table).await?;
    }
    table.note(format!(
        "{} measured requests per chain after {} warm-up requests, one at a time on a multi-thread Tokio runtime.",
        options.iterations, options.warmup_iterations
    ));
    table.note(
        "One sample = `ChainRun::new` + on-request (+ the response phase) (+ on-complete) + drop: a fresh instance of each policy from \
         the pooling allocator, its calls, and its return to the pool. Components are compiled once, before.",
    );
    let preinitialised: Vec<&str> = loaded
        .iter()
        .filter(|(_, p, _)| p.preinitialises())
        .map(|(n, _, _)| *n)
        .collect();
    table.note(if options.no_preinitialise {
        format!(
            "`--no-preinitialise`: every instance parses and prepares its configuration (those that ask for a snapshot: {}).",
            preinitialised.join(", ")
        )
    } else {
        format!(
            "Instances of {} start from a snapshot pre-initialised with their configuration (the others parse it in each request).",
            preinitialised.join(", ")
        )
    });
    table.note("Request: the ~2 KB chat completion of part B with `Authorization: Bearer <key>` (5 headers).");
    Ok(table)
}

/// Measures one chain with its state in `kv` and adds its row.
#[expect(clippy::too_many_arguments, reason = "one row of one table")]
async fn measure_case(
    c: usize,
    case: &Case,
    label: &str,
    kv: &Arc<dyn KvStore>,
    loaded: &[(&str, Arc<Policy>, String)],
    options: &Options,
    body: &bytes::Bytes,
    table: &mut Table,
) -> anyhow::Result<()> {
    let mut slots = Vec::new();
    for (i, name) in case.policies.iter().enumerate() {
        let (_, policy, config) = loaded
            .iter()
            .find(|(n, _, _)| n == name)
            .context("policy not loaded")?;
        let instance = format!("proxy:bench{c}/{name}@{i}");
        slots.push(SlotSpec {
            policy: policy.clone(),
            kv: Namespaced::new(kv.clone(), &instance),
            instance,
            route: format!("bench{c}"),
            config_json: config.clone(),
            vectors: None,
            allow_hosts: Vec::new(),
            credential: None,
        });
    }
    let spec = Arc::new(ChainSpec::new(slots));
    // As the server does before serving: entries that ask for it start from a snapshot.
    if spec.wants_preinitialisation() && !options.no_preinitialise {
        let s = spec.clone();
        tokio::task::spawn_blocking(move || s.preinitialise()).await?;
    }
    if case.answers {
        store_answer(&spec, case, body)
            .await
            .with_context(|| format!("{label}: storing the answer"))?;
    }
    crate::progress(&format!(
        "part A: {label} ({} + {} requests)",
        options.warmup_iterations, options.iterations
    ));
    measure(&spec, case, options.warmup_iterations, body).await?;
    let samples = measure(&spec, case, options.iterations.max(1), body).await?;
    let median = percentile(&samples, 50.0);
    let per_policy = if case.policies.is_empty() {
        "–".to_owned()
    } else {
        us(median as f64 / case.policies.len() as f64, 1)
    };
    table.row(vec![
        label.to_owned(),
        case.policies.len().to_string(),
        match (case.stream_events > 0, case.response, case.complete) {
            (true, _, true) => "request + 32 events + end + complete",
            (true, _, false) => "request + 32 events + end",
            (false, true, _) => "request + response + complete",
            (false, false, true) => "request + complete",
            (false, false, false) => "request",
        }
        .to_owned(),
        us_int(median, 1),
        us_int(percentile(&samples, 99.0), 1),
        us(mean(&samples), 1),
        per_policy,
    ]);
    Ok(())
}
