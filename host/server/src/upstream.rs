//! Upstream providers: the pooled HTTP client and what it needs to call a provider.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use std::sync::Arc;

use weir_core::Upstreams;
use weir_runtime::{
    EmbedError, Embedder, HttpRequest, HttpResponse, OutboundHttp, OutboundHttpError,
};

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

pub use weir_core::Secret;

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
                .map_err(|e| OutboundHttpError::Failed(crate::proxy::with_causes(&e)))?;
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

/// Embeddings for policies (`weir:policy/embeddings`), from a configured provider's
/// OpenAI-compatible `/embeddings` endpoint with the provider's own key.
#[derive(Clone)]
pub struct UpstreamEmbedder {
    pub client: HttpClient,
    /// The providers of the configuration being served.
    pub upstreams: Arc<arc_swap::ArcSwap<Upstreams>>,
}

impl std::fmt::Debug for UpstreamEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamEmbedder")
    }
}

fn embed_error(f: weir_llm::embeddings::Failure) -> EmbedError {
    use weir_llm::embeddings::Failure;
    match f {
        Failure::NotFound(m) => EmbedError::NotFound(m),
        Failure::Unavailable(m) => EmbedError::Unavailable(m),
        Failure::Invalid(m) => EmbedError::Invalid(m),
    }
}

impl Embedder for UpstreamEmbedder {
    fn embed(
        &self,
        provider: &str,
        model: &str,
        texts: Vec<String>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>> {
        let upstream = self.upstreams.load().get(provider).cloned();
        let client = self.client.clone();
        let (provider, model) = (provider.to_owned(), model.to_owned());
        Box::pin(async move {
            let Some(up) = upstream else {
                return Err(EmbedError::NotFound(format!(
                    "no provider `{provider}` in the gateway configuration"
                )));
            };
            weir_llm::embeddings::check(&provider, up.kind, texts.len()).map_err(embed_error)?;
            let body = weir_llm::embeddings::request_body(&model, &texts);
            let mut builder = http::Request::builder()
                .method("POST")
                .uri(format!("{}/embeddings", up.base_url))
                .header("content-type", "application/json");
            if let Some(key) = &up.api_key {
                let mut v = http::HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| EmbedError::Unavailable("invalid provider key".into()))?;
                v.set_sensitive(true);
                builder = builder.header(http::header::AUTHORIZATION, v);
            }
            let req = builder
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| EmbedError::Invalid(e.to_string()))?;
            let timeout = Duration::from_millis(up.timeout_ms);
            let resp = tokio::time::timeout(timeout, client.request(req))
                .await
                .map_err(|_| EmbedError::Unavailable(format!("provider `{provider}` timed out")))?
                .map_err(|e| {
                    EmbedError::Unavailable(format!(
                        "provider `{provider}`: {}",
                        crate::proxy::with_causes(&e)
                    ))
                })?;
            let status = resp.status().as_u16();
            let bytes = http_body_util::Limited::new(resp.into_body(), 64 << 20)
                .collect()
                .await
                .map_err(|e| EmbedError::Unavailable(e.to_string()))?
                .to_bytes();
            let out = weir_llm::embeddings::read_answer(&provider, status, &bytes, texts.len())
                .map_err(embed_error)?;
            Ok(out)
        })
    }
}
