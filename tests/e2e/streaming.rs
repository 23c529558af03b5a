//! Streaming: event-by-event relay, usage, client disconnects.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use serde_json::json;
use weir_mock_upstream::MockOptions;
use weir_tests::{ALICE_KEY, ConfigBuilder, TestEnv, UPSTREAM_KEY};

fn stream_body(max_tokens: u64, include_usage: bool) -> serde_json::Value {
    let mut v = json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "Count"}], "max_tokens": max_tokens, "stream": true});
    if include_usage {
        v["stream_options"] = json!({"include_usage": true});
    }
    v
}

fn content(events: &[String]) -> String {
    events
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_relayed_with_usage_recorded() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    let r = env
        .chat("/", ALICE_KEY, stream_body(4, false))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = r.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(content(&events), "mock0 mock1 mock2 mock3");
    // The gateway asked for usage itself; the client did not, so it must not see the usage chunk.
    assert!(
        events.iter().all(|e| !e.contains("\"usage\":{")),
        "{events:?}"
    );
    let records = env.wait_usage(1).await;
    assert_eq!(records[0].completion_tokens, 4);
    assert!(records[0].stream);
    assert!(records[0].time_to_first_token_ms.is_some());
    assert_eq!(
        env.mock.stats().completion_tokens,
        4,
        "the mock billed what the gateway recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_asked_for_usage_gets_it() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    let r = env
        .chat("/", ALICE_KEY, stream_body(2, true))
        .await
        .unwrap();
    let events = r.sse_data();
    let usage_chunk: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 2);
}

/// A gateway whose mock waits `chunk_delay_ms` between streamed events.
async fn slow_stream_env(chunk_delay_ms: u64) -> TestEnv {
    let mock = MockOptions {
        api_key: Some(UPSTREAM_KEY.into()),
        chunk_delay: Duration::from_millis(chunk_delay_ms),
        ..Default::default()
    };
    TestEnv::start_with(ConfigBuilder::default(), mock)
        .await
        .unwrap()
}

/// Starts a streaming completion of `tokens` events and returns its body unread (on a client of
/// its own, so dropping the body really closes the connection).
async fn open_stream(env: &TestEnv, tokens: u64) -> hyper::body::Incoming {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let req = http::Request::post(env.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {ALICE_KEY}"))
        .body(Full::new(bytes::Bytes::from(
            serde_json::to_vec(&stream_body(tokens, false)).unwrap(),
        )))
        .unwrap();
    client.request(req).await.unwrap().into_body()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_before_the_stream_ends() {
    let env = slow_stream_env(100).await;
    let started = std::time::Instant::now();
    let mut body = open_stream(&env, 10).await;
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    // 10 events 100 ms apart: the first must come long before the whole answer (~1 s).
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "first event after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_recorded_when_the_client_disconnects() {
    let env = slow_stream_env(20).await;
    let mut body = open_stream(&env, 20).await;
    let _ = body.frame().await;
    drop(body);
    let records = env.wait_usage(1).await;
    assert_eq!(records.len(), 1, "exactly one record");
    assert_eq!(records[0].outcome, "client_cancelled");
    assert_eq!(
        records[0].completion_tokens, 20,
        "the gateway read the upstream to its final usage"
    );
    assert_eq!(env.mock.stats().completion_tokens, 20);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(env.usage.recent().len(), 1, "no duplicate record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_recorded_when_a_non_streaming_client_gives_up() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    let body = json!({"model": "mock-fault:latency-400", "messages": [{"role": "user", "content": "slow"}], "max_tokens": 6});
    // The client gives up after 100 ms; the upstream answers at 400 ms.
    let gave_up =
        tokio::time::timeout(Duration::from_millis(100), env.chat("/", ALICE_KEY, body)).await;
    assert!(gave_up.is_err(), "the client should have timed out");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let records = env.wait_usage(1).await;
    assert_eq!(records.len(), 1, "exactly one record");
    assert_eq!(
        records[0].completion_tokens, 6,
        "the gateway finished the call and recorded its usage"
    );
    assert_eq!(env.mock.stats().completion_tokens, 6);
}
