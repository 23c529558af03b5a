//! Each `router` target's circuit, as the admin API shows it (`GET /circuits`) and `/ready`
//! judges it: read from the router's own keys in the key-value store (see
//! components/router/src/breaker.rs), so every replica sharing the store reports the same state.
//!
//! The host reads the built-in router's configuration only for the target names; the router
//! alone writes the state.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir_config::GatewayConfig;
use weir_state::{KvError, KvStore, Namespaced};

/// What the host needs of a router configuration (the router checks the rest).
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RouterConfig {
    #[serde(default)]
    routes: Vec<RouteConfig>,
    #[serde(default)]
    circuit_breaker: BreakerConfig,
}

#[derive(Deserialize)]
struct RouteConfig {
    name: Option<String>,
    #[serde(default)]
    targets: Vec<TargetConfig>,
}

#[derive(Deserialize)]
struct TargetConfig {
    provider: String,
    model: Option<String>,
}

#[derive(Deserialize)]
struct BreakerConfig {
    #[serde(default = "yes")]
    enabled: bool,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

fn yes() -> bool {
    true
}

/// A target's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    /// Takes requests.
    Closed,
    /// Left out until `open_until_ms`.
    Open,
    /// The cool-down is over: the next request probes it.
    HalfOpen,
}

#[derive(Debug, Serialize)]
pub(crate) struct Target {
    /// `provider/model` (`provider/*` when the client's model is kept), as in the router's
    /// metrics.
    pub target: String,
    /// The routes naming it.
    pub routes: Vec<String>,
    pub state: State,
    /// Failures in a row so far (within the breaker's window).
    pub failures: i64,
    /// When an open circuit half-opens (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_until_ms: Option<u64>,
}

/// The circuits of one router entry.
#[derive(Debug, Serialize)]
pub(crate) struct Router {
    pub proxy: String,
    /// The entry's field path (`proxies[2].policies[1]`).
    pub policy: String,
    pub breaker_enabled: bool,
    pub targets: Vec<Target>,
}

impl Router {
    /// Every target is left out: requests the router routes get `no_healthy_target`.
    pub(crate) fn all_open(&self) -> bool {
        self.breaker_enabled
            && !self.targets.is_empty()
            && self.targets.iter().all(|t| t.state == State::Open)
    }
}

/// The circuits of every router entry of `config`, read from `kv`.
pub(crate) async fn read(
    config: &GatewayConfig,
    kv: &Arc<dyn KvStore>,
    now_ms: u64,
) -> Result<Vec<Router>, KvError> {
    let mut routers = Vec::new();
    for (i, proxy) in config.proxies.iter().enumerate() {
        for entry in config.chain(i) {
            if entry.policy.policy != "router" {
                continue;
            }
            // A configuration the router refused never got this far; skip rather than fail.
            let Ok(router) = RouterConfig::deserialize(&entry.policy.config) else {
                continue;
            };
            let store = Namespaced::new(kv.clone(), &entry.namespace);
            let mut named: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (r, route) in router.routes.iter().enumerate() {
                let label = route.name.clone().unwrap_or_else(|| format!("route-{r}"));
                for t in &route.targets {
                    let key = format!("{}/{}", t.provider, t.model.as_deref().unwrap_or("*"));
                    let routes = named.entry(key).or_default();
                    if !routes.contains(&label) {
                        routes.push(label.clone());
                    }
                }
            }
            let mut targets = Vec::new();
            for (target, routes) in named {
                targets.push(circuit(&store, target, routes, now_ms).await?);
            }
            routers.push(Router {
                proxy: proxy.name.clone(),
                policy: entry.path,
                breaker_enabled: router.circuit_breaker.enabled,
                targets,
            });
        }
    }
    Ok(routers)
}

async fn circuit(
    store: &Namespaced,
    target: String,
    routes: Vec<String>,
    now_ms: u64,
) -> Result<Target, KvError> {
    let number = |v: Option<Vec<u8>>| {
        v.and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse::<i64>().ok())
    };
    let open_until = number(store.get(&format!("open:{target}")).await?)
        .map(|ms| u64::try_from(ms).unwrap_or(0))
        .filter(|ms| *ms > now_ms);
    let tripped = store.get(&format!("trip:{target}")).await?.is_some();
    let failures = number(store.get(&format!("fail:{target}")).await?).unwrap_or(0);
    let state = match (open_until, tripped) {
        (Some(_), _) => State::Open,
        (None, true) => State::HalfOpen,
        (None, false) => State::Closed,
    };
    Ok(Target {
        target,
        routes,
        state,
        failures,
        open_until_ms: open_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use weir_state::MemoryStore;

    const CONFIG: &str = "
providers:
  - {name: a, base-url: 'http://127.0.0.1:9/v1'}
  - {name: b, base-url: 'http://127.0.0.1:9/v1'}
proxies:
  - name: p
    context-path: /p
    provider: a
    policies:
      - policy: router
        config:
          routes:
            - {name: main, targets: [{provider: a, model: m}, {provider: b}]}
            - {targets: [{provider: a, model: m}]}
  - {name: plain, context-path: /plain, provider: a}
";

    #[tokio::test]
    async fn states_come_from_the_routers_keys() {
        let config = GatewayConfig::from_yaml(CONFIG).unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::new(100));
        let ns = Namespaced::new(kv.clone(), &config.chain(0)[0].namespace);
        let ttl = Some(Duration::from_secs(60));
        let read_all = || read(&config, &kv, 1_000);

        let routers = read_all().await.unwrap();
        assert_eq!(routers.len(), 1);
        let r = &routers[0];
        assert_eq!(
            (r.proxy.as_str(), r.policy.as_str()),
            ("p", "proxies[0].policies[0]")
        );
        let names: Vec<_> = r
            .targets
            .iter()
            .map(|t| (t.target.as_str(), t.routes.clone()))
            .collect();
        assert_eq!(
            names,
            [
                ("a/m", vec!["main".to_owned(), "route-1".to_owned()]),
                ("b/*", vec!["main".to_owned()])
            ]
        );
        assert!(r.targets.iter().all(|t| t.state == State::Closed));

        ns.increment("fail:b/*", 2, ttl).await.unwrap();
        ns.set("open:a/m", b"5000".to_vec(), ttl).await.unwrap();
        ns.set("trip:a/m", b"1".to_vec(), ttl).await.unwrap();
        let r = &read_all().await.unwrap()[0];
        assert_eq!(
            (r.targets[0].state, r.targets[0].open_until_ms),
            (State::Open, Some(5000))
        );
        assert_eq!(
            (r.targets[1].state, r.targets[1].failures),
            (State::Closed, 2)
        );
        assert!(!r.all_open());

        ns.set("open:b/*", b"5000".to_vec(), ttl).await.unwrap();
        assert!(read_all().await.unwrap()[0].all_open());

        // After the cool-down (open:… in the past), a tripped target is half-open.
        let r = &read(&config, &kv, 6_000).await.unwrap()[0];
        assert_eq!(r.targets[0].state, State::HalfOpen);
        assert!(!r.all_open());
    }
}
