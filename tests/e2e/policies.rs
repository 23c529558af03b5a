//! Misbehaving policies fail only their request; requests are isolated; configs are validated.

use std::sync::Arc;

use serde_json::json;
use weir_tests::{ALICE_KEY, ConfigBuilder, TestEnv};

fn with_test_policy(mode: &str) -> ConfigBuilder {
    ConfigBuilder {
        extra_proxies: vec![format!(
            "  - name: probe\n    context-path: /probe\n    provider: mock\n    policies: [{}, {{\"policy\": \"test-policy\", \"config\": {{\"mode\": \"{mode}\"}}}}]\n",
            weir_tests::auth_policy()
        )],
        extra: format!(
            "policies:\n  - name: test-policy\n    path: {}\n",
            weir_policies::TEST_POLICY_PATH
        ),
        ..Default::default()
    }
}

fn body() -> serde_json::Value {
    json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1})
}

async fn misbehaves(mode: &str, code: &str) {
    let env = TestEnv::start(with_test_policy(mode)).await.unwrap();
    let r = env.chat("/probe", ALICE_KEY, body()).await.unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    let err = &r.json()["error"];
    assert_eq!(err["code"], code);
    assert!(
        err["message"].as_str().unwrap().contains("test-policy"),
        "{err}"
    );
    // The gateway stays healthy: other routes and the next request work.
    let r = env.chat("/", ALICE_KEY, body()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = env.chat("/probe", ALICE_KEY, body()).await.unwrap();
    assert_eq!(
        r.json()["error"]["code"],
        code,
        "fails the same way each time, never worse"
    );
    let records = env.wait_usage(3).await;
    assert_eq!(
        records
            .iter()
            .filter(|r| r.outcome == "gateway_error")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_policy_fails_only_its_request() {
    misbehaves("trap", "policy_trapped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_policy_is_stopped_by_the_deadline() {
    misbehaves("loop", "policy_timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_stopped_by_the_limit() {
    misbehaves("oom", "policy_memory_limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_see_each_other() {
    let env = Arc::new(TestEnv::start(with_test_policy("probe")).await.unwrap());
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let env = env.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    let r = env.chat("/probe", ALICE_KEY, body()).await.unwrap();
                    assert_eq!(r.status, 200, "{}", r.text());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // The probe tagged each upstream request with its own request id.
    let seen = env.mock.last_request_headers();
    let probe = seen
        .iter()
        .find(|(n, _)| n == "x-weir-probe")
        .map(|(_, v)| v.clone())
        .unwrap();
    let rid = seen
        .iter()
        .find(|(n, _)| n == "x-request-id")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(probe.starts_with(&format!("{rid};")), "{probe} vs {rid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policy_config_is_rejected_with_its_path() {
    let mut config = ConfigBuilder::default();
    config.extra_proxies.push(
        "  - name: bad\n    context-path: /bad\n    provider: mock\n    policies: [{\"policy\": \"auth\", \"config\": {\"consumers\": [{\"id\": \"x\", \"key-sha256\": \"sk-plain-key\"}]}}]\n".into(),
    );
    let err = TestEnv::start(config).await.unwrap_err().to_string();
    assert!(
        err.starts_with("proxies[1].policies[0].config.consumers[0].key-sha256: "),
        "{err}"
    );
    assert!(err.contains("weir hash-key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_needs_allow_hosts() {
    let proxy = |name: &str, allow: &str| {
        format!(
            "  - name: {name}\n    context-path: /{name}\n    provider: mock\n    policies:\n      - policy: test-policy\n        config: {{\"mode\": \"fetch\", \"url\": \"URL\"}}\n{allow}"
        )
    };
    // The mock's own health endpoint is the outbound target; its port is only known after start,
    // so the proxies point at a placeholder that the first gateway's mock replaces.
    let first = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    let url = format!("{}/health", first.mock.base_url());
    let config = ConfigBuilder {
        extra_proxies: vec![
            proxy("open", "        allow-hosts: [127.0.0.1]\n").replace("URL", &url),
            proxy("closed", "").replace("URL", &url),
        ],
        extra: format!(
            "policies:\n  - name: test-policy\n    path: {}\n",
            weir_policies::TEST_POLICY_PATH
        ),
        ..Default::default()
    };
    let env = TestEnv::start(config).await.unwrap();
    let r = env.chat("/open", ALICE_KEY, body()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = env.mock.last_request_headers();
    assert!(
        seen.iter()
            .any(|(n, v)| n == "x-weir-fetch-status" && v == "200"),
        "{seen:?}"
    );
    let r = env.chat("/closed", ALICE_KEY, body()).await.unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "fetch_denied");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allow-hosts")
    );
}
