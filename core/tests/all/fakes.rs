//! A scripted platform and chain for driving the loop without I/O or WebAssembly.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use weir_core::*;

/// Runs a future whose every await is ready at once (the fakes never wait).
pub fn run<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a fake future was not ready"),
    }
}

/// What the fake upstream does for one request.
#[derive(Debug, Clone)]
pub enum Up {
    Answer {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// An answer with extra headers (e.g. `mcp-session-id`).
    Headed(Box<Up>, Vec<(String, String)>),
    Unreachable,
    Timeout,
    /// Answers, but reading the body fails.
    BrokenBody,
    /// A status with these headers (and a small JSON error body).
    Status(u16, Vec<(&'static str, &'static str)>),
    /// Takes this many milliseconds (on the fake clock), then does the same as the other.
    Slow(u64, Box<Up>),
}

impl Up {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::Answer {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(&body).unwrap(),
        }
    }

    pub fn sse(events: &[&str]) -> Self {
        let mut body = String::new();
        for e in events {
            body.push_str("data: ");
            body.push_str(e);
            body.push_str("\n\n");
        }
        Self::Answer {
            status: 200,
            content_type: "text/event-stream",
            body: body.into_bytes(),
        }
    }
}

#[derive(Debug, Default)]
pub struct PlatformState {
    pub replies: VecDeque<Up>,
    pub sent: Vec<UpstreamRequest>,
    pub usage: Vec<UsageRecord>,
    pub denied: Vec<(String, String)>,
    pub warnings: Vec<String>,
    /// The fake monotonic clock: moved by sleeps and slow replies only.
    pub clock: u64,
    /// Every sleep the loop asked for.
    pub sleeps: Vec<u64>,
    /// The clock when each request was sent.
    pub sent_at: Vec<u64>,
    /// The gateway's own state (MCP sessions).
    pub state: std::collections::HashMap<String, Vec<u8>>,
    /// Random ids handed out so far.
    pub randoms: u8,
}

#[derive(Debug, Clone, Default)]
pub struct FakePlatform(pub Rc<RefCell<PlatformState>>);

impl FakePlatform {
    pub fn with(replies: Vec<Up>) -> Self {
        let p = Self::default();
        p.0.borrow_mut().replies = replies.into();
        p
    }

    pub fn usage(&self) -> Vec<UsageRecord> {
        self.0.borrow().usage.clone()
    }

    pub fn sent(&self) -> Vec<UpstreamRequest> {
        self.0.borrow().sent.clone()
    }

    pub fn sleeps(&self) -> Vec<u64> {
        self.0.borrow().sleeps.clone()
    }
}

#[derive(Debug)]
pub enum FakeBody {
    Fine(Vec<u8>),
    Broken,
}

impl Platform for FakePlatform {
    type Body = FakeBody;

    async fn send(
        &self,
        request: UpstreamRequest,
    ) -> Result<UpstreamResponse<FakeBody>, UpstreamFailure> {
        let mut s = self.0.borrow_mut();
        let at = s.clock;
        s.sent_at.push(at);
        let mut reply = s
            .replies
            .pop_front()
            .expect("an upstream reply is scripted");
        while let Up::Slow(ms, then) = reply {
            if ms > request.timeout_ms {
                s.clock += request.timeout_ms;
                s.sent.push(request);
                return Err(UpstreamFailure::Timeout);
            }
            s.clock += ms;
            reply = *then;
        }
        s.sent.push(request);
        let mut extra = Vec::new();
        while let Up::Headed(inner, headers) = reply {
            extra.extend(headers);
            reply = *inner;
        }
        let mut answered = match reply {
            Up::Slow(..) | Up::Headed(..) => unreachable!(),
            Up::Status(status, headers) => Ok(UpstreamResponse {
                status,
                headers: std::iter::once((
                    "content-type".to_owned(),
                    "application/json".to_owned(),
                ))
                .chain(
                    headers
                        .iter()
                        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
                )
                .collect(),
                body: FakeBody::Fine(br#"{"error":{"message":"not now"}}"#.to_vec()),
            }),
            Up::Answer {
                status,
                content_type,
                body,
            } => Ok(UpstreamResponse {
                status,
                headers: vec![("content-type".into(), content_type.into())],
                body: FakeBody::Fine(body),
            }),
            Up::Unreachable => Err(UpstreamFailure::Unreachable(
                "connection refused (os error 111)".into(),
            )),
            Up::Timeout => Err(UpstreamFailure::Timeout),
            Up::BrokenBody => Ok(UpstreamResponse {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: FakeBody::Broken,
            }),
        };
        if let Ok(r) = &mut answered {
            r.headers.extend(extra);
        }
        answered
    }

    async fn read_body(
        &self,
        body: FakeBody,
        max: usize,
        _timeout_ms: u64,
    ) -> Result<Bytes, UpstreamFailure> {
        match body {
            FakeBody::Fine(b) if b.len() > max => Err(UpstreamFailure::TooLarge(max)),
            FakeBody::Fine(b) => Ok(Bytes::from(b)),
            FakeBody::Broken => Err(UpstreamFailure::Unreachable("reset by peer".into())),
        }
    }

    fn record(&self, record: UsageRecord) {
        self.0.borrow_mut().usage.push(record);
    }

    fn denied(&self, _route: &str, policy: &str, code: &str) {
        self.0
            .borrow_mut()
            .denied
            .push((policy.to_owned(), code.to_owned()));
    }

    fn warn(&self, _request_id: &str, message: &str) {
        self.0.borrow_mut().warnings.push(message.to_owned());
    }

    fn now_ms(&self) -> u64 {
        1_700_000_000_000
    }

    fn monotonic_ms(&self) -> u64 {
        self.0.borrow().clock
    }

    async fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.borrow().state.get(key).cloned())
    }

    async fn state_set(&self, key: &str, value: Vec<u8>, _ttl_ms: u64) -> Result<(), String> {
        self.0.borrow_mut().state.insert(key.to_owned(), value);
        Ok(())
    }

    async fn state_delete(&self, key: &str) -> Result<(), String> {
        self.0.borrow_mut().state.remove(key);
        Ok(())
    }

    fn random_bytes(&self) -> Option<[u8; 16]> {
        let mut s = self.0.borrow_mut();
        s.randoms += 1;
        Some([s.randoms; 16])
    }

    async fn sleep(&self, ms: u64) {
        let mut s = self.0.borrow_mut();
        s.sleeps.push(ms);
        s.clock += ms;
    }
}

type OnMessage = Box<dyn FnMut(&MessageView) -> Result<Verdict, PolicyFault>>;
type OnChunk = Box<dyn FnMut(&StreamEvent) -> Result<ChunkVerdict, PolicyFault>>;
type OnEnd = Box<dyn FnMut() -> Result<ChunkVerdict, PolicyFault>>;

/// One scripted policy: the phases it has and what it answers.
pub struct FakePolicy {
    pub name: String,
    pub phases: Vec<Phase>,
    pub on_request: Option<OnMessage>,
    pub on_response: Option<OnMessage>,
    pub on_chunk: Option<OnChunk>,
    pub on_end: Option<OnEnd>,
}

impl FakePolicy {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            phases: vec![Phase::Complete],
            on_request: None,
            on_response: None,
            on_chunk: None,
            on_end: None,
        }
    }

    pub fn request(
        mut self,
        f: impl FnMut(&MessageView) -> Result<Verdict, PolicyFault> + 'static,
    ) -> Self {
        self.phases.push(Phase::Request);
        self.on_request = Some(Box::new(f));
        self
    }

    pub fn response(
        mut self,
        f: impl FnMut(&MessageView) -> Result<Verdict, PolicyFault> + 'static,
    ) -> Self {
        self.phases.push(Phase::Response);
        self.on_response = Some(Box::new(f));
        self
    }

    pub fn chunk(
        mut self,
        f: impl FnMut(&StreamEvent) -> Result<ChunkVerdict, PolicyFault> + 'static,
    ) -> Self {
        self.phases.push(Phase::StreamChunk);
        self.on_chunk = Some(Box::new(f));
        self
    }

    pub fn end(mut self, f: impl FnMut() -> Result<ChunkVerdict, PolicyFault> + 'static) -> Self {
        self.phases.push(Phase::StreamEnd);
        self.on_end = Some(Box::new(f));
        self
    }
}

/// What the chain saw: (policy, phase) calls, completions, LLM views set.
#[derive(Debug, Default)]
pub struct ChainLog {
    pub calls: Vec<(String, Phase)>,
    pub completions: Vec<(String, CompletionInfo)>,
    pub llm: Vec<Option<weir_llm::LlmRequestInfo>>,
    pub initial: Option<RequestState>,
}

pub struct FakeChain {
    pub policies: Vec<FakePolicy>,
    pub log: Rc<RefCell<ChainLog>>,
}

impl FakeChain {
    fn called(&self, i: usize, phase: Phase) {
        self.log
            .borrow_mut()
            .calls
            .push((self.policies[i].name.clone(), phase));
    }
}

impl Chain for FakeChain {
    fn len(&self) -> usize {
        self.policies.len()
    }

    fn wants(&self, i: usize, phase: Phase) -> bool {
        self.policies[i].phases.contains(&phase)
    }

    fn name(&self, i: usize) -> &str {
        &self.policies[i].name
    }

    async fn on_request(
        &mut self,
        i: usize,
        message: &mut MessageView,
    ) -> Result<Verdict, PolicyFault> {
        self.called(i, Phase::Request);
        (self.policies[i].on_request.as_mut().unwrap())(message)
    }

    async fn on_response(
        &mut self,
        i: usize,
        message: &mut MessageView,
    ) -> Result<Verdict, PolicyFault> {
        self.called(i, Phase::Response);
        (self.policies[i].on_response.as_mut().unwrap())(message)
    }

    async fn on_stream_chunk(
        &mut self,
        i: usize,
        event: &StreamEvent,
    ) -> Result<ChunkVerdict, PolicyFault> {
        self.called(i, Phase::StreamChunk);
        match self.policies[i].on_chunk.as_mut() {
            Some(f) => f(event),
            None => Ok(ChunkVerdict::Pass),
        }
    }

    async fn on_stream_end(&mut self, i: usize) -> Result<ChunkVerdict, PolicyFault> {
        self.called(i, Phase::StreamEnd);
        (self.policies[i].on_end.as_mut().unwrap())()
    }

    async fn on_complete(&mut self, i: usize, info: &CompletionInfo) -> Result<(), PolicyFault> {
        self.called(i, Phase::Complete);
        self.log
            .borrow_mut()
            .completions
            .push((self.policies[i].name.clone(), info.clone()));
        Ok(())
    }

    fn set_llm(&mut self, llm: Option<&weir_llm::LlmRequestInfo>) {
        self.log.borrow_mut().llm.push(llm.cloned());
    }

    fn consumer(&self) -> Option<String> {
        Some("alice".into())
    }

    fn attribute(&self, _key: &str) -> Option<String> {
        None
    }
}

pub fn upstream(name: &str, kind: weir_llm::ProviderKind) -> Arc<Upstream> {
    Arc::new(Upstream {
        name: name.to_owned(),
        base_url: format!("http://{name}.test/v1"),
        api_key: Some(Secret::new(format!("sk-{name}-secret"))),
        timeout_ms: 1000,
        kind,
        ..Default::default()
    })
}

/// A route on provider `main` (OpenAI), with `backup` (OpenAI) and `claude` (Anthropic) as
/// other providers.
pub fn route() -> RouteInfo {
    let main = upstream("main", weir_llm::ProviderKind::Openai);
    let mut all = BTreeMap::new();
    all.insert("main".to_owned(), main.clone());
    all.insert(
        "backup".to_owned(),
        upstream("backup", weir_llm::ProviderKind::Openai),
    );
    all.insert(
        "claude".to_owned(),
        upstream("claude", weir_llm::ProviderKind::Anthropic),
    );
    RouteInfo {
        name: "demo".into(),
        kind: RouteKind::Llm,
        upstream: main,
        upstreams: Arc::new(all),
        mcp: None,
        limits: Limits {
            max_body_bytes: 1024,
            max_response_bytes: 1 << 20,
        },
        exposed: None,
        retry: Arc::default(),
    }
}

pub fn chat(body: serde_json::Value) -> ClientRequest {
    ClientRequest {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        headers: vec![
            ("authorization".into(), "Bearer client-key".into()),
            ("content-type".into(), "application/json".into()),
        ],
        body: Bytes::from(serde_json::to_vec(&body).unwrap()),
    }
}

pub fn hello(stream: bool) -> ClientRequest {
    chat(serde_json::json!({
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 5,
        "stream": stream,
    }))
}

pub fn completion(text: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    })
}

pub fn chunk(text: Option<&str>, finish: Option<&str>) -> String {
    let delta = match text {
        Some(t) => serde_json::json!({"content": t}),
        None => serde_json::json!({}),
    };
    serde_json::json!({
        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })
    .to_string()
}

pub fn usage_chunk() -> String {
    serde_json::json!({
        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
        "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    })
    .to_string()
}

/// Serves a request through the loop; streams are driven to their end here.
pub struct Served {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub platform: FakePlatform,
    pub log: Rc<RefCell<ChainLog>>,
}

impl Served {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The one usage record; fails unless there is exactly one.
    pub fn record(&self) -> UsageRecord {
        let usage = self.platform.usage();
        assert_eq!(usage.len(), 1, "usage records: {usage:?}");
        usage.into_iter().next().unwrap()
    }

    /// The completion every on-complete saw (all the same).
    pub fn completion(&self) -> CompletionInfo {
        let log = self.log.borrow();
        assert!(!log.completions.is_empty(), "on-complete never ran");
        log.completions[0].1.clone()
    }

    pub fn calls(&self) -> Vec<(String, Phase)> {
        self.log.borrow().calls.clone()
    }

    /// The SSE data payloads of a streamed body.
    pub fn events(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: ").map(str::to_owned))
            .collect()
    }

    /// The streamed text (the contents of every chunk's delta, joined).
    pub fn streamed_text(&self) -> String {
        self.events()
            .iter()
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
            .filter_map(|v| {
                v.pointer("/choices/0/delta/content")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// How a test drives a stream's end.
#[derive(Debug, Clone, Copy)]
pub struct Drive {
    pub end: StreamEnd,
    pub client_gone: bool,
}

impl Default for Drive {
    fn default() -> Self {
        Self {
            end: StreamEnd::Ended,
            client_gone: false,
        }
    }
}

pub fn serve_with(
    endpoint: Endpoint,
    request: ClientRequest,
    replies: Vec<Up>,
    policies: Vec<FakePolicy>,
    drive: Drive,
) -> Served {
    serve_on(route(), endpoint, request, replies, policies, drive)
}

pub fn serve_on(
    route: RouteInfo,
    endpoint: Endpoint,
    request: ClientRequest,
    replies: Vec<Up>,
    policies: Vec<FakePolicy>,
    drive: Drive,
) -> Served {
    let platform = FakePlatform::with(replies);
    let log = Rc::new(RefCell::new(ChainLog::default()));
    let chain_log = log.clone();
    let answer = run(weir_core::serve(
        platform.clone(),
        &route,
        endpoint,
        request,
        "req_test".into(),
        0,
        move |state| {
            chain_log.borrow_mut().initial = Some(state);
            FakeChain {
                policies,
                log: chain_log,
            }
        },
    ));
    finish(answer, drive, platform, log)
}

pub fn finish(
    answer: Answer<FakePlatform, FakeChain>,
    drive: Drive,
    platform: FakePlatform,
    log: Rc<RefCell<ChainLog>>,
) -> Served {
    match answer {
        Answer::Full(r) => Served {
            status: r.status,
            headers: r.headers,
            body: r.body.to_vec(),
            platform,
            log,
        },
        Answer::Stream(start) => {
            let mut session = start.session;
            let bytes = match start.body {
                StreamBody::Upstream(FakeBody::Fine(b)) => b,
                StreamBody::Upstream(FakeBody::Broken) => Vec::new(),
                StreamBody::Ready(b) => b.to_vec(),
            };
            let mut body = Vec::new();
            // Byte by byte: the session must not depend on how the body is split.
            for b in &bytes {
                for out in run(session.push(std::slice::from_ref(b))) {
                    body.extend_from_slice(&out);
                }
            }
            for out in run(session.closing(drive.end)) {
                body.extend_from_slice(&out);
            }
            run(session.settle(drive.end, drive.client_gone));
            Served {
                status: start.status,
                headers: start.headers,
                body,
                platform,
                log,
            }
        }
    }
}

pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

pub fn deny(status: u16, code: &str) -> Verdict {
    Verdict::Deny(Denial {
        status,
        code: code.into(),
        message: format!("denied: {code}"),
        headers: vec![("retry-after".into(), "7".into())],
    })
}

pub fn proceed() -> Verdict {
    Verdict::Continue(Edits::default())
}

pub fn trapped(policy: &str) -> PolicyFault {
    PolicyFault {
        code: "policy_trapped",
        message: format!("policy `{policy}` failed in on-request: trapped: unreachable"),
    }
}
