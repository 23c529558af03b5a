//! The admin listener: health, readiness, metrics, config; no secrets anywhere.

use serde_json::json;
use weir_tests::{ALICE_KEY, ConfigBuilder, TestEnv, UPSTREAM_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_metrics_and_config() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    assert_eq!(env.admin_get("/health").await.unwrap().status, 200);
    let ready = env.admin_get("/ready").await.unwrap();
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["checks"]["kv"], "ok", "{}", ready.text());
    assert_eq!(env.admin_get("/nope").await.unwrap().status, 404);

    let body = json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3});
    assert_eq!(
        env.chat("/", ALICE_KEY, body.clone()).await.unwrap().status,
        200
    );
    assert_eq!(env.chat("/", "sk-bad", body).await.unwrap().status, 401);
    let reset =
        json!({"model": "mock-fault:reset", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(env.chat("/", ALICE_KEY, reset).await.unwrap().status, 502);
    env.wait_usage(3).await;

    let metrics = env.admin_get("/metrics").await.unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = metrics.text();
    for expected in [
        r#"weir_requests_total{proxy="main",endpoint="chat/completions",status="200",outcome="success"} 1"#,
        r#"weir_requests_total{proxy="main",endpoint="chat/completions",status="401",outcome="denied"} 1"#,
        r#"weir_tokens_total{provider="mock",model="mock-gpt",consumer="alice",type="completion"} 3"#,
        r#"weir_policy_denials_total{proxy="main",policy="proxy:main/auth",code="invalid_api_key"} 1"#,
        r#"weir_request_duration_seconds_count{proxy="main"} 3"#,
        // The denied request never went upstream.
        r#"weir_upstream_duration_seconds_count{provider="mock"} 2"#,
        r#"weir_errors_total{proxy="main",type="upstream_unavailable"} 1"#,
    ] {
        assert!(text.contains(expected), "missing `{expected}` in\n{text}");
    }

    let config = env.admin_get("/config").await.unwrap();
    assert_eq!(config.status, 200);
    assert_eq!(config.json()["proxies"][0]["name"], "main");
    for output in [text.as_str(), &config.text()] {
        assert!(!output.contains(UPSTREAM_KEY), "provider key leaked");
        assert!(!output.contains(ALICE_KEY), "client key leaked");
    }
}
