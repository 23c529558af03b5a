//! Checks across fields that deserialization cannot make.

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::{ConfigError, GatewayConfig};

/// Names of the policies built into weir.
pub const BUILTIN_POLICIES: &[&str] = &[
    "auth",
    "token-limit",
    "guardrail",
    "pii",
    "prompt",
    "router",
    "cache",
    "mcp-guard",
    "mcp-translator",
];

/// One of an MCP proxy's connections: its field path, the URLs to check, the credential's
/// variable and header.
type Connection<'a> = (
    String,
    Vec<(&'a str, &'a str)>,
    &'a Option<String>,
    Option<String>,
);

fn check_name(path: String, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::at(
            path,
            format!("invalid name `{name}`: use 1-64 letters, digits, `-`, `_` or `.`"),
        ))
    }
}

fn check_kv(kv: &crate::KvSettings) -> Result<(), ConfigError> {
    match kv.backend {
        crate::KvBackend::Memory => {
            if kv.url.is_some() {
                return Err(ConfigError::at(
                    "kv.url",
                    "only the redis backend takes a url (add `backend: redis`)",
                ));
            }
        }
        crate::KvBackend::Redis => {
            let Some(url) = &kv.url else {
                return Err(ConfigError::at(
                    "kv.url",
                    "the redis backend needs a url, e.g. redis://127.0.0.1:6379/0",
                ));
            };
            let Some(rest) = url
                .strip_prefix("redis://")
                .or_else(|| url.strip_prefix("rediss://"))
            else {
                return Err(ConfigError::at(
                    "kv.url",
                    "must start with redis:// (or rediss:// for TLS)",
                ));
            };
            let authority = rest.split('/').next().unwrap_or_default();
            if authority.contains('@') {
                return Err(ConfigError::at(
                    "kv.url",
                    "put no credentials in the url: name the variable holding the password in `kv.password-env`",
                ));
            }
            if let Some(var) = &kv.password_env {
                check_var("kv.password-env".into(), var)?;
            }
            if kv.timeout_ms == 0 || kv.connections == 0 {
                return Err(ConfigError::at(
                    "kv",
                    "timeout-ms and connections must be at least 1",
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn validate(c: &GatewayConfig) -> Result<(), ConfigError> {
    check_kv(&c.kv)?;
    c.listen.parse::<SocketAddr>().map_err(|e| {
        ConfigError::at(
            "listen",
            format!("`{}` is not an address like 127.0.0.1:8080: {e}", c.listen),
        )
    })?;
    if let Some(admin) = &c.admin_listen {
        admin.parse::<SocketAddr>().map_err(|e| {
            ConfigError::at(
                "admin-listen",
                format!("`{admin}` is not an address like 127.0.0.1:9094: {e}"),
            )
        })?;
    }
    if let Some(listen) = &c.controller.listen {
        listen.parse::<SocketAddr>().map_err(|e| {
            ConfigError::at(
                "controller.listen",
                format!("`{listen}` is not an address like 127.0.0.1:9090: {e}"),
            )
        })?;
    }
    for (i, u) in c.controller.users.iter().enumerate() {
        check_sha256(
            format!("controller.users[{i}].password-sha256"),
            &u.password_sha256,
        )?;
    }
    for (i, t) in c.controller.tokens.iter().enumerate() {
        check_sha256(
            format!("controller.tokens[{i}].token-sha256"),
            &t.token_sha256,
        )?;
    }
    if c.limits.max_body_bytes == 0 {
        return Err(ConfigError::at(
            "limits.max-body-bytes",
            "must be at least 1",
        ));
    }
    if c.runtime.policy_timeout_ms == 0 || c.runtime.policy_timeout_ms > 60_000 {
        return Err(ConfigError::at(
            "runtime.policy-timeout-ms",
            "must be between 1 and 60000",
        ));
    }
    if !(1..=4096).contains(&c.runtime.policy_memory_mib) {
        return Err(ConfigError::at(
            "runtime.policy-memory-mib",
            "must be between 1 and 4096",
        ));
    }

    let mut policy_names: HashSet<&str> = BUILTIN_POLICIES.iter().copied().collect();
    for (i, p) in c.policies.iter().enumerate() {
        check_name(format!("policies[{i}].name"), &p.name)?;
        if !policy_names.insert(&p.name) {
            return Err(ConfigError::at(
                format!("policies[{i}].name"),
                format!(
                    "`{}` is already a policy name (built-in policies: {})",
                    p.name,
                    BUILTIN_POLICIES.join(", ")
                ),
            ));
        }
    }

    let mut templates: HashSet<String> = crate::builtin_templates()
        .into_iter()
        .map(|t| t.name)
        .collect();
    for (i, t) in c.llm_provider_templates.iter().enumerate() {
        check_name(format!("llm-provider-templates[{i}].name"), &t.name)?;
        if !templates.insert(t.name.clone()) {
            return Err(ConfigError::at(
                format!("llm-provider-templates[{i}].name"),
                format!(
                    "`{}` is already a template (built-in or earlier in the list)",
                    t.name
                ),
            ));
        }
    }

    let mut providers = HashSet::new();
    for (i, p) in c.providers.iter().enumerate() {
        check_name(format!("providers[{i}].name"), &p.name)?;
        if !providers.insert(p.name.as_str()) {
            return Err(ConfigError::at(
                format!("providers[{i}].name"),
                format!("duplicate provider `{}`", p.name),
            ));
        }
        let url_ok = p.base_url == "builtin:mock" || is_http_url(&p.base_url);
        if !url_ok {
            return Err(ConfigError::at(
                format!("providers[{i}].base-url"),
                format!("`{}` is not an http(s) URL (or `builtin:mock`)", p.base_url),
            ));
        }
        if let Some(var) = &p.api_key_env
            && (var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(ConfigError::at(
                format!("providers[{i}].api-key-env"),
                "must be the NAME of an environment variable (letters, digits, `_`), not the key itself",
            ));
        }
        if let Some(t) = &p.template
            && !templates.contains(t)
        {
            let mut known: Vec<&str> = templates.iter().map(String::as_str).collect();
            known.sort_unstable();
            return Err(ConfigError::at(
                format!("providers[{i}].template"),
                format!("unknown template `{t}` (known: {})", known.join(", ")),
            ));
        }
        if let Some(key) = &p.api_key {
            let path = format!("providers[{i}].api-key");
            if p.api_key_env.is_some() {
                return Err(ConfigError::at(
                    path,
                    "give `api-key` or `api-key-env`, not both",
                ));
            }
            if key.expose().is_empty() || key.is_redacted() {
                return Err(ConfigError::at(
                    path,
                    "must be the key itself (`***` stands for a key the controller already stores)",
                ));
            }
        }
        for (k, e) in p.expose.iter().flatten().enumerate() {
            if !EXPOSABLE.contains(&e.as_str()) {
                return Err(ConfigError::at(
                    format!("providers[{i}].expose[{k}]"),
                    format!("unknown endpoint `{e}` (one of: {})", EXPOSABLE.join(", ")),
                ));
            }
        }
        check_kind_settings(i, p)?;
        check_chain(
            &format!("providers[{i}].policies"),
            &p.policies,
            &policy_names,
        )?;
    }

    check_prices(c)?;

    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for (i, p) in c.proxies.iter().enumerate() {
        check_name(format!("proxies[{i}].name"), &p.name)?;
        if !names.insert(p.name.as_str()) {
            return Err(ConfigError::at(
                format!("proxies[{i}].name"),
                format!("duplicate proxy `{}`", p.name),
            ));
        }
        let cp = p.context_path.as_str();
        check_context_path(format!("proxies[{i}].context-path"), cp)?;
        if !paths.insert(cp) {
            return Err(ConfigError::at(
                format!("proxies[{i}].context-path"),
                format!("`{cp}` is already used by another proxy"),
            ));
        }
        if !providers.contains(p.provider.as_str()) {
            let mut known: Vec<&str> = providers.iter().copied().collect();
            known.sort_unstable();
            return Err(ConfigError::at(
                format!("proxies[{i}].provider"),
                format!(
                    "unknown provider `{}` (known: {})",
                    p.provider,
                    known.join(", ")
                ),
            ));
        }
        check_chain(
            &format!("proxies[{i}].policies"),
            &p.policies,
            &policy_names,
        )?;
        if !p.api_keys.is_empty()
            && let Some(j) = p.policies.iter().position(|r| r.policy == "auth")
        {
            return Err(ConfigError::at(
                format!("proxies[{i}].policies[{j}]"),
                "this proxy authenticates with its api-keys (weir runs an auth policy holding \
                 them first, and it removes the key from the request, so a second auth would \
                 refuse every request): remove this auth entry, or remove the proxy's api-keys \
                 and list their consumers in this entry",
            ));
        }
        check_instances(&c.chain(i))?;
        if let Err((field, message)) = p.retry.check() {
            return Err(ConfigError::at(
                format!("proxies[{i}].retry.{field}"),
                message,
            ));
        }
        let mut ids = HashSet::new();
        for (k, key) in p.api_keys.iter().enumerate() {
            check_name(format!("proxies[{i}].api-keys[{k}].id"), &key.id)?;
            if !ids.insert(key.id.as_str()) {
                return Err(ConfigError::at(
                    format!("proxies[{i}].api-keys[{k}].id"),
                    format!("duplicate key id `{}`", key.id),
                ));
            }
            check_name(
                format!("proxies[{i}].api-keys[{k}].consumer"),
                &key.consumer,
            )?;
            check_sha256(
                format!("proxies[{i}].api-keys[{k}].key-sha256"),
                &key.key_sha256,
            )?;
        }
    }

    for (i, m) in c.mcp_proxies.iter().enumerate() {
        check_name(format!("mcp-proxies[{i}].name"), &m.name)?;
        if !names.insert(m.name.as_str()) {
            return Err(ConfigError::at(
                format!("mcp-proxies[{i}].name"),
                format!("`{}` is already the name of a proxy", m.name),
            ));
        }
        check_context_path(format!("mcp-proxies[{i}].context-path"), &m.context_path)?;
        if !paths.insert(m.context_path.as_str()) {
            return Err(ConfigError::at(
                format!("mcp-proxies[{i}].context-path"),
                format!("`{}` is already used by another proxy", m.context_path),
            ));
        }
        // Each connection: (field path, URLs to check, credential variable, credential header).
        let up = &m.upstream;
        let kinds = usize::from(up.server.is_some())
            + usize::from(!up.servers.is_empty())
            + usize::from(up.openapi.is_some());
        if kinds != 1 {
            return Err(ConfigError::at(
                format!("mcp-proxies[{i}].upstream"),
                "set exactly one of `server: {url: ...}` (an MCP server), `servers: [{name: ..., \
                 url: ...}, ...]` (several) and `openapi: {base-url: ..., spec: ... | spec-url: \
                 ... | endpoints: [...]}` (a REST API)",
            ));
        }
        if (up.prefix.is_some() || up.fail_open.is_some()) && up.servers.is_empty() {
            return Err(ConfigError::at(
                format!("mcp-proxies[{i}].upstream"),
                "`prefix` and `fail-open` are settings of `servers` (several servers)",
            ));
        }
        let mut connections: Vec<Connection<'_>> = Vec::new();
        if let Some(server) = &up.server {
            connections.push((
                format!("mcp-proxies[{i}].upstream.server"),
                vec![("url", server.url.as_str())],
                &server.api_key_env,
                server
                    .api_key_header
                    .as_ref()
                    .map(|_| server.api_key_header()),
            ));
        }
        for (j, named) in up.servers.iter().enumerate() {
            let at = format!("mcp-proxies[{i}].upstream.servers[{j}]");
            let valid = !named.name.is_empty()
                && named.name.len() <= 32
                && named
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
            if !valid {
                return Err(ConfigError::at(
                    format!("{at}.name"),
                    format!(
                        "`{}` is not a server name: 1 to 32 of A-Z a-z 0-9 - . (it prefixes tool \
                         names as `<name>_<tool>`)",
                        named.name
                    ),
                ));
            }
            if let Some(k) = up.servers[..j].iter().position(|o| o.name == named.name) {
                return Err(ConfigError::at(
                    format!("{at}.name"),
                    format!(
                        "`{}` is already the name of servers[{k}]: tool names would collide",
                        named.name
                    ),
                ));
            }
            let header = named.server().api_key_header();
            connections.push((
                at,
                vec![("url", named.url.as_str())],
                &named.api_key_env,
                named.api_key_header.as_ref().map(|_| header),
            ));
        }
        if let Some(api) = &up.openapi {
            let mut urls = vec![("base-url", api.base_url.as_str())];
            urls.extend(api.spec_url.as_deref().map(|u| ("spec-url", u)));
            connections.push((
                format!("mcp-proxies[{i}].upstream.openapi"),
                urls,
                &api.api_key_env,
                api.api_key_header.as_ref().map(|_| api.api_key_header()),
            ));
        }
        for (at, urls, key_env, key_header) in connections {
            for (field, url) in urls {
                if !is_http_url(url) {
                    return Err(ConfigError::at(
                        format!("{at}.{field}"),
                        format!("`{url}` is not an http(s) URL"),
                    ));
                }
            }
            if let Some(header) = key_header {
                // The headers the client's request brings, and those the gateway sets.
                let reserved = |h: &str| {
                    weir_core::mcp::FORWARDED.contains(&h)
                        || ["x-request-id", "host", "content-length"].contains(&h)
                };
                let token = !header.is_empty()
                    && header
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
                if !token || reserved(&header) {
                    return Err(ConfigError::at(
                        format!("{at}.api-key-header"),
                        format!(
                            "`{header}` cannot carry the credential: name a header of letters, digits \
                             and `-` that MCP does not use (`authorization`, `x-api-key`)"
                        ),
                    ));
                }
                if key_env.is_none() {
                    return Err(ConfigError::at(
                        format!("{at}.api-key-header"),
                        "set `api-key-env` too: the variable holding the credential",
                    ));
                }
            }
        }
        if m.upstream.openapi.is_some()
            && let Some(j) = m.policies.iter().position(|p| p.policy == "mcp-translator")
        {
            return Err(ConfigError::at(
                format!("mcp-proxies[{i}].policies[{j}]"),
                "an MCP proxy over `upstream.openapi` already ends with the `mcp-translator` \
                 policy, configured from that section: remove this entry",
            ));
        }
        if let Some(oauth) = &m.oauth {
            if oauth.authorization_servers.is_empty() {
                return Err(ConfigError::at(
                    format!("mcp-proxies[{i}].oauth.authorization-servers"),
                    "name at least one authorization server (its issuer URL)",
                ));
            }
            for (j, url) in oauth.authorization_servers.iter().enumerate() {
                if !is_http_url(url) {
                    return Err(ConfigError::at(
                        format!("mcp-proxies[{i}].oauth.authorization-servers[{j}]"),
                        format!("`{url}` is not an http(s) URL"),
                    ));
                }
            }
            if let Some(r) = &oauth.resource
                && !(is_http_url(r)
                    && r.trim_end_matches('/')
                        .ends_with(m.context_path.trim_end_matches('/')))
            {
                return Err(ConfigError::at(
                    format!("mcp-proxies[{i}].oauth.resource"),
                    format!(
                        "`{r}` must be the proxy's URL as clients know it, ending with its \
                         context path `{}`",
                        m.context_path
                    ),
                ));
            }
        }
        if let Some(j) = m.allowed_origins.iter().position(|o| o.is_empty()) {
            return Err(ConfigError::at(
                format!("mcp-proxies[{i}].allowed-origins[{j}]"),
                "empty: give an origin such as `https://app.example.com` (globs allowed)",
            ));
        }
        for (j, rule) in m.tools.iter().enumerate() {
            if rule.name.is_empty() {
                return Err(ConfigError::at(
                    format!("mcp-proxies[{i}].tools[{j}].name"),
                    "empty: name a tool or a glob (`github_*`, `*`)",
                ));
            }
            if let Some(earlier) = m.tools[..j]
                .iter()
                .position(|r| weir_core::mcp_tools::glob(&r.name, &rule.name))
            {
                return Err(ConfigError::at(
                    format!("mcp-proxies[{i}].tools[{j}].name"),
                    format!(
                        "`{}` never applies: tools[{earlier}] (`{}`) matches every tool it \
                         does, and the first matching rule decides (put the narrower rule first)",
                        rule.name, m.tools[earlier].name
                    ),
                ));
            }
        }
        let names_consumers = m
            .tools
            .iter()
            .any(|r| r.allow.iter().chain(&r.deny).any(|who| who != "*"));
        if names_consumers && m.policies.is_empty() {
            return Err(ConfigError::at(
                format!("mcp-proxies[{i}].tools"),
                "the rules name consumers, but no policy in `policies` says who the consumer \
                 is: add `- policy: auth` with the consumers",
            ));
        }
        check_chain(
            &format!("mcp-proxies[{i}].policies"),
            &m.policies,
            &policy_names,
        )?;
        check_instances(&c.mcp_chain(i))?;
    }
    Ok(())
}

/// The endpoint names a provider can expose.
pub const EXPOSABLE: &[&str] = &[
    "chat/completions",
    "completions",
    "embeddings",
    "models",
    "messages",
];

fn is_http_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url.parse::<http_uri::Uri>().is_ok()
}

fn check_sha256(path: String, hex: &str) -> Result<(), ConfigError> {
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ConfigError::at(
            path,
            "must be a SHA-256 in hex (64 characters; `weir hash-key`)",
        ))
    }
}

fn check_context_path(path: String, cp: &str) -> Result<(), ConfigError> {
    let ok = cp.starts_with('/')
        && (cp == "/" || !cp.ends_with('/'))
        && cp
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
        && !cp.contains("//");
    if ok {
        Ok(())
    } else {
        Err(ConfigError::at(
            path,
            format!(
                "`{cp}` must start with `/`, not end with `/`, and use only letters, digits and -_.~"
            ),
        ))
    }
}

fn check_chain(
    path: &str,
    chain: &[crate::PolicyRef],
    known: &HashSet<&str>,
) -> Result<(), ConfigError> {
    for (j, r) in chain.iter().enumerate() {
        if !known.contains(r.policy.as_str()) {
            let mut names: Vec<&str> = known.iter().copied().collect();
            names.sort_unstable();
            return Err(ConfigError::at(
                format!("{path}[{j}].policy"),
                format!(
                    "unknown policy `{}` (available: {})",
                    r.policy,
                    names.join(", ")
                ),
            ));
        }
        for (k, host) in r.allow_hosts.iter().enumerate() {
            let name = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            let v6 = host.trim_start_matches('[').trim_end_matches(']');
            let ipv6 = v6.contains(':')
                && v6
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if !(name || ipv6) {
                return Err(ConfigError::at(
                    format!("{path}[{j}].allow-hosts[{k}]"),
                    format!(
                        "`{host}` is not a host name (no scheme, port or path: e.g. api.example.com)"
                    ),
                ));
            }
        }
        if !r.config.is_object() {
            return Err(ConfigError::at(
                format!("{path}[{j}].config"),
                "must be a mapping (JSON object)",
            ));
        }
        for (field, value) in [("id", &r.id), ("kv-namespace", &r.kv_namespace)] {
            if let Some(v) = value {
                check_name(format!("{path}[{j}].{field}"), v)?;
            }
        }
    }
    Ok(())
}

/// Instance names must be unique in a chain as it runs (they name the state of each entry).
fn check_instances(chain: &[crate::ChainEntry]) -> Result<(), ConfigError> {
    let mut seen: HashSet<&str> = HashSet::new();
    for entry in chain {
        if !seen.insert(entry.instance.as_str()) {
            let field = if entry.policy.id.is_some() {
                "id"
            } else {
                "policy"
            };
            return Err(ConfigError::at(
                format!("{}.{field}", entry.path),
                format!(
                    "the policy `{}` appears more than once in this list with the same name; give \
                     each entry its own `id` (e.g. `id: per-day`), which names its state",
                    entry.policy.policy
                ),
            ));
        }
    }
    Ok(())
}

/// Minimal URI check without pulling in an HTTP crate.
mod http_uri {
    pub struct Uri;

    impl std::str::FromStr for Uri {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let rest = s.split_once("://").ok_or(())?.1;
            let host = rest.split(['/', '?']).next().ok_or(())?;
            let ok = !host.is_empty() && !rest.contains(char::is_whitespace) && !host.contains('@');
            if ok { Ok(Uri) } else { Err(()) }
        }
    }
}

fn check_var(path: String, var: &str) -> Result<(), ConfigError> {
    if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(ConfigError::at(
            path,
            "must be the NAME of an environment variable (letters, digits, `_`), not the value itself",
        ));
    }
    Ok(())
}

/// Settings that only some provider kinds take.
fn check_kind_settings(i: usize, p: &crate::Provider) -> Result<(), ConfigError> {
    use crate::ProviderKind as K;
    let kind = serde_json::to_value(p.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    if p.api_version.is_some() && !matches!(p.kind, K::AzureOpenai | K::AzureAiFoundry) {
        return Err(ConfigError::at(
            format!("providers[{i}].api-version"),
            format!("only Azure providers take an api-version (this one is `{kind}`)"),
        ));
    }
    if !p.deployments.is_empty() && p.kind != K::AzureOpenai {
        return Err(ConfigError::at(
            format!("providers[{i}].deployments"),
            format!("only `azure-openai` providers have deployments (this one is `{kind}`)"),
        ));
    }
    match (&p.aws, p.kind) {
        (Some(_), k) if k != K::AwsBedrock => {
            return Err(ConfigError::at(
                format!("providers[{i}].aws"),
                format!("only `aws-bedrock` providers take AWS credentials (this one is `{kind}`)"),
            ));
        }
        (aws, K::AwsBedrock) => {
            if p.api_key_env.is_some() || p.api_key.is_some() {
                return Err(ConfigError::at(
                    format!("providers[{i}].api-key-env"),
                    "Bedrock requests are signed with AWS credentials: give them under `aws` (access-key-id-env, secret-access-key-env)",
                ));
            }
            if let Some(a) = aws {
                check_var(
                    format!("providers[{i}].aws.access-key-id-env"),
                    &a.access_key_id_env,
                )?;
                check_var(
                    format!("providers[{i}].aws.secret-access-key-env"),
                    &a.secret_access_key_env,
                )?;
                if let Some(t) = &a.session_token_env {
                    check_var(format!("providers[{i}].aws.session-token-env"), t)?;
                }
            }
            if aws.as_ref().and_then(|a| a.region.as_ref()).is_none()
                && bedrock_region(&p.base_url).is_none()
                && p.base_url != "builtin:mock"
            {
                return Err(ConfigError::at(
                    format!("providers[{i}].aws.region"),
                    "set the signing region (the base URL is not `https://bedrock-runtime.<region>.amazonaws.com`)",
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The region in a Bedrock runtime URL (`https://bedrock-runtime.eu-west-1.amazonaws.com`).
pub fn bedrock_region(base_url: &str) -> Option<&str> {
    let host = base_url.split_once("://")?.1.split(['/', ':']).next()?;
    let rest = host.strip_prefix("bedrock-runtime.")?;
    let region = rest.split('.').next()?;
    (!region.is_empty() && rest.ends_with(".amazonaws.com")).then_some(region)
}

fn check_prices(c: &GatewayConfig) -> Result<(), ConfigError> {
    for (i, p) in c.prices.iter().enumerate() {
        if p.model.is_empty() {
            return Err(ConfigError::at(
                format!("prices[{i}].model"),
                "must not be empty",
            ));
        }
        for (field, v) in [
            ("input-per-million", Some(p.input_per_million)),
            ("output-per-million", Some(p.output_per_million)),
            ("cached-input-per-million", p.cached_input_per_million),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(ConfigError::at(
                    format!("prices[{i}].{field}"),
                    "must be a non-negative number of US dollars per million tokens",
                ));
            }
        }
        if let Some(provider) = &p.provider
            && !c.providers.iter().any(|q| &q.name == provider)
        {
            return Err(ConfigError::at(
                format!("prices[{i}].provider"),
                format!("unknown provider `{provider}`"),
            ));
        }
    }
    Ok(())
}
