//! Admission of calls: every call needs a verified `authorization: Bearer <token>` except the
//! open paths (health, reflection, registration), which instead draw on a per-address budget so
//! one address cannot flood what anyone may call; a call refused for its token draws on the same
//! budget, so floods of made-up calls are held to it too. Verified claims reach handlers as a request
//! extension.

use crate::serve::ConnectionInfo;
use crate::serve::address::PerAddressRate;
use crate::serve::log_throttle::LogThrottle;
use crate::verified_tokens::VerifiedTokens;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use svs_common::token::{Claims, TokenVerifier};
use tonic::Status;
use tower::{Layer, Service};

/// Paths every service leaves open: health checks and reflection.
pub const ALWAYS_OPEN: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Checks session tokens.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    verifier: Arc<VerifiedTokens>,
    open: Arc<Vec<String>>,
    open_budget: Arc<PerAddressRate>,
}

static OVER_BUDGET: LogThrottle = LogThrottle::new(std::time::Duration::from_secs(10));

impl AuthLayer {
    /// `open_paths` are exact method paths or prefixes ending in '/' that need no token,
    /// in addition to `ALWAYS_OPEN`; each address may call them at `open_budget`'s rate.
    pub fn new(
        verifier: Arc<TokenVerifier>,
        open_paths: &[&str],
        open_budget: PerAddressRate,
    ) -> Self {
        let verifier = Arc::new(VerifiedTokens::new(
            (*verifier).clone(),
            crate::verified_tokens::MAX_VERIFIED_TOKENS,
        ));
        let open = ALWAYS_OPEN
            .iter()
            .chain(open_paths)
            .map(|p| p.to_string())
            .collect();
        Self {
            verifier,
            open: Arc::new(open),
            open_budget: Arc::new(open_budget),
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

    /// Open calls draw on their address's budget; a call with no known address (not served
    /// through `serve::incoming`) is not limited here.
    fn within_budget(&self, connection: Option<&ConnectionInfo>) -> Result<(), Status> {
        let Some(address) = connection.and_then(ConnectionInfo::address) else {
            return Ok(());
        };
        if self.open_budget.allow(address) {
            return Ok(());
        }
        if let Some(skipped) = OVER_BUDGET.check() {
            tracing::warn!(%address, more_refused = skipped, "calls without a token over the per-address rate; refusing");
        }
        Err(crate::status::retry_later(
            "too many calls without a session token from your address; wait a few seconds and try again",
            self.open_budget.refill_time(),
        ))
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
            .verify(token.trim(), svs_common::time::now_ms())
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
#[derive(Debug, Clone)]
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
        let connection = request.extensions().get::<ConnectionInfo>();
        let admitted = if self.auth.is_open(request.uri().path()) {
            self.auth.within_budget(connection)
        } else {
            // A call without a valid token costs its address as an open call does, so a flood of
            // made-up calls (any path, any token) is held to the same budget.
            match self.auth.check(request.headers()) {
                Ok(claims) => Ok(claims),
                Err(refused) => Err(self.auth.within_budget(connection).err().unwrap_or(refused)),
            }
            .map(|claims| drop(request.extensions_mut().insert(claims)))
        };
        if let Err(status) = admitted {
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        Box::pin(self.inner.call(request))
    }
}
