//! `weir build`: turns a gateway configuration into a deployable edge app.
//!
//! 1. Loads the configuration and every policy component it uses (built-ins and `policies[]`
//!    files), validates each policy entry's config with the component itself (same field paths
//!    as the self-hosted gateway), and reads the phases each component declares.
//! 2. Writes the gateway plan (`weir_core::plan::Plan`): routes, chains, providers; secrets are
//!    named, never included.
//! 3. Composes one component (wac-graph, in process): the `gateway` component (weir-core's loop),
//!    the `edge-runtime` component, and for each policy component one instance of it behind a
//!    `chain-link`, the links chained to a `chain-end` (so a plan may use any number of policy
//!    components). The result imports only `weir:edge/platform` and WASI and exports
//!    `weir:edge/handler`. The policy component bytes are used as they are (their sha256 is in
//!    the plan, so a test can compare them with what the self-hosted host runs), except for
//!    components that ask to be pre-initialised (`Policy::PREINITIALISE` of the SDK): like the
//!    self-hosted host, the build runs their `validate-config` on every configuration the slot
//!    serves and composes the snapshot of that instance instead (same code, the configurations
//!    parsed in its memory; the plan's slot says `preinitialised`), so the edge's per-request
//!    instances do not parse them again.
//! 4. Writes the app for the target (see [`Target`]). For Spin, the composition is wrapped once
//!    more between the two Spin adapters (apps/spin) and checked against the Spin world.
//!
//! The output is a function of the inputs only (no timestamps, sorted listings), so two builds
//! of the same config give identical files.

mod cloudflare;
mod compose;
mod planner;
mod spin;

use std::path::{Path, PathBuf};

pub use planner::{PolicyComponent, make_plan};

/// Where the app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A Cloudflare Worker (jco-transpiled component, Workers KV, a Durable Object for counters).
    Cloudflare,
    /// A Spin app (one WASI 0.2 component for Spin's HTTP trigger, Spin key-value, variables).
    Spin,
    /// Only the composed component and the plan (for any runtime that hosts components).
    Component,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cloudflare" => Ok(Self::Cloudflare),
            "spin" => Ok(Self::Spin),
            "component" => Ok(Self::Component),
            other => Err(format!(
                "unknown target `{other}`: use `cloudflare`, `spin` or `component`"
            )),
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    pub config: PathBuf,
    pub out: PathBuf,
    /// The Worker's (Cloudflare) or application's (Spin) name.
    pub name: String,
    /// Node.js binary to run jco with (Cloudflare).
    pub node: Option<PathBuf>,
    /// jco's CLI script, `.../@bytecodealliance/jco/dist/jco.js` (Cloudflare).
    pub jco: Option<PathBuf>,
    /// Pre-initialise the components that ask for it with their entries' configurations (the
    /// default; see [`planner::preinitialise`]).
    pub preinitialise: bool,
}

/// Why a build failed; each names the file, field or tool at fault and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{file}: {path}: {message}")]
    Config {
        file: String,
        path: String,
        message: String,
    },
    #[error("{0}")]
    Io(String),
    #[error("composing the gateway failed: {0}")]
    Compose(String),
    #[error("{0}")]
    Tool(String),
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Files written, relative to the output directory, with their sizes.
    pub files: Vec<(String, u64)>,
    pub component_bytes: usize,
}

/// Runs a build, reporting progress through `progress`.
pub async fn build(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Summary, BuildError> {
    let file = opts.config.display().to_string();
    progress(&format!("reading {file}"));
    let text = std::fs::read_to_string(&opts.config)
        .map_err(|e| BuildError::Io(format!("cannot read the config file {file}: {e}")))?;
    let config = weir_config::GatewayConfig::from_yaml(&text).map_err(|e| BuildError::Config {
        file: file.clone(),
        path: e.path,
        message: e.message,
    })?;
    let base = opts.config.parent().unwrap_or(Path::new("."));
    progress("loading and validating policy components");
    let (mut plan, mut slots) =
        make_plan(&config, base)
            .await
            .map_err(|(path, message)| BuildError::Config {
                file: file.clone(),
                path,
                message,
            })?;
    if opts.preinitialise {
        planner::preinitialise(&mut plan, &mut slots, progress).await;
    }
    progress(&format!(
        "composing the gateway with {} policy component(s): {}",
        slots.len(),
        slots
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let component = compose::compose(&slots)?;
    let plan_json = serde_json::to_string_pretty(&plan)
        .map_err(|e| BuildError::Io(format!("serialising the plan: {e}")))?;

    std::fs::create_dir_all(&opts.out)
        .map_err(|e| BuildError::Io(format!("cannot create {}: {e}", opts.out.display())))?;
    let component = match opts.target {
        Target::Component => {
            write(&opts.out.join("gateway.wasm"), &component)?;
            write(&opts.out.join("plan.json"), plan_json.as_bytes())?;
            component
        }
        Target::Cloudflare => {
            write(&opts.out.join("gateway.wasm"), &component)?;
            cloudflare::write_app(opts, &plan_json, progress)?;
            component
        }
        Target::Spin => spin::write_app(opts, &config, &plan, &plan_json, &component, progress)?,
    };
    let mut files = Vec::new();
    list(&opts.out, &opts.out, &mut files);
    files.sort();
    Ok(Summary {
        files,
        component_bytes: component.len(),
    })
}

pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| BuildError::Io(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(path, bytes)
        .map_err(|e| BuildError::Io(format!("cannot write {}: {e}", path.display())))
}

fn list(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if e.file_name() != ".wrangler" && e.file_name() != "node_modules" {
                list(root, &p, out);
            }
        } else if let (Ok(rel), Ok(meta)) = (p.strip_prefix(root), e.metadata()) {
            out.push((rel.display().to_string(), meta.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    const CONFIG: &str = r#"
providers:
  - name: p
    base-url: http://127.0.0.1:1/v1
    api-key-env: P_KEY
proxies:
  - name: demo
    context-path: /
    provider: p
    policies:
      - policy: auth
        config: { consumers: [ { id: a, key-sha256: "37a7217095de3b7d4e3d4a7ad5b6a2b1c5c0d2b1b2b7c8e4a2b2c3d4e5f60718" } ] }
      - policy: token-limit
        config: { tokens-per-minute: 100 }
"#;

    #[tokio::test]
    async fn the_edge_runs_the_same_policy_bytes_and_builds_reproducibly() {
        let config = weir_config::GatewayConfig::from_yaml(CONFIG).unwrap();
        let (plan, slots) = super::make_plan(&config, std::path::Path::new("."))
            .await
            .unwrap();
        assert_eq!(plan.secrets, vec!["P_KEY".to_owned()]);
        let auth = plan.slots.iter().find(|s| s.policy == "auth").unwrap();
        assert_eq!(
            auth.sha256,
            hex::encode(Sha256::digest(weir_policies::AUTH))
        );
        let tl = plan
            .slots
            .iter()
            .find(|s| s.policy == "token-limit")
            .unwrap();
        assert_eq!(
            tl.sha256,
            hex::encode(Sha256::digest(weir_policies::TOKEN_LIMIT))
        );
        let a = super::compose::compose(&slots).unwrap();
        let b = super::compose::compose(&slots).unwrap();
        assert_eq!(a, b, "composition must be reproducible");
        // The policy bytes are embedded unchanged in the composition.
        let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        assert!(contains(&a, weir_policies::AUTH));
        assert!(contains(&a, weir_policies::TOKEN_LIMIT));
    }

    #[tokio::test]
    async fn the_spin_app_targets_the_spin_world_with_the_same_policy_bytes() {
        let dir = std::env::temp_dir().join(format!("weir-edge-apps-spin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("gateway.yaml");
        std::fs::write(&config, CONFIG).unwrap();
        let opts = |out: &str| super::Options {
            target: super::Target::Spin,
            config: config.clone(),
            out: dir.join(out),
            name: "weir-test".into(),
            node: None,
            jco: None,
            preinitialise: true,
        };
        let mut progress = |_: &str| {};
        super::build(&opts("a"), &mut progress).await.unwrap();
        super::build(&opts("b"), &mut progress).await.unwrap();
        let app = std::fs::read(dir.join("a/weir.wasm")).unwrap();
        assert_eq!(
            app,
            std::fs::read(dir.join("b/weir.wasm")).unwrap(),
            "reproducible"
        );
        let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        assert!(contains(&app, weir_policies::AUTH));
        assert!(contains(&app, weir_policies::TOKEN_LIMIT));
        // It targets the Spin world, and the check can fail: the Cloudflare composition (which
        // imports weir:edge/platform) and the HTTP adapter alone do not.
        super::spin::validate(&app).unwrap();
        let config_parsed = weir_config::GatewayConfig::from_yaml(CONFIG).unwrap();
        let (_, slots) = super::make_plan(&config_parsed, &dir).await.unwrap();
        let bare = super::compose::compose(&slots).unwrap();
        let e = super::spin::validate(&bare).unwrap_err().to_string();
        assert!(e.contains("weir:edge/platform"), "{e}");
        assert!(super::spin::validate(weir_policies::SPIN_HTTP).is_err());

        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join("a/spin.toml")).unwrap()).unwrap();
        let vars = manifest["variables"].as_table().unwrap();
        assert_eq!(vars["p_key"]["secret"].as_bool(), Some(true));
        let plan = vars["weir_plan"]["default"].as_str().unwrap();
        let plan = weir_core::plan::Plan::parse(plan).unwrap();
        assert_eq!(plan.secrets, ["P_KEY"]);
        let component = manifest["component"]["weir"].as_table().unwrap();
        assert_eq!(component["source"].as_str(), Some("weir.wasm"));
        assert_eq!(
            component["allowed_outbound_hosts"].as_array().unwrap()[0].as_str(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(
            component["variables"]["p_key"].as_str(),
            Some("{{ p_key }}")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn components_that_ask_are_preinitialised_with_every_configuration_reproducibly() {
        let config = weir_config::GatewayConfig::from_yaml(&CONFIG.replace(
            "      - policy: token-limit",
            "      - { policy: guardrail, config: { rules: [{ id: i, kind: injection }] } }
      - { policy: guardrail, id: second, config: { rules: [{ id: r, kind: regex, patterns: [secret] }] } }
      - policy: token-limit",
        ))
        .unwrap();
        let (plan, slots) = super::make_plan(&config, std::path::Path::new("."))
            .await
            .unwrap();
        let guardrail = slots.iter().position(|s| s.name == "guardrail").unwrap();
        assert_eq!(
            slots[guardrail].configs.len(),
            2,
            "one slot, both configurations"
        );
        let mut built = Vec::new();
        for _ in 0..2 {
            let (mut plan, mut slots) = (plan.clone(), slots.clone());
            let mut lines = Vec::new();
            super::planner::preinitialise(&mut plan, &mut slots, &mut |l: &str| {
                lines.push(l.to_owned());
            })
            .await;
            assert!(
                lines.len() == 1 && lines[0].starts_with("pre-initialised `guardrail` with 2"),
                "{lines:?}"
            );
            built.push((plan, slots));
        }
        let (plan, slots) = &built[0];
        // The plan still names the component `weir` runs, and says the slot is a snapshot of it.
        let slot = &plan.slots[guardrail];
        assert!(slot.preinitialised);
        assert_eq!(
            slot.sha256,
            hex::encode(Sha256::digest(weir_policies::GUARDRAIL))
        );
        assert!(
            !plan
                .slots
                .iter()
                .any(|s| s.policy != "guardrail" && s.preinitialised)
        );
        let digest = |b: &[u8]| hex::encode(Sha256::digest(b));
        assert_ne!(digest(&slots[guardrail].bytes), slot.sha256);
        let auth = slots.iter().find(|s| s.name == "auth").unwrap();
        assert!(
            auth.bytes == weir_policies::AUTH,
            "auth does not ask for it"
        );
        // The same inputs give the same snapshot (its hash-map seed is derived from them).
        assert_eq!(
            digest(&slots[guardrail].bytes),
            digest(&built[1].1[guardrail].bytes)
        );
    }

    #[tokio::test]
    async fn builtin_mock_provider_is_refused_with_its_field_path() {
        let config = weir_config::GatewayConfig::from_yaml(
            &CONFIG.replace("http://127.0.0.1:1/v1", "builtin:mock"),
        )
        .unwrap();
        let (path, message) = super::make_plan(&config, std::path::Path::new("."))
            .await
            .unwrap_err();
        assert_eq!(path, "providers[0].base-url");
        assert!(message.contains("self-hosted"), "{message}");
    }
}
