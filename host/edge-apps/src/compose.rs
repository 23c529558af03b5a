//! Composition of the edge gateway with wac-graph (in process, no `wac` CLI needed).

use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions, NodeId};

use crate::BuildError;
use crate::plan::{PolicyComponent, SLOTS};

const POLICY_EXPORT: &str = "weir:policy/policy@0.1.0";
const HOST_EXPORTS: &[&str] = &[
    "weir:policy/types@0.1.0",
    "weir:policy/kv@0.1.0",
    "weir:policy/log@0.1.0",
    "weir:policy/http-client@0.1.0",
];

fn err(what: &str, e: impl std::fmt::Display) -> BuildError {
    BuildError::Compose(format!("{what}: {e:#}"))
}

/// The composed gateway: imports `weir:edge/platform` + WASI, exports `weir:edge/handler`.
pub fn compose(slots: &[PolicyComponent]) -> Result<Vec<u8>, BuildError> {
    let mut graph = CompositionGraph::new();
    let register = |graph: &mut CompositionGraph, name: &str, bytes: &[u8]| {
        let pkg = Package::from_bytes(name, None, bytes.to_vec(), graph.types_mut())
            .map_err(|e| err(&format!("reading component `{name}`"), e))?;
        graph
            .register_package(pkg)
            .map_err(|e| err(&format!("registering `{name}`"), e))
    };
    let host_pkg = register(&mut graph, "weir:edge-runtime", weir_policies::EDGE_RUNTIME)?;
    let gateway_pkg = register(&mut graph, "weir:gateway", weir_policies::EDGE_GATEWAY)?;

    let host = graph.instantiate(host_pkg);
    let mut host_exports = Vec::new();
    for name in HOST_EXPORTS
        .iter()
        .chain(["weir:edge/control@0.1.0"].iter())
    {
        let node = graph
            .alias_instance_export(host, name)
            .map_err(|e| err(&format!("edge-runtime export `{name}`"), e))?;
        host_exports.push((*name, node));
    }

    let wire_policy = |graph: &mut CompositionGraph, pkg| -> Result<NodeId, BuildError> {
        let inst = graph.instantiate(pkg);
        let imports: Vec<String> = graph.types()[graph[pkg].ty()]
            .imports
            .keys()
            .cloned()
            .collect();
        for import in imports {
            if let Some((_, node)) = host_exports.iter().find(|(n, _)| *n == import) {
                graph
                    .set_instantiation_argument(inst, &import, *node)
                    .map_err(|e| err(&format!("plugging `{import}` into a policy"), e))?;
            } else if import.starts_with("weir:") {
                return Err(BuildError::Compose(format!(
                    "a policy imports `{import}`, which the edge host does not provide (it was built against a different wit/policy.wit)"
                )));
            }
        }
        graph
            .alias_instance_export(inst, POLICY_EXPORT)
            .map_err(|e| err("policy export", e))
    };

    let mut plugs = Vec::new();
    for s in slots {
        let pkg = register(&mut graph, &format!("weir:policy-{}", s.name), &s.bytes)?;
        plugs.push(wire_policy(&mut graph, pkg)?);
    }
    if plugs.len() < SLOTS {
        let pkg = register(&mut graph, "weir:policy-noop", weir_policies::NOOP)?;
        let noop = wire_policy(&mut graph, pkg)?;
        plugs.resize(SLOTS, noop);
    }

    let gateway = graph.instantiate(gateway_pkg);
    for (name, node) in &host_exports {
        if *name == "weir:policy/types@0.1.0" || *name == "weir:edge/control@0.1.0" {
            graph
                .set_instantiation_argument(gateway, name, *node)
                .map_err(|e| err(&format!("plugging `{name}` into the gateway"), e))?;
        }
    }
    for (i, node) in plugs.iter().enumerate() {
        graph
            .set_instantiation_argument(gateway, &format!("slot{i}"), *node)
            .map_err(|e| err(&format!("plugging a policy into slot{i}"), e))?;
    }
    let handler = graph
        .alias_instance_export(gateway, "weir:edge/handler@0.1.0")
        .map_err(|e| err("gateway export", e))?;
    graph
        .export(handler, "weir:edge/handler@0.1.0")
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
    const PLATFORM: &str = "weir:edge/platform@0.1.0";
    const HANDLER: &str = "weir:edge/handler@0.1.0";
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
