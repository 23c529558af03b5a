//! The attempt loop's rules: which failures are retried or move to the next target, which are
//! not, the backoff schedule and `retry-after`, the time budget, and no retry once the answer
//! started or was accepted (unless the operator allows it).

use std::sync::Arc;

use serde_json::json;
use weir_core::*;

use crate::fakes::*;

fn with_retry(retry: Retry) -> RouteInfo {
    let mut r = route();
    r.retry = Arc::new(retry);
    r
}

fn retrying(attempts: u32) -> Retry {
    Retry {
        attempts,
        backoff_ms: 100,
        max_backoff_ms: 1000,
        ..Retry::default()
    }
}

fn ok() -> Up {
    Up::json(200, completion("fine"))
}

fn served(route: RouteInfo, replies: Vec<Up>, policies: Vec<FakePolicy>) -> Served {
    serve_on(
        route,
        Endpoint::ChatCompletions,
        hello(false),
        replies,
        policies,
        Drive::default(),
    )
}

/// (provider, status, error, billed) of each attempt.
fn attempts(out: &Served) -> Vec<(String, Option<u16>, Option<&'static str>, bool)> {
    out.record()
        .attempts
        .iter()
        .map(|a| (a.provider.clone(), a.status, a.error, a.billed))
        .collect()
}

fn to(targets: &[&'static str]) -> FakePolicy {
    let targets: Vec<Target> = targets
        .iter()
        .map(|p| Target {
            provider: (*p).into(),
            model: None,
        })
        .collect();
    FakePolicy::new("router").request(move |_| {
        Ok(Verdict::Continue(Edits {
            targets: targets.clone(),
            ..Default::default()
        }))
    })
}

#[test]
fn failures_before_the_answer_are_retried_with_a_doubling_jittered_backoff() {
    let out = served(
        with_retry(retrying(3)),
        vec![
            Up::Status(503, vec![]),
            Up::Unreachable,
            Up::Slow(5000, Box::new(ok())),
            ok(),
        ],
        vec![],
    );
    assert_eq!(out.status, 200, "{}", out.text());
    let main = |status, error, billed| ("main".to_owned(), status, error, billed);
    assert_eq!(
        attempts(&out),
        vec![
            main(Some(503), Some("upstream_http_error"), false),
            main(None, Some("upstream_unavailable"), false),
            main(None, Some("upstream_timeout"), false),
            main(Some(200), None, true),
        ]
    );
    let sleeps = out.platform.sleeps();
    assert_eq!(sleeps.len(), 3, "{sleeps:?}");
    for (i, (wait, full)) in sleeps.iter().zip([100, 200, 400]).enumerate() {
        assert!(
            (full / 2..=full).contains(wait),
            "wait {i} is {wait}, not in {}..={full}",
            full / 2
        );
    }
}

#[test]
fn without_retries_only_the_next_target_is_tried() {
    let out = served(
        route(),
        vec![Up::Status(503, vec![]), ok()],
        vec![to(&["main", "backup"])],
    );
    assert_eq!(out.status, 200);
    assert_eq!(
        attempts(&out)
            .iter()
            .map(|a| a.0.as_str())
            .collect::<Vec<_>>(),
        ["main", "backup"]
    );
    assert!(out.platform.sleeps().is_empty());
}

#[test]
fn a_target_is_retried_before_the_next_is_tried() {
    let out = served(
        with_retry(retrying(1)),
        vec![Up::Status(500, vec![]), Up::Status(502, vec![]), ok()],
        vec![to(&["main", "backup"])],
    );
    assert_eq!(out.status, 200);
    let a = attempts(&out);
    assert_eq!(
        a.iter().map(|a| (a.0.as_str(), a.1)).collect::<Vec<_>>(),
        [
            ("main", Some(500)),
            ("main", Some(502)),
            ("backup", Some(200))
        ]
    );
    // One wait, between the two attempts on `main`; none before moving on.
    assert_eq!(out.platform.sleeps().len(), 1);
}

#[test]
fn retry_after_is_honoured_and_one_too_long_moves_on_at_once() {
    let out = served(
        with_retry(retrying(2)),
        vec![Up::Status(429, vec![("retry-after-ms", "700")]), ok()],
        vec![],
    );
    assert_eq!(out.status, 200);
    assert_eq!(out.platform.sleeps(), [700]);

    let out = served(
        with_retry(retrying(2)),
        vec![Up::Status(429, vec![("retry-after", "1")]), ok()],
        vec![],
    );
    assert_eq!(out.platform.sleeps(), [1000]);

    // 30 s is more than max-backoff-ms (1 s): the next target at once.
    let out = served(
        with_retry(retrying(2)),
        vec![Up::Status(429, vec![("retry-after", "30")]), ok()],
        vec![to(&["main", "backup"])],
    );
    assert_eq!(out.status, 200);
    assert!(out.platform.sleeps().is_empty());
    assert_eq!(attempts(&out)[1].0, "backup");

    // ... and with no next target, the client gets the provider's 429 with its retry-after.
    let out = served(
        with_retry(retrying(2)),
        vec![Up::Status(429, vec![("retry-after", "30")])],
        vec![],
    );
    assert_eq!(out.status, 429, "{}", out.text());
    assert!(
        out.headers
            .iter()
            .any(|(n, v)| n == "retry-after" && v == "30"),
        "{:?}",
        out.headers
    );
    assert_eq!(attempts(&out).len(), 1);
}

#[test]
fn when_every_retry_fails_the_last_status_is_the_answer() {
    let out = served(
        with_retry(retrying(2)),
        vec![
            Up::Status(503, vec![]),
            Up::Status(503, vec![]),
            Up::Status(503, vec![]),
        ],
        vec![],
    );
    assert_eq!(out.status, 503, "{}", out.text());
    assert_eq!(attempts(&out).len(), 3);
    assert!(attempts(&out).iter().all(|a| !a.3), "nothing billed");
}

#[test]
fn client_errors_and_unlisted_statuses_are_not_retried() {
    let out = served(
        with_retry(retrying(3)),
        vec![Up::Status(400, vec![])],
        vec![to(&["main", "backup"])],
    );
    assert_eq!(out.status, 400);
    assert_eq!(attempts(&out).len(), 1);

    // The operator narrowed the statuses: a 429 is the answer.
    let out = served(
        with_retry(Retry {
            on_status: vec![503],
            ..retrying(3)
        }),
        vec![Up::Status(429, vec![])],
        vec![to(&["main", "backup"])],
    );
    assert_eq!(out.status, 429);
    assert_eq!(attempts(&out).len(), 1);
}

#[test]
fn the_budget_bounds_attempts_and_waits_and_cuts_the_last_timeout() {
    let budget = 2500;
    let out = served(
        with_retry(Retry {
            attempts: 10,
            backoff_ms: 200,
            max_backoff_ms: 200,
            budget_ms: budget,
            ..Retry::default()
        }),
        (0..20)
            .map(|_| Up::Slow(600, Box::new(Up::Status(503, vec![]))))
            .collect(),
        vec![],
    );
    let state = out.platform.0.borrow();
    let n = state.sent.len();
    assert!((3..=5).contains(&n), "{n} attempts in {budget} ms");
    assert!(state.clock <= budget, "took {} ms", state.clock);
    for (request, at) in state.sent.iter().zip(&state.sent_at) {
        assert_eq!(request.timeout_ms, 1000.min(budget - at), "sent at {at}");
    }
    // The last attempt was cut short by the budget: a timeout, not a 503.
    assert_eq!(out.status, 504, "{}", out.text());
    drop(state);
    assert_eq!(attempts(&out).last().unwrap().2, Some("upstream_timeout"));
}

#[test]
fn a_retry_that_would_outlast_the_budget_leaves_the_providers_answer() {
    // 503 at once; a 400 ms wait fits the 1000 ms budget, an 800 ms one does not: the client
    // gets the provider's own 503 (not a gateway error) after two attempts.
    let out = served(
        with_retry(Retry {
            attempts: 5,
            backoff_ms: 400,
            max_backoff_ms: 800,
            budget_ms: 1000,
            ..Retry::default()
        }),
        (0..6).map(|_| Up::Status(503, vec![])).collect(),
        vec![],
    );
    assert_eq!(out.status, 503, "{}", out.text());
    let n = out.platform.sent().len();
    assert!((2..=3).contains(&n), "{n} attempts");
    assert!(out.platform.0.borrow().clock < 1000);

    // The budget runs out while the first target answers 503: the next target is not tried,
    // and the answer is the first target's own.
    let out = served(
        with_retry(Retry {
            budget_ms: 1000,
            ..Retry::default()
        }),
        vec![Up::Slow(1000, Box::new(Up::Status(503, vec![]))), ok()],
        vec![to(&["main", "backup"])],
    );
    assert_eq!(out.status, 503, "{}", out.text());
    assert_eq!(
        attempts(&out),
        vec![("main".into(), Some(503), Some("upstream_http_error"), false)]
    );
    assert_eq!(out.record().provider, "main");
}

#[test]
fn an_answer_over_the_size_limit_is_never_retried() {
    let allowed = Retry {
        after_accepted: vec!["chat/completions".into()],
        ..retrying(3)
    };
    for retry in [retrying(3), allowed] {
        let mut route = with_retry(retry);
        route.limits.max_response_bytes = 16;
        let out = served(route, vec![ok(), ok()], vec![]);
        assert_eq!(out.status, 502, "{}", out.text());
        assert_eq!(out.json()["error"]["code"], "upstream_response_too_large");
        assert_eq!(out.platform.sent().len(), 1, "as large again: not retried");
        assert_eq!(
            attempts(&out),
            vec![(
                "main".into(),
                Some(200),
                Some("upstream_response_too_large"),
                true
            )]
        );
    }
}

#[test]
fn no_retry_once_the_stream_started() {
    let out = serve_on(
        with_retry(retrying(3)),
        Endpoint::ChatCompletions,
        hello(true),
        vec![Up::sse(&[&chunk(Some("hel"), None)])],
        vec![],
        Drive {
            end: StreamEnd::Cut,
            client_gone: false,
        },
    );
    assert_eq!(out.status, 200);
    assert!(out.text().contains("upstream_stream_cut"), "{}", out.text());
    assert_eq!(out.platform.sent().len(), 1);
    assert_eq!(attempts(&out).len(), 1);
}

#[test]
fn an_accepted_answer_that_broke_off_is_retried_only_where_allowed() {
    let out = served(with_retry(retrying(3)), vec![Up::BrokenBody, ok()], vec![]);
    assert_eq!(out.status, 502);
    assert_eq!(out.json()["error"]["code"], "upstream_response_failed");
    assert_eq!(
        out.platform.sent().len(),
        1,
        "may have been billed: not retried"
    );

    let allowed = Retry {
        after_accepted: vec!["chat/completions".into()],
        ..retrying(3)
    };
    let out = served(
        with_retry(allowed.clone()),
        vec![Up::BrokenBody, ok()],
        vec![],
    );
    assert_eq!(out.status, 200, "{}", out.text());
    assert_eq!(
        out.json()["choices"][0]["message"]["content"],
        json!("fine")
    );
    assert_eq!(
        attempts(&out),
        vec![
            (
                "main".into(),
                Some(200),
                Some("upstream_response_failed"),
                true
            ),
            ("main".into(), Some(200), None, true),
        ],
        "both attempts may have been billed, and the record says so"
    );

    // Allowed for chat, but an Anthropic client's request is chat too.
    let mut request = hello(false);
    request.path = "/v1/messages".into();
    let out = serve_on(
        with_retry(allowed),
        Endpoint::Messages,
        request,
        vec![Up::BrokenBody, ok()],
        vec![],
        Drive::default(),
    );
    assert_eq!(out.status, 200, "{}", out.text());
    assert_eq!(out.json()["type"], "message");
}
