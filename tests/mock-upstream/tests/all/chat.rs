//! Chat completions: plain and streamed shapes, usage math and billing.

use crate::*;

#[tokio::test]
async fn non_stream_completion_has_openai_shape_and_usage() {
    let server = start(MockOptions::default()).await;
    let c = client();
    let req = chat_body("mock-gpt", false, false, Some(5));
    let resp = post(
        &c,
        &server,
        "/v1/chat/completions",
        &req,
        &[("x-trace", "abc")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(content_type(&resp), "application/json");
    let v = body_json(resp).await;
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "mock-gpt");
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "mock0 mock1 mock2 mock3 mock4"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let prompt = count_prompt_tokens(&req["messages"]);
    // "You are a helpful assistant." = 28 chars -> 3 + 7; "Say something, please." = 22 chars -> 3 + 6.
    assert_eq!(prompt, 19);
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 19, "completion_tokens": 5, "total_tokens": 24})
    );

    // Default length, max_completion_tokens precedence.
    let v = body_json(
        post(
            &c,
            &server,
            "/v1/chat/completions",
            &chat_body("m", false, false, None),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(v["choices"][0]["message"]["content"], reply_text(16));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let mut req2 = chat_body("m", false, false, Some(7));
    req2["max_completion_tokens"] = json!(3);
    let v = body_json(post(&c, &server, "/v1/chat/completions", &req2, &[]).await).await;
    assert_eq!(v["usage"]["completion_tokens"], 3);

    assert_eq!(
        server.stats(),
        Stats {
            requests: 3,
            prompt_tokens: 57,
            completion_tokens: 24,
            completed_streams: 0,
            cut_streams: 0
        }
    );
    // The stats endpoint agrees.
    let stats = body_json(get(&c, &server, "/mock/stats").await).await;
    assert_eq!(stats["completion_tokens"], 24);
    assert_eq!(stats["requests"], 3);
    server.shutdown().await;
}

#[tokio::test]
async fn stream_without_usage_is_not_billed() {
    let server = start(MockOptions::default()).await;
    let c = client();
    let resp = post(
        &c,
        &server,
        "/v1/chat/completions",
        &chat_body("mock-gpt", true, false, Some(3)),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(content_type(&resp), "text/event-stream");
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let events = sse_events(&text);
    assert_eq!(events.len(), 1 + 3 + 1 + 1, "{text}");
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "mock-gpt");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert!(c.get("usage").is_none());
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
    let text: String = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "mock0 mock1 mock2");
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");
    assert_eq!(
        server.stats(),
        Stats {
            requests: 1,
            prompt_tokens: 0,
            completion_tokens: 0,
            completed_streams: 1,
            cut_streams: 0
        }
    );
}

#[tokio::test]
async fn stream_with_usage_ends_with_usage_chunk_and_is_billed() {
    let server = start(MockOptions::default()).await;
    let c = client();
    let req = chat_body("mock-gpt", true, true, None);
    let resp = post(&c, &server, "/v1/chat/completions", &req, &[]).await;
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let events = sse_events(&text);
    assert_eq!(events.len(), 1 + 16 + 1 + 1 + 1);
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let usage_chunk: Value = serde_json::from_str(events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    let prompt = count_prompt_tokens(&req["messages"]);
    assert_eq!(
        usage_chunk["usage"],
        json!({"prompt_tokens": prompt, "completion_tokens": 16, "total_tokens": prompt + 16})
    );
    let finish: Value = serde_json::from_str(events[events.len() - 3]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        finish["usage"],
        Value::Null,
        "OpenAI sends usage: null on ordinary chunks"
    );
    let joined: String = events[1..17]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(joined, reply_text(16));
    assert_eq!(
        server.stats(),
        Stats {
            requests: 1,
            prompt_tokens: prompt,
            completion_tokens: 16,
            completed_streams: 1,
            cut_streams: 0
        }
    );
}

#[tokio::test]
async fn chunk_delay_really_streams() {
    let opts = MockOptions {
        chunk_delay: Duration::from_millis(60),
        ..MockOptions::default()
    };
    let server = start(opts).await;
    let c = client();
    let started = Instant::now();
    let resp = post(
        &c,
        &server,
        "/v1/chat/completions",
        &chat_body("m", true, false, Some(2)),
        &[],
    )
    .await;
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
    while let Some(frame) = body.frame().await {
        frame.unwrap();
    }
    // Role, 2 words, finish and [DONE]: four delays after the first event.
    assert!(
        first_at < Duration::from_millis(50),
        "first event after {first_at:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(240),
        "stream took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn http2_prior_knowledge_works() {
    let server = start(MockOptions::default()).await;
    let c: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let resp = post(
        &c,
        &server,
        "/v1/chat/completions",
        &chat_body("m", true, true, Some(2)),
        &[],
    )
    .await;
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(server.stats().completed_streams, 1);
}
