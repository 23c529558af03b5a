//! The Spin app: one component (the composed gateway between the two Spin adapters of
//! apps/spin), checked against the Spin world it must target, and a `spin.toml` with the plan
//! and the provider keys as Spin variables.

use weir_config::GatewayConfig;
use weir_core::plan::Plan;

use crate::{BuildError, Options, write};

const SPIN_TOML: &str = include_str!("../../../apps/spin/template/spin.toml");

/// The Spin variable that holds the secret (environment-variable style) `name`: Spin variable
/// names are lower-case letters, digits and single underscores, starting with a letter.
pub(crate) fn variable_for(name: &str) -> Result<String, String> {
    let v = name.to_ascii_lowercase();
    let valid = v.starts_with(|c: char| c.is_ascii_lowercase())
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !v.contains("__")
        && !v.ends_with('_');
    if valid && v != "weir_plan" {
        Ok(v)
    } else {
        Err(format!(
            "`{name}` cannot name a Spin variable (letters, digits and single underscores, \
             starting with a letter; not WEIR_PLAN): rename the environment variable"
        ))
    }
}

/// Checks that `component` targets the Spin world (as `wasm-tools component targets` does),
/// with that world's WIT from the spin-sdk crate the adapters are built with.
pub(crate) fn validate(component: &[u8]) -> Result<(), BuildError> {
    let world_err =
        |e: &dyn std::fmt::Display| BuildError::Compose(format!("the Spin world's WIT: {e}"));
    let (resolve, package) = match wit_component::decode(weir_policies::SPIN_WORLD_WIT)
        .map_err(|e| world_err(&format!("{e:#}")))?
    {
        wit_component::DecodedWasm::WitPackage(resolve, package) => (resolve, package),
        wit_component::DecodedWasm::Component(..) => {
            return Err(world_err(&"embedded as a component, not a WIT package"));
        }
    };
    let world = resolve
        .select_world(&[package], Some(weir_policies::SPIN_WORLD))
        .map_err(|e| world_err(&format!("{e:#}")))?;
    wit_component::targets(&resolve, world, component).map_err(|e| {
        BuildError::Compose(format!(
            "the composed Spin app does not target {}: {e:#}",
            weir_policies::SPIN_WORLD
        ))
    })
}

/// `scheme://host[:port]` of a provider's base URL, as Spin's `allowed_outbound_hosts` wants.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    (!authority.is_empty() && (scheme == "http" || scheme == "https"))
        .then(|| format!("{scheme}://{authority}"))
}

/// Every host the app may reach: the providers, the MCP servers, and each policy's
/// `allow-hosts` (any scheme and port, as the policy's own check is by host name).
fn outbound_hosts(plan: &Plan) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for provider in &plan.providers {
        hosts.extend(origin(&provider.base_url));
    }
    for route in &plan.routes {
        hosts.extend(route.mcp.as_ref().and_then(|m| origin(&m.url)));
        for p in &route.policies {
            hosts.extend(p.allow_hosts.iter().map(|h| format!("*://{h}:*")));
        }
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The plan as a TOML string: a readable multi-line literal string where it can be one.
fn toml_plan(json: &str) -> String {
    let literal_ok = !json.contains("'''")
        && !json.ends_with('\'')
        && !json
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t');
    if literal_ok {
        format!("'''\n{json}'''")
    } else {
        toml_string(json)
    }
}

fn toml_array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", items.join(", "))
}

pub(crate) fn write_app(
    opts: &Options,
    config: &GatewayConfig,
    plan: &Plan,
    plan_json: &str,
    gateway: &[u8],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<u8>, BuildError> {
    let file = opts.config.display().to_string();
    if opts.name.is_empty()
        || !opts
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(BuildError::Config {
            file: "--name".into(),
            path: String::new(),
            message: format!(
                "`{}` is not a valid app name: use lower-case letters, digits and dashes",
                opts.name
            ),
        });
    }
    let mut secrets = String::new();
    let mut component_variables = String::new();
    for (i, provider) in config.providers.iter().enumerate() {
        let Some(name) = &provider.api_key_env else {
            continue;
        };
        if !plan.secrets.contains(name) {
            continue; // a provider no proxy uses
        }
        let var = variable_for(name).map_err(|message| BuildError::Config {
            file: file.clone(),
            path: format!("providers[{i}].api-key-env"),
            message,
        })?;
        let line = format!("{var} = {{ required = true, secret = true }}\n");
        if !secrets.contains(&line) {
            secrets.push_str(&line);
            component_variables.push_str(&format!("{var} = \"{{{{ {var} }}}}\"\n"));
        }
    }

    progress("composing the Spin app (spin-http → gateway → spin-platform)");
    let component = crate::compose::compose_spin(gateway)?;
    progress(&format!(
        "checking the app against the Spin world {} (spin:up/platform@3.6.0 imports + wasi:http/incoming-handler@0.2.0, WIT of spin-sdk 5.2.0)",
        weir_policies::SPIN_WORLD
    ));
    validate(&component)?;
    let toml = SPIN_TOML
        .replace("@NAME@", &opts.name)
        .replace("@PLAN@", &toml_plan(plan_json))
        .replace("@SECRETS@", &secrets)
        .replace("@OUTBOUND@", &toml_array(&outbound_hosts(plan)))
        .replace("@COMPONENT_VARIABLES@", &component_variables);
    write(&opts.out.join("spin.toml"), toml.as_bytes())?;
    write(&opts.out.join("weir.wasm"), &component)?;
    Ok(component)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_become_spin_variable_names() {
        assert_eq!(
            variable_for("MOCK_UPSTREAM_KEY").unwrap(),
            "mock_upstream_key"
        );
        for bad in ["1KEY", "A__B", "A-B", "KEY_", "WEIR_PLAN", ""] {
            assert!(variable_for(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_keep_scheme_host_and_port() {
        assert_eq!(
            origin("http://127.0.0.1:8080/v1").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            origin("https://api.openai.com/v1").as_deref(),
            Some("https://api.openai.com")
        );
        assert_eq!(origin("builtin:mock"), None);
    }

    #[test]
    fn plans_become_toml_strings_that_parse_back() {
        for json in [
            "{\n  \"a\": \"b\"\n}",
            "{\"x\": \"'''\"}",
            "{\"x\": \"it's\"}",
            "{\"x\": \"tab\\there\"}",
        ] {
            let doc = format!("v = {}\n", toml_plan(json));
            let parsed: toml::Table = toml::from_str(&doc).unwrap();
            assert_eq!(parsed["v"].as_str(), Some(json), "{doc}");
        }
    }
}
