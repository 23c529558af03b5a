//! Part A's rows beyond the chains of bundled policies: `mcp-guard` on an MCP route (its schema
//! stored by a `tools/list` answer first) and the conformance policy built from other languages.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use weir_runtime::{
    ChainRun, ChainSpec, MessageView, Policy, RequestState, RouteKind, Runtime, SlotSpec,
};
use weir_state::{KvStore, Namespaced};

use super::{Case, Options, measure, message};
use crate::table::{Table, mean, percentile, us, us_int};

/// `mcp-guard` on an MCP route: a `tools/call` whose arguments are checked against the input
/// schema that a `tools/list` answer (run through the response phase once, before) stored.
pub(super) async fn mcp_guard(
    kv: &Arc<dyn KvStore>,
    loaded: &[(&str, Arc<Policy>, String)],
    options: &Options,
    table: &mut Table,
) -> anyhow::Result<()> {
    let label = "mcp-guard (tools/call checked against the tool's schema)";
    let (_, policy, config) = loaded
        .iter()
        .find(|(n, _, _)| *n == "mcp-guard")
        .context("mcp-guard not loaded")?;
    let instance = "mcp:bench-mcp/mcp-guard".to_owned();
    let spec = Arc::new(ChainSpec::new(vec![SlotSpec {
        policy: policy.clone(),
        kv: Namespaced::new(kv.clone(), &instance),
        instance,
        route: "bench-mcp".into(),
        config_json: config.clone(),
        vectors: None,
        allow_hosts: Vec::new(),
        credential: None,
    }]));
    let state = |i: usize| RequestState {
        request_id: format!("bench-mcp-{i}"),
        route: "bench-mcp".into(),
        route_kind: RouteKind::Mcp,
        endpoint: "tools/call".into(),
        consumer: Some("bench".into()),
        attributes: Default::default(),
        llm: None,
        received_at_ms: 1_700_000_000_000,
    };
    let rpc = |body: serde_json::Value| {
        let mut m = message(&bytes::Bytes::from(body.to_string()));
        m.path = "/mcp".into();
        m.headers
            .push(("mcp-protocol-version".into(), "2025-11-25".into()));
        m
    };
    // The server's tools/list answer, seen once: it stores the schemas.
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "repo": {"type": "string", "pattern": "^[a-z0-9-]+/[a-z0-9-]+$"},
            "title": {"type": "string", "minLength": 1, "maxLength": 256},
            "labels": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        "required": ["repo", "title"],
        "additionalProperties": false,
    });
    let tools: Vec<serde_json::Value> = (0..20)
        .map(|n| serde_json::json!({"name": format!("tool_{n}"), "description": "A tool.", "inputSchema": schema}))
        .collect();
    let mut run = ChainRun::new(spec.clone(), state(usize::MAX));
    let mut list = rpc(serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    let mut admission = weir_core::chain::Admission::default();
    weir_core::chain::request_phase(&mut run, &mut list, &mut admission).await?;
    let mut answer = MessageView {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: bytes::Bytes::from(
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}).to_string(),
        ),
        ..MessageView::default()
    };
    weir_core::chain::response_phase(&mut run, &mut answer, 1).await?;
    drop(run);

    let call = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "tool_7",
        "arguments": {"repo": "acme/widgets", "title": "Fix the build", "labels": ["ci", "bug"], "priority": 2},
    }});
    // The schema is in place: arguments that do not fit are answered by the policy.
    let mut bad = call.clone();
    bad["params"]["arguments"]["priority"] = serde_json::json!(9);
    let mut run = ChainRun::new(spec.clone(), state(usize::MAX - 1));
    let mut msg = rpc(bad);
    let mut admission = weir_core::chain::Admission::default();
    match weir_core::chain::request_phase(&mut run, &mut msg, &mut admission).await? {
        Some(weir_core::chain::Stop::Answer { .. }) => {}
        other => anyhow::bail!("{label}: a call with a priority of 9 was not answered: {other:?}"),
    }
    drop(run);
    crate::progress(&format!(
        "part A: {label} ({} + {} requests)",
        options.warmup_iterations, options.iterations
    ));
    let mut samples = Vec::new();
    for i in 0..options.warmup_iterations + options.iterations.max(1) {
        let mut msg = rpc(call.clone());
        let started = Instant::now();
        let mut run = ChainRun::new(spec.clone(), state(i));
        let mut admission = weir_core::chain::Admission::default();
        let decision = weir_core::chain::request_phase(&mut run, &mut msg, &mut admission).await;
        drop(run);
        let elapsed = started.elapsed();
        if let Some(stop) = decision.with_context(|| format!("{label}: request {i}"))? {
            anyhow::bail!("{label}: request {i} was not let through (its arguments fit): {stop:?}");
        }
        if i >= options.warmup_iterations {
            samples.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    samples.sort_unstable();
    let median = percentile(&samples, 50.0);
    table.row(vec![
        label.to_owned(),
        "1".to_owned(),
        "request".to_owned(),
        us_int(median, 1),
        us_int(percentile(&samples, 99.0), 1),
        us(mean(&samples), 1),
        us(median as f64, 1),
    ]);
    Ok(())
}

/// The conformance policy built from JavaScript and Python: its size, and its cost per request.
pub(super) async fn languages(
    runtime: &Runtime,
    kv: &Arc<dyn KvStore>,
    dir: &std::path::Path,
    options: &Options,
    body: &bytes::Bytes,
    table: &mut Table,
) -> anyhow::Result<()> {
    const CASE: Case = Case {
        label: "",
        policies: &["conformance"],
        complete: false,
        consumer: None,
        stream_events: 0,
        answers: false,
        response: false,
    };
    for (lang, file) in [
        ("JavaScript (componentize-js)", "conformance-js.wasm"),
        ("Python (componentize-py)", "conformance-py.wasm"),
    ] {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        crate::progress(&format!(
            "part A: compiling {} ({} KB)",
            path.display(),
            bytes.len() / 1000
        ));
        let policy = runtime
            .load(file, &bytes)
            .with_context(|| format!("loading {}", path.display()))?;
        let instance = format!("proxy:bench-lang/{file}");
        let spec = Arc::new(ChainSpec::new(vec![SlotSpec {
            policy,
            kv: Namespaced::new(kv.clone(), &instance),
            instance,
            route: "bench-lang".into(),
            config_json: r#"{"model":"mock-gpt"}"#.into(),
            vectors: None,
            allow_hosts: Vec::new(),
            credential: None,
        }]));
        crate::progress(&format!(
            "part A: {lang} ({} + {} requests)",
            options.language_iterations / 10,
            options.language_iterations
        ));
        measure(
            &spec,
            &CASE,
            (options.language_iterations / 10).max(1),
            body,
        )
        .await?;
        let samples = measure(&spec, &CASE, options.language_iterations.max(1), body).await?;
        let median = percentile(&samples, 50.0);
        table.row(vec![
            format!(
                "conformance policy in {lang}, {:.1} MB",
                bytes.len() as f64 / 1e6
            ),
            "1".into(),
            "request".into(),
            us_int(median, 1),
            us_int(percentile(&samples, 99.0), 1),
            us(mean(&samples), 1),
            us_int(median, 1),
        ]);
    }
    table.note(format!(
        "Conformance policies (tests/policies): {} measured requests each; on-request edits the model and \
         counts in kv. Their cost is the instantiation of a whole language runtime per request.",
        options.language_iterations
    ));
    Ok(())
}
