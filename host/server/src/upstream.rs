//! Upstream providers: the pooled HTTP client and what it needs to call a provider.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use weir_runtime::{HttpRequest, HttpResponse, OutboundHttp, OutboundHttpError};

/// The connection-pooling HTTP/1.1 + HTTP/2 client (TLS with the bundled web PKI roots).
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub fn client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(https)
}

pub use weir_core::{Provider, Secret};

/// Outbound HTTP for policies, over the same pooled client.
#[derive(Clone)]
pub struct PolicyHttp(pub HttpClient);

impl std::fmt::Debug for PolicyHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyHttp")
    }
}

impl OutboundHttp for PolicyHttp {
    fn send(
        &self,
        request: HttpRequest,
    ) -> futures::future::BoxFuture<'static, Result<HttpResponse, OutboundHttpError>> {
        let client = self.0.clone();
        Box::pin(async move {
            let mut builder = http::Request::builder()
                .method(request.method.as_str())
                .uri(&request.url);
            for (n, v) in &request.headers {
                builder = builder.header(n, v);
            }
            let req = builder
                .body(Full::new(Bytes::from(request.body.unwrap_or_default())))
                .map_err(|e| OutboundHttpError::Failed(format!("invalid request: {e}")))?;
            let resp = tokio::time::timeout(request.timeout, client.request(req))
                .await
                .map_err(|_| OutboundHttpError::Timeout)?
                .map_err(|e| OutboundHttpError::Failed(e.to_string()))?;
            let status = resp.status().as_u16();
            let headers = crate::proxy::header_pairs(resp.headers());
            let body = http_body_util::Limited::new(resp.into_body(), 8 << 20)
                .collect()
                .await
                .map_err(|e| OutboundHttpError::Failed(e.to_string()))?
                .to_bytes()
                .to_vec();
            Ok(HttpResponse {
                status,
                headers,
                body,
            })
        })
    }
}
