//! On-disk cache of compiled components, keyed by the component's SHA-256 and the engine's
//! compatibility hash, so a restart does not compile anything it compiled before.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Compiles `bytes`, or loads the artefact compiled earlier by an identical engine.
pub(crate) fn compile(
    engine: &Engine,
    dir: Option<&Path>,
    bytes: &[u8],
) -> wasmtime::Result<(Component, bool)> {
    compile_keyed(engine, dir, &Sha256::digest(bytes), || Ok(bytes.to_vec()))
}

/// Loads the artefact stored under `key` (a digest naming what `build` makes) by an identical
/// engine, or compiles what `build` returns and stores it.
pub(crate) fn compile_keyed(
    engine: &Engine,
    dir: Option<&Path>,
    key: &[u8],
    build: impl FnOnce() -> wasmtime::Result<Vec<u8>>,
) -> wasmtime::Result<(Component, bool)> {
    let Some(dir) = dir else {
        return Ok((Component::new(engine, build()?)?, false));
    };
    let path = artefact_path(engine, dir, key);
    if path.exists() {
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash (part of the file name), into a directory only weir writes; wasmtime
        // also checks the artefact's header and engine settings before using it.
        #[expect(unsafe_code, reason = "loading our own precompiled artefact")]
        let loaded = unsafe { Component::deserialize_file(engine, &path) };
        match loaded {
            Ok(c) => return Ok((c, true)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached component");
            }
        }
    }
    let component = Component::new(engine, build()?)?;
    if let Err(e) = store(&component, dir, &path) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not write the component cache");
    }
    Ok((component, false))
}

fn artefact_path(engine: &Engine, dir: &Path, key: &[u8]) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{}-{:016x}.cwasm", hex::encode(key), h.finish()))
}

fn store(component: &Component, dir: &Path, path: &Path) -> anyhow_like::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // Unique per writer: gateways sharing the directory (several processes, or several in one
    // process, as in the tests) may compile the same component at once.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

mod anyhow_like {
    pub type Result<T> = std::result::Result<T, std::io::Error>;
}
