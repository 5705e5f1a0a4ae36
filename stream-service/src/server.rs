//! Starts the stream service on a listener: TLS, token verification with the directory's public
//! key, the library scan and rescans, health, reflection, and a bounded shutdown that ends
//! running playbacks with a status.

use crate::Error;
use crate::cache::FrameCache;
use crate::config::Config;
use crate::library::Library;
use crate::service::{Shared, StreamService};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use svs_common::proto::stream::stream_server::StreamServer;
use svs_common::serve::incoming;
use svs_common::token::TokenVerifier;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Longest the service waits for its first library scan before serving anyway.
const FIRST_SCAN_WAIT: Duration = Duration::from_secs(10);

/// Waits for directory-service to write its public token key, then loads it.
async fn token_verifier(config: &Config) -> Result<TokenVerifier, Error> {
    let path = config.token_public_key();
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(config.limits.token_key_wait_secs);
    let mut logged = false;
    while !path.exists() && tokio::time::Instant::now() < deadline {
        if !logged {
            tracing::info!(path = %path.display(), "waiting for directory-service to write its public token key");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    TokenVerifier::from_file(&path).map_err(|e| {
        Error::Startup(format!(
            "{e}; start directory-service with the same --data-dir first (it writes {}), or pass --token-public-key",
            path.display()
        ))
    })
}

/// A running stream service's shared state, for tests and benchmarks.
pub type Handle = Arc<Shared>;

/// Runs the stream service until `shutdown` resolves. `ready` receives the shared state once
/// serving (tests read counters from it).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: Option<tokio::sync::oneshot::Sender<Handle>>,
) -> Result<(), Error> {
    let limits = config.limits.clone();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| Error::Startup(format!("cannot create {}: {e}", config.data_dir.display())))?;
    let tls_config = svs_common::tls::server_tls(&config.data_dir, &config.tls)?;
    let verifier = Arc::new(token_verifier(&config).await?);

    let library = Arc::new(Library::new(config.videos.clone()));
    {
        // Serving does not wait on a scan that hangs (a stalled network mount, say): after
        // FIRST_SCAN_WAIT the service starts and the scan finishes in the background.
        let library = library.clone();
        let scan = tokio::task::spawn_blocking(move || library.rescan());
        if tokio::time::timeout(FIRST_SCAN_WAIT, scan).await.is_err() {
            tracing::warn!(dir = %config.videos.display(), "the first library scan is still running; serving meanwhile");
        }
    }
    if library.is_empty() {
        tracing::warn!(dir = %config.videos.display(), "no videos yet; `stream-service make-demo --videos DIR` makes one");
    }
    let cache = Arc::new(FrameCache::new(
        config.cache_dir(),
        limits.cache_max_bytes,
        limits.jpeg_quality,
    )?);
    let stop = CancellationToken::new();
    let shared = Arc::new(Shared::new(
        library.clone(),
        cache,
        limits.clone(),
        stop.clone(),
    ));

    let rescanner = {
        let stop = stop.clone();
        let every = Duration::from_secs(limits.rescan_secs.max(1));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(every) => {
                        let library = library.clone();
                        let _ = tokio::task::spawn_blocking(move || library.rescan()).await;
                    }
                }
            }
        })
    };

    let connections = &config.connections;
    let (router, health_reporter) = svs_common::serve::base_router(connections, verifier, &[])?;
    health_reporter
        .set_serving::<StreamServer<StreamService>>()
        .await;
    tracing::info!(address = ?listener.local_addr().ok(), tls = tls_config.is_some(), "stream-service listening");
    let accept = svs_common::serve::accept_config(connections, tls_config);
    let on_shutdown = {
        let stop = stop.clone();
        let health_reporter = health_reporter.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: health NOT_SERVING, ending playbacks");
            svs_common::serve::mark_not_serving::<StreamServer<StreamService>>(&health_reporter)
                .await;
            stop.cancel();
        }
    };
    if let Some(ready) = ready {
        let _ = ready.send(shared.clone());
    }
    let serve = router
        .add_service(
            StreamServer::new(StreamService::new(shared))
                .max_encoding_message_size(limits.max_frame_bytes)
                .max_decoding_message_size(64 * 1024),
        )
        .serve_with_incoming_shutdown(incoming(listener, accept, stop.clone()), on_shutdown);
    let result = svs_common::serve::with_bounded_drain(
        serve,
        stop.clone(),
        Duration::from_secs(connections.drain_secs),
    )
    .await
    .map_err(Error::from);
    stop.cancel();
    let _ = rescanner.await;
    tracing::info!("stream-service stopped");
    result
}
