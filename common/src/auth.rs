//! The tower layer that checks `authorization: Bearer <token>` on every call except the open
//! paths (health, reflection, registration) and hands the verified claims to handlers through
//! request extensions.

use crate::token::{Claims, TokenVerifier};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tower::{Layer, Service};

/// Paths every service leaves open: health checks and reflection.
pub const ALWAYS_OPEN: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Checks session tokens.
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<TokenVerifier>,
    open: Arc<Vec<String>>,
}

impl AuthLayer {
    /// `open_paths` are exact method paths or prefixes ending in '/' that need no token,
    /// in addition to `ALWAYS_OPEN`.
    pub fn new(verifier: Arc<TokenVerifier>, open_paths: &[&str]) -> Self {
        let open = ALWAYS_OPEN
            .iter()
            .chain(open_paths)
            .map(|p| p.to_string())
            .collect();
        Self {
            verifier,
            open: Arc::new(open),
        }
    }

    fn is_open(&self, path: &str) -> bool {
        self.open.iter().any(|p| {
            if p.ends_with('/') {
                path.starts_with(p.as_str())
            } else {
                path == p
            }
        })
    }

    fn check(&self, headers: &http::HeaderMap) -> Result<Claims, Status> {
        let value = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
            Status::unauthenticated(
                "missing `authorization: Bearer <token>` metadata; register with the directory first (`svs token` prints one)",
            )
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("the authorization metadata must be `Bearer <token>`")
            })?;
        self.verifier
            .verify(token.trim(), crate::time::now_ms())
            .map_err(|e| Status::unauthenticated(e.to_string()))
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            auth: self.clone(),
        }
    }
}

/// A service behind `AuthLayer`.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: AuthLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for Authenticated<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !self.auth.is_open(request.uri().path()) {
            match self.auth.check(request.headers()) {
                Ok(claims) => {
                    request.extensions_mut().insert(claims);
                }
                Err(status) => return Box::pin(std::future::ready(Ok(status.into_http()))),
            }
        }
        Box::pin(self.inner.call(request))
    }
}
