//! Embeddings, models, errors, recorded headers and shutdown.

use crate::*;

#[tokio::test]
async fn embeddings_have_requested_dimensions_and_usage() {
    let server = start(MockOptions::default()).await;
    let c = client();
    let v = body_json(
        post(
            &c,
            &server,
            "/v1/embeddings",
            &json!({"model": "mock-embedding", "input": "hello world"}),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "mock-embedding");
    assert_eq!(v["data"][0]["object"], "embedding");
    assert_eq!(v["data"][0]["index"], 0);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let first = v["data"][0]["embedding"].clone();

    let req =
        json!({"model": "mock-embedding", "input": ["hello world", "abcde"], "dimensions": 3});
    let v = body_json(post(&c, &server, "/v1/embeddings", &req, &[]).await).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["embedding"].as_array().unwrap().len() == 3)
    );
    assert_eq!(v["usage"]["prompt_tokens"], 3 + 2);
    let again = body_json(
        post(
            &c,
            &server,
            "/v1/embeddings",
            &json!({"model": "m", "input": "hello world"}),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(again["data"][0]["embedding"], first, "deterministic");

    let b64 = body_json(
        post(
            &c,
            &server,
            "/v1/embeddings",
            &json!({"model": "m", "input": "x", "encoding_format": "base64"}),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(
        b64["data"][0]["embedding"].as_str().unwrap().len(),
        44,
        "8 f32 = 32 bytes = 44 base64 chars"
    );

    let resp = post(
        &c,
        &server,
        "/v1/embeddings",
        &json!({"model": "m", "input": 5}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.stats().prompt_tokens, 3 + 5 + 3 + 1);
}

#[tokio::test]
async fn models_errors_and_headers() {
    let server = start(MockOptions::default()).await;
    let c = client();
    let v = body_json(get(&c, &server, "/v1/models").await).await;
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"mock-gpt") && ids.len() >= 3);
    assert_eq!(
        v["data"][0],
        json!({"id": "mock-gpt", "object": "model", "created": 0, "owned_by": "weir-mock"})
    );
    assert_eq!(
        get(&c, &server, "/v1/models/mock-gpt").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&c, &server, "/v1/models/nope").await.status(),
        StatusCode::NOT_FOUND
    );

    let resp = send(
        &c,
        &server,
        Method::POST,
        "/v1/chat/completions",
        Some(b"{not json"),
        &[("x-custom", "42")],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_json(resp).await["error"]["type"],
        "invalid_request_error"
    );
    assert!(
        server
            .last_request_headers()
            .contains(&("x-custom".to_owned(), "42".to_owned()))
    );

    let resp = post(
        &c,
        &server,
        "/v1/chat/completions",
        &json!({"model": "m"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(resp).await["error"]["param"], "messages");

    let resp = get(&c, &server, "/v1/nothing-here").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        body_json(resp).await["error"]["message"],
        "Invalid URL (GET /v1/nothing-here)"
    );
    assert_eq!(
        get(&c, &server, "/elsewhere").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let server = start(MockOptions::default()).await;
    let addr = server.addr();
    assert!(server.base_url().starts_with("http://127.0.0.1:"));
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let dropped = start(MockOptions::default()).await;
    let addr = dropped.addr();
    drop(dropped);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
