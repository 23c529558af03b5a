//! `platform.fetch` over `wasi:http/outgoing-handler@0.2.0`: the whole request, then the
//! response's head; its body is read piece by piece with `read-body` (so streams stay
//! streams), blocking on the WASI pollables (the gateway's calls are synchronous).

use std::cell::RefCell;
use std::collections::HashMap;

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasi::io::streams::{InputStream, StreamError};

use crate::bindings::exports::weir::edge::platform::{HttpError, HttpHead, HttpRequest};

/// A response body being read. The stream is a child of the body: it is dropped first.
struct Body {
    stream: Option<InputStream>,
    body: Option<IncomingBody>,
}

impl Drop for Body {
    fn drop(&mut self) {
        drop(self.stream.take());
        if let Some(body) = self.body.take() {
            drop(IncomingBody::finish(body));
        }
    }
}

thread_local! {
    static BODIES: RefCell<HashMap<u32, Body>> = RefCell::new(HashMap::new());
    static NEXT_BODY: RefCell<u32> = const { RefCell::new(1) };
}

/// Bytes per write: `blocking-write-and-flush` accepts at most 4096 at a time.
const WRITE_CHUNK: usize = 4096;
const READ_CHUNK: u64 = 64 * 1024;
/// Headers the runtime sets from the request itself (forbidden to guests by wasi-http).
const FORBIDDEN: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

fn failed(what: &str, detail: impl std::fmt::Debug) -> HttpError {
    HttpError::Failed(format!("{what}: {detail:?}"))
}

/// `(scheme, authority, path-with-query)` of an absolute http(s) URL.
pub(crate) fn split_url(url: &str) -> Option<(Scheme, &str, &str)> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        (Scheme::Http, url.strip_prefix("http://")?)
    };
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    if authority.is_empty() {
        return None;
    }
    Some((scheme, authority, if path.is_empty() { "/" } else { path }))
}

fn method(m: &str) -> Method {
    match m.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        _ => Method::Other(m.to_owned()),
    }
}

fn is_timeout(e: &ErrorCode) -> bool {
    matches!(
        e,
        ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout
            | ErrorCode::DnsTimeout
    )
}

fn http_error(e: ErrorCode) -> HttpError {
    if is_timeout(&e) {
        HttpError::Timeout
    } else {
        failed("upstream request failed", e)
    }
}

pub(crate) fn send(request: HttpRequest) -> Result<HttpHead, HttpError> {
    let Some((scheme, authority, path)) = split_url(&request.url) else {
        return Err(HttpError::Failed(format!(
            "`{}` is not an absolute http(s) URL",
            request.url
        )));
    };
    let body = request.body.unwrap_or_default();
    let mut headers: Vec<(String, Vec<u8>)> = request
        .headers
        .into_iter()
        .filter(|(n, _)| !FORBIDDEN.iter().any(|f| n.eq_ignore_ascii_case(f)))
        .map(|(n, v)| (n, v.into_bytes()))
        .collect();
    if !body.is_empty() {
        headers.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let fields = Fields::from_list(&headers).map_err(|e| failed("invalid request headers", e))?;
    let outgoing = OutgoingRequest::new(fields);
    outgoing
        .set_method(&method(&request.method))
        .map_err(|()| HttpError::Failed(format!("invalid method `{}`", request.method)))?;
    outgoing
        .set_scheme(Some(&scheme))
        .and_then(|()| outgoing.set_authority(Some(authority)))
        .and_then(|()| outgoing.set_path_with_query(Some(path)))
        .map_err(|()| HttpError::Failed(format!("invalid URL `{}`", request.url)))?;
    let options = RequestOptions::new();
    let timeout_ns = Some(u64::from(request.timeout_ms).saturating_mul(1_000_000));
    // A runtime that does not support a timeout refuses to set it; the others still apply.
    let _ = options.set_connect_timeout(timeout_ns);
    let _ = options.set_first_byte_timeout(timeout_ns);
    let _ = options.set_between_bytes_timeout(timeout_ns);

    let outgoing_body = outgoing
        .body()
        .map_err(|()| HttpError::Failed("the request body was already taken".into()))?;
    let pending = outgoing_handler::handle(outgoing, Some(options)).map_err(http_error)?;
    {
        let stream = outgoing_body
            .write()
            .map_err(|()| HttpError::Failed("the request body stream was already taken".into()))?;
        for chunk in body.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| stream_error("writing the request body", e))?;
        }
    }
    OutgoingBody::finish(outgoing_body, None).map_err(http_error)?;

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(http_error(e)),
        Some(Err(())) | None => {
            return Err(HttpError::Failed(
                "the upstream response was not available".into(),
            ));
        }
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| HttpError::Failed("the response body was already taken".into()))?;
    let stream = incoming
        .stream()
        .map_err(|()| HttpError::Failed("the response body stream was already taken".into()))?;
    let id = NEXT_BODY.with(|n| {
        let mut n = n.borrow_mut();
        let id = *n;
        *n = n.wrapping_add(1).max(1);
        id
    });
    BODIES.with(|b| {
        b.borrow_mut().insert(
            id,
            Body {
                stream: Some(stream),
                body: Some(incoming),
            },
        )
    });
    Ok(HttpHead {
        status,
        headers,
        body: id,
    })
}

/// The next bytes of body `id`, waiting at most `timeout_ms`; `None` at its end (the body is
/// released then).
pub(crate) fn read(id: u32, timeout_ms: u32) -> Result<Option<Vec<u8>>, HttpError> {
    let result = BODIES.with(|b| {
        let bodies = b.borrow();
        let Some(body) = bodies.get(&id) else {
            return Err(HttpError::Failed(format!("no response body {id}")));
        };
        let Some(stream) = &body.stream else {
            return Ok(None);
        };
        let ready = stream.subscribe();
        let timer = wasi::clocks::monotonic_clock::subscribe_duration(
            u64::from(timeout_ms).saturating_mul(1_000_000),
        );
        let woken = wasi::io::poll::poll(&[&ready, &timer]);
        if !woken.contains(&0) {
            return Err(HttpError::Timeout);
        }
        match stream.read(READ_CHUNK) {
            Ok(chunk) => Ok(Some(chunk)),
            Err(StreamError::Closed) => Ok(None),
            Err(e) => Err(stream_error("reading the response body", e)),
        }
    });
    if !matches!(result, Ok(Some(_))) {
        close(id);
    }
    result
}

/// Releases body `id`.
pub(crate) fn close(id: u32) {
    BODIES.with(|b| drop(b.borrow_mut().remove(&id)));
}

fn stream_error(what: &str, e: StreamError) -> HttpError {
    match e {
        StreamError::Closed => HttpError::Failed(format!("{what}: the stream was closed")),
        StreamError::LastOperationFailed(err) => {
            let detail = err.to_debug_string();
            // A reset or a timeout while reading shows up here; name it.
            if detail.to_ascii_lowercase().contains("timeout") {
                HttpError::Timeout
            } else {
                HttpError::Failed(format!("{what}: {detail}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let (s, a, p) = split_url("http://127.0.0.1:8080/v1/chat?x=1").unwrap();
        assert!(matches!(s, wasi::http::types::Scheme::Http));
        assert_eq!((a, p), ("127.0.0.1:8080", "/v1/chat?x=1"));
        let (s, a, p) = split_url("https://api.example.com").unwrap();
        assert!(matches!(s, wasi::http::types::Scheme::Https));
        assert_eq!((a, p), ("api.example.com", "/"));
        assert_eq!(split_url("https://?q").map(|(_, a, _)| a), None);
        assert!(split_url("ftp://x/").is_none());
    }
}
