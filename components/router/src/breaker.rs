//! The circuit breaker of each target, kept in the key-value store so that every replica of the
//! gateway (and every Worker isolate) sees the same state.
//!
//! Keys (in the policy instance's own namespace), for a target `t`:
//! - `fail:t`, the failures in a row (a counter, only ever incremented: on Cloudflare counters
//!   live in a Durable Object that `get`/`set` do not see; it expires `window-ms` after the first);
//! - `open:t`, present while the target is left out; its value is when that ends (ms);
//! - `trip:t`, present from opening until a probe succeeds: after the cool-down the breaker is
//!   half-open;
//! - `probe:t`, a counter that lets exactly one request through while half-open.
//!
//! A store that cannot be reached leaves every target in (fail open): routing does not stop
//! because its bookkeeping is down.

use crate::config::Breaker;

/// The key-value operations the breaker needs; `None`/`false` when the store failed.
pub trait Store {
    fn get(&self, key: &str) -> Option<Option<Vec<u8>>>;
    fn set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> bool;
    fn delete(&self, key: &str) -> bool;
    fn increment(&self, key: &str, delta: i64, ttl_ms: Option<u64>) -> Option<i64>;
}

/// Whether a target takes this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Half-open: this request is the one probe.
    Probe,
    /// Left out until `until_ms` (0 when unknown: half-open, another request is probing).
    No {
        until_ms: u64,
    },
}

/// A change of state worth a metric and a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened,
    Closed,
}

pub fn admit(store: &dyn Store, cfg: &Breaker, target: &str, now_ms: u64) -> Admit {
    if !cfg.enabled {
        return Admit::Yes;
    }
    if let Some(Some(until)) = store.get(&format!("open:{target}")) {
        let until_ms = std::str::from_utf8(&until)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if until_ms > now_ms {
            return Admit::No { until_ms };
        }
    }
    match store.get(&format!("trip:{target}")) {
        Some(Some(_)) => {
            // Half-open: the first request through since the cool-down probes.
            match store.increment(&format!("probe:{target}"), 1, Some(cfg.cool_down_ms)) {
                Some(1) | None => Admit::Probe,
                Some(_) => Admit::No { until_ms: 0 },
            }
        }
        _ => Admit::Yes,
    }
}

/// Records an attempt's outcome: `ok` (an answer) or a failure that counts (no answer, 429,
/// 5xx). Returns the change of state, if any.
pub fn record(
    store: &dyn Store,
    cfg: &Breaker,
    target: &str,
    ok: bool,
    now_ms: u64,
) -> Option<Change> {
    if !cfg.enabled {
        return None;
    }
    let tripped = matches!(store.get(&format!("trip:{target}")), Some(Some(_)));
    let fail = format!("fail:{target}");
    if ok {
        reset(store, &fail, cfg.window_ms);
        if tripped {
            store.delete(&format!("trip:{target}"));
            reset(store, &format!("probe:{target}"), cfg.cool_down_ms);
            return Some(Change::Closed);
        }
        return None;
    }
    let failures = store.increment(&fail, 1, Some(cfg.window_ms))?;
    if tripped || failures >= i64::from(cfg.failures) {
        let until = now_ms + cfg.cool_down_ms;
        store.set(
            &format!("open:{target}"),
            until.to_string().as_bytes(),
            Some(cfg.cool_down_ms),
        );
        // Half-open after the cool-down, for as long as it takes a probe to succeed.
        store.set(
            &format!("trip:{target}"),
            b"1",
            Some(cfg.cool_down_ms.saturating_mul(20).max(600_000)),
        );
        reset(store, &format!("probe:{target}"), cfg.cool_down_ms);
        reset(store, &fail, cfg.window_ms);
        return Some(Change::Opened);
    }
    None
}

/// Brings a counter back to 0 with increments only: on Cloudflare, counters live in a Durable
/// Object that `get`, `set` and `delete` (Workers KV) do not see.
fn reset(store: &dyn Store, key: &str, ttl_ms: u64) {
    if let Some(n) = store.increment(key, 0, Some(ttl_ms))
        && n != 0
    {
        store.increment(key, -n, Some(ttl_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// A value and when it expires.
    type Entry = (Vec<u8>, Option<u64>);

    /// A store with a clock the test moves; values expire like the real ones.
    #[derive(Default)]
    struct Fake {
        now: RefCell<u64>,
        map: RefCell<HashMap<String, Entry>>,
        down: bool,
    }

    impl Fake {
        fn live(&self, key: &str) -> Option<Vec<u8>> {
            let now = *self.now.borrow();
            let mut map = self.map.borrow_mut();
            match map.get(key) {
                Some((_, Some(exp))) if *exp <= now => {
                    map.remove(key);
                    None
                }
                Some((v, _)) => Some(v.clone()),
                None => None,
            }
        }
    }

    impl Store for Fake {
        fn get(&self, key: &str) -> Option<Option<Vec<u8>>> {
            (!self.down).then(|| self.live(key))
        }
        fn set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> bool {
            let exp = ttl_ms.map(|t| *self.now.borrow() + t);
            self.map
                .borrow_mut()
                .insert(key.into(), (value.to_vec(), exp));
            !self.down
        }
        fn delete(&self, key: &str) -> bool {
            self.map.borrow_mut().remove(key);
            !self.down
        }
        fn increment(&self, key: &str, delta: i64, ttl_ms: Option<u64>) -> Option<i64> {
            if self.down {
                return None;
            }
            let current = self.live(key);
            let n = current
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                .unwrap_or(0)
                + delta;
            let exp = match current {
                Some(_) => self.map.borrow().get(key).and_then(|(_, e)| *e),
                None => ttl_ms.map(|t| *self.now.borrow() + t),
            };
            self.map
                .borrow_mut()
                .insert(key.into(), (n.to_string().into_bytes(), exp));
            Some(n)
        }
    }

    fn cfg() -> Breaker {
        Breaker {
            enabled: true,
            failures: 3,
            cool_down_ms: 1000,
            window_ms: 5000,
        }
    }

    #[test]
    fn opens_stays_open_half_opens_and_closes() {
        let s = Fake::default();
        let c = cfg();
        let t = "a/*";
        let now = |s: &Fake| *s.now.borrow();
        assert_eq!(admit(&s, &c, t, 0), Admit::Yes);
        assert_eq!(record(&s, &c, t, false, 0), None);
        assert_eq!(record(&s, &c, t, false, 0), None);
        // A success in between resets the count: failures must be in a row.
        assert_eq!(record(&s, &c, t, true, 0), None);
        assert_eq!(record(&s, &c, t, false, 0), None);
        assert_eq!(record(&s, &c, t, false, 0), None);
        assert_eq!(record(&s, &c, t, false, 0), Some(Change::Opened));
        assert_eq!(admit(&s, &c, t, 0), Admit::No { until_ms: 1000 });
        *s.now.borrow_mut() = 999;
        assert_eq!(admit(&s, &c, t, now(&s)), Admit::No { until_ms: 1000 });
        // Cool-down over: one probe, the others wait for it.
        *s.now.borrow_mut() = 1000;
        assert_eq!(admit(&s, &c, t, now(&s)), Admit::Probe);
        assert_eq!(admit(&s, &c, t, now(&s)), Admit::No { until_ms: 0 });
        // The probe fails: open again at once.
        assert_eq!(record(&s, &c, t, false, now(&s)), Some(Change::Opened));
        assert_eq!(admit(&s, &c, t, now(&s)), Admit::No { until_ms: 2000 });
        *s.now.borrow_mut() = 2000;
        assert_eq!(admit(&s, &c, t, now(&s)), Admit::Probe);
        assert_eq!(record(&s, &c, t, true, now(&s)), Some(Change::Closed));
        assert_eq!(admit(&s, &c, t, now(&s)), Admit::Yes);
        assert_eq!(admit(&s, &c, t, now(&s)), Admit::Yes);
        // Closed means counting from zero again.
        assert_eq!(record(&s, &c, t, false, now(&s)), None);
        assert_eq!(record(&s, &c, t, false, now(&s)), None);
        assert_eq!(admit(&s, &c, t, now(&s)), Admit::Yes);
    }

    #[test]
    fn failures_far_apart_do_not_add_up() {
        let s = Fake::default();
        let c = cfg();
        for k in 0..10u64 {
            *s.now.borrow_mut() = k * 6000; // longer than the window
            assert_eq!(record(&s, &c, "b/m", false, k * 6000), None);
        }
        assert_eq!(admit(&s, &c, "b/m", 60_000), Admit::Yes);
    }

    #[test]
    fn a_store_that_is_down_leaves_targets_in() {
        let s = Fake {
            down: true,
            ..Fake::default()
        };
        for _ in 0..10 {
            assert_eq!(record(&s, &cfg(), "c/*", false, 0), None);
        }
        assert_eq!(admit(&s, &cfg(), "c/*", 0), Admit::Yes);
    }

    #[test]
    fn disabled_never_leaves_out() {
        let s = Fake::default();
        let c = Breaker {
            enabled: false,
            ..cfg()
        };
        for _ in 0..10 {
            assert_eq!(record(&s, &c, "d/*", false, 0), None);
        }
        assert_eq!(admit(&s, &c, "d/*", 0), Admit::Yes);
    }
}
