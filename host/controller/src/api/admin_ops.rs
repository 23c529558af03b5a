//! Policy components (catalogue and upload) and the whole document (export and import).

use http::{HeaderValue, Method, StatusCode};
use weir_config::{GatewayConfig, PolicySource};

use super::{BASE, Call, Resp, json, no_content, page, with_etag, with_location};
use crate::error::ApiError;
use crate::kinds::{Focus, key, resource_keys};
use crate::store::ComponentChange;
use crate::{Controller, component_file, with_file_settings, write_component};

pub(crate) fn list_policies(c: &Controller, call: &Call) -> Result<Resp, ApiError> {
    let items = c
        .gateway
        .catalogue()
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
    page(call, items)
}

/// Where a policy is used, if anywhere.
fn used_by(doc: &GatewayConfig, name: &str) -> Option<String> {
    let chains = doc
        .providers
        .iter()
        .map(|p| (format!("provider `{}`", p.name), &p.policies))
        .chain(
            doc.proxies
                .iter()
                .map(|p| (format!("proxy `{}`", p.name), &p.policies)),
        )
        .chain(
            doc.mcp_proxies
                .iter()
                .map(|p| (format!("MCP proxy `{}`", p.name), &p.policies)),
        );
    for (owner, chain) in chains {
        if chain.iter().any(|r| r.policy == name) {
            return Some(owner);
        }
    }
    None
}

pub(crate) async fn policy(c: &Controller, call: &Call, name: &str) -> Result<Resp, ApiError> {
    let builtin = weir_config::BUILTIN_POLICIES.contains(&name);
    match call.method {
        Method::GET => {
            let p = c
                .gateway
                .catalogue()
                .into_iter()
                .find(|p| p.name == name)
                .ok_or_else(|| ApiError::not_found(&format!("policy `{name}`")))?;
            let rev = c.snapshot().await.revisions.get(&key("policies", name));
            Ok(with_etag(json(StatusCode::OK, &p), rev))
        }
        Method::PUT => {
            if builtin {
                return Err(ApiError::conflict(
                    "builtin",
                    format!("`{name}` is a built-in policy: upload yours under another name"),
                ));
            }
            let content_type = call
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if content_type != "application/wasm" && content_type != "application/octet-stream" {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "upload the component as Content-Type: application/wasm",
                ));
            }
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !valid {
                return Err(ApiError::invalid(
                    "name",
                    format!("invalid name `{name}`: use 1-64 letters, digits, `-`, `_` or `.`"),
                ));
            }
            let summary = c
                .gateway
                .describe_component(name, &call.body)
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_component",
                        e.to_string(),
                    )
                })?;
            let path = component_file(&c.components_dir, name, &call.body);
            write_component(&path, &call.body).map_err(ApiError::internal)?;
            let changes = vec![ComponentChange::Put(name.to_owned(), call.body.to_vec())];
            let (created, rev) = c
                .change(changes, |cur| {
                    let k = key("policies", name);
                    let existing = cur.document.policies.iter().position(|p| p.name == name);
                    call.if_match(existing.map(|_| cur.revisions.get(&k)))?;
                    let source = PolicySource {
                        name: name.to_owned(),
                        path: path.clone(),
                    };
                    match existing {
                        Some(i) => cur.document.policies[i] = source,
                        None => cur.document.policies.push(source),
                    }
                    let rev = cur.revisions.bump(&k);
                    Ok(((existing.is_none(), rev), Some(Focus::default())))
                })
                .await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let resp = with_etag(json(status, &summary), rev);
            Ok(with_location(resp, &format!("{BASE}/policies/{name}")))
        }
        Method::DELETE => {
            if builtin {
                return Err(ApiError::conflict(
                    "builtin",
                    format!("`{name}` is a built-in policy and cannot be deleted"),
                ));
            }
            c.change(vec![ComponentChange::Delete(name.to_owned())], |cur| {
                let k = key("policies", name);
                let Some(i) = cur.document.policies.iter().position(|p| p.name == name) else {
                    return Err(ApiError::not_found(&format!("policy `{name}`")));
                };
                call.if_match(Some(cur.revisions.get(&k)))?;
                if let Some(owner) = used_by(&cur.document, name) {
                    return Err(ApiError::conflict(
                        "in_use",
                        format!("policy `{name}` cannot be deleted: {owner} uses it"),
                    ));
                }
                cur.document.policies.remove(i);
                cur.revisions.remove(&k);
                Ok(((), None))
            })
            .await?;
            Ok(no_content())
        }
        _ => Err(super::method_not_allowed("GET, PUT, DELETE")),
    }
}

/// `GET` exports the document (JSON, or YAML with `Accept: application/yaml` or
/// `?format=yaml`); `PUT` imports one, replacing every resource.
pub(crate) async fn config(c: &Controller, call: &Call) -> Result<Resp, ApiError> {
    match call.method {
        Method::GET => {
            let current = c.snapshot().await;
            Ok(export(call, &current.document))
        }
        Method::PUT => {
            let imported: GatewayConfig = call.parse()?;
            let document = c
                .change(Vec::new(), |cur| {
                    let mut doc = with_file_settings(imported, &cur.document);
                    for (i, p) in doc.providers.iter_mut().enumerate() {
                        if p.api_key.as_ref().is_some_and(|k| k.is_redacted()) {
                            let stored = cur
                                .document
                                .providers
                                .iter()
                                .find(|o| o.name == p.name)
                                .and_then(|o| o.api_key.clone());
                            if stored.is_none() {
                                return Err(ApiError::invalid(
                                    format!("providers[{i}].api-key"),
                                    "`***` keeps a stored key, but none is stored for this provider: send the key",
                                ));
                            }
                            p.api_key = stored;
                        }
                    }
                    // Every resource that differs gets a new revision; removed ones lose theirs.
                    let before = resource_values(&cur.document);
                    let after = resource_values(&doc);
                    for (k, v) in &after {
                        if before.get(k) != Some(v) {
                            cur.revisions.bump(k);
                        }
                    }
                    for k in before.keys() {
                        if !after.contains_key(k) {
                            cur.revisions.remove(k);
                        }
                    }
                    cur.document = doc.clone();
                    Ok((doc, None))
                })
                .await?;
            Ok(export(call, &document))
        }
        _ => Err(super::method_not_allowed("GET, PUT")),
    }
}

fn resource_values(doc: &GatewayConfig) -> std::collections::BTreeMap<String, serde_json::Value> {
    let value = serde_json::to_value(doc).unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for k in resource_keys(doc) {
        let (kind, name) = k.split_once('/').unwrap_or((&k, ""));
        let field = match kind {
            "llm-providers" => "providers",
            "llm-proxies" => "proxies",
            other => other,
        };
        let item = value[field]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == name))
            .cloned()
            .unwrap_or_default();
        out.insert(k, item);
    }
    out
}

fn export(call: &Call, document: &GatewayConfig) -> Resp {
    if call.wants_yaml() {
        let text = serde_yaml::to_string(document).unwrap_or_default();
        let mut resp = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(text)));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/yaml"),
        );
        resp
    } else {
        json(StatusCode::OK, document)
    }
}
