//! Snapshots of every translation (request, answer, error, stream) and property tests of the
//! stream decoders under arbitrary splits.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::eventstream;
use crate::sse::split_at;

/// A request that uses everything the translations cover.
fn rich_request() -> Value {
    json!({
        "model": "the-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and what's the weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"celsius\":21}"},
            {"role": "assistant", "content": "A cat. 21 °C."},
            {"role": "user", "content": "Thanks. As JSON please."}
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "stop": ["\n\n"],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 100,
        "user": "user-42"
    })
}

fn native(dialect: ProviderKind, stream: bool) -> Value {
    let body = serde_json::to_vec(&rich_request()).unwrap_or_default();
    let req = request(
        dialect,
        "chat/completions",
        Target::default(),
        &body,
        stream,
    );
    let Ok(req) = req else {
        return json!({"error": format!("{req:?}")});
    };
    json!({
        "path": req.path,
        "headers": req.headers,
        "body": serde_json::from_slice::<Value>(&req.body).unwrap_or(Value::Null),
    })
}

#[test]
fn anthropic_request() {
    insta::assert_json_snapshot!(native(ProviderKind::Anthropic, true));
}

#[test]
fn gemini_request() {
    insta::assert_json_snapshot!(native(ProviderKind::Gemini, true));
}

#[test]
fn bedrock_request() {
    insta::assert_json_snapshot!(native(ProviderKind::AwsBedrock, false));
}

#[test]
fn openai_compatible_requests_keep_the_body() {
    let body = serde_json::to_vec(&rich_request()).unwrap_or_default();
    let target = Target {
        api_version: Some("2024-06-01"),
        deployment: Some("prod gpt"),
    };
    let paths: Vec<String> = [
        ProviderKind::Openai,
        ProviderKind::Mistral,
        ProviderKind::AzureOpenai,
        ProviderKind::AzureAiFoundry,
    ]
    .into_iter()
    .map(|d| {
        let r = request(d, "chat/completions", target, &body, false);
        let r = r.unwrap_or_else(|e| NativeRequest {
            path: e.to_string(),
            headers: vec![],
            body: vec![],
        });
        assert_eq!(r.body, body, "{d:?} must pass the body through");
        r.path
    })
    .collect();
    insta::assert_json_snapshot!(paths);
    // Azure without a deployment uses the model's name.
    let r = request(
        ProviderKind::AzureOpenai,
        "embeddings",
        Target::default(),
        &body,
        false,
    );
    assert_eq!(
        r.map(|r| r.path).ok().as_deref(),
        Some("/openai/deployments/the-model/embeddings?api-version=2024-10-21")
    );
}

#[test]
fn mistral_requests_lose_stream_options() {
    let body = br#"{"model":"mistral-small","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#;
    let r = request(
        ProviderKind::Mistral,
        "chat/completions",
        Target::default(),
        body,
        true,
    );
    let v: Value = r
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    assert_eq!(
        v,
        json!({"model": "mistral-small", "messages": [], "stream": true})
    );
}

#[test]
fn bad_requests_name_the_field() {
    let cases = [
        (json!({"messages": []}), "model"),
        (
            json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{nope"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "messages[0].content[0].type",
        ),
        (json!({"model": "m", "messages": [], "n": 2}), "n"),
    ];
    for (req, field) in cases {
        let body = serde_json::to_vec(&req).unwrap_or_default();
        for d in [
            ProviderKind::Anthropic,
            ProviderKind::Gemini,
            ProviderKind::AwsBedrock,
        ] {
            let err = request(d, "chat/completions", Target::default(), &body, false);
            assert_eq!(
                err.err().map(|e| e.field),
                Some(field.to_owned()),
                "{d:?} {req}"
            );
        }
    }
    // Gemini needs the tool name of a tool result.
    let body = br#"{"model":"m","messages":[{"role":"tool","tool_call_id":"x","content":"1"}]}"#;
    let err = request(
        ProviderKind::Gemini,
        "chat/completions",
        Target::default(),
        body,
        false,
    );
    assert_eq!(
        err.err().map(|e| e.field).as_deref(),
        Some("messages[0].tool_call_id")
    );
    // Bedrock takes inline images only.
    let body = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/cat.png"}}]}]}"#;
    let err = request(
        ProviderKind::AwsBedrock,
        "chat/completions",
        Target::default(),
        body,
        false,
    );
    assert_eq!(
        err.err().map(|e| e.field).as_deref(),
        Some("messages[0].content[0]")
    );
    let err = request(
        ProviderKind::Anthropic,
        "embeddings",
        Target::default(),
        b"{}",
        false,
    );
    assert_eq!(err.err().map(|e| e.field).as_deref(), Some("endpoint"));
}

fn translated(dialect: ProviderKind, native: &Value) -> Value {
    let body = Bytes::from(serde_json::to_vec(native).unwrap_or_default());
    match response(dialect, body, 1_700_000_000, "the-model") {
        Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
        Err(e) => json!({"error": e.to_string()}),
    }
}

#[test]
fn anthropic_response() {
    insta::assert_json_snapshot!(translated(
        ProviderKind::Anthropic,
        &json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 90, "cache_creation_input_tokens": 0}})
    ));
}

#[test]
fn gemini_response() {
    insta::assert_json_snapshot!(translated(
        ProviderKind::Gemini,
        &json!({"candidates": [{"content": {"role": "model", "parts": [
                {"text": "Hello"}, {"functionCall": {"name": "weather", "args": {"city": "Paris"}}}]},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17},
            "modelVersion": "gemini-2.0-flash-001", "responseId": "resp-1"})
    ));
}

#[test]
fn bedrock_response() {
    insta::assert_json_snapshot!(translated(
        ProviderKind::AwsBedrock,
        &json!({"output": {"message": {"role": "assistant", "content": [{"text": "Hi there"}]}},
            "stopReason": "max_tokens",
            "usage": {"inputTokens": 8, "outputTokens": 2, "totalTokens": 10}, "metrics": {"latencyMs": 5}})
    ));
}

#[test]
fn errors_keep_the_provider_message() {
    let cases = [
        (
            ProviderKind::Anthropic,
            529,
            vec![],
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
        (
            ProviderKind::Gemini,
            429,
            vec![],
            json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}),
        ),
        (
            ProviderKind::AwsBedrock,
            400,
            vec![(
                "x-amzn-errortype".to_owned(),
                "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"
                    .to_owned(),
            )],
            json!({"message": "Malformed input request"}),
        ),
        (
            ProviderKind::AzureOpenai,
            404,
            vec![],
            json!({"error": {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist."}}),
        ),
    ];
    let got: Vec<Value> = cases
        .into_iter()
        .map(|(d, status, headers, body)| {
            let e = error(d, status, &headers, &serde_json::to_vec(&body).unwrap_or_default());
            json!({"dialect": d.name(), "status": client_status(status), "message": e.message, "kind": e.kind})
        })
        .collect();
    insta::assert_json_snapshot!(got);
    let e = error(ProviderKind::Gemini, 500, &[], b"<html>oops</html>");
    assert_eq!(e.message, "The provider answered with status 500.");
}

fn anthropic_stream() -> Vec<u8> {
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [], "stop_reason": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hé"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "llo €"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 15}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let mut out = Vec::new();
    for (name, data) in events {
        out.extend_from_slice(format!("event: {name}\ndata: {data}\n\n").as_bytes());
    }
    out
}

fn gemini_stream() -> Vec<u8> {
    let events = [
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hé"}]}, "index": 0}], "modelVersion": "gemini-2.0-flash", "responseId": "r1"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "llo €"}]}, "index": 0}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "!"}]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 3, "totalTokenCount": 12}}),
    ];
    let mut out = Vec::new();
    for data in events {
        out.extend_from_slice(format!("data: {data}\r\n\r\n").as_bytes());
    }
    out
}

fn bedrock_stream() -> Vec<u8> {
    let events = [
        ("messageStart", json!({"role": "assistant"})),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Hé"}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "llo €"}}),
        ),
        ("contentBlockStop", json!({"contentBlockIndex": 0})),
        (
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu_1", "name": "weather"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"city\":\"Paris\"}"}}}),
        ),
        ("contentBlockStop", json!({"contentBlockIndex": 1})),
        ("messageStop", json!({"stopReason": "tool_use"})),
        (
            "metadata",
            json!({"usage": {"inputTokens": 30, "outputTokens": 12, "totalTokens": 42}, "metrics": {"latencyMs": 100}}),
        ),
    ];
    let mut out = Vec::new();
    for (name, data) in events {
        out.extend(eventstream::encode(
            &[
                (":event-type", name),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            data.to_string().as_bytes(),
        ));
    }
    out
}

fn decode(dialect: ProviderKind, pieces: &[&[u8]]) -> String {
    let Some(mut d) = StreamDecoder::new(dialect, 1_700_000_000, "the-model") else {
        return String::new();
    };
    let mut out = Vec::new();
    for p in pieces {
        out.extend(d.push(p));
    }
    String::from_utf8(out).unwrap_or_else(|e| format!("not UTF-8: {e}"))
}

#[test]
fn anthropic_stream_decodes() {
    insta::assert_snapshot!(decode(ProviderKind::Anthropic, &[&anthropic_stream()]));
}

#[test]
fn gemini_stream_decodes() {
    insta::assert_snapshot!(decode(ProviderKind::Gemini, &[&gemini_stream()]));
}

#[test]
fn bedrock_stream_decodes() {
    insta::assert_snapshot!(decode(ProviderKind::AwsBedrock, &[&bedrock_stream()]));
}

#[test]
fn cut_streams_never_end_with_done() {
    for (d, bytes) in [
        (ProviderKind::Anthropic, anthropic_stream()),
        (ProviderKind::Gemini, gemini_stream()),
        (ProviderKind::AwsBedrock, bedrock_stream()),
    ] {
        let cut = &bytes[..bytes.len() - 20];
        let out = decode(d, &[cut]);
        assert!(!out.contains("[DONE]"), "{d:?}: {out}");
        assert!(
            out.contains("\"content\":\"Hé\""),
            "{d:?} relays before the end: {out}"
        );
    }
    // A provider error inside the stream becomes an OpenAI error event.
    let err = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let out = decode(ProviderKind::Anthropic, &[err]);
    assert!(
        out.contains("\"message\":\"Overloaded\"") && !out.contains("[DONE]"),
        "{out}"
    );
    let exc = eventstream::encode(
        &[
            (":message-type", "exception"),
            (":exception-type", "throttlingException"),
        ],
        br#"{"message":"Too many requests"}"#,
    );
    let out = decode(ProviderKind::AwsBedrock, &[&exc]);
    assert!(
        out.contains("Too many requests") && out.contains("throttlingException"),
        "{out}"
    );
}

proptest! {
    /// Each decoder gives the same output whatever the split of its input, including inside a
    /// UTF-8 character or an event-stream prelude.
    #[test]
    fn decoders_are_independent_of_splits(
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..16),
    ) {
        for (d, bytes) in [
            (ProviderKind::Anthropic, anthropic_stream()),
            (ProviderKind::Gemini, gemini_stream()),
            (ProviderKind::AwsBedrock, bedrock_stream()),
        ] {
            let whole = decode(d, &[&bytes]);
            let pieces = split_at(&bytes, &cuts);
            prop_assert_eq!(decode(d, &pieces), whole);
        }
    }
}

mod inbound {
    use super::*;
    use crate::translate::anthropic::inbound;

    #[test]
    fn messages_request_becomes_a_chat_request() {
        let req = json!({
            "model": "claude-x",
            "max_tokens": 64,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "21 °C"}]},
                    {"type": "text", "text": "And tomorrow?"}
                ]}
            ],
            "tools": [{"name": "weather", "description": "Weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "metadata": {"user_id": "u1"},
            "stream": true
        });
        insta::assert_json_snapshot!(
            inbound::request(&req).unwrap_or_else(|e| json!({"error": e.to_string()}))
        );
        let bad = inbound::request(&json!({"model": "m", "messages": []}));
        assert_eq!(bad.err().map(|e| e.field).as_deref(), Some("max_tokens"));
        // The gateway's own fields reach the policies; other unknown fields do not.
        let own = inbound::request(&json!({"model": "m", "max_tokens": 5, "messages": [],
            "weir_template": {"name": "t"}, "other": 1}));
        let own = own.unwrap_or_default();
        assert_eq!(own["weir_template"], json!({"name": "t"}));
        assert!(own.get("other").is_none());
    }

    #[test]
    fn chat_completion_becomes_a_message() {
        let completion = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-x",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Calling.",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25, "prompt_tokens_details": {"cached_tokens": 4}}});
        insta::assert_json_snapshot!(
            inbound::response(&completion).unwrap_or_else(|e| json!({"error": e.to_string()}))
        );
    }

    #[test]
    fn chunks_become_anthropic_events() {
        let chunks = [
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-x","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-x","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-x","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ];
        let mut enc = inbound::StreamEncoder::new("gpt-x", "req1");
        let mut out = Vec::new();
        for c in chunks {
            out.extend(enc.chunk(c));
        }
        out.extend(enc.done(20, 5, 0));
        insta::assert_snapshot!(String::from_utf8(out).unwrap_or_default());
    }

    #[test]
    fn errors_use_the_anthropic_envelope() {
        let body: Value = serde_json::from_slice(&inbound::error(429, "Slow down.", "req1"))
            .unwrap_or(Value::Null);
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down."}, "request_id": "req1"})
        );
    }
}
