//! Create, read, update and delete for every resource kind, and a proxy's API keys.

use http::{Method, StatusCode};
use weir_config::ApiKey;

use super::{BASE, Call, Resp, json, no_content, page, random_hex, with_etag, with_location};
use crate::Controller;
use crate::error::ApiError;
use crate::kinds::{Focus, Kind, Proxies, key};

pub(crate) async fn dispatch<K: Kind>(
    c: &Controller,
    call: &Call,
    rest: &[&str],
) -> Result<Resp, ApiError> {
    match (rest, &call.method) {
        ([], &Method::GET) => list::<K>(c, call).await,
        ([], &Method::POST) => create::<K>(c, call).await,
        ([], _) => Err(super::method_not_allowed("GET, POST")),
        ([name], &Method::GET) => get::<K>(c, name).await,
        ([name], &Method::PUT) => update::<K>(c, call, name).await,
        ([name], &Method::DELETE) => delete::<K>(c, call, name).await,
        ([_], _) => Err(super::method_not_allowed("GET, PUT, DELETE")),
        _ => Err(ApiError::not_found(&format!(
            "`{BASE}/{}/{}`",
            K::PATH,
            rest.join("/")
        ))),
    }
}

fn builtin<K: Kind>(name: &str) -> Option<K::Item> {
    K::builtins().into_iter().find(|i| K::name(i) == name)
}

fn read_only<K: Kind>(name: &str) -> ApiError {
    ApiError::conflict(
        "builtin",
        format!("{} `{name}` is built in and cannot be changed", K::NOUN),
    )
}

async fn list<K: Kind>(c: &Controller, call: &Call) -> Result<Resp, ApiError> {
    let current = c.snapshot().await;
    let mut items: Vec<(String, serde_json::Value)> = Vec::new();
    for item in K::builtins().iter().chain(K::items(&current.document)) {
        let value = serde_json::to_value(item).map_err(|e| ApiError::internal(e.to_string()))?;
        items.push((K::name(item).to_owned(), value));
    }
    page(call, items)
}

async fn get<K: Kind>(c: &Controller, name: &str) -> Result<Resp, ApiError> {
    if let Some(item) = builtin::<K>(name) {
        return Ok(with_etag(json(StatusCode::OK, &item), 0));
    }
    let current = c.snapshot().await;
    let item = K::items(&current.document)
        .iter()
        .find(|i| K::name(i) == name)
        .ok_or_else(|| ApiError::not_found(&format!("{} `{name}`", K::NOUN)))?;
    let rev = current.revisions.get(&key(K::PATH, name));
    Ok(with_etag(json(StatusCode::OK, item), rev))
}

async fn create<K: Kind>(c: &Controller, call: &Call) -> Result<Resp, ApiError> {
    let mut item: K::Item = call.parse()?;
    let name = K::name(&item).to_owned();
    if builtin::<K>(&name).is_some() {
        return Err(ApiError::conflict(
            "exists",
            format!("{} `{name}` is built in", K::NOUN),
        ));
    }
    K::incoming(None, &mut item)?;
    let (rev, item) = c
        .change(Vec::new(), |cur| {
            let items = K::items_mut(&mut cur.document);
            if items.iter().any(|i| K::name(i) == name) {
                return Err(ApiError::conflict(
                    "exists",
                    format!(
                        "{} `{name}` already exists: PUT {BASE}/{}/{name} to change it",
                        K::NOUN,
                        K::PATH
                    ),
                ));
            }
            items.push(item.clone());
            let rev = cur.revisions.bump(&key(K::PATH, &name));
            Ok(((rev, item), Some(Focus::on::<K>(&name))))
        })
        .await?;
    let resp = with_etag(json(StatusCode::CREATED, &item), rev);
    Ok(with_location(resp, &format!("{BASE}/{}/{name}", K::PATH)))
}

async fn update<K: Kind>(c: &Controller, call: &Call, name: &str) -> Result<Resp, ApiError> {
    if builtin::<K>(name).is_some() {
        return Err(read_only::<K>(name));
    }
    let mut item: K::Item = call.parse()?;
    if K::name(&item) != name {
        return Err(ApiError::invalid(
            "name",
            format!(
                "must be `{name}`, as in the path (a resource is renamed by creating the new one and deleting the old)"
            ),
        ));
    }
    let (rev, item) = c
        .change(Vec::new(), |cur| {
            let k = key(K::PATH, name);
            let items = K::items_mut(&mut cur.document);
            let Some(index) = items.iter().position(|i| K::name(i) == name) else {
                return Err(ApiError::not_found(&format!("{} `{name}`", K::NOUN)));
            };
            call.if_match(Some(cur.revisions.get(&k)))?;
            K::incoming(Some(&items[index]), &mut item)?;
            items[index] = item.clone();
            let rev = cur.revisions.bump(&k);
            Ok(((rev, item), Some(Focus::on::<K>(name))))
        })
        .await?;
    Ok(with_etag(json(StatusCode::OK, &item), rev))
}

async fn delete<K: Kind>(c: &Controller, call: &Call, name: &str) -> Result<Resp, ApiError> {
    if builtin::<K>(name).is_some() {
        return Err(read_only::<K>(name));
    }
    c.change(Vec::new(), |cur| {
        let k = key(K::PATH, name);
        let Some(index) = K::items(&cur.document)
            .iter()
            .position(|i| K::name(i) == name)
        else {
            return Err(ApiError::not_found(&format!("{} `{name}`", K::NOUN)));
        };
        call.if_match(Some(cur.revisions.get(&k)))?;
        if let Some(why) = K::in_use(&cur.document, name) {
            return Err(ApiError::conflict(
                "in_use",
                format!("{} `{name}` cannot be deleted: {why}", K::NOUN),
            ));
        }
        K::items_mut(&mut cur.document).remove(index);
        cur.revisions.remove(&k);
        Ok(((), None))
    })
    .await?;
    Ok(no_content())
}

// === API keys ===

/// What the API shows of a key: never its hash, the key itself only when it is made.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
struct KeyView<'a> {
    id: &'a str,
    consumer: &'a str,
    prefix: &'a str,
    created_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
}

fn view<'a>(k: &'a ApiKey, plain: Option<&'a str>) -> KeyView<'a> {
    KeyView {
        id: &k.id,
        consumer: &k.consumer,
        prefix: &k.prefix,
        created_at_ms: k.created_at_ms,
        key: plain,
    }
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct NewKey {
    /// The consumer the key authenticates as (its identity in usage records and limits).
    pub consumer: String,
}

/// A new random key and its record.
fn mint(id: String, consumer: String) -> (String, ApiKey) {
    use sha2::Digest as _;
    let plain = format!("wk-{}", random_hex(24));
    let record = ApiKey {
        id,
        consumer,
        prefix: plain[..10].to_owned(),
        key_sha256: hex::encode(sha2::Sha256::digest(plain.as_bytes())),
        created_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    (plain, record)
}

fn proxy_index(doc: &weir_config::GatewayConfig, proxy: &str) -> Result<usize, ApiError> {
    doc.proxies
        .iter()
        .position(|p| p.name == proxy)
        .ok_or_else(|| ApiError::not_found(&format!("proxy `{proxy}`")))
}

pub(crate) async fn api_keys(
    c: &Controller,
    call: &Call,
    proxy: &str,
    rest: &[&str],
) -> Result<Resp, ApiError> {
    let focus = Some(Focus::on::<Proxies>(proxy));
    match (rest, &call.method) {
        ([], &Method::GET) => {
            let current = c.snapshot().await;
            let p = &current.document.proxies[proxy_index(&current.document, proxy)?];
            let items = p
                .api_keys
                .iter()
                .map(|k| (k.id.clone(), view(k, None)))
                .collect();
            page(call, items)
        }
        ([], &Method::POST) => {
            let new: NewKey = call.parse()?;
            let (plain, record) = mint(random_hex(6), new.consumer);
            let record = c
                .change(Vec::new(), |cur| {
                    let i = proxy_index(&cur.document, proxy)?;
                    cur.document.proxies[i].api_keys.push(record.clone());
                    cur.revisions.bump(&key(Proxies::PATH, proxy));
                    Ok((record, focus))
                })
                .await?;
            let resp = json(StatusCode::CREATED, &view(&record, Some(&plain)));
            Ok(with_location(
                resp,
                &format!("{BASE}/{}/{proxy}/api-keys/{}", Proxies::PATH, record.id),
            ))
        }
        ([], _) => Err(super::method_not_allowed("GET, POST")),
        ([id], &Method::DELETE) => {
            c.change(Vec::new(), |cur| {
                let i = proxy_index(&cur.document, proxy)?;
                let keys = &mut cur.document.proxies[i].api_keys;
                let Some(k) = keys.iter().position(|k| k.id == *id) else {
                    return Err(ApiError::not_found(&format!(
                        "key `{id}` of proxy `{proxy}`"
                    )));
                };
                keys.remove(k);
                cur.revisions.bump(&key(Proxies::PATH, proxy));
                Ok(((), focus))
            })
            .await?;
            Ok(no_content())
        }
        ([_], _) => Err(super::method_not_allowed("DELETE")),
        ([id, "regenerate"], &Method::POST) => {
            let (plain, record) = c
                .change(Vec::new(), |cur| {
                    let i = proxy_index(&cur.document, proxy)?;
                    let keys = &mut cur.document.proxies[i].api_keys;
                    let Some(k) = keys.iter_mut().find(|k| k.id == *id) else {
                        return Err(ApiError::not_found(&format!(
                            "key `{id}` of proxy `{proxy}`"
                        )));
                    };
                    let (plain, record) = mint(k.id.clone(), k.consumer.clone());
                    *k = record.clone();
                    cur.revisions.bump(&key(Proxies::PATH, proxy));
                    Ok(((plain, record), focus))
                })
                .await?;
            Ok(json(StatusCode::OK, &view(&record, Some(&plain))))
        }
        ([_, "regenerate"], _) => Err(super::method_not_allowed("POST")),
        _ => Err(ApiError::not_found(&format!(
            "`{BASE}/{}/{proxy}/api-keys/{}`",
            Proxies::PATH,
            rest.join("/")
        ))),
    }
}
