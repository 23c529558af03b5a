//! Every way a request leaves the loop: the response, on-complete and exactly one usage record.

use serde_json::json;
use weir_core::*;

use crate::fakes::{self, *};

#[test]
fn refusals_before_admission_record_nothing_and_speak_the_clients_format() {
    // 413 on /v1/messages comes back in Anthropic's format.
    let big = "x".repeat(2000);
    let mut req = fakes::chat(
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": big}]}),
    );
    req.path = "/v1/messages".into();
    let out = serve_with(Endpoint::Messages, req, vec![], vec![], Drive::default());
    assert_eq!(out.status, 413);
    let body = out.json();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "request_too_large", "{body}");
    assert!(out.platform.usage().is_empty());

    // Invalid JSON: 400 in OpenAI's format, with the request id.
    let mut req = hello(false);
    req.body = bytes::Bytes::from_static(b"{\"model\":");
    let out = serve_with(
        Endpoint::ChatCompletions,
        req,
        vec![],
        vec![],
        Drive::default(),
    );
    assert_eq!(out.status, 400);
    assert_eq!(out.json()["error"]["code"], "invalid_request_body");
    assert_eq!(out.json()["error"]["request_id"], "req_test");
    assert!(out.platform.usage().is_empty());
    assert!(
        out.log.borrow().initial.is_none(),
        "no chain for a refused request"
    );
}

#[test]
fn success_records_usage_once_with_the_attempt() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![Up::json(200, completion("hi there"))],
        vec![FakePolicy::new("audit")],
        Drive::default(),
    );
    assert_eq!(out.status, 200);
    assert_eq!(out.json()["choices"][0]["message"]["content"], "hi there");
    let r = out.record();
    assert_eq!((r.outcome, r.status, r.total_tokens), ("success", 200, 5));
    assert_eq!(r.provider, "main");
    assert_eq!(r.attempts.len(), 1);
    assert!(r.attempts[0].billed);
    let done = out.completion();
    assert_eq!(done.outcome, Outcome::Success);
    assert_eq!(done.attempts[0].status, Some(200));
    // The client's key never goes upstream; the provider's does.
    let sent = &out.platform.sent()[0];
    let auth: Vec<_> = sent
        .headers
        .iter()
        .filter(|(n, _)| n == "authorization")
        .collect();
    assert_eq!(
        auth,
        vec![&(
            "authorization".to_owned(),
            "Bearer sk-main-secret".to_owned()
        )]
    );
}

#[test]
fn a_denial_is_rendered_counted_and_settled() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![],
        vec![
            FakePolicy::new("auth").request(|_| Ok(proceed())),
            FakePolicy::new("limit").request(|_| Ok(deny(429, "rate_limit_exceeded"))),
            FakePolicy::new("never").request(|_| panic!("after a denial no policy runs")),
        ],
        Drive::default(),
    );
    assert_eq!(out.status, 429);
    assert_eq!(out.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(header(&out.headers, "retry-after"), Some("7"));
    let r = out.record();
    assert_eq!((r.outcome, r.status), ("denied", 429));
    assert!(r.attempts.is_empty());
    assert_eq!(
        out.platform.0.borrow().denied,
        vec![("limit".to_owned(), "rate_limit_exceeded".to_owned())]
    );
    // Every policy settles, the denying one and those after it too.
    assert_eq!(out.log.borrow().completions.len(), 3);
    assert!(out.platform.sent().is_empty());
}

#[test]
fn a_policy_fault_is_a_500_naming_the_policy() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![],
        vec![FakePolicy::new("buggy").request(|_| Err(trapped("buggy")))],
        Drive::default(),
    );
    assert_eq!(out.status, 500);
    assert_eq!(out.json()["error"]["code"], "policy_trapped");
    assert!(
        out.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("buggy")
    );
    let r = out.record();
    assert_eq!(
        (r.outcome, r.error),
        ("gateway_error", Some("policy_trapped"))
    );
}

#[test]
fn an_edit_that_cannot_apply_is_a_policy_error() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![],
        vec![FakePolicy::new("editor").request(|_| {
            Ok(Verdict::Continue(Edits {
                llm: vec![LlmEdit::RemoveMessage(9)],
                ..Default::default()
            }))
        })],
        Drive::default(),
    );
    assert_eq!(out.status, 500);
    assert_eq!(out.json()["error"]["code"], "policy_invalid_edit");
    assert!(out.text().contains("editor") && out.text().contains("index 9"));
    assert_eq!(out.record().error, Some("policy_invalid_edit"));
}

#[test]
fn llm_edits_reach_later_policies_and_the_upstream() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![Up::json(200, completion("ok"))],
        vec![
            FakePolicy::new("template").request(|_| {
                Ok(Verdict::Continue(Edits {
                    llm: vec![
                        LlmEdit::SetModel("gpt-big".into()),
                        LlmEdit::PrependMessages(vec![ChatMessage::text("system", "Be brief.")]),
                        LlmEdit::SetParameter {
                            name: "temperature".into(),
                            value: "0.1".into(),
                        },
                    ],
                    ..Default::default()
                }))
            }),
            FakePolicy::new("reader").request(|m| {
                let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
                assert_eq!(body["model"], "gpt-big");
                assert_eq!(body["messages"][0]["content"], "Be brief.");
                Ok(proceed())
            }),
        ],
        Drive::default(),
    );
    assert_eq!(out.status, 200, "{}", out.text());
    let llm = out.log.borrow().llm.clone();
    assert_eq!(llm.len(), 1);
    let view = llm[0].clone().unwrap();
    assert_eq!(view.model.as_deref(), Some("gpt-big"));
    assert_eq!(view.message_count, 2);
    let sent: serde_json::Value = serde_json::from_slice(&out.platform.sent()[0].body).unwrap();
    assert_eq!(sent["model"], "gpt-big");
    assert_eq!(sent["temperature"], 0.1);
    assert_eq!(sent["messages"].as_array().unwrap().len(), 2);
}

#[test]
fn the_stream_flag_cannot_be_edited() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(true),
        vec![],
        vec![FakePolicy::new("sneaky").request(|_| {
            Ok(Verdict::Continue(Edits {
                body: Some(br#"{"model":"m","messages":[],"stream":false}"#.to_vec()),
                ..Default::default()
            }))
        })],
        Drive::default(),
    );
    assert_eq!(out.status, 500);
    assert!(out.text().contains("stream"), "{}", out.text());
}

#[test]
fn a_missing_key_is_a_503_naming_the_variable() {
    let mut route = route();
    route.upstream = std::sync::Arc::new(Upstream {
        name: "main".into(),
        missing_key_env: Some("MAIN_KEY".into()),
        ..Default::default()
    });
    let mut all = (*route.upstreams).clone();
    all.insert("main".into(), route.upstream.clone());
    route.upstreams = std::sync::Arc::new(all);
    let out = serve_on(
        route,
        Endpoint::ChatCompletions,
        hello(false),
        vec![],
        vec![],
        Drive::default(),
    );
    assert_eq!(out.status, 503);
    assert!(out.text().contains("MAIN_KEY"));
    assert_eq!(out.record().error, Some("provider_not_configured"));
}

#[test]
fn upstream_failures_map_to_502_and_504_and_keep_their_cause_in_the_log() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![Up::Unreachable],
        vec![],
        Drive::default(),
    );
    assert_eq!(out.status, 502);
    assert_eq!(out.json()["error"]["code"], "upstream_unavailable");
    assert!(
        !out.text().contains("os error"),
        "the cause stays in the log"
    );
    let warnings = out.platform.0.borrow().warnings.clone();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("connection refused (os error 111)")),
        "{warnings:?}"
    );
    let r = out.record();
    assert_eq!(
        (r.outcome, r.error),
        ("upstream_error", Some("upstream_unavailable"))
    );
    assert_eq!(r.attempts[0].error, Some("upstream_unavailable"));

    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![Up::Timeout],
        vec![],
        Drive::default(),
    );
    assert_eq!(out.status, 504);
    assert_eq!(out.record().error, Some("upstream_timeout"));

    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![Up::BrokenBody],
        vec![],
        Drive::default(),
    );
    assert_eq!(out.status, 502);
    assert_eq!(out.record().error, Some("upstream_response_failed"));

    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![Up::json(401, json!({"error": {"message": "bad key"}}))],
        vec![],
        Drive::default(),
    );
    assert_eq!(out.status, 502);
    assert_eq!(out.json()["error"]["code"], "upstream_auth_failed");

    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![Up::json(500, json!({"error": {"message": "boom"}}))],
        vec![],
        Drive::default(),
    );
    assert_eq!(out.status, 500);
    let r = out.record();
    assert_eq!(
        (r.outcome, r.error),
        ("upstream_error", Some("upstream_http_error"))
    );
    assert!(!r.attempts[0].billed);
}

fn choose(targets: Vec<(&'static str, Option<&'static str>)>) -> FakePolicy {
    FakePolicy::new("router").request(move |_| {
        Ok(Verdict::Continue(Edits {
            targets: targets
                .iter()
                .map(|(p, m)| Target {
                    provider: (*p).into(),
                    model: m.map(Into::into),
                })
                .collect(),
            ..Default::default()
        }))
    })
}

#[test]
fn targets_fail_over_before_anything_is_billed() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![
            Up::Unreachable,
            Up::json(503, json!({"error": {"message": "overloaded"}})),
            Up::json(200, completion("from claude? no, from backup")),
        ],
        vec![choose(vec![
            ("main", None),
            ("main", Some("gpt-small")),
            ("backup", Some("gpt-other")),
        ])],
        Drive::default(),
    );
    assert_eq!(out.status, 200, "{}", out.text());
    let r = out.record();
    assert_eq!(r.provider, "backup");
    let summary: Vec<_> = r
        .attempts
        .iter()
        .map(|a| (a.provider.as_str(), a.model.as_deref(), a.status, a.billed))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("main", Some("gpt-test"), None, false),
            ("main", Some("gpt-small"), Some(503), false),
            ("backup", Some("gpt-other"), Some(200), true),
        ]
    );
    let sent = out.platform.sent();
    assert_eq!(sent.len(), 3);
    let model = |i: usize| {
        serde_json::from_slice::<serde_json::Value>(&sent[i].body).unwrap()["model"].clone()
    };
    assert_eq!(
        (model(0), model(1), model(2)),
        (json!("gpt-test"), json!("gpt-small"), json!("gpt-other"))
    );
    assert!(sent[2].url.starts_with("http://backup.test/v1/"));
    assert_eq!(out.completion().attempts.len(), 3);
}

#[test]
fn a_target_in_another_format_is_translated() {
    let anthropic_answer = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "bonjour"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 4, "output_tokens": 1},
    });
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![Up::json(200, anthropic_answer)],
        vec![choose(vec![("claude", Some("claude-x"))])],
        Drive::default(),
    );
    assert_eq!(out.status, 200, "{}", out.text());
    assert_eq!(out.json()["choices"][0]["message"]["content"], "bonjour");
    let sent = &out.platform.sent()[0];
    assert!(sent.url.ends_with("/messages"), "{}", sent.url);
    assert!(
        sent.headers
            .iter()
            .any(|(n, v)| n == "x-api-key" && v == "sk-claude-secret")
    );
}

#[test]
fn an_unknown_target_names_the_policy() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![],
        vec![choose(vec![("nowhere", None)])],
        Drive::default(),
    );
    assert_eq!(out.status, 500);
    assert_eq!(out.json()["error"]["code"], "policy_invalid_target");
    assert!(out.text().contains("router") && out.text().contains("nowhere"));
    out.record();
}

#[test]
fn a_response_phase_denial_keeps_the_usage() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![Up::json(200, completion("secret stuff"))],
        vec![FakePolicy::new("guard").response(|m| {
            let text = String::from_utf8_lossy(&m.body).into_owned();
            Ok(if text.contains("secret") {
                deny(403, "output_blocked")
            } else {
                proceed()
            })
        })],
        Drive::default(),
    );
    assert_eq!(out.status, 403);
    let r = out.record();
    assert_eq!((r.outcome, r.total_tokens), ("denied", 5));
}

#[test]
fn an_answer_skips_the_upstream_and_later_policies() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![],
        vec![
            FakePolicy::new("outer").response(|m| {
                assert!(String::from_utf8_lossy(&m.body).contains("cached!"));
                Ok(Verdict::Continue(Edits {
                    set_headers: vec![("x-outer".into(), "saw it".into())],
                    ..Default::default()
                }))
            }),
            FakePolicy::new("cache")
                .request(|_| {
                    Ok(Verdict::Answer(PolicyAnswer {
                        completion: completion("cached!").to_string(),
                        headers: vec![("x-weir-cache".into(), "hit".into())],
                    }))
                })
                .response(|_| panic!("the answering policy's own on-response does not run")),
            FakePolicy::new("inner").request(|_| panic!("after an answer no policy runs")),
        ],
        Drive::default(),
    );
    assert_eq!(out.status, 200, "{}", out.text());
    assert_eq!(out.json()["choices"][0]["message"]["content"], "cached!");
    assert_eq!(header(&out.headers, "x-weir-cache"), Some("hit"));
    assert_eq!(header(&out.headers, "x-outer"), Some("saw it"));
    let r = out.record();
    assert_eq!(
        (r.outcome, r.total_tokens, r.cost_usd),
        ("answered", 0, None)
    );
    assert!(out.platform.sent().is_empty());
    assert_eq!(out.completion().outcome, Outcome::Answered);
}

#[test]
fn an_answer_is_rendered_for_anthropic_clients() {
    let mut req = fakes::chat(
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
    );
    req.path = "/v1/messages".into();
    let out = serve_with(
        Endpoint::Messages,
        req,
        vec![],
        vec![FakePolicy::new("cache").request(|_| {
            Ok(Verdict::Answer(PolicyAnswer {
                completion: completion("from cache").to_string(),
                headers: vec![],
            }))
        })],
        Drive::default(),
    );
    assert_eq!(out.status, 200);
    assert_eq!(out.json()["type"], "message");
    assert_eq!(out.json()["content"][0]["text"], "from cache");
}

#[test]
fn an_invalid_answer_is_a_policy_error() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![],
        vec![FakePolicy::new("cache").request(|_| {
            Ok(Verdict::Answer(PolicyAnswer {
                completion: "not json".into(),
                headers: vec![],
            }))
        })],
        Drive::default(),
    );
    assert_eq!(out.status, 500);
    assert_eq!(out.json()["error"]["code"], "policy_invalid_answer");
    out.record();
}

#[test]
fn a_reply_is_sent_as_it_is() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(false),
        vec![],
        vec![FakePolicy::new("static").request(|_| {
            Ok(Verdict::Respond(weir_core::Reply {
                status: 299,
                headers: vec![
                    ("X-Custom".into(), "1".into()),
                    ("x-request-id".into(), "forged".into()),
                ],
                body: b"raw".to_vec(),
            }))
        })],
        Drive::default(),
    );
    assert_eq!((out.status, out.body.as_slice()), (299, &b"raw"[..]));
    assert_eq!(header(&out.headers, "x-custom"), Some("1"));
    assert_eq!(header(&out.headers, "x-request-id"), Some("req_test"));
    assert_eq!(out.record().outcome, "answered");
}

#[test]
fn llm_edits_leave_requests_without_an_llm_view_alone() {
    let models = ClientRequest {
        method: "GET".into(),
        path: "/v1/models".into(),
        headers: vec![],
        body: bytes::Bytes::new(),
    };
    let out = serve_with(
        Endpoint::Models,
        models,
        vec![Up::json(200, json!({"object": "list", "data": []}))],
        vec![FakePolicy::new("model-setter").request(|_| {
            Ok(Verdict::Continue(Edits {
                llm: vec![LlmEdit::SetModel("x".into())],
                ..Default::default()
            }))
        })],
        Drive::default(),
    );
    assert_eq!(out.status, 200, "{}", out.text());
    assert!(out.platform.sent()[0].body.is_empty());
}
