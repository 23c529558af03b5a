//! `test-policy`: a deliberately misbehaving policy for the host's tests (never deploy it).
//!
//! `mode` chooses what it does in on-request:
//! - `trap`: panics (a wasm trap);
//! - `loop`: spins forever (the host's epoch deadline must stop it);
//! - `oom`: allocates until the memory limit (the allocation failure aborts);
//! - `probe`: checks that nothing of an earlier request is visible (guest globals, context
//!   attributes) and refuses with `isolation_breach` if it is; otherwise remembers this request in
//!   a global and an attribute, and tags the upstream request with `x-weir-probe`;
//! - `fetch`: GETs `url` through the host's `http-client` and passes its status upstream as
//!   `x-weir-fetch-status`, or refuses with 403 `fetch_denied` / 502 `fetch_failed`;
//! - `noop`: does nothing (measures the bare cost of a policy).

use std::sync::Mutex;

use serde::Deserialize;
use weir_policy_sdk::{Context, Edits, Message, Phase, Policy, Verdict};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub mode: Mode,
    /// For `fetch`.
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Trap,
    Loop,
    Oom,
    Probe,
    Fetch,
    Noop,
}

static LAST_REQUEST: Mutex<Option<String>> = Mutex::new(None);

#[derive(Debug)]
pub struct TestPolicy;

impl Policy for TestPolicy {
    type Config = Config;
    const NAME: &'static str = "test-policy";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const PHASES: &'static [Phase] = &[Phase::Request];

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
            Mode::Noop => Verdict::proceed(),
        }
    }
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
    Verdict::Continue(Edits {
        set_headers: vec![("x-weir-probe".into(), format!("{id};{body_len}"))],
        remove_headers: Vec::new(),
        body: None,
    })
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
        Ok(resp) => Verdict::Continue(Edits {
            set_headers: vec![("x-weir-fetch-status".into(), resp.status.to_string())],
            remove_headers: Vec::new(),
            body: None,
        }),
        Err(HttpError::Denied(m)) => Verdict::deny(403, "fetch_denied", m),
        Err(HttpError::Timeout) => Verdict::deny(502, "fetch_failed", "timed out"),
        Err(HttpError::Failed(m)) => Verdict::deny(502, "fetch_failed", m),
    }
}

weir_policy_sdk::export_policy!(TestPolicy);
