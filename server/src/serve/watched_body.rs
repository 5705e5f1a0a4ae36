//! Watching calls to their end: a layer that starts a watcher for each request and keeps it with
//! the response body, telling it the response's headers and trailers, until the body is dropped
//! (the call's end). Stream counting for idle connections and RPC metrics are both watchers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Learns what a response carries; its `Drop` marks the end of the call.
pub trait Watcher: Send + Unpin + 'static {
    /// The response's headers (where a call refused before any message has its gRPC status).
    fn headers(&mut self, _headers: &http::HeaderMap) {}
    /// The body's trailers (where a streaming call's gRPC status is).
    fn trailers(&mut self, _trailers: &http::HeaderMap) {}
}

/// Makes the watcher of a request, or none.
pub trait StartWatch: Clone + Send + 'static {
    /// What watches one response body.
    type Watcher: Watcher;
    /// A watcher for `request`'s response, if it is to be watched.
    fn start<B>(&self, request: &http::Request<B>) -> Option<Self::Watcher>;
}

/// Watches every call with what `S` starts.
#[derive(Debug, Clone, Default)]
pub struct WatchLayer<S>(pub S);

impl<S: StartWatch, I> Layer<I> for WatchLayer<S> {
    type Service = Watched<I, S>;
    fn layer(&self, inner: I) -> Self::Service {
        Watched {
            inner,
            start: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
/// A service whose response bodies are watched by `W`.
pub struct Watched<I, S> {
    inner: I,
    start: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<I, S, B> Service<http::Request<B>> for Watched<I, S>
where
    I: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    I::Future: Send + 'static,
    I::Error: Send + 'static,
    S: StartWatch,
{
    type Response = I::Response;
    type Error = I::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let watcher = self.start.start(&request);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match watcher {
                Some(mut watcher) => {
                    watcher.headers(response.headers());
                    watch(response, watcher)
                }
                None => response,
            })
        })
    }
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
fn watch<W: Watcher>(
    response: http::Response<tonic::body::Body>,
    watcher: W,
) -> http::Response<tonic::body::Body> {
    response.map(|body| tonic::body::Body::new(WatchedBody { body, watcher }))
}
