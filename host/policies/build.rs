//! Builds the policy components of `components/` for `wasm32-wasip2` (a separate cargo
//! workspace, with its own target directory so the two builds never wait on each other's lock)
//! and generates constants embedding their bytes.

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

/// (crate name, constant name) of every component built here.
const COMPONENTS: &[(&str, &str)] = &[
    ("weir-policy-auth", "AUTH"),
    ("weir-policy-token-limit", "TOKEN_LIMIT"),
    ("weir-policy-guardrail", "GUARDRAIL"),
    ("weir-policy-pii", "PII"),
    ("weir-policy-prompt", "PROMPT"),
    ("weir-policy-router", "ROUTER"),
    ("weir-policy-cache", "CACHE"),
    ("weir-policy-mcp-guard", "MCP_GUARD"),
    ("weir-policy-mcp-translator", "MCP_TRANSLATOR"),
    ("weir-policy-test-policy", "TEST_POLICY"),
    ("weir-policy-noop", "NOOP"),
    ("weir-edge-runtime", "EDGE_RUNTIME"),
    ("weir-edge-gateway", "EDGE_GATEWAY"),
    ("weir-edge-chain-link", "EDGE_CHAIN_LINK"),
    ("weir-edge-chain-end", "EDGE_CHAIN_END"),
    ("weir-spin-http", "SPIN_HTTP"),
    ("weir-spin-platform", "SPIN_PLATFORM"),
];

/// The Spin world a Spin app built by `weir build --target spin` must target, from the WIT of
/// the spin-sdk release the Spin adapters are built with: what Spin's platform world
/// (`spin:up/platform@3.6.0`) lets a component import, plus the WASI 0.2 HTTP trigger's export
/// (as in `spin:up/http-trigger@3.4.0`). Its imports are then merged to the highest
/// semver-compatible versions, as the Rust toolchain's component linker does with the
/// component's own imports (Rust's standard library imports WASI 0.2.6, spin-sdk 0.2.0; Spin's
/// runtime links any 0.2.x).
const SPIN_WORLD_WIT: &str = "package weir:spin-target@0.1.0;

/// Spin's platform imports + the WASI 0.2 HTTP trigger export.
world http-trigger {
    include spin:up/platform@3.6.0;
    export wasi:http/incoming-handler@0.2.0;
}
";
const SPIN_WORLD: &str = "weir:spin-target/http-trigger@0.1.0";
const SPIN_SDK: &str = "spin-sdk";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.join("../..").canonicalize()?;
    let components = root.join("components");
    for p in [
        "Cargo.toml",
        "Cargo.lock",
        ".cargo/config.toml",
        "sdk",
        "auth",
        "token-limit",
        "guardrail",
        "pii",
        "prompt",
        "router",
        "cache",
        "mcp-guard",
        "mcp-translator",
        "jsonschema",
        "test-policy",
        "noop",
        "edge-runtime",
        "gateway",
        "chain-link",
        "chain-end",
        "../core",
        "../core/llm",
        "../apps/spin",
    ] {
        println!("cargo:rerun-if-changed={}", components.join(p).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    ensure_target("wasm32-wasip2");

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&components)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .args(["--manifest-path", "Cargo.toml"]);
    for (name, _) in COMPONENTS {
        cmd.args(["-p", name]);
    }
    // Settings of the outer (host) build must not leak into the guest build.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_PROFILE_DEV_OPT_LEVEL",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("could not run `{cargo}` to build components/: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the policy components failed ({status}). Run `cargo build --release --target wasm32-wasip2 \
             --manifest-path components/Cargo.toml` to see why; if the target is missing, \
             `rustup target add wasm32-wasip2`."
        )
        .into());
    }

    let out_dir = components.join("target/wasm32-wasip2/release");
    let mut code = String::new();
    let mut list = String::new();
    for (name, constant) in COMPONENTS {
        let file = out_dir.join(format!("{}.wasm", name.replace('-', "_")));
        if !file.exists() {
            return Err(format!("expected component {} was not produced", file.display()).into());
        }
        writeln!(code, "/// The `{name}` component (from components/).")?;
        writeln!(
            code,
            "pub const {constant}: &[u8] = include_bytes!({:?});",
            file.display().to_string()
        )?;
        writeln!(code, "/// Path of the `{name}` component file.")?;
        writeln!(
            code,
            "pub const {constant}_PATH: &str = {:?};",
            file.display().to_string()
        )?;
        if let Some(policy) = name.strip_prefix("weir-policy-") {
            writeln!(list, "    ({policy:?}, {constant}),")?;
        }
    }
    spin_world(&cargo, &components, &mut code)?;
    writeln!(
        code,
        "/// Every policy component built here, by policy name."
    )?;
    writeln!(code, "pub const ALL: &[(&str, &[u8])] = &[\n{list}];")?;
    std::fs::write(
        PathBuf::from(env::var("OUT_DIR")?).join("components.rs"),
        code,
    )?;
    Ok(())
}

/// Encodes the Spin world (from the WIT that ships in the spin-sdk crate the Spin adapters are
/// built with) as a binary WIT package, so `weir build --target spin` can check the app it
/// builds against it without the spin-sdk sources.
fn spin_world(
    cargo: &str,
    components: &std::path::Path,
    code: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
    let out = Command::new(cargo)
        .current_dir(components)
        // Only the packages a wasm32-wasip2 build uses (and their host build dependencies),
        // which the build above has just downloaded: without the filter, `cargo metadata`
        // resolves every platform's dependencies (Android, Windows...) and, offline, fails on
        // a machine whose cargo cache never held them.
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
            "wasm32-wasip2",
        ])
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .map_err(|e| format!("could not run `{cargo} metadata` in components/: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo metadata` in components/ failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let manifest = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == SPIN_SDK))
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or_else(|| format!("{SPIN_SDK} is not a dependency of components/ (see apps/spin)"))?;
    let wit = PathBuf::from(manifest)
        .parent()
        .ok_or("spin-sdk manifest path has no parent")?
        .join("wit");
    let mut resolve = wit_parser::Resolve::new();
    resolve
        .push_path(&wit)
        .map_err(|e| format!("reading the Spin WIT in {}: {e:#}", wit.display()))?;
    let root = resolve
        .push_str("weir-spin-target.wit", SPIN_WORLD_WIT)
        .map_err(|e| format!("resolving the Spin target world: {e:#}"))?;
    let world = resolve
        .select_world(&[root], Some(SPIN_WORLD))
        .map_err(|e| format!("world {SPIN_WORLD} in {}: {e:#}", wit.display()))?;
    resolve
        .merge_world_imports_based_on_semver(world)
        .map_err(|e| format!("merging the Spin world's imports: {e:#}"))?;
    let package = resolve.worlds[world]
        .package
        .ok_or("the Spin world has no package")?;
    let bytes = wit_component::encode(&resolve, package)
        .map_err(|e| format!("encoding {SPIN_WORLD}: {e:#}"))?;
    let file = PathBuf::from(env::var("OUT_DIR")?).join("spin-world.wasm");
    std::fs::write(&file, bytes)?;
    writeln!(
        code,
        "/// The Spin world a Spin app targets, from the WIT of spin-sdk (a binary WIT package)."
    )?;
    writeln!(
        code,
        "pub const SPIN_WORLD_WIT: &[u8] = include_bytes!({:?});",
        file.display().to_string()
    )?;
    writeln!(code, "/// The name of that world.")?;
    writeln!(code, "pub const SPIN_WORLD: &str = {SPIN_WORLD:?};")?;
    Ok(())
}

/// Installs the rustup target if this toolchain lacks it (rust-toolchain.toml lists it, but rustup
/// only adds listed targets when it installs the toolchain itself), so a fresh clone builds with
/// plain `cargo run`.
fn ensure_target(target: &str) {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.is_some_and(|d| d.exists()) {
        return;
    }
    println!(
        "cargo:warning=installing the {target} target with rustup (needed to build the policy components)"
    );
    let _ = Command::new("rustup")
        .args(["target", "add", target])
        .status();
}
