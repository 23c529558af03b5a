//! The response body type of the data plane.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};

/// Every response body: whole (JSON) or streamed (SSE).
pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body fed by a channel: the relay task sends, hyper writes. When the client goes away hyper
/// drops the body, and the relay sees its sends fail.
pub fn channel(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok(http_body::Frame::data(b)), rx))
    });
    StreamBody::new(stream).boxed()
}
