//! The part of the Spin manifest (`spin.toml`, version 2) this host understands: one HTTP
//! trigger on one component, its source, key-value stores, allowed outbound hosts and
//! variables. Variables resolve as in Spin: an application variable takes its value from
//! `SPIN_VARIABLE_<NAME>` or its default (a required one without either is an error at start),
//! and a component variable is a template over application variables (`"{{ name }}"`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Manifest {
    spin_manifest_version: u32,
    #[serde(default)]
    variables: BTreeMap<String, Variable>,
    trigger: Triggers,
    component: BTreeMap<String, Component>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Variable {
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
}

#[derive(Debug, Deserialize)]
struct Triggers {
    http: Vec<HttpTrigger>,
}

#[derive(Debug, Deserialize)]
struct HttpTrigger {
    route: String,
    component: String,
}

#[derive(Debug, Deserialize)]
struct Component {
    source: PathBuf,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

/// The app, resolved.
#[derive(Debug, Clone)]
pub struct App {
    pub source: PathBuf,
    pub key_value_stores: Vec<String>,
    pub allowed_outbound_hosts: Vec<String>,
    /// Component variables with their values.
    pub variables: BTreeMap<String, String>,
}

/// Loads `spin.toml`, with application variables overridden by `env` (`SPIN_VARIABLE_*`).
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<App> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let m: Manifest =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if m.spin_manifest_version != 2 {
        bail!("{}: spin_manifest_version must be 2", path.display());
    }
    let [trigger] = m.trigger.http.as_slice() else {
        bail!(
            "{}: exactly one [[trigger.http]] is supported",
            path.display()
        );
    };
    if trigger.route != "/..." {
        bail!("{}: only the route \"/...\" is supported", path.display());
    }
    let component = m
        .component
        .get(&trigger.component)
        .with_context(|| format!("{}: no [component.{}]", path.display(), trigger.component))?;

    let mut app_vars = BTreeMap::new();
    for (name, v) in &m.variables {
        let value = env(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()))
            .or_else(|| v.default.clone());
        match value {
            Some(value) => {
                app_vars.insert(name.clone(), value);
            }
            None if v.required => bail!(
                "{}: variable `{name}` is required: set SPIN_VARIABLE_{}",
                path.display(),
                name.to_ascii_uppercase()
            ),
            None => {}
        }
        let _ = v.secret; // secrets resolve like other variables; Spin only hides them
    }
    let mut variables = BTreeMap::new();
    for (name, template) in &component.variables {
        let value = expand(template, &app_vars)
            .with_context(|| format!("{}: component variable `{name}`", path.display()))?;
        variables.insert(name.clone(), value);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(App {
        source: dir.join(&component.source),
        key_value_stores: component.key_value_stores.clone(),
        allowed_outbound_hosts: component.allowed_outbound_hosts.clone(),
        variables,
    })
}

/// Expands `{{ name }}` references to application variables.
fn expand(template: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").context("unterminated `{{`")?;
        let name = after[..end].trim();
        let value = vars
            .get(name)
            .with_context(|| format!("refers to the undefined variable `{name}`"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `allowed_outbound_hosts` lets the app reach `scheme://authority`.
pub fn outbound_allowed(allowed: &[String], scheme: &str, host: &str, port: u16) -> bool {
    allowed.iter().any(|pattern| {
        let Some((s, rest)) = pattern.split_once("://") else {
            return false;
        };
        let rest = rest.trim_end_matches('/');
        let (h, p) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
            _ => (rest, None),
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        (s == "*" || s == scheme)
            && (h == "*" || h.eq_ignore_ascii_case(host))
            && match p {
                Some("*") => true,
                Some(p) => p.parse::<u16>() == Ok(port),
                None => port == default_port,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_application_variables() {
        let vars = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        assert_eq!(expand("x{{ a }}y{{a}}", &vars).unwrap(), "x1y1");
        assert!(expand("{{ b }}", &vars).is_err());
    }

    #[test]
    fn outbound_hosts_match_scheme_host_and_port() {
        let allowed = [
            "http://127.0.0.1:8080".to_owned(),
            "*://api.example.com:*".to_owned(),
        ];
        assert!(outbound_allowed(&allowed, "http", "127.0.0.1", 8080));
        assert!(!outbound_allowed(&allowed, "http", "127.0.0.1", 8081));
        assert!(!outbound_allowed(&allowed, "https", "127.0.0.1", 8080));
        assert!(outbound_allowed(&allowed, "https", "api.example.com", 8443));
        assert!(!outbound_allowed(
            &allowed,
            "https",
            "evil.example.com",
            443
        ));
        assert!(outbound_allowed(
            &["https://x.io".to_owned()],
            "https",
            "x.io",
            443
        ));
    }
}
