//! A response body that tells a watcher about its trailers and, by being dropped with it, about
//! its end: for layers that account for a call until its last byte is sent.

use std::pin::Pin;
use std::task::{Context, Poll};

/// Learns what a response body carries; its `Drop` marks the end of the call.
pub trait Watcher: Send + Unpin + 'static {
    /// The body's trailers (where a streaming call's gRPC status is).
    fn trailers(&mut self, _trailers: &http::HeaderMap) {}
}

struct WatchedBody<W> {
    body: tonic::body::Body,
    watcher: W,
}

impl<W: Watcher> http_body::Body for WatchedBody<W> {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
        {
            self.watcher.trailers(trailers);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// `response` with its body watched by `watcher` until the body is dropped.
pub fn watch<W: Watcher>(
    response: http::Response<tonic::body::Body>,
    watcher: W,
) -> http::Response<tonic::body::Body> {
    response.map(|body| tonic::body::Body::new(WatchedBody { body, watcher }))
}
