//! HTTP: the listener, authentication, routing and the request/response helpers. The handlers
//! are in `crud` (the resource kinds and API keys) and `admin_ops` (policy components, import
//! and export).

mod admin_ops;
mod crud;

pub(crate) use crud::NewKey as NewKeyBody;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_config::AdminRole;

use crate::Controller;
use crate::error::ApiError;
use crate::kinds::{Kind, McpProxies, Providers, Proxies, Templates};

pub(crate) type Resp = Response<Full<Bytes>>;

/// The API's base path.
pub(crate) const BASE: &str = "/api/v1";
/// Largest request body (a policy component upload).
const MAX_BODY: usize = 64 << 20;

pub(crate) async fn serve(c: Arc<Controller>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let c = c.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let c = c.clone();
                async move { Ok::<_, Infallible>(handle(&c, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(c: &Controller, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = match route(c, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    tracing::debug!(%method, path, status = resp.status().as_u16(), "controller request");
    resp
}

/// What a handler gets from the request.
#[derive(Debug)]
pub(crate) struct Call {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    pub body: Bytes,
}

impl Call {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as `T`, from JSON or YAML (by `Content-Type`), with the path of a bad field.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let content_type = self
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        let mime = content_type.split(';').next().unwrap_or("").trim();
        let fail = |path: String, e: &dyn std::fmt::Display| {
            ApiError::invalid(
                if path == "." { String::new() } else { path },
                e.to_string(),
            )
        };
        match mime {
            "application/json" | "" => {
                let de = &mut serde_json::Deserializer::from_slice(&self.body);
                serde_path_to_error::deserialize(de).map_err(|e| {
                    let path = e.path().to_string();
                    let inner = e.into_inner();
                    if inner.is_syntax() || inner.is_eof() {
                        ApiError::bad_request(
                            "invalid_json",
                            format!("the body is not JSON: {inner}"),
                        )
                    } else {
                        fail(path, &inner)
                    }
                })
            }
            "application/yaml" | "application/x-yaml" | "text/yaml" => {
                let text = std::str::from_utf8(&self.body)
                    .map_err(|_| ApiError::bad_request("invalid_yaml", "the body is not UTF-8"))?;
                let de = serde_yaml::Deserializer::from_str(text);
                serde_path_to_error::deserialize(de)
                    .map_err(|e| fail(e.path().to_string(), e.inner()))
            }
            other => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("`{other}`: send application/json or application/yaml"),
            )),
        }
    }

    /// Checks `If-Match` against the resource's revision (`None`: it does not exist).
    pub fn if_match(&self, revision: Option<u64>) -> Result<(), ApiError> {
        let Some(value) = self.headers.get(http::header::IF_MATCH) else {
            return Ok(());
        };
        let value = value.to_str().unwrap_or("");
        let matches = match revision {
            None => false,
            Some(rev) => value
                .split(',')
                .map(str::trim)
                .any(|v| v == "*" || v.trim_start_matches("W/") == etag(rev)),
        };
        if matches {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "If-Match does not match the current ETag: read the resource again and retry",
            ))
        }
    }

    /// Whether the client asked for YAML.
    pub fn wants_yaml(&self) -> bool {
        self.query("format") == Some("yaml")
            || self
                .headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("yaml"))
    }
}

pub(crate) fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Resp {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(crate) fn with_etag(mut resp: Resp, revision: u64) -> Resp {
    if let Ok(v) = HeaderValue::from_str(&etag(revision)) {
        resp.headers_mut().insert(http::header::ETAG, v);
    }
    resp
}

pub(crate) fn with_location(mut resp: Resp, location: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp
}

pub(crate) fn no_content() -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("use {allow}"),
    )
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn route(c: &Controller, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(BASE).and_then(|r| r.strip_prefix('/')) else {
        return Err(ApiError::not_found(&format!(
            "`{path}` (the API is under {BASE}/, its description at {BASE}/openapi.json)"
        )));
    };
    let segments: Vec<String> = rest.split('/').map(percent_decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    if segments == ["openapi.json"] {
        return if method == Method::GET {
            Ok(json(StatusCode::OK, &crate::openapi::document()))
        } else {
            Err(method_not_allowed("GET"))
        };
    }
    let role = c
        .auth
        .role(req.headers().get(http::header::AUTHORIZATION))?;
    if method != Method::GET && role == AdminRole::ReadOnly {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this credential is read-only",
        ));
    }
    let headers = req.headers().clone();
    let query = parse_query(req.uri().query());
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over {MAX_BODY} bytes"),
            ));
        }
    };
    let call = Call {
        method,
        headers,
        query,
        body,
    };
    match segments.as_slice() {
        ["config"] => admin_ops::config(c, &call).await,
        ["policies"] => match call.method {
            Method::GET => admin_ops::list_policies(c, &call),
            _ => Err(method_not_allowed("GET")),
        },
        ["policies", name] => admin_ops::policy(c, &call, name).await,
        [kind, rest @ ..] if *kind == Templates::PATH => {
            crud::dispatch::<Templates>(c, &call, rest).await
        }
        [kind, rest @ ..] if *kind == Providers::PATH => {
            crud::dispatch::<Providers>(c, &call, rest).await
        }
        [kind, name, "api-keys", rest @ ..] if *kind == Proxies::PATH => {
            crud::api_keys(c, &call, name, rest).await
        }
        [kind, rest @ ..] if *kind == Proxies::PATH => {
            crud::dispatch::<Proxies>(c, &call, rest).await
        }
        [kind, name, "tools"] if *kind == McpProxies::PATH => match call.method {
            Method::GET => match c.gateway.mcp_tools(name).await {
                Ok(tools) => Ok(json(StatusCode::OK, &serde_json::json!({ "tools": tools }))),
                Err(weir_server::ToolsError::NotFound(_)) => {
                    Err(ApiError::not_found(&format!("MCP proxy `{name}`")))
                }
                Err(e) => Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "mcp_upstream_unavailable",
                    format!("the tools of MCP proxy `{name}` could not be listed: {e}"),
                )),
            },
            _ => Err(method_not_allowed("GET")),
        },
        [kind, rest @ ..] if *kind == McpProxies::PATH => {
            crud::dispatch::<McpProxies>(c, &call, rest).await
        }
        _ => Err(ApiError::not_found(&format!("`{path}`"))),
    }
}

/// One page of `items` (sorted by name) after `cursor`, at most `limit` long.
pub(crate) fn page<T: Serialize>(
    call: &Call,
    mut items: Vec<(String, T)>,
) -> Result<Resp, ApiError> {
    let limit = match call.query("limit") {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::bad_request("invalid_limit", "limit must be 1 to 1000"))?,
    };
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let start = match call.query("cursor") {
        None | Some("") => 0,
        Some(cursor) => items.partition_point(|(n, _)| n.as_str() <= cursor),
    };
    let rest = items.len().saturating_sub(start);
    let next = (rest > limit).then(|| items[start + limit - 1].0.clone());
    let page: Vec<&T> = items[start..].iter().take(limit).map(|(_, v)| v).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "items": page, "next-cursor": next }),
    ))
}

/// A random token of `bytes` random bytes, hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_strings_decode() {
        let q = super::parse_query(Some("limit=2&cursor=a%2Fb&x"));
        assert_eq!(q[0], ("limit".into(), "2".into()));
        assert_eq!(q[1], ("cursor".into(), "a/b".into()));
        assert_eq!(q[2], ("x".into(), String::new()));
        assert_eq!(super::percent_decode("100%"), "100%");
        assert_eq!(super::percent_decode("%4"), "%4");
    }
}
