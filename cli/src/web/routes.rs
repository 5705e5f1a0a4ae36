//! The HTTP face of `svs web`: the page's files, the WebSocket, and the checks and headers
//! around every answer.

use super::{Shared, assets, guard, socket};
use axum::Router;
use axum::extract::{Request, State, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Largest message a page may send (a chat line is far smaller).
const MAX_PAGE_MESSAGE: usize = 64 * 1024;

/// What one HTTP connection may hold: connections open at once (a WebSocket counts until it is
/// upgraded; then `--max-pages` bounds it), and how long one may take to send its request and get
/// its answer. A local process opening connections and saying nothing holds nothing for long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) max_connections: usize,
    pub(crate) request_timeout: std::time::Duration,
}

pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    shared: Shared,
    limits: ConnectionLimits,
) {
    let router = Router::new()
        .route("/", get(|| async { assets::page("index.html") }))
        .route("/{file}", get(file))
        .route("/ws", get(websocket))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such page") })
        .layer(middleware::from_fn_with_state(shared.clone(), checked))
        .with_state(shared);
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, say: try again shortly rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        // Over the limit the connection is closed at once.
        let Ok(permit) = open.clone().try_acquire_owned() else {
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.request_timeout)
                // One request per connection: an idle keep-alive holds nothing.
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades();
            // A WebSocket leaves this future once upgraded and lives on in its own task.
            let _ = tokio::time::timeout(limits.request_timeout, connection).await;
            drop(permit);
        });
    }
}

async fn file(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    assets::page(&name)
}

/// Refuses a request whose Host is not this server (DNS rebinding) and puts the security
/// headers on every answer.
async fn checked(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let mut response = if shared.guard.host_allowed(host) {
        next.run(request).await
    } else {
        (
            StatusCode::FORBIDDEN,
            "svs web answers only to its own address (this request named another host)",
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(guard::CONTENT_SECURITY_POLICY),
    );
    for (name, value) in guard::SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A page's WebSocket: only from this server's own page, and only as many pages as allowed.
async fn websocket(
    State(shared): State<Shared>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if !shared.guard.origin_allowed(origin) {
        return (
            StatusCode::FORBIDDEN,
            "svs web talks only to its own page (the Origin is another site)",
        )
            .into_response();
    }
    let Ok(permit) = shared.pages.clone().try_acquire_owned() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many pages are open (svs web --max-pages)",
        )
            .into_response();
    };
    upgrade
        .max_message_size(MAX_PAGE_MESSAGE)
        .on_upgrade(move |ws| socket::page(ws, shared, permit))
}
