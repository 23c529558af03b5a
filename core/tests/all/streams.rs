//! Streams: settled once however they end, and the policy pipeline (hold back, split, rewrite,
//! flush before the end).

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::json;
use weir_core::*;

use crate::fakes::*;

fn stream_reply() -> Up {
    Up::sse(&[
        &chunk(Some("Hel"), None),
        &chunk(Some("lo wor"), None),
        &chunk(Some("ld"), Some("stop")),
        &usage_chunk(),
        "[DONE]",
    ])
}

#[test]
fn a_stream_is_relayed_and_settled_once() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(true),
        vec![stream_reply()],
        vec![FakePolicy::new("audit")],
        Drive::default(),
    );
    assert_eq!(out.status, 200);
    assert_eq!(out.streamed_text(), "Hello world");
    assert_eq!(out.events().last().map(String::as_str), Some("[DONE]"));
    // The client did not ask for usage: the usage chunk the gateway asked for is kept from it.
    assert!(!out.text().contains("\"usage\":{"), "{}", out.text());
    let r = out.record();
    assert_eq!((r.outcome, r.total_tokens, r.stream), ("success", 7, true));
    let sent: serde_json::Value = serde_json::from_slice(&out.platform.sent()[0].body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[test]
fn cut_stalled_incomplete_and_abandoned_streams_are_settled_once() {
    for (end, error) in [
        (StreamEnd::Cut, "upstream_stream_cut"),
        (StreamEnd::Stalled, "upstream_timeout"),
        (StreamEnd::Ended, "upstream_stream_incomplete"),
    ] {
        let out = serve_with(
            Endpoint::ChatCompletions,
            hello(true),
            vec![Up::sse(&[&chunk(Some("partial"), None)])],
            vec![],
            Drive {
                end,
                client_gone: false,
            },
        );
        let r = out.record();
        assert_eq!((r.outcome, r.error), ("upstream_error", Some(error)));
        assert!(out.text().contains(error), "{}", out.text());
        assert_eq!(out.streamed_text(), "partial");
    }
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(true),
        vec![stream_reply()],
        vec![],
        Drive {
            end: StreamEnd::Ended,
            client_gone: true,
        },
    );
    let r = out.record();
    assert_eq!(r.outcome, "client_cancelled");
    assert_eq!(r.total_tokens, 7, "usage read after the client left");
}

/// Holds back text until a full `{{...}}` placeholder is seen, then replaces it; releases the
/// rest at the end. Works on text split anywhere.
fn unmasker() -> FakePolicy {
    let held = Rc::new(RefCell::new(String::new()));
    let held2 = held.clone();
    FakePolicy::new("unmask")
        .chunk(move |ev| {
            let Some(text) = &ev.text else {
                return Ok(ChunkVerdict::Pass);
            };
            let mut h = held.borrow_mut();
            h.push_str(text);
            let h2 = h.replace("{{NAME}}", "Alice");
            // Keep back anything from the first `{` that may start an unfinished placeholder.
            let cut = h2
                .char_indices()
                .find(|&(i, c)| c == '{' && !h2[i..].contains("}}"))
                .map_or(h2.len(), |(i, _)| i);
            let (send, keep) = h2.split_at(cut);
            let send = send.to_owned();
            *h = keep.to_owned();
            Ok(if send.is_empty() {
                ChunkVerdict::Emit(vec![])
            } else {
                ChunkVerdict::Emit(vec![Emission::Text(send)])
            })
        })
        .end(move || {
            let rest = std::mem::take(&mut *held2.borrow_mut());
            Ok(if rest.is_empty() {
                ChunkVerdict::Pass
            } else {
                ChunkVerdict::Emit(vec![Emission::Text(rest)])
            })
        })
}

#[test]
fn held_text_is_released_before_the_answer_finishes() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(true),
        vec![Up::sse(&[
            &chunk(Some("Dear {"), None),
            &chunk(Some("{NA"), None),
            &chunk(Some("ME}"), None),
            &chunk(Some("}, bye {{"), Some("stop")),
            &usage_chunk(),
            "[DONE]",
        ])],
        vec![unmasker()],
        Drive::default(),
    );
    assert_eq!(out.streamed_text(), "Dear Alice, bye {{");
    // The held `{{` came out before the finishing chunk.
    let events = out.events();
    let finish = events
        .iter()
        .position(|e| e.contains("\"finish_reason\":\"stop\""))
        .expect("a finishing chunk");
    let last_text = events
        .iter()
        .rposition(|e| e.contains("\"content\":\""))
        .expect("text");
    assert!(last_text < finish, "{events:#?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let calls = out.calls();
    assert_eq!(
        calls.iter().filter(|(_, p)| *p == Phase::StreamEnd).count(),
        1,
        "{calls:?}"
    );
}

#[test]
fn held_text_is_released_when_the_stream_ends_without_a_finish() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(true),
        vec![Up::sse(&[&chunk(Some("x {{"), None)])],
        vec![unmasker()],
        Drive {
            end: StreamEnd::Cut,
            client_gone: false,
        },
    );
    assert_eq!(out.streamed_text(), "x {{");
    assert!(out.text().contains("upstream_stream_cut"));
    assert_eq!(out.record().outcome, "upstream_error");
}

#[test]
fn emissions_flow_to_the_earlier_policies_in_order() {
    // Chain order: [upper, splitter]; stream order: splitter first, then upper.
    let upper_seen = Rc::new(RefCell::new(Vec::new()));
    let seen = upper_seen.clone();
    let upper = FakePolicy::new("upper").chunk(move |ev| {
        seen.borrow_mut().push((ev.index, ev.text.clone()));
        Ok(match &ev.text {
            Some(t) => ChunkVerdict::Emit(vec![Emission::Text(t.to_uppercase())]),
            None => ChunkVerdict::Pass,
        })
    });
    let splitter = FakePolicy::new("splitter").chunk(|ev| {
        Ok(match &ev.text {
            Some(t) if t.len() > 1 => {
                ChunkVerdict::Emit(t.chars().map(|c| Emission::Text(c.to_string())).collect())
            }
            _ => ChunkVerdict::Pass,
        })
    });
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(true),
        vec![Up::sse(&[
            &chunk(Some("ab"), None),
            &chunk(None, Some("stop")),
            "[DONE]",
        ])],
        vec![upper, splitter],
        Drive::default(),
    );
    assert_eq!(out.streamed_text(), "AB");
    let seen = upper_seen.borrow().clone();
    assert_eq!(
        seen,
        vec![(0, Some("a".into())), (1, Some("b".into())), (2, None)]
    );
}

#[test]
fn an_abort_ends_the_stream_with_an_error_event_and_still_reads_the_usage() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(true),
        vec![stream_reply()],
        vec![FakePolicy::new("guard").chunk(|ev| {
            Ok(match &ev.text {
                Some(t) if t.contains("wor") => ChunkVerdict::Abort(Denial {
                    status: 400,
                    code: "output_blocked".into(),
                    message: "blocked".into(),
                    headers: vec![],
                }),
                _ => ChunkVerdict::Pass,
            })
        })],
        Drive::default(),
    );
    assert_eq!(out.streamed_text(), "Hel");
    assert!(out.text().contains("output_blocked"));
    assert!(!out.text().contains("[DONE]"));
    let r = out.record();
    assert_eq!((r.outcome, r.total_tokens), ("denied", 7));
}

#[test]
fn a_policy_fault_in_a_stream_is_an_error_event() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(true),
        vec![stream_reply()],
        vec![FakePolicy::new("buggy").chunk(|_| Err(trapped("buggy")))],
        Drive::default(),
    );
    assert!(out.text().contains("policy_trapped"));
    out.record();
}

#[test]
fn an_answer_is_streamed_to_a_streaming_client_through_earlier_policies() {
    let out = serve_with(
        Endpoint::ChatCompletions,
        hello(true),
        vec![],
        vec![
            FakePolicy::new("shout").chunk(|ev| {
                Ok(match &ev.text {
                    Some(t) => ChunkVerdict::Emit(vec![Emission::Text(t.to_uppercase())]),
                    None => ChunkVerdict::Pass,
                })
            }),
            FakePolicy::new("cache")
                .request(|_| {
                    Ok(Verdict::Answer(PolicyAnswer {
                        completion: completion("from the cache").to_string(),
                        headers: vec![("x-weir-cache".into(), "hit".into())],
                    }))
                })
                .chunk(|_| panic!("the answering policy does not see its own answer")),
        ],
        Drive::default(),
    );
    assert_eq!(
        header(&out.headers, "content-type"),
        Some("text/event-stream")
    );
    assert_eq!(header(&out.headers, "x-weir-cache"), Some("hit"));
    assert_eq!(out.streamed_text(), "FROM THE CACHE");
    assert_eq!(out.events().last().map(String::as_str), Some("[DONE]"));
    let r = out.record();
    assert_eq!((r.outcome, r.total_tokens), ("answered", 0));
}

#[test]
fn anthropic_clients_get_anthropic_events_after_the_policies() {
    let mut req = chat(
        json!({"model": "m", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    );
    req.path = "/v1/messages".into();
    let out = serve_with(
        Endpoint::Messages,
        req,
        vec![stream_reply()],
        vec![unmasker()],
        Drive::default(),
    );
    let text = out.text();
    assert!(text.contains("event: message_start"), "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(
        text.contains("Hello world") || text.contains("lo wor"),
        "{text}"
    );
    out.record();
}
