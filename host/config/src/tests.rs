use super::*;

fn err(yaml: &str) -> ConfigError {
    GatewayConfig::from_yaml(yaml).unwrap_err()
}

const MINIMAL: &str = "
providers:
  - name: p
    base-url: http://127.0.0.1:9/v1
proxies:
  - name: a
    context-path: /a
    provider: p
";

#[test]
fn default_config_is_valid() {
    let c = GatewayConfig::from_yaml(DEFAULT_CONFIG).unwrap();
    assert_eq!(c.listen, "127.0.0.1:8080");
    assert_eq!(c.proxies.len(), 2);
    assert_eq!(c.provider("mock").unwrap().base_url, "builtin:mock");
}

#[test]
fn minimal_config_gets_defaults() {
    let c = GatewayConfig::from_yaml(MINIMAL).unwrap();
    assert_eq!(c.limits.max_body_bytes, 4 << 20);
    assert_eq!(c.providers[0].timeout_ms, 60_000);
    assert!(c.proxies[0].policies.is_empty());
}

#[test]
fn unknown_keys_name_their_path() {
    let e = err(&MINIMAL.replace("provider: p", "provider: p\n    colour: red"));
    assert_eq!(e.path, "proxies[0].colour");
    assert!(e.message.contains("unknown field `colour`"), "{e}");
}

#[test]
fn sections_can_be_partial() {
    let c = GatewayConfig::from_yaml(&format!(
        "{MINIMAL}limits: {{ max-body-bytes: 10 }}\nruntime: {{ policy-timeout-ms: 5 }}\n"
    ))
    .unwrap();
    assert_eq!(c.limits.max_body_bytes, 10);
    assert_eq!(c.limits.max_headers, 100);
    assert_eq!(c.runtime.policy_timeout_ms, 5);
    assert_eq!(c.runtime.policy_memory_mib, 64);
}

#[test]
fn wrong_types_name_their_path() {
    let e = err(&format!("{MINIMAL}limits:\n  max-body-bytes: lots\n"));
    assert_eq!(e.path, "limits.max-body-bytes");
}

#[test]
fn unknown_provider_is_reported() {
    let e = err(&MINIMAL.replace("provider: p", "provider: q"));
    assert_eq!(e.path, "proxies[0].provider");
    assert_eq!(
        e.to_string(),
        "proxies[0].provider: unknown provider `q` (known: p)"
    );
}

#[test]
fn unknown_policy_is_reported() {
    let e = err(&format!(
        "{MINIMAL}    policies:\n      - policy: auth\n      - policy: nope\n"
    ));
    assert_eq!(e.path, "proxies[0].policies[1].policy");
    assert!(
        e.message.contains(
            "available: auth, cache, guardrail, mcp-guard, mcp-translator, pii, prompt, router, token-limit"
        ),
        "{e}"
    );
}

#[test]
fn custom_policies_become_available() {
    let yaml = format!(
        "{MINIMAL}    policies:\n      - policy: mine\npolicies:\n  - name: mine\n    path: x.wasm\n"
    );
    GatewayConfig::from_yaml(&yaml).unwrap();
    let dup = format!("{MINIMAL}policies:\n  - name: auth\n    path: x.wasm\n");
    assert_eq!(err(&dup).path, "policies[0].name");
}

#[test]
fn bad_values_are_reported() {
    assert_eq!(
        err(&MINIMAL.replace("/a", "a")).path,
        "proxies[0].context-path"
    );
    assert_eq!(
        err(&MINIMAL.replace("/a", "/a/")).path,
        "proxies[0].context-path"
    );
    assert_eq!(
        err(&MINIMAL.replace("http://127.0.0.1:9/v1", "ftp://x")).path,
        "providers[0].base-url"
    );
    assert_eq!(
        err(&MINIMAL.replace("base-url:", "api-key-env: sk-live-123\n    base-url:")).path,
        "providers[0].api-key-env"
    );
    assert_eq!(err(&format!("listen: nowhere\n{MINIMAL}")).path, "listen");
    let two = format!("{MINIMAL}  - name: a\n    context-path: /b\n    provider: p\n");
    assert_eq!(err(&two).path, "proxies[1].name");
}

#[test]
fn json_is_accepted() {
    let json = r#"{"providers":[{"name":"p","base-url":"https://x/v1"}],"proxies":[{"name":"a","context-path":"/","provider":"p"}]}"#;
    GatewayConfig::from_yaml(json).unwrap();
}

#[test]
fn committed_schema_is_up_to_date() {
    let committed = include_str!("../../../docs/config.schema.json");
    assert!(
        committed == json_schema(),
        "docs/config.schema.json is stale: run `cargo run -p weir -- config-schema > docs/config.schema.json`"
    );
}

#[test]
fn provider_kind_settings_are_checked() {
    let with = |extra: &str| {
        MINIMAL.replace(
            "    base-url: http://127.0.0.1:9/v1\n",
            &format!("    base-url: http://127.0.0.1:9/v1\n{extra}"),
        )
    };
    let e = err(&with("    kind: anthropic\n    api-version: 2024-10-21\n"));
    assert_eq!(e.path, "providers[0].api-version");
    let e = err(&with("    deployments: {gpt-4o: prod}\n"));
    assert_eq!(e.path, "providers[0].deployments");
    let e = err(&with("    kind: gemini\n    aws: {region: us-east-1}\n"));
    assert_eq!(e.path, "providers[0].aws");
    let e = err(&with("    kind: aws-bedrock\n    api-key-env: KEY\n"));
    assert_eq!(e.path, "providers[0].api-key-env");
    let e = err(&with("    kind: aws-bedrock\n"));
    assert_eq!(
        e.path, "providers[0].aws.region",
        "no region in a local URL: {e}"
    );
    let e = err(&with(
        "    kind: aws-bedrock\n    aws: {region: eu-west-1, access-key-id-env: not a var}\n",
    ));
    assert_eq!(e.path, "providers[0].aws.access-key-id-env");
    let e = err(&with("    kind: klingon\n"));
    assert_eq!(e.path, "providers[0].kind");
    assert!(
        GatewayConfig::from_yaml(&with(
            "    kind: azure-openai\n    api-version: 2024-10-21\n    deployments: {gpt-4o: prod}\n"
        ))
        .is_ok()
    );
    assert_eq!(
        bedrock_region("https://bedrock-runtime.eu-west-1.amazonaws.com"),
        Some("eu-west-1")
    );
    assert_eq!(bedrock_region("http://127.0.0.1:9"), None);
}

#[test]
fn prices_are_checked() {
    let e = err(&format!(
        "{MINIMAL}prices:\n  - {{model: m, input-per-million: -1, output-per-million: 1}}\n"
    ));
    assert_eq!(e.path, "prices[0].input-per-million");
    let e = err(&format!(
        "{MINIMAL}prices:\n  - {{model: m, provider: nope, input-per-million: 1, output-per-million: 1}}\n"
    ));
    assert_eq!(e.path, "prices[0].provider");
    let ok = format!(
        "{MINIMAL}prices:\n  - {{model: 'gpt-4o*', provider: p, input-per-million: 2.5, output-per-million: 10}}\n"
    );
    assert!(GatewayConfig::from_yaml(&ok).is_ok());
}

const TWO_LISTS: &str = "
providers:
  - name: p
    base-url: http://127.0.0.1:9/v1
    policies:
      - policy: token-limit
        config: { tokens-per-month: 1000 }
proxies:
  - name: a
    context-path: /a
    provider: p
    policies:
      - policy: auth
        config: { consumers: [] }
      - policy: token-limit
        config: { tokens-per-minute: 10 }
";

#[test]
fn instances_are_named_by_scope_not_position() {
    let c = GatewayConfig::from_yaml(TWO_LISTS).unwrap();
    let names: Vec<(String, String)> = c
        .chain(0)
        .into_iter()
        .map(|e| (e.instance, e.namespace))
        .collect();
    assert_eq!(
        names,
        vec![
            (
                "provider:p/token-limit".into(),
                "provider:p/token-limit".into()
            ),
            ("proxy:a/auth".into(), "proxy:a/auth".into()),
            ("proxy:a/token-limit".into(), "proxy:a/token-limit".into()),
        ]
    );
    // Reordering the proxy's list keeps every name.
    let swapped = TWO_LISTS.replace(
        "      - policy: auth\n        config: { consumers: [] }\n      - policy: token-limit\n        config: { tokens-per-minute: 10 }\n",
        "      - policy: token-limit\n        config: { tokens-per-minute: 10 }\n      - policy: auth\n        config: { consumers: [] }\n",
    );
    assert_ne!(swapped, TWO_LISTS);
    let c2 = GatewayConfig::from_yaml(&swapped).unwrap();
    let mut a: Vec<String> = c.chain(0).into_iter().map(|e| e.namespace).collect();
    let mut b: Vec<String> = c2.chain(0).into_iter().map(|e| e.namespace).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[test]
fn a_policy_twice_in_a_list_needs_ids() {
    let twice = TWO_LISTS.replace(
        "      - policy: token-limit\n        config: { tokens-per-minute: 10 }\n",
        "      - policy: token-limit\n        config: { tokens-per-minute: 10 }\n      - policy: token-limit\n        config: { tokens-per-day: 10 }\n",
    );
    let e = err(&twice);
    assert_eq!(e.path, "proxies[0].policies[2].policy");
    assert!(e.message.contains("`id`"), "{e}");
    let named = twice.replace(
        "config: { tokens-per-day: 10 }",
        "config: { tokens-per-day: 10 }\n        id: daily",
    );
    let c = GatewayConfig::from_yaml(&named).unwrap();
    assert_eq!(c.chain(0)[3].instance, "proxy:a/token-limit@daily");
    let bad = named.replace("id: daily", "id: 'no spaces'");
    assert_eq!(err(&bad).path, "proxies[0].policies[2].id");
}

#[test]
fn shared_namespaces_are_declared() {
    let shared = TWO_LISTS.replace(
        "config: { tokens-per-minute: 10 }",
        "config: { tokens-per-minute: 10 }\n        kv-namespace: team-budget",
    );
    let c = GatewayConfig::from_yaml(&shared).unwrap();
    let entry = &c.chain(0)[2];
    assert_eq!(entry.instance, "proxy:a/token-limit");
    assert_eq!(entry.namespace, "shared:team-budget");
}

#[test]
fn api_keys_and_an_auth_entry_are_refused_with_a_reason() {
    let yaml = format!(
        "{TWO_LISTS}    api-keys:\n      - id: k1\n        consumer: c1\n        prefix: wk-1\n        created-at-ms: 1\n        key-sha256: {}\n",
        "a".repeat(64)
    );
    let e = err(&yaml);
    assert_eq!(e.path, "proxies[0].policies[0]");
    assert!(
        e.message.contains("api-keys") && e.message.contains("remove"),
        "{e}"
    );
}

#[test]
fn allow_hosts_take_ipv6_addresses() {
    let ok = TWO_LISTS.replace(
        "config: { consumers: [] }",
        "config: { consumers: [] }\n        allow-hosts: ['[::1]', '2001:db8::1', api.example.com]",
    );
    GatewayConfig::from_yaml(&ok).unwrap();
    let bad = TWO_LISTS.replace(
        "config: { consumers: [] }",
        "config: { consumers: [] }\n        allow-hosts: ['https://x']",
    );
    assert_eq!(err(&bad).path, "proxies[0].policies[0].allow-hosts[0]");
}

#[test]
fn retry_settings_are_read_and_checked() {
    let with = |retry: &str| format!("{MINIMAL}    retry: {retry}\n");
    let c = GatewayConfig::from_yaml(&with(
        "{attempts: 2, backoff-ms: 50, budget-ms: 3000, after-accepted: [embeddings]}",
    ))
    .unwrap();
    let r = &c.proxies[0].retry;
    assert_eq!((r.attempts, r.backoff_ms, r.budget_ms), (2, 50, 3000));
    assert_eq!(r.after_accepted, ["embeddings"]);
    assert_eq!(r.on_status, weir_core::DEFAULT_RETRY_STATUSES);
    assert_eq!(
        err(&with("{attempts: 11}")).path,
        "proxies[0].retry.attempts"
    );
    assert_eq!(
        err(&with("{on-status: [503, 404]}")).path,
        "proxies[0].retry.on-status[1]"
    );
    assert_eq!(
        err(&with("{after-accepted: [messages]}")).path,
        "proxies[0].retry.after-accepted[0]"
    );
    assert_eq!(
        err(&with("{backoff-ms: 0}")).path,
        "proxies[0].retry.backoff-ms"
    );
    assert!(err(&with("{attemps: 2}")).to_string().contains("attemps"));
}

#[test]
fn mcp_tool_rules_are_checked() {
    let with_tools = |tools: &str, policies: &str| {
        format!(
            "{MINIMAL}mcp-proxies:\n  - name: m\n    context-path: /m\n    upstream: {{server: {{url: http://127.0.0.1:9/mcp}}}}\n    tools: {tools}\n    policies: {policies}\n"
        )
    };
    let auth = "[{policy: auth, config: {consumers: []}}]";
    assert!(
        GatewayConfig::from_yaml(&with_tools(
            "[{name: add, allow: [alice]}, {name: '*', deny: ['*']}]",
            auth
        ))
        .is_ok()
    );
    let e = err(&with_tools(
        "[{name: 'github_*'}, {name: github_create_issue, deny: [bob]}]",
        auth,
    ));
    assert_eq!(e.path, "mcp-proxies[0].tools[1].name");
    assert!(e.to_string().contains("never applies"), "{e}");
    let e = err(&with_tools("[{name: ''}]", auth));
    assert_eq!(e.path, "mcp-proxies[0].tools[0].name");
    let e = err(&with_tools("[{name: add, allow: [alice]}]", "[]"));
    assert_eq!(e.path, "mcp-proxies[0].tools");
    assert!(e.to_string().contains("policy: auth"), "{e}");
    // Rules for everyone need no consumer.
    assert!(
        GatewayConfig::from_yaml(&with_tools("[{name: 'delete_*', deny: ['*']}]", "[]")).is_ok()
    );
}

#[test]
fn mcp_server_credentials_are_checked() {
    let with_server = |server: &str| {
        format!(
            "{MINIMAL}mcp-proxies:\n  - name: m\n    context-path: /m\n    upstream: {{server: {server}}}\n"
        )
    };
    let ok = GatewayConfig::from_yaml(&with_server(
        "{url: 'http://127.0.0.1:9/mcp', api-key-env: TOOLS_TOKEN, api-key-header: X-Api-Key, timeout-ms: 5000}",
    ))
    .unwrap();
    let server = ok.mcp_proxies[0].upstream.server.as_ref().unwrap();
    assert_eq!(
        (server.api_key_header(), server.timeout_ms()),
        ("x-api-key".to_owned(), 5000)
    );
    let e = err(&with_server(
        "{url: 'http://127.0.0.1:9/mcp', api-key-env: T, api-key-header: mcp-session-id}",
    ));
    assert_eq!(e.path, "mcp-proxies[0].upstream.server.api-key-header");
    let e = err(&with_server(
        "{url: 'http://127.0.0.1:9/mcp', api-key-header: x-api-key}",
    ));
    assert!(e.to_string().contains("api-key-env"), "{e}");
}

#[test]
fn an_openapi_upstream_ends_the_chain_with_the_translator() {
    let with_api = |api: &str, policies: &str| {
        format!(
            "{MINIMAL}mcp-proxies:\n  - name: m\n    context-path: /m\n    upstream: {{openapi: {api}}}\n    policies: {policies}\n"
        )
    };
    let ok = GatewayConfig::from_yaml(&with_api(
        "{spec-url: 'http://docs.test/openapi.json', base-url: 'https://api.test/v1', api-key-env: API_KEY, api-key-header: X-Api-Key, exclude-tags: [admin]}",
        "[{policy: auth, config: {consumers: []}}]",
    ))
    .unwrap();
    let chain = ok.mcp_chain(0);
    assert_eq!(
        chain
            .iter()
            .map(|e| e.policy.policy.as_str())
            .collect::<Vec<_>>(),
        ["auth", "mcp-translator"]
    );
    let translator = &chain[1];
    assert_eq!(translator.config_path, "mcp-proxies[0].upstream.openapi");
    assert_eq!(translator.instance, "mcp:m/mcp-translator");
    assert_eq!(
        translator.policy.config["exclude-tags"],
        serde_json::json!(["admin"])
    );
    assert_eq!(translator.policy.allow_hosts, ["api.test", "docs.test"]);
    let credential = translator.policy.credential.as_ref().unwrap();
    assert_eq!(
        (
            credential.url_prefix.as_str(),
            credential.header.as_str(),
            credential.secret.as_str()
        ),
        ("https://api.test/v1", "x-api-key", "API_KEY")
    );
    // The credential never goes into the configuration the policy reads.
    assert!(!translator.policy.config.to_string().contains("API_KEY"));

    let e = err(&with_api("{base-url: 'ftp://api.test'}", "[]"));
    assert_eq!(e.path, "mcp-proxies[0].upstream.openapi.base-url");
    let e = err(&with_api(
        "{base-url: 'https://api.test', api-key-header: x-api-key}",
        "[]",
    ));
    assert!(e.to_string().contains("api-key-env"), "{e}");
    let e = err(&with_api(
        "{base-url: 'https://api.test'}",
        "[{policy: mcp-translator, config: {}}]",
    ));
    assert_eq!(e.path, "mcp-proxies[0].policies[0]");
}

#[test]
fn several_servers_are_checked() {
    let with_up = |up: &str| {
        format!("{MINIMAL}mcp-proxies:\n  - name: m\n    context-path: /m\n    upstream: {up}\n")
    };
    let ok = GatewayConfig::from_yaml(&with_up(
        "{servers: [{name: github, url: 'http://127.0.0.1:9/mcp', api-key-env: GH, api-key-header: x-api-key}, {name: files.v2, url: 'http://127.0.0.1:8/mcp'}], prefix: none, fail-open: false}",
    ))
    .unwrap();
    let up = &ok.mcp_proxies[0].upstream;
    assert_eq!(
        (up.servers.len(), up.prefix, up.fail_open),
        (2, Some(crate::McpPrefix::None), Some(false))
    );
    let e = err(&with_up(
        "{servers: [{name: a_b, url: 'http://127.0.0.1:9/mcp'}]}",
    ));
    assert_eq!(e.path, "mcp-proxies[0].upstream.servers[0].name");
    let e = err(&with_up(
        "{servers: [{name: a, url: 'http://127.0.0.1:9/mcp'}, {name: a, url: 'http://127.0.0.1:8/mcp'}]}",
    ));
    assert_eq!(e.path, "mcp-proxies[0].upstream.servers[1].name");
    let e = err(&with_up("{servers: [{name: a, url: 'ftp://x'}]}"));
    assert_eq!(e.path, "mcp-proxies[0].upstream.servers[0].url");
    let e = err(&with_up(
        "{servers: [{name: a, url: 'http://127.0.0.1:9/mcp', api-key-header: x-key}]}",
    ));
    assert_eq!(e.path, "mcp-proxies[0].upstream.servers[0].api-key-header");
    let e = err(&with_up(
        "{server: {url: 'http://127.0.0.1:9/mcp'}, servers: [{name: a, url: 'http://127.0.0.1:9/mcp'}]}",
    ));
    assert_eq!(e.path, "mcp-proxies[0].upstream");
    let e = err(&with_up(
        "{server: {url: 'http://127.0.0.1:9/mcp'}, fail-open: false}",
    ));
    assert!(e.to_string().contains("settings of `servers`"), "{e}");
}
