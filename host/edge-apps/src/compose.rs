//! Composition of the edge gateway with wac-graph (in process, no `wac` CLI needed).

use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions, NodeId};

use crate::BuildError;
use crate::planner::PolicyComponent;

/// The policy contract the edge composition serves.
const POLICY_EXPORT: &str = "weir:policy/policy@0.2.0";
/// What the edge runtime exports to policies and links.
const RUNTIME_EXPORTS: &[&str] = &[
    "weir:policy/types@0.2.0",
    "weir:policy/kv@0.2.0",
    "weir:policy/log@0.2.0",
    "weir:policy/http-client@0.2.0",
    "weir:policy/metrics@0.2.0",
    "weir:policy/embeddings@0.2.0",
    "weir:policy/vectors@0.2.0",
    CONTROL,
];
const CONTROL: &str = "weir:edge/control@0.2.0";
const CHAIN: &str = "weir:edge/chain@0.2.0";
const HANDLER: &str = "weir:edge/handler@0.2.0";

fn err(what: &str, e: impl std::fmt::Display) -> BuildError {
    BuildError::Compose(format!("{what}: {e:#}"))
}

/// The composed gateway: imports `weir:edge/platform` + WASI, exports `weir:edge/handler`.
///
/// ```text
/// gateway ─chain→ link(slot 0) ─next→ link(slot 1) ─next→ … ─next→ chain-end
///                    │policy             │policy
///                 policy 0            policy 1
/// ```
pub fn compose(slots: &[PolicyComponent]) -> Result<Vec<u8>, BuildError> {
    let mut graph = CompositionGraph::new();
    let register = |graph: &mut CompositionGraph, name: &str, bytes: &[u8]| {
        let pkg = Package::from_bytes(name, None, bytes.to_vec(), graph.types_mut())
            .map_err(|e| err(&format!("reading component `{name}`"), e))?;
        graph
            .register_package(pkg)
            .map_err(|e| err(&format!("registering `{name}`"), e))
    };
    let runtime_pkg = register(&mut graph, "weir:edge-runtime", weir_policies::EDGE_RUNTIME)?;
    let gateway_pkg = register(&mut graph, "weir:gateway", weir_policies::EDGE_GATEWAY)?;
    let link_pkg = register(
        &mut graph,
        "weir:chain-link",
        weir_policies::EDGE_CHAIN_LINK,
    )?;
    let end_pkg = register(&mut graph, "weir:chain-end", weir_policies::EDGE_CHAIN_END)?;

    let runtime = graph.instantiate(runtime_pkg);
    let mut runtime_exports = Vec::new();
    for name in RUNTIME_EXPORTS {
        let node = graph
            .alias_instance_export(runtime, name)
            .map_err(|e| err(&format!("edge-runtime export `{name}`"), e))?;
        runtime_exports.push((*name, node));
    }
    // Plugs every import of `inst` that the runtime serves; other `weir:` imports are refused.
    let plug_runtime = |graph: &mut CompositionGraph,
                        pkg: wac_graph::PackageId,
                        inst: NodeId,
                        what: &str,
                        allowed: &[&str]|
     -> Result<(), BuildError> {
        let imports: Vec<String> = graph.types()[graph[pkg].ty()]
            .imports
            .keys()
            .cloned()
            .collect();
        for import in imports {
            if let Some((_, node)) = runtime_exports.iter().find(|(n, _)| *n == import) {
                graph
                    .set_instantiation_argument(inst, &import, *node)
                    .map_err(|e| err(&format!("plugging `{import}` into {what}"), e))?;
            } else if import.starts_with("weir:") && !allowed.contains(&import.as_str()) {
                let hint = if import.contains("@0.1.") {
                    " It was built against weir:policy@0.1.0: the edge apps run 0.2 policies \
                     only (rebuild it against wit/policy-0.2; the self-hosted weir runs both)."
                } else {
                    ""
                };
                return Err(BuildError::Compose(format!(
                    "{what} imports `{import}`, which the edge runtime does not provide.{hint}"
                )));
            }
        }
        Ok(())
    };

    // From the last link to the first: each link's `next` is the one after it.
    let end = graph.instantiate(end_pkg);
    plug_runtime(&mut graph, end_pkg, end, "the chain end", &[])?;
    let mut next = graph
        .alias_instance_export(end, CHAIN)
        .map_err(|e| err("chain-end export", e))?;
    let link_imports: Vec<String> = graph.types()[graph[link_pkg].ty()]
        .imports
        .keys()
        .cloned()
        .collect();
    let next_import = link_imports
        .iter()
        .find(|n| !n.contains(':') || n.as_str() == "next")
        .cloned()
        .ok_or_else(|| BuildError::Compose("the chain link has no `next` import".into()))?;
    for s in slots.iter().rev() {
        let pkg = register(&mut graph, &format!("weir:policy-{}", s.name), &s.bytes)?;
        let policy = graph.instantiate(pkg);
        plug_runtime(
            &mut graph,
            pkg,
            policy,
            &format!("the policy `{}`", s.name),
            &[],
        )?;
        let export = graph
            .alias_instance_export(policy, POLICY_EXPORT)
            .map_err(|e| {
                err(
                    &format!(
                        "the policy `{}` (a policy component exports {POLICY_EXPORT})",
                        s.name
                    ),
                    e,
                )
            })?;
        let link = graph.instantiate(link_pkg);
        plug_runtime(&mut graph, link_pkg, link, "a chain link", &[POLICY_EXPORT])?;
        graph
            .set_instantiation_argument(link, POLICY_EXPORT, export)
            .map_err(|e| {
                err(
                    &format!("plugging the policy `{}` into its link", s.name),
                    e,
                )
            })?;
        graph
            .set_instantiation_argument(link, &next_import, next)
            .map_err(|e| err("chaining two links", e))?;
        next = graph
            .alias_instance_export(link, CHAIN)
            .map_err(|e| err("chain-link export", e))?;
    }

    let gateway = graph.instantiate(gateway_pkg);
    for (name, node) in &runtime_exports {
        if *name == "weir:policy/types@0.2.0" || *name == CONTROL {
            graph
                .set_instantiation_argument(gateway, name, *node)
                .map_err(|e| err(&format!("plugging `{name}` into the gateway"), e))?;
        }
    }
    graph
        .set_instantiation_argument(gateway, CHAIN, next)
        .map_err(|e| err("plugging the chain into the gateway", e))?;
    let handler = graph
        .alias_instance_export(gateway, HANDLER)
        .map_err(|e| err("gateway export", e))?;
    graph
        .export(handler, HANDLER)
        .map_err(|e| err("exporting the handler", e))?;
    graph
        .encode(EncodeOptions::default())
        .map_err(|e| err("encoding", e))
}

/// The Spin app's component: the composed gateway between the Spin adapters (apps/spin):
/// `spin-platform` serves its `weir:edge/platform` import, `spin-http` calls its handler and is
/// what Spin's HTTP trigger calls. Imports WASI and Spin interfaces only; exports
/// `wasi:http/incoming-handler@0.2.0`.
pub fn compose_spin(gateway: &[u8]) -> Result<Vec<u8>, BuildError> {
    const PLATFORM: &str = "weir:edge/platform@0.2.0";
    const INCOMING: &str = "wasi:http/incoming-handler@0.2.0";
    let mut graph = CompositionGraph::new();
    let mut register = |name: &str, bytes: &[u8]| {
        let pkg = Package::from_bytes(name, None, bytes.to_vec(), graph.types_mut())
            .map_err(|e| err(&format!("reading component `{name}`"), e))?;
        graph
            .register_package(pkg)
            .map_err(|e| err(&format!("registering `{name}`"), e))
    };
    let platform_pkg = register("weir:spin-platform", weir_policies::SPIN_PLATFORM)?;
    let gateway_pkg = register("weir:gateway-composed", gateway)?;
    let http_pkg = register("weir:spin-http", weir_policies::SPIN_HTTP)?;

    let platform = graph.instantiate(platform_pkg);
    let platform_export = graph
        .alias_instance_export(platform, PLATFORM)
        .map_err(|e| err("spin-platform export", e))?;
    let gateway = graph.instantiate(gateway_pkg);
    graph
        .set_instantiation_argument(gateway, PLATFORM, platform_export)
        .map_err(|e| err("plugging spin-platform into the gateway", e))?;
    let handler = graph
        .alias_instance_export(gateway, HANDLER)
        .map_err(|e| err("gateway export", e))?;
    let http = graph.instantiate(http_pkg);
    graph
        .set_instantiation_argument(http, HANDLER, handler)
        .map_err(|e| err("plugging the gateway into spin-http", e))?;
    let incoming = graph
        .alias_instance_export(http, INCOMING)
        .map_err(|e| err("spin-http export", e))?;
    graph
        .export(incoming, INCOMING)
        .map_err(|e| err("exporting the HTTP handler", e))?;
    graph
        .encode(EncodeOptions::default())
        .map_err(|e| err("encoding", e))
}
