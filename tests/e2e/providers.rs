//! Translated providers end to end: OpenAI-format clients in front of providers that the mock
//! plays in their native protocols (Anthropic, Gemini, Bedrock with SigV4, Azure OpenAI, Azure AI
//! Foundry), Anthropic-format clients on `/v1/messages`, and usage that adds up under faults.

use std::collections::HashSet;
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::{Value, json};
use weir_mock_upstream::MockOptions;
use weir_tests::{ALICE_KEY, ConfigBuilder, TestEnv, UPSTREAM_KEY, UPSTREAM_KEY_ENV, auth_policy};

const AWS_ID: &str = "AKIDWEIRTEST";
const AWS_SECRET: &str = "weir-test-aws-secret-canary-0b7d";
const AWS_ID_ENV: &str = "WEIR_TEST_AWS_ACCESS_KEY_ID";
const AWS_SECRET_ENV: &str = "WEIR_TEST_AWS_SECRET_ACCESS_KEY";

/// (proxy prefix, provider kind)
const PROVIDERS: &[(&str, &str)] = &[
    ("/anthropic", "anthropic"),
    ("/gemini", "gemini"),
    ("/bedrock", "aws-bedrock"),
    ("/azure", "azure-openai"),
    ("/foundry", "azure-ai-foundry"),
    ("/mistral", "mistral"),
];

fn config() -> ConfigBuilder {
    // The AWS variables come from .cargo/config.toml.
    assert_eq!(std::env::var(AWS_ID_ENV).as_deref(), Ok(AWS_ID));
    assert_eq!(std::env::var(AWS_SECRET_ENV).as_deref(), Ok(AWS_SECRET));
    let key = format!("    api-key-env: {UPSTREAM_KEY_ENV}\n");
    let mut c = ConfigBuilder {
        extra_providers: vec![
            format!("  - name: claude\n    kind: anthropic\n    base-url: {{mock}}/v1\n{key}"),
            format!("  - name: gemini\n    kind: gemini\n    base-url: {{mock}}/v1beta\n{key}"),
            format!(
                "  - name: bedrock\n    kind: aws-bedrock\n    base-url: {{mock}}\n    aws:\n      region: eu-west-1\n      access-key-id-env: {AWS_ID_ENV}\n      secret-access-key-env: {AWS_SECRET_ENV}\n"
            ),
            format!(
                "  - name: azure\n    kind: azure-openai\n    base-url: {{mock}}\n    api-version: 2024-10-21\n    deployments:\n      mock-gpt: prod-gpt\n{key}"
            ),
            format!("  - name: foundry\n    kind: azure-ai-foundry\n    base-url: {{mock}}\n{key}"),
            format!(
                "  - name: mistral\n    kind: mistral\n    base-url: {{mock}}/mistral/v1\n{key}"
            ),
        ],
        extra:
            "prices:\n  - model: mock-gpt\n    input-per-million: 2\n    output-per-million: 8\n"
                .into(),
        ..Default::default()
    };
    for (prefix, provider) in [
        ("/anthropic", "claude"),
        ("/gemini", "gemini"),
        ("/bedrock", "bedrock"),
        ("/azure", "azure"),
        ("/foundry", "foundry"),
        ("/mistral", "mistral"),
    ] {
        c.extra_proxies.push(format!(
            "  - name: {}\n    context-path: {prefix}\n    provider: {provider}\n    policies: [{}]\n",
            &prefix[1..],
            auth_policy()
        ));
    }
    c
}

fn mock() -> MockOptions {
    MockOptions {
        api_key: Some(UPSTREAM_KEY.into()),
        aws_credentials: Some((AWS_ID.into(), AWS_SECRET.into())),
        ..Default::default()
    }
}

async fn env() -> TestEnv {
    TestEnv::start_with(config(), mock()).await.unwrap()
}

fn chat(max_tokens: u64, stream: bool) -> Value {
    json!({
        "model": "mock-gpt",
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": max_tokens,
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    })
}

fn content(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")?
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_answers_in_openai_format() {
    let env = env().await;
    for (prefix, kind) in PROVIDERS {
        let r = env.chat(prefix, ALICE_KEY, chat(3, false)).await.unwrap();
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        let v = r.json();
        assert_eq!(v["object"], "chat.completion", "{kind}: {v}");
        assert_eq!(
            v["choices"][0]["message"]["content"], "mock0 mock1 mock2",
            "{kind}"
        );
        // The OpenAI protocol of the mock stops at max_tokens (`length`), the native ones end.
        let openai = kind.starts_with("azure") || *kind == "mistral";
        let finish = if openai { "length" } else { "stop" };
        assert_eq!(v["choices"][0]["finish_reason"], finish, "{kind}");
        // One message of 11 characters: 3 + ceil(11/4).
        assert_eq!(v["usage"]["prompt_tokens"], 6, "{kind}: {v}");
        assert_eq!(v["usage"]["completion_tokens"], 3, "{kind}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{kind}");
        let r = r.text();
        assert!(
            !r.contains(UPSTREAM_KEY) && !r.contains(AWS_SECRET),
            "{kind}"
        );
    }
    let records = env.wait_usage(PROVIDERS.len()).await;
    let providers: Vec<&str> = records.iter().map(|r| r.provider.as_str()).collect();
    assert_eq!(
        providers,
        ["claude", "gemini", "bedrock", "azure", "foundry", "mistral"]
    );
    for r in &records {
        assert_eq!((r.prompt_tokens, r.completion_tokens), (6, 3), "{r:?}");
        assert_eq!(r.consumer.as_deref(), Some("alice"));
        // The price of mock-gpt: 6 * 2 + 3 * 8 dollars per million tokens.
        let cost = r.cost_usd.unwrap_or(-1.0);
        assert!((cost - 36e-6).abs() < 1e-12, "{r:?}");
    }
    assert_eq!(env.mock.stats().completion_tokens, 18);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_take_each_providers_form() {
    let env = env().await;
    let header = |name: &str| {
        env.mock
            .last_request_headers()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    };
    env.chat("/anthropic", ALICE_KEY, chat(1, false))
        .await
        .unwrap();
    assert_eq!(header("x-api-key").as_deref(), Some(UPSTREAM_KEY));
    assert_eq!(header("anthropic-version").as_deref(), Some("2023-06-01"));
    assert_eq!(
        header("authorization"),
        None,
        "the client's key never goes upstream"
    );
    env.chat("/gemini", ALICE_KEY, chat(1, false))
        .await
        .unwrap();
    assert_eq!(header("x-goog-api-key").as_deref(), Some(UPSTREAM_KEY));
    env.chat("/azure", ALICE_KEY, chat(1, false)).await.unwrap();
    assert_eq!(header("api-key").as_deref(), Some(UPSTREAM_KEY));
    let r = env
        .chat("/bedrock", ALICE_KEY, chat(1, false))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = header("authorization").unwrap_or_default();
    assert!(
        auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={AWS_ID}/"))
            && auth.contains("/eu-west-1/bedrock/aws4_request"),
        "{auth}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_aws_secret_is_the_gateways_problem_not_the_clients() {
    let mut opts = mock();
    opts.aws_credentials = Some((AWS_ID.into(), "another-secret".into()));
    let env = TestEnv::start_with(config(), opts).await.unwrap();
    let r = env
        .chat("/bedrock", ALICE_KEY, chat(1, false))
        .await
        .unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_auth_failed");
    assert!(!r.text().contains(AWS_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_streams_event_by_event() {
    let env = env().await;
    for (prefix, kind) in PROVIDERS {
        let r = env.chat(prefix, ALICE_KEY, chat(4, true)).await.unwrap();
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        assert!(
            r.header("content-type")
                .unwrap_or("")
                .starts_with("text/event-stream"),
            "{kind}"
        );
        let events = r.sse_data();
        assert_eq!(
            content(&events),
            "mock0 mock1 mock2 mock3",
            "{kind}: {events:?}"
        );
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{kind}");
        let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        assert_eq!(usage["usage"]["completion_tokens"], 4, "{kind}: {usage}");
        assert_eq!(usage["usage"]["prompt_tokens"], 6, "{kind}: {usage}");
        let finish: Vec<String> = events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter_map(|c| {
                c.pointer("/choices/0/finish_reason")?
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        let expected = if kind.starts_with("azure") || *kind == "mistral" {
            "length"
        } else {
            "stop"
        };
        assert_eq!(finish, [expected], "{kind}");
    }
    let records = env.wait_usage(PROVIDERS.len()).await;
    for r in &records {
        assert!(r.stream && r.outcome == "success", "{r:?}");
        assert_eq!((r.prompt_tokens, r.completion_tokens), (6, 4), "{r:?}");
        assert!(r.time_to_first_token_ms.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_keep_their_message_and_status() {
    let env = env().await;
    for (prefix, kind) in PROVIDERS {
        let mut body = chat(2, false);
        body["model"] = json!("mock-fault:status-429");
        let r = env.chat(prefix, ALICE_KEY, body).await.unwrap();
        assert_eq!(r.status, 429, "{kind}: {}", r.text());
        let e = r.json();
        let message = e["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("Rate limit") || message.contains("rate limit"),
            "{kind}: {e}"
        );
        assert!(e["error"]["request_id"].is_string(), "{kind}: {e}");
    }
    let mut body = chat(2, false);
    body["model"] = json!("mock-fault:status-529");
    let r = env.chat("/anthropic", ALICE_KEY, body).await.unwrap();
    assert_eq!(
        r.status,
        503,
        "Anthropic's overloaded 529 is a 503: {}",
        r.text()
    );
    assert_eq!(r.json()["error"]["code"], "overloaded_error");
    // A request the provider cannot take names the field.
    let body = json!({"model": "mock-gpt", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
    let r = env.chat("/bedrock", ALICE_KEY, body).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("messages[0].content[0]"), "{}", r.text());
    // Endpoints a provider does not have.
    let r = env
        .send(
            "POST",
            "/anthropic/v1/embeddings",
            &[("authorization", &format!("Bearer {ALICE_KEY}"))],
            r#"{"model":"m","input":"x"}"#,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "endpoint_not_supported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_native_streams_end_in_an_error_event() {
    let env = env().await;
    for fault in ["cut-after-3", "stream-error-after-3"] {
        for (prefix, kind) in &PROVIDERS[..3] {
            let mut body = chat(6, true);
            body["model"] = json!(format!("mock-fault:{fault}"));
            let r = env.chat(prefix, ALICE_KEY, body).await.unwrap();
            assert_eq!(r.status, 200, "{kind}");
            let events = r.sse_data();
            assert_ne!(
                events.last().map(String::as_str),
                Some("[DONE]"),
                "{kind} {fault}: {events:?}"
            );
            let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
            assert!(
                last["error"]["code"].is_string(),
                "{kind} {fault}: {events:?}"
            );
        }
    }
    let records = env.wait_usage(6).await;
    for r in &records {
        assert_eq!((r.outcome, r.status), ("upstream_error", 502), "{r:?}");
    }
    assert_eq!(env.mock.stats().completion_tokens, 0, "nothing was billed");
}

fn messages_body(stream: bool) -> Value {
    json!({
        "model": "mock-gpt",
        "max_tokens": 3,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
        "stream": stream,
    })
}

async fn messages(env: &TestEnv, prefix: &str, body: &Value) -> weir_tests::Reply {
    let path = format!("{}/v1/messages", prefix.trim_end_matches('/'));
    env.send(
        "POST",
        &path,
        &[
            ("x-api-key", ALICE_KEY),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ],
        serde_json::to_vec(body).unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_clients_can_use_any_provider() {
    let env = env().await;
    for prefix in ["/", "/gemini", "/anthropic"] {
        let r = messages(&env, prefix, &messages_body(false)).await;
        assert_eq!(r.status, 200, "{prefix}: {}", r.text());
        let m = r.json();
        assert_eq!(m["type"], "message", "{prefix}: {m}");
        assert_eq!(m["content"][0]["text"], "mock0 mock1 mock2");
        // The OpenAI mock stops at max_tokens with `length`, the native ones with their end.
        let stop = m["stop_reason"].as_str().unwrap_or("");
        assert!(
            stop == "end_turn" || (prefix == "/" && stop == "max_tokens"),
            "{prefix}: {m}"
        );
        // System prompt and user message: (3 + 3) + (3 + 3).
        assert_eq!(m["usage"]["input_tokens"], 12, "{prefix}: {m}");
        assert_eq!(m["usage"]["output_tokens"], 3);

        let r = messages(&env, prefix, &messages_body(true)).await;
        assert_eq!(r.status, 200, "{prefix}");
        let text = r.text();
        let kinds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(kinds.first(), Some(&"message_start"), "{prefix}: {text}");
        assert_eq!(kinds.last(), Some(&"message_stop"), "{prefix}: {text}");
        assert!(kinds.contains(&"content_block_delta") && kinds.contains(&"message_delta"));
        assert!(text.contains("\"output_tokens\":3"), "{prefix}: {text}");
        assert!(
            !text.contains("[DONE]") && !text.contains("chat.completion"),
            "{prefix}: {text}"
        );
    }
    // Errors in Anthropic's envelope.
    let r = messages(&env, "/", &json!({"model": "mock-gpt", "messages": []})).await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_tokens"),
        "{e}"
    );
    let r = env
        .send(
            "POST",
            "/v1/messages",
            &[("x-api-key", "wrong")],
            serde_json::to_vec(&messages_body(false)).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json()["error"]["type"],
        "authentication_error",
        "{}",
        r.text()
    );
    let records = env.wait_usage(8).await;
    assert!(records.iter().filter(|r| r.endpoint == "messages").count() >= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_per_consumer_is_queryable() {
    let env = env().await;
    for _ in 0..2 {
        env.chat("/anthropic", ALICE_KEY, chat(3, false))
            .await
            .unwrap();
    }
    env.wait_usage(2).await;
    let r = env.admin_get("/usage?consumer=alice").await.unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["consumers"][0]["consumer"], "alice", "{v}");
    assert_eq!(v["consumers"][0]["requests"], 2);
    assert_eq!(v["consumers"][0]["completion_tokens"], 6);
    let cost = v["consumers"][0]["cost_usd"].as_f64().unwrap_or(0.0);
    assert!((cost - 72e-6).abs() < 1e-12, "{v}");
    let metrics = env.admin_get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains(
            "weir_cost_usd_total{provider=\"claude\",model=\"mock-gpt\",consumer=\"alice\"}"
        ),
        "{metrics}"
    );
}

/// Sends a stream and drops it after the first event (the client goes away).
async fn disconnect_early(env: &TestEnv, prefix: &str, body: &Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let req = http::Request::post(env.url(&format!("{prefix}/v1/chat/completions")))
        .header("authorization", format!("Bearer {ALICE_KEY}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            serde_json::to_vec(body).unwrap(),
        )))
        .unwrap();
    let mut resp = client.request(req).await.unwrap().into_body();
    let _ = resp.frame().await;
    drop(resp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_adds_up_to_what_the_providers_billed_under_faults() {
    let mut opts = mock();
    opts.chunk_delay = Duration::from_millis(5);
    let env = TestEnv::start_with(config(), opts).await.unwrap();
    let mut sent = 0;
    let prefixes = [
        "/",
        "/anthropic",
        "/gemini",
        "/bedrock",
        "/azure",
        "/foundry",
    ];
    for (i, prefix) in prefixes.iter().cycle().take(42).enumerate() {
        let fault = match i % 6 {
            0 => None,
            1 => Some("cut-after-2"),
            2 => Some("reset"),
            3 => Some("status-500"),
            _ => None,
        };
        let stream = i % 2 == 0;
        let mut body = chat(5, stream);
        if let Some(f) = fault {
            body["model"] = json!(format!("mock-fault:{f}"));
        }
        if i % 6 == 4 && stream {
            disconnect_early(&env, prefix, &body).await;
        } else {
            let r = env.chat(prefix, ALICE_KEY, body).await.unwrap();
            assert!(
                r.status == 200 || r.status >= 500,
                "{prefix}: {} {}",
                r.status,
                r.text()
            );
        }
        sent += 1;
    }
    // Streams whose client left keep being read until their usage arrives.
    let mut records = env.wait_usage(sent).await;
    for _ in 0..100 {
        if records.len() >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        records = env.usage.recent();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let records = env.usage.recent();
    assert_eq!(records.len(), sent, "one record per admitted request");
    let ids: HashSet<&str> = records.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids.len(), sent, "no duplicates");
    let billed = env.mock.stats();
    let prompt: u64 = records.iter().map(|r| r.prompt_tokens).sum();
    let completion: u64 = records.iter().map(|r| r.completion_tokens).sum();
    assert_eq!(
        (prompt, completion),
        (billed.prompt_tokens, billed.completion_tokens)
    );
    assert!(
        billed.completion_tokens > 0 && billed.cut_streams > 0,
        "{billed:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r.outcome == "client_cancelled" && r.completion_tokens == 5)
    );
}

fn tools_body(stream: bool) -> Value {
    json!({
        "model": "mock-gpt",
        "messages": [{"role": "user", "content": "weather in Paris"}],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"input": {"type": "string"}}}}}],
        "max_tokens": 3,
        "stream": stream,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_go_round_trip_through_each_native_provider() {
    let env = env().await;
    for (prefix, kind) in &PROVIDERS[..3] {
        // The provider calls the tool...
        let r = env
            .chat(prefix, ALICE_KEY, tools_body(false))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        let v = r.json();
        assert_eq!(
            v["choices"][0]["finish_reason"], "tool_calls",
            "{kind}: {v}"
        );
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "weather", "{kind}: {v}");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"input": "weather in Paris"}), "{kind}");
        let id = call["id"].as_str().unwrap().to_owned();
        assert!(!id.is_empty(), "{kind}");

        // ...in a stream too, as tool_calls deltas...
        let r = env.chat(prefix, ALICE_KEY, tools_body(true)).await.unwrap();
        let events = r.sse_data();
        let mut name = String::new();
        let mut arguments = String::new();
        for e in &events {
            let Ok(c) = serde_json::from_str::<Value>(e) else {
                continue;
            };
            if let Some(tc) = c.pointer("/choices/0/delta/tool_calls/0") {
                name.push_str(
                    tc.pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                );
                arguments.push_str(
                    tc.pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                );
            }
        }
        assert_eq!(name, "weather", "{kind}: {events:?}");
        assert_eq!(
            serde_json::from_str::<Value>(&arguments).ok(),
            Some(json!({"input": "weather in Paris"})),
            "{kind}"
        );
        assert!(
            events
                .iter()
                .any(|e| e.contains("\"finish_reason\":\"tool_calls\"")),
            "{kind}: {events:?}"
        );
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

        // ...and the tool's result goes back as the provider's own tool-result block.
        let mut body = tools_body(false);
        body["messages"] = json!([
            {"role": "user", "content": "weather in Paris"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": id, "content": "{\"celsius\": 21}"}
        ]);
        let r = env.chat(prefix, ALICE_KEY, body).await.unwrap();
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        assert_eq!(
            r.json()["choices"][0]["message"]["content"],
            "mock0 mock1 mock2",
            "{kind}"
        );
    }
}
