//! Runtime tests with the real policy components from components/.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_core::chain::{self, Admission, Stop};
use weir_core::{Chain, PolicyFault};
use weir_runtime::{
    ChainRun, ChainSpec, CompletionInfo, ContractVersion, MessageView, Outcome, RequestState,
    RouteKind, Runtime, RuntimeOptions, SlotSpec,
};
use weir_state::{KvStore, MemoryStore, Namespaced};

mod contract;

/// The request phase over a whole chain, as the loop runs it.
async fn on_request(
    run: &mut ChainRun,
    mut msg: MessageView,
) -> Result<Result<MessageView, Stop>, PolicyFault> {
    let mut admission = Admission::default();
    match chain::request_phase(run, &mut msg, &mut admission).await? {
        Some(stop) => Ok(Err(stop)),
        None => Ok(Ok(msg)),
    }
}

async fn on_complete(run: &mut ChainRun, info: &CompletionInfo) -> Vec<PolicyFault> {
    chain::complete_phase(run, info).await
}

fn denial(stop: Stop) -> weir_core::Denial {
    match stop {
        Stop::Deny { denial, .. } => denial,
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions {
        call_timeout: Duration::from_millis(50),
        memory_limit_bytes: 16 << 20,
        max_instances: 64,
        cache_dir: None,
    })
    .unwrap()
}

fn chain(rt: &Runtime, kv: &Arc<dyn KvStore>, policies: &[(&str, &[u8], &str)]) -> Arc<ChainSpec> {
    let slots = policies
        .iter()
        .enumerate()
        .map(|(i, (name, bytes, config))| {
            let instance = format!("proxy:test/{name}@{i}");
            SlotSpec {
                policy: rt.load(name, bytes).unwrap(),
                kv: Namespaced::new(kv.clone(), &instance),
                instance,
                route: "test".into(),
                config_json: (*config).to_owned(),
                vectors: None,
                allow_hosts: Vec::new(),
                credential: None,
            }
        })
        .collect();
    Arc::new(ChainSpec::new(slots))
}

fn state(id: &str) -> RequestState {
    RequestState {
        request_id: id.into(),
        route: "test".into(),
        route_kind: RouteKind::Llm,
        endpoint: "chat/completions".into(),
        consumer: None,
        attributes: Default::default(),
        llm: Some(weir_llm::LlmRequestInfo {
            model: Some("m".into()),
            max_tokens: Some(10),
            stream: false,
            client_wants_stream_usage: false,
            estimated_prompt_tokens: 5,
            ..Default::default()
        }),
        received_at_ms: 1_700_000_000_000,
    }
}

fn request(key: &str) -> MessageView {
    MessageView {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        status: 0,
        headers: vec![
            ("authorization".into(), format!("Bearer {key}")),
            ("x-other".into(), "1".into()),
        ],
        body: bytes::Bytes::from_static(b"{\"model\":\"m\"}"),
    }
}

fn auth_config() -> String {
    let real = sha256_hex("good-key");
    format!(r#"{{"consumers":[{{"id":"alice","key-sha256":"{real}"}}]}}"#)
}

fn sha256_hex(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for b in <sha2::Sha256 as sha2::Digest>::digest(s.as_bytes()) {
        write!(out, "{b:02x}").unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_validate() {
    let rt = runtime();
    let auth = rt.load("auth", weir_policies::AUTH).unwrap();
    assert_eq!(auth.info().name, "auth");
    assert!(auth.validate_config(&auth_config()).await.unwrap().is_ok());
    let (path, message) = auth
        .validate_config(r#"{"consumers":[{"id":"a","key-sha256":"plain"}]}"#)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(path, "consumers[0].key-sha256");
    assert!(message.contains("hash-key"));
    let tl = rt.load("token-limit", weir_policies::TOKEN_LIMIT).unwrap();
    let (path, _) = tl
        .validate_config(r#"{"tokens-per-minit": 5}"#)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(path, "tokens-per-minit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_sets_consumer_and_strips_key() {
    let rt = runtime();
    let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::new(1000));
    let spec = chain(&rt, &kv, &[("auth", weir_policies::AUTH, &auth_config())]);
    let mut run = ChainRun::new(spec.clone(), state("r1"));
    let msg = on_request(&mut run, request("good-key"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.consumer().as_deref(), Some("alice"));
    assert_eq!(msg.header("authorization"), None);
    assert_eq!(msg.header("x-other"), Some("1"));
    let mut run = ChainRun::new(spec, state("r2"));
    let denial = denial(
        on_request(&mut run, request("bad-key"))
            .await
            .unwrap()
            .unwrap_err(),
    );
    assert_eq!(
        (denial.status, denial.code.as_str()),
        (401, "invalid_api_key")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_limit_reserves_and_settles() {
    let rt = runtime();
    let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::new(1000));
    // Reservation = 5 (estimate) + 10 (max_tokens) = 15 per request; limit 40.
    let spec = chain(
        &rt,
        &kv,
        &[
            ("auth", weir_policies::AUTH, &auth_config()),
            (
                "token-limit",
                weir_policies::TOKEN_LIMIT,
                r#"{"tokens-per-minute":40}"#,
            ),
        ],
    );
    let mut first = ChainRun::new(spec.clone(), state("a"));
    assert!(
        on_request(&mut first, request("good-key"))
            .await
            .unwrap()
            .is_ok()
    );
    let mut second = ChainRun::new(spec.clone(), state("b"));
    assert!(
        on_request(&mut second, request("good-key"))
            .await
            .unwrap()
            .is_ok()
    );
    let mut run = ChainRun::new(spec.clone(), state("c"));
    let denial = denial(
        on_request(&mut run, request("good-key"))
            .await
            .unwrap()
            .unwrap_err(),
    );
    assert_eq!(
        (denial.status, denial.code.as_str()),
        (429, "rate_limit_exceeded")
    );
    assert!(
        denial
            .headers
            .iter()
            .any(|(n, v)| n == "x-ratelimit-remaining-tokens" && v == "10")
    );
    assert!(denial.headers.iter().any(|(n, _)| n == "retry-after"));
    // The first request really used 2 tokens: 13 come back, so one more request fits.
    let info = CompletionInfo {
        status: 200,
        outcome: Outcome::Success,
        error: None,
        attempts: Vec::new(),
        model: None,
        usage: Some(weir_llm::Usage {
            prompt_tokens: 1,
            completion_tokens: 1,
            total_tokens: 2,
            cached_prompt_tokens: 0,
        }),
        latency_ms: 1,
    };
    assert!(on_complete(&mut first, &info).await.is_empty());
    let mut third = ChainRun::new(spec.clone(), state("d"));
    assert!(
        on_request(&mut third, request("good-key"))
            .await
            .unwrap()
            .is_ok()
    );
    let mut run = ChainRun::new(spec.clone(), state("e"));
    assert!(
        on_request(&mut run, request("good-key"))
            .await
            .unwrap()
            .is_err()
    );
    // A failed upstream call gives its whole reservation back.
    let failed = CompletionInfo {
        outcome: Outcome::UpstreamError,
        usage: None,
        status: 502,
        ..info
    };
    assert!(on_complete(&mut second, &failed).await.is_empty());
    let mut run = ChainRun::new(spec, state("f"));
    assert!(
        on_request(&mut run, request("good-key"))
            .await
            .unwrap()
            .is_ok()
    );
}

async fn failing(mode: &str) -> PolicyFault {
    let rt = runtime();
    let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::new(1000));
    let config = format!(r#"{{"mode":"{mode}"}}"#);
    let spec = chain(
        &rt,
        &kv,
        &[("test-policy", weir_policies::TEST_POLICY, &config)],
    );
    let mut run = ChainRun::new(spec, state("x"));
    let err = on_request(&mut run, request("k")).await.unwrap_err();
    assert!(
        !run.wants(0, weir_core::Phase::Complete),
        "a failed instance is not called again"
    );
    // The runtime is still healthy: a well-behaved chain on the same runtime works.
    let ok = chain(
        &rt,
        &kv,
        &[(
            "test-policy",
            weir_policies::TEST_POLICY,
            r#"{"mode":"noop"}"#,
        )],
    );
    let mut run = ChainRun::new(ok, state("y"));
    assert!(on_request(&mut run, request("k")).await.unwrap().is_ok());
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_is_contained() {
    let e = failing("trap").await;
    assert_eq!(e.code, "policy_trapped", "{e}");
    assert!(e.message.contains("`test-policy`"), "{e}");
    assert!(e.message.contains("proxy:test/test-policy@0"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_hits_the_deadline() {
    let started = Instant::now();
    let e = failing("loop").await;
    assert_eq!(e.code, "policy_timeout", "{e}");
    assert!(e.message.contains("50 ms"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_hits_the_limit() {
    let e = failing("oom").await;
    assert_eq!(e.code, "policy_memory_limit", "{e}");
    assert!(e.message.contains("16 MiB"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_isolated() {
    let rt = runtime();
    let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::new(1000));
    let spec = chain(
        &rt,
        &kv,
        &[(
            "test-policy",
            weir_policies::TEST_POLICY,
            r#"{"mode":"probe"}"#,
        )],
    );
    for i in 0..200 {
        let mut run = ChainRun::new(spec.clone(), state(&format!("req-{i}")));
        match on_request(&mut run, request("k")).await.unwrap() {
            Ok(msg) => assert!(
                msg.header("x-weir-probe")
                    .unwrap()
                    .starts_with(&format!("req-{i};"))
            ),
            Err(other) => panic!("request {i}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_components_are_cached_on_disk() {
    let dir = std::env::temp_dir().join(format!("weir-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = RuntimeOptions {
        cache_dir: Some(dir.clone()),
        max_instances: 8,
        ..RuntimeOptions::default()
    };
    let first = Runtime::new(options.clone())
        .unwrap()
        .load("auth", weir_policies::AUTH)
        .unwrap();
    assert!(!first.from_cache());
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].to_string_lossy().into_owned();
    assert!(name.ends_with(".cwasm") && name.len() > 64, "{name}");
    // A new runtime (as after a restart) loads the artefact instead of compiling.
    let second = Runtime::new(options.clone())
        .unwrap()
        .load("auth", weir_policies::AUTH)
        .unwrap();
    assert!(second.from_cache());
    assert_eq!(second.info().name, "auth");
    assert_eq!(second.contract(), ContractVersion::V0_2);
    // Other bytes, other key.
    let third = Runtime::new(options)
        .unwrap()
        .load("token-limit", weir_policies::TOKEN_LIMIT)
        .unwrap();
    assert!(!third.from_cache());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store that answers after `delay` (a distant Redis).
#[derive(Debug)]
struct SlowStore {
    inner: MemoryStore,
    delay: Duration,
}

impl KvStore for SlowStore {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<Vec<u8>>, weir_state::KvError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.get(key).await
        })
    }
    fn set<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> futures::future::BoxFuture<'a, Result<(), weir_state::KvError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.set(key, value, ttl).await
        })
    }
    fn delete<'a>(
        &'a self,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), weir_state::KvError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.delete(key).await
        })
    }
    fn increment<'a>(
        &'a self,
        key: &'a str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> futures::future::BoxFuture<'a, Result<i64, weir_state::KvError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.increment(key, delta, ttl).await
        })
    }
}

/// The time limit is on a policy's own running time: waiting for a slow key-value store (here
/// 80 ms per operation, with a 50 ms limit) does not count, while a loop still hits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_the_host_does_not_count_against_the_time_limit() {
    let rt = runtime();
    let kv: Arc<dyn KvStore> = Arc::new(SlowStore {
        inner: MemoryStore::new(1000),
        delay: Duration::from_millis(80),
    });
    let spec = chain(
        &rt,
        &kv,
        &[(
            "token-limit",
            weir_policies::TOKEN_LIMIT,
            r#"{"tokens-per-minute":1000,"requests-per-minute":100}"#,
        )],
    );
    let started = Instant::now();
    let mut run = ChainRun::new(spec, state("slow"));
    let out = on_request(&mut run, request("k")).await.unwrap();
    assert!(out.is_ok(), "{out:?}");
    assert!(started.elapsed() >= Duration::from_millis(80));
}

/// One request through a chain of `test-policy` in `carry` mode: what its on-request reported
/// (`x-test-carry`) and what its on-response saw of the request's own instance.
async fn carry(spec: &Arc<ChainSpec>, id: &str) -> (String, String) {
    let mut run = ChainRun::new(spec.clone(), state(id));
    let msg = match on_request(&mut run, request("k")).await.unwrap() {
        Ok(msg) => msg,
        Err(other) => panic!("request {id}: {other:?}"),
    };
    let report = msg.header("x-test-carry").unwrap().to_owned();
    let mut response = MessageView {
        status: 200,
        body: bytes::Bytes::from_static(b"{}"),
        ..MessageView::default()
    };
    let stop = chain::response_phase(&mut run, &mut response, 1)
        .await
        .unwrap();
    assert!(stop.is_none(), "request {id}: {stop:?}");
    let calls = response.header("x-test-carry-calls").unwrap().to_owned();
    (report, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preinitialised_instances_carry_nothing_from_one_request_to_the_next() {
    let rt = runtime();
    let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::new(1000));
    let spec = chain(
        &rt,
        &kv,
        &[
            (
                "test-policy",
                weir_policies::TEST_POLICY,
                r#"{"mode":"carry"}"#,
            ),
            (
                "test-policy",
                weir_policies::TEST_POLICY,
                r#"{"mode":"probe"}"#,
            ),
        ],
    );
    // Before pre-initialisation: fresh instances of the component as loaded.
    let (plain, _) = carry(&spec, "plain").await;
    assert!(plain.starts_with("prepared=0;"), "{plain}");
    assert!(!spec.is_preinitialised(0));

    let ready = {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || spec.preinitialise())
            .await
            .unwrap()
    };
    assert_eq!(ready, 2);
    assert!(spec.is_preinitialised(0) && spec.is_preinitialised(1));

    // Every request starts from the snapshot (prepared=1: only validate-config leaves that
    // mark), finds nothing an earlier one left (statics, thread-locals, a leaked heap block:
    // `isolation_breach` otherwise), and sees the same heap, stack, memory size and handle
    // numbers; its own instance keeps its data between its phases (2 calls in on-response).
    let (first, calls) = carry(&spec, "req-0").await;
    assert!(first.starts_with("prepared=1;"), "{first}");
    assert_eq!(calls, "2");
    for i in 1..100 {
        assert_eq!(
            carry(&spec, &format!("req-{i}")).await,
            (first.clone(), "2".into())
        );
    }
    // Concurrent requests too (instances in different pool slots at once).
    let many = (0..32).map(|i| {
        let spec = spec.clone();
        tokio::spawn(async move { carry(&spec, &format!("conc-{i}")).await })
    });
    for r in futures::future::join_all(many).await {
        assert_eq!(r.unwrap(), (first.clone(), "2".into()));
    }
}
