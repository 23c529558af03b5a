//! Routing, authentication, input errors, credentials.

use serde_json::json;
use weir_tests::{ALICE_KEY, ConfigBuilder, TestEnv, UPSTREAM_KEY};

fn chat_body(max_tokens: u64) -> serde_json::Value {
    json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": max_tokens})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completion_passes_with_a_good_key() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    let r = env.chat("/", ALICE_KEY, chat_body(3)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], "mock0 mock1 mock2");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert!(r.header("x-request-id").unwrap().starts_with("req_"));
    let records = env.wait_usage(1).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].consumer.as_deref(), Some("alice"));
    assert_eq!(records[0].completion_tokens, 3);
    assert_eq!(records[0].outcome, "success");
    assert_eq!(u64::from(records[0].status), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_key_is_injected_and_client_key_is_not_forwarded() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    // The mock requires UPSTREAM_KEY: a 200 proves the gateway injected it.
    let r = env.chat("/", ALICE_KEY, chat_body(1)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = env.mock.last_request_headers();
    let auth: Vec<_> = seen.iter().filter(|(n, _)| n == "authorization").collect();
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0].1, format!("Bearer {UPSTREAM_KEY}"));
    assert!(
        !seen.iter().any(|(_, v)| v.contains(ALICE_KEY)),
        "client key leaked upstream: {seen:?}"
    );
    // And the upstream key never comes back to the client.
    assert!(!r.text().contains(UPSTREAM_KEY));
    assert!(!format!("{:?}", r.headers).contains(UPSTREAM_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_missing_keys_get_401_in_openai_format() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    let r = env.chat("/", "sk-wrong", chat_body(1)).await.unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    assert_eq!(
        r.json()["error"]["request_id"],
        r.header("x-request-id").unwrap()
    );
    let r = env
        .send(
            "POST",
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            serde_json::to_vec(&chat_body(1)).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "missing_api_key");
    assert_eq!(
        env.mock.stats().requests,
        0,
        "a refused request must not reach the provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_style_key_header_is_accepted() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    let r = env
        .send(
            "POST",
            "/v1/chat/completions",
            &[("x-api-key", ALICE_KEY)],
            serde_json::to_vec(&chat_body(1)).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_gets_clear_errors() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    let auth = format!("Bearer {ALICE_KEY}");
    let h = [("authorization", auth.as_str())];
    let r = env
        .send("POST", "/v1/chat/completions", &h, "{not json")
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = env
        .send("POST", "/v1/chat/completions", &h, b"\xff\xfe".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let r = env
        .send(
            "POST",
            "/v1/chat/completions",
            &h,
            r#"{"max_tokens":"many"}"#,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "max_tokens");
    let r = env
        .send("POST", "/v1/nothing-here", &h, "{}")
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "unknown_endpoint");
    let r = env
        .send("GET", "/v1/chat/completions", &h, "")
        .await
        .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(env.mock.stats().requests, 0);
}

/// Sends a raw request head plus `body` and reads the response (head and small JSON body).
async fn raw_exchange(env: &TestEnv, head: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The gateway may answer (and stop reading) before the body is all sent: ignore write errors.
    let _ = stream.write_all(body).await;
    let mut response = vec![0u8; 8192];
    let mut read = 0;
    while read < response.len() {
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read(&mut response[read..]),
        )
        .await;
        match next {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => break,
        }
        if String::from_utf8_lossy(&response[..read]).contains("}}") {
            break;
        }
    }
    String::from_utf8_lossy(&response[..read]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_get_413_without_reaching_the_provider() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    // Declared too large: refused from the headers alone, before any body byte is read.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE_KEY}\r\ncontent-length: {}\r\n\r\n",
        5 << 20
    );
    let response = raw_exchange(&env, &head, b"").await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("request_too_large"), "{response}");
    // Chunked, no length: refused once more than the limit has arrived.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE_KEY}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let mut body = Vec::new();
    for _ in 0..((4 << 20) / 65536 + 1) {
        body.extend_from_slice(b"10000\r\n");
        body.extend_from_slice(&[b' '; 65536]);
        body.extend_from_slice(b"\r\n");
    }
    let response = raw_exchange(&env, &head, &body).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("request_too_large"), "{response}");
    assert_eq!(env.mock.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_get_431() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    let names: Vec<String> = (0..150).map(|i| format!("x-h{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let r = env
        .send("POST", "/v1/chat/completions", &headers, "{}")
        .await;
    match r {
        Ok(r) => assert_eq!(r.status, 431),
        Err(e) => panic!("expected a 431 response, got {e}"),
    }
    let long = "x".repeat(100 << 10);
    let r = env
        .send(
            "POST",
            "/v1/chat/completions",
            &[("x-long", long.as_str())],
            "{}",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_and_models() {
    let env = TestEnv::start(ConfigBuilder::default()).await.unwrap();
    let auth = format!("Bearer {ALICE_KEY}");
    let r = env
        .send(
            "POST",
            "/v1/embeddings",
            &[("authorization", &auth)],
            r#"{"model":"mock-embedding","input":["a","b"]}"#,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    let r = env
        .send("GET", "/v1/models", &[("authorization", &auth)], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "mock-gpt")
    );
    let records = env.wait_usage(2).await;
    assert_eq!(records[0].endpoint, "embeddings");
    assert!(records[0].prompt_tokens > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_paths_route_to_their_proxy() {
    let config = ConfigBuilder {
        extra_proxies: vec![format!(
            "  - name: assistant\n    context-path: /assistant\n    provider: mock\n    policies: [{}]\n",
            weir_tests::auth_policy()
        )],
        ..Default::default()
    };
    let env = TestEnv::start(config).await.unwrap();
    let r = env
        .chat("/assistant", ALICE_KEY, chat_body(1))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let records = env.wait_usage(1).await;
    assert_eq!(records[0].proxy, "assistant");
}
