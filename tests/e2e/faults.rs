//! Upstream failures become clear errors; usage is recorded once, with what was billed.

use serde_json::json;
use weir_tests::{ALICE_KEY, ConfigBuilder, TestEnv};

fn body(model: &str, stream: bool) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "stream": stream})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_status_errors_pass_through() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    let r = env
        .chat("/", ALICE_KEY, body("mock-fault:status-429", false))
        .await
        .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let r = env
        .chat("/", ALICE_KEY, body("mock-fault:status-503", false))
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    let records = env.wait_usage(2).await;
    assert!(records.iter().all(|r| r.outcome == "upstream_error"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset_is_a_502() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    let r = env
        .chat("/", ALICE_KEY, body("mock-fault:reset", false))
        .await
        .unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "upstream_unavailable");
    // The gateway is fine afterwards.
    let r = env
        .chat("/", ALICE_KEY, body("mock-gpt", false))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_response_limit_is_a_502_naming_the_limit() {
    let config = ConfigBuilder {
        extra: "limits: {max-response-bytes: 64}\n".into(),
        ..Default::default()
    };
    let env = TestEnv::start(config).await.unwrap();
    let r = env
        .chat("/", ALICE_KEY, body("mock-gpt", false))
        .await
        .unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "upstream_response_too_large");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("64 bytes")),
        "{}",
        r.json()
    );
    let records = env.wait_usage(1).await;
    assert_eq!(
        records[0].attempts[0].error,
        Some("upstream_response_too_large")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_a_504() {
    let config = ConfigBuilder {
        upstream_timeout_ms: 300,
        ..Default::default()
    };
    let env = TestEnv::start(config).await.unwrap();
    let r = env
        .chat("/", ALICE_KEY, body("mock-fault:latency-2000", false))
        .await
        .unwrap();
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["code"], "upstream_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_stream_ends_with_an_error_event() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    let r = env
        .chat("/", ALICE_KEY, body("mock-fault:cut-after-2", true))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "headers were sent before the cut");
    let events = r.sse_data();
    assert!(
        !events.iter().any(|e| e == "[DONE]"),
        "a cut stream must not look complete: {events:?}"
    );
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_cut");
    let records = env.wait_usage(1).await;
    assert_eq!(records[0].outcome, "upstream_error");
    assert_eq!(records[0].total_tokens, 0);
    assert_eq!(
        env.mock.stats().completion_tokens,
        0,
        "nothing billed, nothing recorded"
    );
}
