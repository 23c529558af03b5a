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
    ("weir-policy-test-policy", "TEST_POLICY"),
    ("weir-policy-noop", "NOOP"),
    ("weir-edge-host", "EDGE_HOST"),
    ("weir-edge-gateway", "EDGE_GATEWAY"),
];

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
        "test-policy",
        "noop",
        "edge-host",
        "gateway",
        "../core",
        "../host/llm",
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
