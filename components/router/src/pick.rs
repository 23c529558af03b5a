//! Which route a request takes and in which order its targets are tried: pure functions of
//! the configuration, the request's facts and a per-request random seed.

use crate::config::{Route, Strategy, TargetSpec};

/// What the routes' conditions look at. Implemented over the policy's context, and by a fake
/// in tests; each fact is read only when a condition needs it.
pub trait Facts {
    fn model(&self) -> Option<String>;
    fn prompt_tokens(&self) -> u64;
    fn last_user_text(&self) -> String;
    fn header(&self, name: &str) -> Option<String>;
    fn consumer(&self) -> Option<String>;
    /// Milliseconds since the Unix epoch when the request arrived.
    fn received_at_ms(&self) -> u64;
}

/// The index of the first route that serves the request.
pub fn route_for(routes: &[Route], facts: &dyn Facts) -> Option<usize> {
    let model = facts.model();
    routes
        .iter()
        .position(|r| r.serves(model.as_deref()) && conditions_hold(r, facts))
}

fn conditions_hold(r: &Route, facts: &dyn Facts) -> bool {
    let w = &r.when;
    if w.min_prompt_tokens.is_some() || w.max_prompt_tokens.is_some() {
        let n = facts.prompt_tokens();
        if w.min_prompt_tokens.is_some_and(|lo| n < lo)
            || w.max_prompt_tokens.is_some_and(|hi| n > hi)
        {
            return false;
        }
    }
    if let Some(h) = &w.header {
        let value = facts.header(&h.name);
        let ok = match (&h.values, value) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(values), Some(v)) => values.contains(&v),
        };
        if !ok {
            return false;
        }
    }
    if let Some(consumers) = &w.consumers
        && !facts.consumer().is_some_and(|c| consumers.contains(&c))
    {
        return false;
    }
    if let Some(h) = w.hours_utc {
        let hour = ((facts.received_at_ms() / 3_600_000) % 24) as u8;
        let inside = if h.from < h.to {
            (h.from..h.to).contains(&hour)
        } else {
            hour >= h.from || hour < h.to
        };
        if !inside {
            return false;
        }
    }
    if w.last_user_matches.is_some() {
        match w.regex() {
            Some(re) if re.is_match(&facts.last_user_text()) => {}
            _ => return false,
        }
    }
    true
}

/// SplitMix64: the `i`-th random number of a request's seed.
pub fn random(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in (0, 1].
fn unit(seed: u64, i: u64) -> f64 {
    ((random(seed, i) >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// A request's seed from its id (random per request), so the draw needs no host call.
pub fn seed(request_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in request_id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    random(h, 0)
}

/// How often `least-latency` tries a random target first, to keep measuring the others.
const EXPLORE: f64 = 0.05;

/// The order in which `route`'s targets are tried. `latency(i)` is target `i`'s recent average
/// latency in ms (`least-latency` only); `completion_tokens` the expected answer length.
pub fn order(
    route: &Route,
    seed: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    latency: &dyn Fn(usize) -> Option<f64>,
) -> Vec<usize> {
    let n = route.targets.len();
    let mut idx: Vec<usize> = (0..n).collect();
    match route.strategy {
        Strategy::Failover => {}
        Strategy::Weighted => {
            // Efraimidis–Spirakis: sorting by u^(1/w) draws a weighted random permutation;
            // weight 0 goes last, in the order given.
            let key = |i: usize| {
                let w = f64::from(route.targets[i].weight);
                if w == 0.0 {
                    f64::NEG_INFINITY
                } else {
                    unit(seed, i as u64).ln() / w
                }
            };
            let keys: Vec<f64> = (0..n).map(key).collect();
            idx.sort_by(|a, b| keys[*b].total_cmp(&keys[*a]));
        }
        Strategy::Cheapest => {
            let cost = |t: &TargetSpec| {
                t.input_per_million.unwrap_or(0.0) * prompt_tokens as f64
                    + t.output_per_million.unwrap_or(0.0) * completion_tokens as f64
            };
            let costs: Vec<f64> = route.targets.iter().map(cost).collect();
            idx.sort_by(|a, b| costs[*a].total_cmp(&costs[*b]));
        }
        Strategy::LeastLatency => {
            // Unmeasured targets first (in the order given), then the fastest.
            let lat: Vec<f64> = (0..n)
                .map(|i| latency(i).unwrap_or(f64::NEG_INFINITY))
                .collect();
            idx.sort_by(|a, b| lat[*a].total_cmp(&lat[*b]));
            if n > 1 && unit(seed, 1000) <= EXPLORE {
                let pick = (random(seed, 1001) % n as u64) as usize;
                let chosen = idx.remove(pick);
                idx.insert(0, chosen);
            }
        }
    }
    idx
}

/// The new average latency after one more measurement (exponentially weighted).
pub fn average(previous: Option<f64>, sample_ms: f64) -> f64 {
    match previous {
        Some(p) => 0.8 * p + 0.2 * sample_ms,
        None => sample_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    struct Fake {
        model: Option<&'static str>,
        tokens: u64,
        text: &'static str,
        tier: Option<&'static str>,
        consumer: Option<&'static str>,
        at_ms: u64,
    }

    impl Default for Fake {
        fn default() -> Self {
            Self {
                model: Some("gpt-4o"),
                tokens: 100,
                text: "hello",
                tier: None,
                consumer: None,
                at_ms: 12 * 3_600_000,
            }
        }
    }

    impl Facts for Fake {
        fn model(&self) -> Option<String> {
            self.model.map(str::to_owned)
        }
        fn prompt_tokens(&self) -> u64 {
            self.tokens
        }
        fn last_user_text(&self) -> String {
            self.text.to_owned()
        }
        fn header(&self, name: &str) -> Option<String> {
            (name == "x-tier").then_some(self.tier?.to_owned())
        }
        fn consumer(&self) -> Option<String> {
            self.consumer.map(str::to_owned)
        }
        fn received_at_ms(&self) -> u64 {
            self.at_ms
        }
    }

    fn config(json: &str) -> Config {
        weir_policy_sdk::parse_config::<crate::Router>(json)
            .unwrap_or_else(|e| unreachable!("{}: {}", e.path, e.message))
    }

    const ROUTES: &str = r#"{"routes": [
      {"name": "long", "when": {"min-prompt-tokens": 8000}, "targets": [{"provider": "big"}]},
      {"name": "translate", "when": {"last-user-matches": "(?i)\\btranslate\\b"}, "targets": [{"provider": "t"}]},
      {"name": "gold", "when": {"header": {"name": "x-tier", "values": ["gold"]}}, "targets": [{"provider": "g"}]},
      {"name": "vip", "when": {"consumers": ["alice"]}, "targets": [{"provider": "v"}]},
      {"name": "night", "when": {"hours-utc": {"from": 22, "to": 6}}, "targets": [{"provider": "n"}]},
      {"name": "fast", "models": ["fast", "mini-*"], "targets": [{"provider": "f"}]}
    ]}"#;

    #[test]
    fn the_first_route_whose_conditions_hold() {
        let c = config(ROUTES);
        let at = |f: Fake| route_for(&c.routes, &f);
        assert_eq!(at(Fake::default()), None);
        assert_eq!(
            at(Fake {
                tokens: 9000,
                ..Fake::default()
            }),
            Some(0)
        );
        assert_eq!(
            at(Fake {
                text: "Please Translate this",
                ..Fake::default()
            }),
            Some(1)
        );
        assert_eq!(
            at(Fake {
                text: "translated",
                ..Fake::default()
            }),
            None
        );
        assert_eq!(
            at(Fake {
                tier: Some("gold"),
                ..Fake::default()
            }),
            Some(2)
        );
        assert_eq!(
            at(Fake {
                tier: Some("silver"),
                ..Fake::default()
            }),
            None
        );
        assert_eq!(
            at(Fake {
                consumer: Some("alice"),
                ..Fake::default()
            }),
            Some(3)
        );
        assert_eq!(
            at(Fake {
                at_ms: 23 * 3_600_000,
                ..Fake::default()
            }),
            Some(4)
        );
        assert_eq!(
            at(Fake {
                at_ms: (24 + 5) * 3_600_000,
                ..Fake::default()
            }),
            Some(4)
        );
        assert_eq!(
            at(Fake {
                at_ms: 6 * 3_600_000,
                ..Fake::default()
            }),
            None
        );
        assert_eq!(
            at(Fake {
                model: Some("fast"),
                ..Fake::default()
            }),
            Some(5)
        );
        assert_eq!(
            at(Fake {
                model: Some("mini-2"),
                ..Fake::default()
            }),
            Some(5)
        );
        assert_eq!(
            at(Fake {
                model: None,
                ..Fake::default()
            }),
            None
        );
        // Earlier routes win.
        assert_eq!(
            at(Fake {
                tokens: 9000,
                model: Some("fast"),
                ..Fake::default()
            }),
            Some(0)
        );
    }

    #[test]
    fn weights_are_observed() {
        let c = config(
            r#"{"routes": [{"targets": [{"provider": "a", "weight": 3}, {"provider": "b", "weight": 1}, {"provider": "c", "weight": 0}]}]}"#,
        );
        let mut first = [0u32; 3];
        let n = 20_000;
        for i in 0..n {
            let o = order(&c.routes[0], seed(&format!("req-{i}")), 0, 0, &|_| None);
            assert_eq!(o.len(), 3);
            assert_eq!(o[2], 2, "weight 0 is only a fallback");
            first[o[0]] += 1;
        }
        let share = f64::from(first[0]) / f64::from(n);
        assert!(
            (share - 0.75).abs() < 0.02,
            "a first in {share} of requests, 0.75 expected"
        );
        assert_eq!(first[2], 0);
    }

    #[test]
    fn failover_cheapest_and_least_latency_orders() {
        let c = config(
            r#"{"routes": [
              {"strategy": "failover", "targets": [{"provider": "a"}, {"provider": "b"}, {"provider": "c"}]},
              {"strategy": "cheapest", "targets": [
                {"provider": "a", "input-per-million": 5, "output-per-million": 15},
                {"provider": "b", "input-per-million": 0.15, "output-per-million": 0.6},
                {"provider": "c", "input-per-million": 0.1, "output-per-million": 10}]},
              {"strategy": "least-latency", "targets": [{"provider": "a"}, {"provider": "b"}, {"provider": "c"}]}
            ]}"#,
        );
        assert_eq!(order(&c.routes[0], 7, 0, 0, &|_| None), [0, 1, 2]);
        // Long prompt, short answer: c's cheap input wins; long answer: b.
        assert_eq!(order(&c.routes[1], 7, 100_000, 10, &|_| None), [2, 1, 0]);
        assert_eq!(order(&c.routes[1], 7, 100, 10_000, &|_| None), [1, 2, 0]);
        let lat = |i: usize| [Some(300.0), Some(120.0), None][i];
        let mut firsts = [0u32; 3];
        for i in 0..2000 {
            firsts[order(&c.routes[2], seed(&i.to_string()), 0, 0, &lat)[0]] += 1;
        }
        // The unmeasured target first, with a few explorations of the others.
        assert!(firsts[2] > 1850, "{firsts:?}");
        assert!(firsts[0] + firsts[1] > 10, "{firsts:?}");
        let measured = |i: usize| [Some(300.0), Some(120.0), Some(200.0)][i];
        let typical = (0..50)
            .map(|i| order(&c.routes[2], seed(&i.to_string()), 0, 0, &measured))
            .filter(|o| *o == [1, 2, 0])
            .count();
        assert!(typical >= 45, "{typical}");
        assert_eq!(average(None, 100.0), 100.0);
        assert_eq!(average(Some(100.0), 200.0), 120.0);
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let path = |json: &str| {
            weir_policy_sdk::parse_config::<crate::Router>(json)
                .err()
                .map(|e| e.path)
        };
        assert_eq!(path(r#"{"routes": []}"#).as_deref(), Some("routes"));
        assert_eq!(
            path(r#"{"routes": [{"targets": []}]}"#).as_deref(),
            Some("routes[0].targets")
        );
        assert_eq!(
            path(r#"{"routes": [{"strategy": "cheapest", "targets": [{"provider": "a", "input-per-million": 1}]}]}"#).as_deref(),
            Some("routes[0].targets[0].output-per-million")
        );
        assert_eq!(
            path(r#"{"routes": [{"when": {"last-user-matches": "("}, "targets": [{"provider": "a"}]}]}"#).as_deref(),
            Some("routes[0].when.last-user-matches")
        );
        assert_eq!(
            path(r#"{"routes": [{"models": ["a*b*"], "targets": [{"provider": "a"}]}]}"#)
                .as_deref(),
            Some("routes[0].models[0]")
        );
        assert_eq!(
            path(r#"{"routes": [{"targets": [{"provider": "a", "weight": 0}]}]}"#).as_deref(),
            Some("routes[0].targets")
        );
        assert_eq!(
            path(r#"{"routes": [{"targets": [{"provider": "a"}, {"provider": "a"}]}]}"#).as_deref(),
            Some("routes[0].targets[1]")
        );
        assert_eq!(
            path(r#"{"routes": [{"targets": [{"provider": "a"}]}], "circuit-breaker": {"failures": 0}}"#).as_deref(),
            Some("circuit-breaker.failures")
        );
        assert_eq!(
            path(r#"{"routes": [{"name": "x", "targets": [{"provider": "a"}]}, {"name": "x", "targets": [{"provider": "b"}]}]}"#).as_deref(),
            Some("routes[1].name")
        );
        assert_eq!(
            path(r#"{"routes": [{"targets": [{"provider": "a"}]}], "endpoints": ["models"]}"#)
                .as_deref(),
            Some("endpoints[0]")
        );
        assert_eq!(
            path(r#"{"routes": [{"targets": [{"provider": "a", "wieght": 2}]}]}"#).as_deref(),
            Some("routes[0].targets[0].wieght")
        );
    }
}
