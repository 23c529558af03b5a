//! Token and request limits through the gateway, under concurrency.

use std::sync::Arc;

use serde_json::json;
use weir_tests::{ALICE_KEY, BOB_KEY, ConfigBuilder, TestEnv};

fn body(max_tokens: u64) -> serde_json::Value {
    json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "Limit me"}], "max_tokens": max_tokens})
}

/// What the gateway reserves for `body(max_tokens)`: ceil(bytes of `messages` / 3) + max_tokens.
fn reservation(max_tokens: u64) -> u64 {
    let messages = serde_json::to_string(&body(max_tokens)["messages"]).unwrap();
    (messages.len() as u64).div_ceil(3) + max_tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_limit_refuses_with_headers_per_consumer() {
    let r1 = reservation(10);
    let config = ConfigBuilder {
        token_limit: format!(r#"{{"tokens-per-minute": {}}}"#, r1 * 2),
        ..Default::default()
    };
    let env = TestEnv::start(config).await.unwrap();
    // Actual usage is below the reservation, so settle-downs let a third request in; use max
    // tokens that make actual usage equal to most of the reservation.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(env.chat("/", ALICE_KEY, body(10)).await.unwrap());
    }
    let refused = statuses
        .iter()
        .find(|r| r.status == 429)
        .expect("alice must be limited");
    assert_eq!(refused.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(refused.json()["error"]["type"], "rate_limit_error");
    assert!(
        refused
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(
        refused.header("x-ratelimit-limit-tokens").unwrap(),
        (r1 * 2).to_string()
    );
    assert!(refused.header("x-ratelimit-remaining-tokens").is_some());
    // Bob has his own counters.
    let r = env.chat("/", BOB_KEY, body(10)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Refused requests never reached the provider.
    let ok = statuses.iter().filter(|r| r.status == 200).count() as u64 + 1;
    assert_eq!(env.mock.stats().requests, ok);
}

/// The current minute since the epoch: the token-limit's per-minute window.
fn minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

/// 64 clients against a fresh gateway until refused: (admitted, tokens used), or `None` when
/// the per-minute window rolled over during the run (the counters restarted, so the totals
/// mean nothing).
async fn overshoot_run(limit: u64) -> Option<(u32, u64)> {
    let config = ConfigBuilder {
        token_limit: format!(r#"{{"tokens-per-minute": {limit}}}"#),
        ..Default::default()
    };
    let env = Arc::new(TestEnv::start(config).await.unwrap());
    let started = minute();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let env = env.clone();
            tokio::spawn(async move {
                let mut ok = 0u32;
                for _ in 0..20 {
                    let r = env.chat("/", ALICE_KEY, body(50)).await.unwrap();
                    match r.status {
                        200 => ok += 1,
                        429 => break,
                        s => panic!("unexpected {s}: {}", r.text()),
                    }
                }
                ok
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    let records = env.wait_usage(64).await;
    if minute() != started {
        return None;
    }
    let used: u64 = records
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.total_tokens)
        .sum();
    Some((admitted, used))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_cannot_overshoot_the_token_limit() {
    let per_request = reservation(50);
    let limit = 2000;
    // A run that straddles a minute boundary is run again (at most twice more).
    let mut outcome = None;
    for _ in 0..3 {
        outcome = overshoot_run(limit).await;
        if outcome.is_some() {
            break;
        }
    }
    let (admitted, used) = outcome.expect("three runs in a row straddled a minute boundary");
    assert!(admitted > 0);
    assert!(
        used <= limit + per_request,
        "{admitted} requests used {used} tokens, limit {limit} (+ one reservation of {per_request})"
    );
    // Not overly strict either: the limiter let through most of the budget.
    assert!(
        used + 2 * per_request >= limit / 2,
        "only {used} of {limit} tokens used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_respect_requests_per_minute_exactly() {
    let config = ConfigBuilder {
        token_limit: r#"{"requests-per-minute": 10}"#.into(),
        ..Default::default()
    };
    let env = Arc::new(TestEnv::start(config).await.unwrap());
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let env = env.clone();
            tokio::spawn(async move { env.chat("/", ALICE_KEY, body(1)).await.unwrap().status })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s == 200 || s == 429, "{s}");
        ok += usize::from(s == 200);
    }
    assert_eq!(ok, 10);
    assert_eq!(env.mock.stats().requests, 10);
}
