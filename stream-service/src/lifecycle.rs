//! Starts the stream service on a listener: TLS, token verification with the directory's public
//! key, the library scan and rescans, health, reflection, and a bounded shutdown that ends
//! running playbacks with a status.

use crate::Error;
use crate::cache::{CacheOptions, FrameCache};
use crate::config::Config;
use crate::library::Library;
use crate::service::{Shared, StreamService};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use svs_common::proto::stream::stream_server::StreamServer;
use svs_common::token::TokenVerifier;
use svs_server::run::{Serving, serve_until_shutdown};
use svs_server::{serve, tls};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

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

/// How long shutdown waits for encoders to finish the run they are on (an H.264 group of
/// pictures at 1440p takes about a second on one core).
const ENCODERS_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the stream service until `shutdown` resolves. `ready` receives the shared state once
/// serving (tests read counters from it).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: Option<tokio::sync::oneshot::Sender<Handle>>,
) -> Result<(), Error> {
    let limits = config.limits.clone();
    let data_dir = &config.server.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|e| Error::io("creating", data_dir, e))?;
    let tls_config = tls::server_tls(data_dir, &config.server.tls)?;
    let _metrics = svs_server::metrics::start(&config.server.metrics).await?;
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
    let options = CacheOptions {
        max_bytes: limits.cache_max_bytes,
        jpeg_quality: limits.jpeg_quality,
        h264_qp: limits.h264_qp,
        h264_flat_qp: limits.h264_flat_qp,
        segment_seconds: limits.segment_seconds,
        encoders: limits.encoders(),
        read_ahead: limits.read_ahead_segments,
    };
    let cache_dir = config.cache_dir();
    let cache = tokio::task::spawn_blocking(move || FrameCache::new(cache_dir, options)).await??;
    cache.prewarm(&library, limits.prewarm_segments);
    let stop = CancellationToken::new();
    let shared = Arc::new(Shared::new(
        library.clone(),
        cache.clone(),
        limits.clone(),
        stop.clone(),
    ));

    let rescanner = {
        let stop = stop.clone();
        let cache = cache.clone();
        let prewarm = limits.prewarm_segments;
        let every = Duration::from_secs(limits.rescan_secs.max(1));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(every) => {
                        let scanning = library.clone();
                        let changed = tokio::task::spawn_blocking(move || scanning.rescan()).await;
                        if changed.unwrap_or(false) {
                            cache.prewarm(&library, prewarm);
                        }
                    }
                }
            }
        })
    };

    let server = &config.server;
    let (router, health) = serve::base_router(&server.connections, verifier, &[])?;
    let service_name = <StreamServer<StreamService> as NamedService>::NAME;
    serve::set_serving(&health, service_name, true).await;
    if let Some(ready) = ready {
        let _ = ready.send(shared.clone());
    }
    let router = router.add_service(
        StreamServer::new(StreamService::new(shared))
            .max_encoding_message_size(limits.max_frame_bytes)
            .max_decoding_message_size(64 * 1024),
    );
    let serving = Serving {
        listener,
        tls: tls_config,
        options: server.connections.clone(),
        health,
        service_name,
        stop: stop.clone(),
    };
    // Cancelling `stop` (done by the shared ending) ends every playback with a status.
    let result = serve_until_shutdown(router, serving, shutdown, || {})
        .await
        .map_err(Error::from);
    let _ = rescanner.await;
    // Encoders finish the frame or group of pictures they are on: none is left inside OpenCV
    // or openh264 while the process exits.
    let _ = tokio::task::spawn_blocking(move || cache.stop_encoders(ENCODERS_STOP_WAIT)).await;
    tracing::info!("stream-service stopped");
    result
}
