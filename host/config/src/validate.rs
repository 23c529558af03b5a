//! Checks across fields that deserialization cannot make.

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::{ConfigError, GatewayConfig};

/// Names of the policies built into weir.
pub const BUILTIN_POLICIES: &[&str] = &["auth", "token-limit"];

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

pub(crate) fn validate(c: &GatewayConfig) -> Result<(), ConfigError> {
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

    let mut providers = HashSet::new();
    for (i, p) in c.providers.iter().enumerate() {
        check_name(format!("providers[{i}].name"), &p.name)?;
        if !providers.insert(p.name.as_str()) {
            return Err(ConfigError::at(
                format!("providers[{i}].name"),
                format!("duplicate provider `{}`", p.name),
            ));
        }
        let url_ok = p.base_url == "builtin:mock"
            || ((p.base_url.starts_with("http://") || p.base_url.starts_with("https://"))
                && p.base_url.parse::<http_uri::Uri>().is_ok());
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
        check_chain(
            &format!("providers[{i}].policies"),
            &p.policies,
            &policy_names,
        )?;
    }

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
        let cp_ok = cp.starts_with('/')
            && (cp == "/" || !cp.ends_with('/'))
            && cp
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
            && !cp.contains("//");
        if !cp_ok {
            return Err(ConfigError::at(
                format!("proxies[{i}].context-path"),
                format!(
                    "`{cp}` must start with `/`, not end with `/`, and use only letters, digits and -_.~"
                ),
            ));
        }
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
    }
    Ok(())
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
            let ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
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
