//! `weir build`: turns a gateway configuration into a deployable edge app.
//!
//! 1. Loads the configuration and every policy component it uses (built-ins and `policies[]`
//!    files), validates each policy entry's config with the component itself (same field paths
//!    as the self-hosted gateway), and reads the phases each component declares.
//! 2. Writes the gateway plan (`weir_core::plan::Plan`): routes, chains, providers; secrets are
//!    named, never included.
//! 3. Composes one component (wac-graph, in process): the `gateway` component (weir-core's loop)
//!    + the `edge-host` component + one instance per policy component in the slots, a no-op
//!    policy in unused slots. The result imports only `weir:edge/platform` and WASI and exports
//!    `weir:edge/handler`. The policy component bytes are used as they are (their sha256 is in
//!    the plan, so a test can compare them with what the self-hosted host runs).
//! 4. Writes the app for the target (see [`Target`]).
//!
//! The output is a function of the inputs only (no timestamps, sorted listings), so two builds
//! of the same config give identical files.

mod cloudflare;
mod compose;
mod plan;

use std::path::{Path, PathBuf};

pub use plan::{PolicyComponent, make_plan};

/// Where the app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A Cloudflare Worker (jco-transpiled component, Workers KV, a Durable Object for counters).
    Cloudflare,
    /// Only the composed component and the plan (for any runtime that hosts components).
    Component,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cloudflare" => Ok(Self::Cloudflare),
            "component" => Ok(Self::Component),
            other => Err(format!(
                "unknown target `{other}`: use `cloudflare` or `component`"
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
    /// The Worker's name (Cloudflare).
    pub name: String,
    /// Node.js binary to run jco with (Cloudflare).
    pub node: Option<PathBuf>,
    /// jco's CLI script, `.../@bytecodealliance/jco/dist/jco.js` (Cloudflare).
    pub jco: Option<PathBuf>,
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
    let (plan, slots) =
        make_plan(&config, base)
            .await
            .map_err(|(path, message)| BuildError::Config {
                file: file.clone(),
                path,
                message,
            })?;
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
    write(&opts.out.join("gateway.wasm"), &component)?;
    match opts.target {
        Target::Component => write(&opts.out.join("plan.json"), plan_json.as_bytes())?,
        Target::Cloudflare => cloudflare::write_app(opts, &plan_json, progress)?,
    }
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
