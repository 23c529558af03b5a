//! `test-policy`: one component, many behaviours, for the tests of the hosts (never deploy it).
//! It uses every phase and every interface of `weir:policy@0.2.0`; `mode` chooses what it does:
//!
//! - `trap` (panics: a wasm trap), `loop` (spins until the epoch deadline), `oom` (allocates
//!   until the memory limit), in on-request;
//! - `probe`: checks that nothing of an earlier request is visible (guest globals, context
//!   attributes) and refuses with `isolation_breach` if it is; tags the upstream request with
//!   `x-weir-probe`;
//! - `fetch`: GETs `url` through `http-client`; its status goes upstream as
//!   `x-weir-fetch-status`, or it refuses with 403 `fetch_denied` / 502 `fetch_failed`;
//! - `noop`: nothing (the bare cost of a policy);
//! - `edit`: edits the LLM request: `model` (set-model), `system` (prepends a system message),
//!   `parameters` (set-parameter each);
//! - `observe`: reports on the answer, in `x-test-*` headers, the LLM view it saw in on-request
//!   (`model`, message count, first message, tools), its instance name and its configuration's
//!   `tag`;
//! - `rewrite`: in a stream, replaces `from` with `to` even when `from` is split across events
//!   (holding back a possible beginning of it), emits the released text one word per event, and
//!   releases what it still holds in on-stream-end;
//! - `target`: chooses the upstream targets `targets` (provider, model);
//! - `answer`: answers with `text` from the gateway (`x-weir-cache: hit`);
//! - `vector`: a tiny semantic cache: embeds the last user message with `provider`/`model`,
//!   answers from the vector index `index` on a hit (`x-test-vector: hit`), else stores the
//!   upstream's answer under the embedding in on-response (`x-test-vector: miss`);
//! - `mcp-filter`: refuses `tools/call` of the tools in `deny-tools` (403 `tool_not_allowed`),
//!   and marks answers that carry a JSON-RPC result with `x-test-rpc: result`;
//! - `metrics`: counts requests (`test_requests`) and observes latencies
//!   (`test_latency_seconds`);
//! - `count`: counts requests in kv (`count`) and reports the count in `x-test-count`;
//! - `carry`: tries to carry data from one request to the next (a static counter, a
//!   thread-local, a leaked heap block, the stack pointer global, the memory size, the resource
//!   table's handle numbers) and refuses with `isolation_breach` if it finds any; reports in
//!   `x-test-carry` what a fresh instance must show identically in every request (addresses,
//!   pages, handle) and whether the instance started from a pre-initialised snapshot
//!   (`prepared=1`: the component sets `PREINITIALISE`, and `prepare` leaves a mark only
//!   `validate-config` can leave); on-response reports the counter again (`x-test-carry-calls`:
//!   2, the request's own instance sees its own data) and the mark (`x-test-prepared`: 1 or 0).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

use serde::Deserialize;
use weir_policy_sdk::serde_json;
use weir_policy_sdk::{
    ChatMessage, ChunkVerdict, Completion, Context, Edits, Emission, LlmEdit, Message, Phase,
    Policy, StreamEvent, Verdict, embeddings, kv, metrics, vectors,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub mode: Mode,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub index: Option<String>,
    #[serde(default)]
    pub deny_tools: Vec<String>,
    #[serde(default)]
    pub tag: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub provider: String,
    #[serde(default)]
    pub model: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Trap,
    Loop,
    Oom,
    Probe,
    Fetch,
    Noop,
    Edit,
    Observe,
    Rewrite,
    Target,
    Answer,
    Vector,
    McpFilter,
    Metrics,
    Count,
    Carry,
}

static LAST_REQUEST: Mutex<Option<String>> = Mutex::new(None);

/// What a `carry` instance counts and leaves behind (see `carry`).
static CARRY_CALLS: AtomicU32 = AtomicU32::new(0);
static CARRY_LEAK: AtomicPtr<String> = AtomicPtr::new(std::ptr::null_mut());
/// Set by `prepare`, which only `validate-config` runs: true in a request only when its
/// instance started from a snapshot taken after `validate-config`.
static PREPARED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Text a `rewrite` instance holds back, by instance.
    static HELD: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
    /// The request a `carry` instance served, as a thread-local.
    static CARRY_TLS: RefCell<Option<String>> = const { RefCell::new(None) };
}

#[derive(Debug)]
pub struct TestPolicy;

impl Policy for TestPolicy {
    type Config = Config;
    const NAME: &'static str = "test-policy";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const PHASES: &'static [Phase] = &[
        Phase::Request,
        Phase::Response,
        Phase::StreamChunk,
        Phase::StreamEnd,
        Phase::Complete,
    ];
    const PREINITIALISE: bool = true;

    fn prepare(_config: &Config) {
        PREPARED.store(true, Ordering::Relaxed);
    }

    #[expect(clippy::panic, reason = "trapping is this test policy's job")]
    fn on_request(config: &Config, cx: &Context, request: &Message) -> Verdict {
        match config.mode {
            Mode::Trap => panic!("test-policy: trapping on purpose"),
            Mode::Loop => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Mode::Oom => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Reserve without touching: only growth is tested, not memset speed.
                    hoard.push(Vec::with_capacity(1 << 20));
                    std::hint::black_box(&hoard);
                }
            }
            Mode::Probe => probe(cx, request),
            Mode::Fetch => fetch(config.url.as_deref().unwrap_or_default()),
            Mode::Noop | Mode::Rewrite => Verdict::proceed(),
            Mode::Edit => edit(config),
            Mode::Observe => observe(cx),
            Mode::Target => {
                let mut edits = Edits::none();
                for t in &config.targets {
                    edits = edits.target(&t.provider, t.model.as_deref());
                }
                Verdict::edit(edits)
            }
            Mode::Answer => answer(
                config.text.as_deref().unwrap_or("answered by the gateway"),
                cx,
            ),
            Mode::Vector => vector_lookup(config, cx, request),
            Mode::McpFilter => mcp_filter(config, request),
            Mode::Metrics => {
                metrics::counter_add("test_requests", 1, &[("mode".into(), "metrics".into())]);
                Verdict::proceed()
            }
            Mode::Carry => carry(cx),
            Mode::Count => {
                let n = kv::increment("count", 1, None).map_or(-1, |n| n);
                cx.set_attribute(&format!("{}.count", cx.instance()), &n.to_string());
                Verdict::proceed()
            }
        }
    }

    fn on_response(config: &Config, cx: &Context, response: &Message) -> Verdict {
        match config.mode {
            Mode::Observe => {
                let key = format!("{}.observed", cx.instance());
                let mut edits = Edits::none()
                    .set_header("x-test-instance", cx.instance())
                    .set_header("x-test-tag", config.tag.clone().unwrap_or_default());
                if let Some(seen) = cx.attribute(&key) {
                    for part in seen.split('\n') {
                        if let Some((n, v)) = part.split_once('=') {
                            edits = edits.set_header(&format!("x-test-{n}"), v);
                        }
                    }
                }
                Verdict::edit(edits)
            }
            Mode::Vector => vector_store(config, cx, response),
            Mode::Carry => {
                let calls = CARRY_CALLS.fetch_add(1, Ordering::Relaxed) + 1;
                let prepared = u8::from(PREPARED.load(Ordering::Relaxed));
                Verdict::edit(
                    Edits::none()
                        .set_header("x-test-carry-calls", calls.to_string())
                        .set_header("x-test-prepared", prepared.to_string()),
                )
            }
            Mode::McpFilter => {
                let result = response.rpc().iter().any(|m| m.result.is_some());
                Verdict::edit(
                    Edits::none().set_header("x-test-rpc", if result { "result" } else { "none" }),
                )
            }
            Mode::Count => {
                let n = cx
                    .attribute(&format!("{}.count", cx.instance()))
                    .unwrap_or_default();
                Verdict::edit(Edits::none().set_header("x-test-count", n))
            }
            _ => Verdict::proceed(),
        }
    }

    fn on_stream_chunk(config: &Config, cx: &Context, event: StreamEvent) -> ChunkVerdict {
        if config.mode != Mode::Rewrite {
            return ChunkVerdict::Pass;
        }
        let Some(text) = event.text else {
            return ChunkVerdict::Pass;
        };
        let from = config.from.as_deref().unwrap_or_default();
        let to = config.to.as_deref().unwrap_or_default();
        let release = HELD.with(|h| {
            let mut held = h.borrow_mut();
            let buffer = held.entry(cx.instance()).or_default();
            buffer.push_str(&text);
            let replaced = if from.is_empty() {
                buffer.clone()
            } else {
                buffer.replace(from, to)
            };
            // Hold back the longest end of the text that could begin `from`.
            let keep = (1..from.len().min(replaced.len() + 1))
                .rev()
                .find(|&n| {
                    replaced.is_char_boundary(replaced.len() - n)
                        && from.starts_with(&replaced[replaced.len() - n..])
                })
                .unwrap_or(0);
            let (send, rest) = replaced.split_at(replaced.len() - keep);
            let send = send.to_owned();
            *buffer = rest.to_owned();
            send
        });
        ChunkVerdict::Emit(words(&release))
    }

    fn on_stream_end(config: &Config, cx: &Context) -> ChunkVerdict {
        if config.mode != Mode::Rewrite {
            return ChunkVerdict::Pass;
        }
        let rest = HELD.with(|h| h.borrow_mut().remove(&cx.instance()).unwrap_or_default());
        if rest.is_empty() {
            ChunkVerdict::Pass
        } else {
            ChunkVerdict::Emit(words(&rest))
        }
    }

    fn on_complete(config: &Config, _cx: &Context, done: Completion) {
        if config.mode == Mode::Metrics {
            let outcome = format!("{:?}", done.outcome).to_lowercase();
            metrics::observe(
                "test_latency_seconds",
                done.latency_ms as f64 / 1000.0,
                &[("outcome".into(), outcome)],
            );
        }
    }
}

/// `text` as events of one word each (the spaces stay with the words that follow them).
fn words(text: &str) -> Vec<Emission> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c == ' ' && i > start {
            out.push(Emission::Text(text[start..i].to_owned()));
            start = i;
        }
    }
    if start < text.len() {
        out.push(Emission::Text(text[start..].to_owned()));
    }
    out
}

fn probe(cx: &Context, request: &Message) -> Verdict {
    let id = cx.request_id();
    let mut last = match LAST_REQUEST.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some(previous) = last.as_ref() {
        return Verdict::deny(
            500,
            "isolation_breach",
            format!("guest memory still holds request {previous}"),
        );
    }
    if let Some(previous) = cx.attribute("test-policy.seen") {
        return Verdict::deny(
            500,
            "isolation_breach",
            format!("context holds attribute of {previous}"),
        );
    }
    *last = Some(id.clone());
    cx.set_attribute("test-policy.seen", &id);
    // Touch the body so that a per-request instance really copies it into guest memory.
    let body_len = request.body().len();
    Verdict::edit(Edits::none().set_header("x-weir-probe", format!("{id};{body_len}")))
}

fn carry(cx: &Context) -> Verdict {
    let id = cx.request_id();
    let breach = |what: &str, previous: &str| {
        Verdict::deny(
            500,
            "isolation_breach",
            format!("{what} still holds data of an earlier request: {previous}"),
        )
    };
    let calls = CARRY_CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    if calls != 1 {
        return breach("a static", &format!("{} calls", calls - 1));
    }
    if let Some(previous) = CARRY_TLS.with(|t| t.replace(Some(id.clone()))) {
        return breach("a thread-local", &previous);
    }
    let leaked = CARRY_LEAK.swap(Box::into_raw(Box::new(id)), Ordering::Relaxed);
    if !leaked.is_null() {
        // SAFETY: the only pointers ever stored are from `Box::into_raw` of a `String`.
        #[expect(
            unsafe_code,
            reason = "reading the block an earlier call leaked on purpose"
        )]
        let previous = unsafe { &*leaked };
        return breach("the heap", previous);
    }
    // Identical in every request on a fresh instance: where the allocator puts a new block
    // (the heap's state), where the stack is (the stack-pointer global), the memory's size
    // and the number the resource table gives this request's context handle.
    let block = std::hint::black_box(vec![0u8; 4096]);
    let local = std::hint::black_box(0u64);
    let report = format!(
        "prepared={};heap={:x};stack={:x};pages={};handle={}",
        u8::from(PREPARED.load(Ordering::Relaxed)),
        block.as_ptr() as usize,
        &raw const local as usize,
        memory_pages(),
        cx.handle(),
    );
    Verdict::edit(Edits::none().set_header("x-test-carry", report))
}

/// The size of the instance's memory, in pages (0 in native builds: unit tests).
fn memory_pages() -> usize {
    #[cfg(target_arch = "wasm32")]
    return core::arch::wasm32::memory_size(0);
    #[cfg(not(target_arch = "wasm32"))]
    0
}

fn fetch(url: &str) -> Verdict {
    use weir_policy_sdk::http_client::{self, HttpError, OutgoingRequest};
    let request = OutgoingRequest {
        method: "GET".into(),
        url: url.into(),
        headers: Vec::new(),
        body: None,
        timeout_ms: 2000,
    };
    match http_client::send(&request) {
        Ok(resp) => {
            Verdict::edit(Edits::none().set_header("x-weir-fetch-status", resp.status.to_string()))
        }
        Err(HttpError::Denied(m)) => Verdict::deny(403, "fetch_denied", m),
        Err(HttpError::Timeout) => Verdict::deny(502, "fetch_failed", "timed out"),
        Err(HttpError::Failed(m)) => Verdict::deny(502, "fetch_failed", m),
    }
}

fn edit(config: &Config) -> Verdict {
    let mut edits = Edits::none();
    if let Some(m) = &config.model {
        edits = edits.llm(LlmEdit::SetModel(m.clone()));
    }
    if let Some(s) = &config.system {
        edits = edits.llm(LlmEdit::PrependMessages(vec![ChatMessage::text(
            "system", s,
        )]));
    }
    for (name, value) in &config.parameters {
        edits = edits.llm(LlmEdit::SetParameter(weir_policy_sdk::Parameter {
            name: name.clone(),
            value: value.to_string(),
        }));
    }
    Verdict::edit(edits)
}

fn observe(cx: &Context) -> Verdict {
    let mut seen = Vec::new();
    if let Some(llm) = cx.llm() {
        seen.push(format!("model={}", llm.model.unwrap_or_default()));
        seen.push(format!("messages={}", llm.message_count));
        seen.push(format!("tools={}", llm.tools.join(",")));
        seen.push(format!("stream={}", llm.stream));
    }
    cx.set_attribute(&format!("{}.observed", cx.instance()), &seen.join("\n"));
    Verdict::proceed()
}

fn answer(text: &str, cx: &Context) -> Verdict {
    let model = cx.llm().and_then(|l| l.model).unwrap_or_default();
    let completion = serde_json::json!({
        "id": format!("chatcmpl-{}", cx.request_id()),
        "object": "chat.completion",
        "created": cx.received_at_ms() / 1000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    });
    Verdict::answer(
        completion.to_string(),
        vec![("x-weir-cache".into(), "hit".into())],
    )
}

fn last_user_text(request: &Message) -> Option<String> {
    request
        .chat_messages()
        .into_iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.joined_text())
}

fn vector_lookup(config: &Config, cx: &Context, request: &Message) -> Verdict {
    let (Some(provider), Some(model)) = (&config.provider, &config.model) else {
        return Verdict::deny(500, "test_config", "vector mode needs provider and model");
    };
    let index = config.index.as_deref().unwrap_or("answers");
    let Some(text) = last_user_text(request) else {
        return Verdict::proceed();
    };
    let vector = match embeddings::embed(provider, model, &[text]) {
        Ok(mut v) if !v.is_empty() => v.swap_remove(0),
        Ok(_) => return Verdict::deny(502, "embed_failed", "no vector"),
        Err(e) => return Verdict::deny(502, "embed_failed", format!("{e:?}")),
    };
    match vectors::query(index, &vector, 1, 0.99) {
        Ok(hits) if !hits.is_empty() => {
            let text = String::from_utf8_lossy(&hits[0].metadata).into_owned();
            let Verdict::Answer(mut a) = answer(&text, cx) else {
                return Verdict::proceed();
            };
            a.headers
                .push(("x-test-vector".into(), format!("hit {:.3}", hits[0].score)));
            Verdict::Answer(a)
        }
        Ok(_) => {
            let encoded: Vec<String> = vector.iter().map(f32::to_string).collect();
            cx.set_attribute(&format!("{}.vector", cx.instance()), &encoded.join(","));
            Verdict::proceed()
        }
        Err(e) => Verdict::deny(502, "vector_failed", format!("{e:?}")),
    }
}

fn vector_store(config: &Config, cx: &Context, response: &Message) -> Verdict {
    let Some(encoded) = cx.attribute(&format!("{}.vector", cx.instance())) else {
        return Verdict::proceed();
    };
    let vector: Vec<f32> = encoded.split(',').filter_map(|v| v.parse().ok()).collect();
    let text = response
        .answer()
        .and_then(|a| a.choices.into_iter().next())
        .and_then(|c| c.text)
        .unwrap_or_default();
    let index = config.index.as_deref().unwrap_or("answers");
    let stored = vectors::upsert(
        index,
        &cx.request_id(),
        &vector,
        text.as_bytes(),
        Some(60_000),
    );
    let mark = if stored.is_ok() {
        "miss"
    } else {
        "store-failed"
    };
    Verdict::edit(Edits::none().set_header("x-test-vector", mark))
}

fn mcp_filter(config: &Config, request: &Message) -> Verdict {
    for m in request.rpc() {
        if m.method.as_deref() == Some("tools/call")
            && let Some(tool) = &m.tool_name
            && config.deny_tools.iter().any(|t| t == tool)
        {
            return Verdict::deny(
                403,
                "tool_not_allowed",
                format!("the tool `{tool}` is not allowed on this route"),
            );
        }
    }
    Verdict::proceed()
}

weir_policy_sdk::export_policy!(TestPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_spaces_with_the_next_word() {
        let w: Vec<String> = words(" mock1 MOCK2 x")
            .into_iter()
            .map(|e| match e {
                Emission::Text(t) | Emission::Data(t) => t,
            })
            .collect();
        assert_eq!(w, vec![" mock1", " MOCK2", " x"]);
    }
}
