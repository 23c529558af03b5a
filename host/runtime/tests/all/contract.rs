//! Both contract versions side by side, and the 0.2 interfaces (streams, embeddings, vectors,
//! metrics) served by the runtime.

use std::sync::{Arc, Mutex};

use weir_core::chain::{self, Admission};
use weir_core::{Chain, ChunkVerdict, Emission, Phase, StreamEvent};
use weir_runtime::{
    ChainRun, ChainSpec, CompletionInfo, ContractVersion, EmbedError, Embedder, MessageView,
    Outcome, PolicyMetrics, Runtime, RuntimeOptions, Services, SlotSpec,
};
use weir_state::{KvStore, MemoryStore, MemoryVectors, Namespaced, VectorStore};

use super::{request, state};

/// The 0.1 fixture, built against the frozen 0.1 WIT (components/fixtures/policy-v0-1).
const FIXTURE_V0_1: &[u8] = include_bytes!("../../../../tests/fixtures/policy-v0-1.wasm");

#[derive(Debug, Default)]
struct Recorded {
    counters: Vec<(String, String, String, u64)>,
    observations: Vec<(String, String, f64)>,
}

#[derive(Debug, Default, Clone)]
struct FakeMetrics(Arc<Mutex<Recorded>>);

impl PolicyMetrics for FakeMetrics {
    fn counter_add(
        &self,
        policy: &str,
        proxy: &str,
        name: &str,
        value: u64,
        _: &[(String, String)],
    ) {
        self.0
            .lock()
            .unwrap()
            .counters
            .push((policy.into(), proxy.into(), name.into(), value));
    }

    fn observe(&self, policy: &str, _: &str, name: &str, value: f64, _: &[(String, String)]) {
        self.0
            .lock()
            .unwrap()
            .observations
            .push((policy.into(), name.into(), value));
    }
}

/// Embeds a text as the counts of its letters a..z.
struct LetterEmbedder;

impl Embedder for LetterEmbedder {
    fn embed(
        &self,
        provider: &str,
        model: &str,
        texts: Vec<String>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>> {
        let result = if provider != "emb" || model != "letters" {
            Err(EmbedError::NotFound(format!("no provider `{provider}`")))
        } else {
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = vec![0.0f32; 26];
                    for b in t.bytes().filter(u8::is_ascii_lowercase) {
                        v[usize::from(b - b'a')] += 1.0;
                    }
                    v
                })
                .collect())
        };
        Box::pin(async move { result })
    }
}

struct Setup {
    rt: Runtime,
    kv: Arc<dyn KvStore>,
    vectors: Arc<dyn VectorStore>,
    metrics: FakeMetrics,
}

fn setup() -> Setup {
    let metrics = FakeMetrics::default();
    let rt = Runtime::with_services(
        RuntimeOptions {
            max_instances: 32,
            ..RuntimeOptions::default()
        },
        Services {
            embedder: Arc::new(LetterEmbedder),
            metrics: Arc::new(metrics.clone()),
            ..Services::default()
        },
    )
    .unwrap();
    Setup {
        rt,
        kv: Arc::new(MemoryStore::new(1000)),
        vectors: Arc::new(MemoryVectors::new(100, 10)),
        metrics,
    }
}

impl Setup {
    fn chain(&self, policies: &[(&str, &[u8], &str)]) -> Arc<ChainSpec> {
        let slots = policies
            .iter()
            .enumerate()
            .map(|(i, (name, bytes, config))| {
                let instance = format!("proxy:test/{name}@{i}");
                SlotSpec {
                    policy: self.rt.load(name, bytes).unwrap(),
                    kv: Namespaced::new(self.kv.clone(), &instance),
                    vectors: Some((self.vectors.clone(), instance.clone())),
                    instance,
                    route: "test".into(),
                    config_json: (*config).to_owned(),
                    allow_hosts: Vec::new(),
                    credential: None,
                }
            })
            .collect();
        Arc::new(ChainSpec::new(slots))
    }
}

fn completion(outcome: Outcome) -> CompletionInfo {
    CompletionInfo {
        status: 200,
        outcome,
        error: None,
        model: None,
        usage: None,
        latency_ms: 1500,
        attempts: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_component_works_next_to_0_2_ones() {
    let s = setup();
    let fixture = s.rt.load("fixture", FIXTURE_V0_1).unwrap();
    assert_eq!(fixture.contract(), ContractVersion::V0_1);
    assert_eq!(fixture.info().name, "fixture-v0-1");
    assert_eq!(
        fixture.info().phases,
        vec![
            Phase::Request,
            Phase::Response,
            Phase::StreamChunk,
            Phase::Complete
        ]
    );
    let (path, _) = fixture.validate_config("[]").await.unwrap().unwrap_err();
    assert_eq!(path, "");
    let spec = s.chain(&[
        (
            "test-policy",
            weir_policies::TEST_POLICY,
            r#"{"mode":"observe","tag":"new"}"#,
        ),
        ("fixture", FIXTURE_V0_1, r#"{"tag":"old"}"#),
    ]);

    // Denied by the 0.1 policy.
    let mut run = ChainRun::new(spec.clone(), state("d"));
    let mut msg = request("k");
    msg.headers.push(("x-fixture-deny".into(), "1".into()));
    let stop = chain::request_phase(&mut run, &mut msg, &mut Admission::default())
        .await
        .unwrap();
    let denial = super::denial(stop.unwrap());
    assert_eq!(
        (denial.status, denial.code.as_str()),
        (403, "fixture_denied")
    );

    // Let through: its header edit, its kv counter, its response headers, its stream replace.
    for n in 1..=2 {
        let mut run = ChainRun::new(spec.clone(), state(&format!("r{n}")));
        let mut msg = request("k");
        let stop = chain::request_phase(&mut run, &mut msg, &mut Admission::default())
            .await
            .unwrap();
        assert!(stop.is_none());
        assert_eq!(msg.header("x-fixture-seen"), Some("1"));
        let mut resp = MessageView {
            status: 200,
            body: bytes::Bytes::from_static(b"{}"),
            ..Default::default()
        };
        assert!(
            chain::response_phase(&mut run, &mut resp, 2)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(resp.header("x-fixture-count"), Some(n.to_string().as_str()));
        assert_eq!(resp.header("x-fixture-config"), Some("old"));
        assert_eq!(resp.header("x-test-tag"), Some("new"));
        let event = StreamEvent {
            index: 0,
            data: r#"{"model":"mock-gpt"}"#.into(),
            text: None,
            finish_reason: None,
        };
        assert_eq!(
            run.on_stream_chunk(1, &event).await.unwrap(),
            ChunkVerdict::Emit(vec![Emission::Data(r#"{"model":"MOCK-gpt"}"#.into())])
        );
        assert!(
            chain::complete_phase(&mut run, &completion(Outcome::Answered))
                .await
                .is_empty()
        );
    }
    let ns = Namespaced::new(s.kv.clone(), "proxy:test/fixture@1");
    assert_eq!(ns.increment("completed", 0, None).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_rewriter_holds_back_splits_and_flushes() {
    let s = setup();
    let spec = s.chain(&[(
        "test-policy",
        weir_policies::TEST_POLICY,
        r#"{"mode":"rewrite","from":"mock1 mock2","to":"[gone]"}"#,
    )]);
    let mut run = ChainRun::new(spec, state("s"));
    let mut out = String::new();
    for piece in ["mock0", " mock1", " mo", "ck2 mock3", " mock"] {
        let event = StreamEvent {
            index: 0,
            data: String::new(),
            text: Some(piece.into()),
            finish_reason: None,
        };
        let ChunkVerdict::Emit(emitted) = run.on_stream_chunk(0, &event).await.unwrap() else {
            panic!("the rewriter emits")
        };
        for e in emitted {
            let Emission::Text(t) = e else { panic!("text") };
            out.push_str(&t);
        }
    }
    assert_eq!(
        out, "mock0 [gone] mock3 ",
        "`mock` may begin the phrase: held back"
    );
    let ChunkVerdict::Emit(rest) = run.on_stream_end(0).await.unwrap() else {
        panic!("the rest is released at the end")
    };
    assert_eq!(rest, vec![Emission::Text("mock".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_vectors_and_metrics_are_served() {
    let s = setup();
    let spec = s.chain(&[
        (
            "test-policy",
            weir_policies::TEST_POLICY,
            r#"{"mode":"metrics"}"#,
        ),
        (
            "test-policy",
            weir_policies::TEST_POLICY,
            r#"{"mode":"vector","provider":"emb","model":"letters"}"#,
        ),
    ]);
    let question = |text: &str| {
        let mut m = request("k");
        m.body = bytes::Bytes::from(
            serde_json::to_vec(
                &serde_json::json!({"model": "m", "messages": [{"role": "user", "content": text}]}),
            )
            .unwrap(),
        );
        m
    };
    // A miss: the answer is stored under the question's vector.
    let mut run = ChainRun::new(spec.clone(), state("v1"));
    let mut msg = question("what is a weir");
    let stop = chain::request_phase(&mut run, &mut msg, &mut Admission::default())
        .await
        .unwrap();
    assert!(stop.is_none());
    let answer = serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "a low dam"}, "finish_reason": "stop"}]});
    let mut resp = MessageView {
        status: 200,
        body: bytes::Bytes::from(answer.to_string()),
        ..Default::default()
    };
    chain::response_phase(&mut run, &mut resp, 2).await.unwrap();
    assert_eq!(resp.header("x-test-vector"), Some("miss"));
    chain::complete_phase(&mut run, &completion(Outcome::Success)).await;

    // The same letters again: answered from the index, without the upstream.
    let mut run = ChainRun::new(spec.clone(), state("v2"));
    let mut msg = question("what is a weir");
    let stop = chain::request_phase(&mut run, &mut msg, &mut Admission::default())
        .await
        .unwrap();
    match stop {
        Some(weir_core::chain::Stop::Answer { answer, policy }) => {
            assert_eq!(policy, 1);
            assert!(
                answer.completion.contains("a low dam"),
                "{}",
                answer.completion
            );
            assert!(
                answer
                    .headers
                    .iter()
                    .any(|(n, v)| n == "x-test-vector" && v.starts_with("hit"))
            );
        }
        other => panic!("expected an answer, got {other:?}"),
    }

    // Another namespace does not see this instance's index.
    let other = s.chain(&[(
        "test-policy",
        weir_policies::TEST_POLICY,
        r#"{"mode":"vector","provider":"emb","model":"letters"}"#,
    )]);
    let mut run = ChainRun::new(other, state("v3"));
    let mut msg = question("what is a weir");
    let stop = chain::request_phase(&mut run, &mut msg, &mut Admission::default())
        .await
        .unwrap();
    assert!(stop.is_none(), "instance @0 has its own, empty index");

    // An unknown embeddings provider is the policy's refusal, not a crash.
    let bad = s.chain(&[(
        "test-policy",
        weir_policies::TEST_POLICY,
        r#"{"mode":"vector","provider":"nope","model":"letters"}"#,
    )]);
    let mut run = ChainRun::new(bad, state("v4"));
    let mut msg = question("hi");
    let stop = chain::request_phase(&mut run, &mut msg, &mut Admission::default())
        .await
        .unwrap();
    let denial = super::denial(stop.unwrap());
    assert_eq!(denial.code, "embed_failed");
    assert!(denial.message.contains("nope"), "{}", denial.message);

    let recorded = s.metrics.0.lock().unwrap();
    assert_eq!(
        recorded.counters,
        vec![
            (
                "test-policy".into(),
                "test".into(),
                "test_requests".into(),
                1
            ),
            (
                "test-policy".into(),
                "test".into(),
                "test_requests".into(),
                1
            ),
        ]
    );
    assert_eq!(
        recorded.observations,
        vec![("test-policy".into(), "test_latency_seconds".into(), 1.5)]
    );
}
