//! Fault injection (status, reset, cut, latency) and API-key checks.

use crate::*;

#[tokio::test]
async fn status_faults_from_header_and_model_name() {
    let server = start(MockOptions::default()).await;
    let c = client();
    let resp = post(
        &c,
        &server,
        "/v1/chat/completions",
        &chat_body("mock-gpt", false, false, None),
        &[("x-mock-fault", "status-429")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
    assert_eq!(content_type(&resp), "application/json");
    let v = body_json(resp).await;
    assert_eq!(v["error"]["type"], "requests");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Rate limit")
    );

    let resp = post(
        &c,
        &server,
        "/v1/chat/completions",
        &chat_body("mock-fault:status-429", true, true, None),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "1");

    for (fault, status) in [("status-500", 500), ("status-503", 503)] {
        let resp = post(
            &c,
            &server,
            "/v1/chat/completions",
            &chat_body(&format!("mock-fault:{fault}"), false, false, None),
            &[],
        )
        .await;
        assert_eq!(resp.status().as_u16(), status);
        let v = body_json(resp).await;
        assert_eq!(v["error"]["type"], "server_error");
        assert_eq!(v["error"]["param"], Value::Null);
    }
    let resp = post(
        &c,
        &server,
        "/v1/chat/completions",
        &chat_body("mock-fault:bogus", false, false, None),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Errors bill nothing.
    assert_eq!(server.stats().prompt_tokens, 0);
    assert_eq!(server.stats().requests, 5);
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_response() {
    let server = start(MockOptions::default()).await;
    let c = client();
    let body = chat_body("mock-gpt", false, false, None).to_string();
    for headers in [&[("x-mock-fault", "reset")][..], &[]] {
        let model_body = chat_body("mock-fault:reset", false, false, None).to_string();
        let body = if headers.is_empty() {
            &model_body
        } else {
            &body
        };
        let err = send(
            &c,
            &server,
            Method::POST,
            "/v1/chat/completions",
            Some(body.as_bytes()),
            headers,
        )
        .await
        .unwrap_err();
        let hyper_err = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<hyper::Error>())
            .unwrap();
        assert!(hyper_err.is_incomplete_message(), "{hyper_err:?}");
    }
    // The server keeps serving.
    let resp = post(
        &c,
        &server,
        "/v1/chat/completions",
        &chat_body("mock-gpt", false, false, None),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn cut_after_aborts_the_body_and_bills_nothing() {
    let server = start(MockOptions::default()).await;
    let c = client();
    let resp = post(
        &c,
        &server,
        "/v1/chat/completions",
        &chat_body("mock-gpt", true, true, None),
        &[("x-mock-fault", "cut-after-2")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut received = Vec::new();
    let err = loop {
        match body.frame().await {
            Some(Ok(frame)) => received.extend_from_slice(&frame.into_data().unwrap()),
            Some(Err(e)) => break e,
            None => unreachable!(
                "the body must fail, got {}",
                String::from_utf8_lossy(&received)
            ),
        }
    };
    // hyper reports the unterminated chunked body as an unexpected EOF.
    let eof = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|e| e.kind() == std::io::ErrorKind::UnexpectedEof);
    assert!(eof || err.is_incomplete_message(), "{err:?}");
    let text = String::from_utf8(received).unwrap();
    let events = sse_events(&text);
    assert_eq!(events.len(), 3, "role + 2 content chunks: {text}");
    assert!(!text.contains("[DONE]") && !text.contains("\"usage\":{"));

    // Non-streamed requests are cut too (via the model name).
    let resp = post(
        &c,
        &server,
        "/v1/chat/completions",
        &chat_body("mock-fault:cut-after-1", false, false, None),
        &[],
    )
    .await;
    assert!(resp.into_body().collect().await.is_err());
    assert_eq!(
        server.stats(),
        Stats {
            requests: 2,
            prompt_tokens: 0,
            completion_tokens: 0,
            completed_streams: 0,
            cut_streams: 2
        }
    );
}

#[tokio::test]
async fn latency_faults_delay_the_response() {
    let server = start(MockOptions {
        latency: Duration::from_millis(30),
        ..MockOptions::default()
    })
    .await;
    let c = client();
    let started = Instant::now();
    let resp = post(
        &c,
        &server,
        "/v1/chat/completions",
        &chat_body("mock-fault:latency-100", false, false, None),
        &[("x-mock-latency-ms", "50")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(180),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let resp = get(&c, &server, "/health").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(30),
        "latency applies to /v1 only"
    );
}

#[tokio::test]
async fn api_key_is_enforced() {
    let server = start(MockOptions {
        api_key: Some("sk-test".to_owned()),
        ..MockOptions::default()
    })
    .await;
    let c = client();
    let body = chat_body("mock-gpt", false, false, None);
    for headers in [&[][..], &[("authorization", "Bearer nope")]] {
        let resp = post(&c, &server, "/v1/chat/completions", &body, headers).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            body_json(resp).await,
            json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
        );
    }
    assert_eq!(
        send(&c, &server, Method::GET, "/v1/models", None, &[])
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let resp = post(
        &c,
        &server,
        "/v1/chat/completions",
        &body,
        &[("authorization", "Bearer sk-test")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        server
            .last_request_headers()
            .contains(&("authorization".to_owned(), "Bearer sk-test".to_owned()))
    );
    // Non-/v1 endpoints stay open.
    assert_eq!(get(&c, &server, "/health").await.status(), StatusCode::OK);
}
