//! Starts the directory on a listener: TLS, health, reflection, the auth layer, the sweeper, and
//! a shutdown that ends streams with a status and drains within a bound.

use crate::Error;
use crate::config::Config;
use crate::directory::Directory;
use crate::service::DirectoryService;
use crate::store::NameStore;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use svs_common::proto::directory::directory_server::DirectoryServer;
use svs_common::serve::incoming;
use svs_common::tls;
use svs_common::token::TokenIssuer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Methods callable without a token.
pub const OPEN_METHODS: &[&str] = &[
    "/svs.directory.v1.Directory/GetChallenge",
    "/svs.directory.v1.Directory/Register",
];

/// Where the directory keeps its files under the data dir.
pub struct DataPaths {
    pub token_key: std::path::PathBuf,
    pub token_public: std::path::PathBuf,
    pub names_db: std::path::PathBuf,
}

impl DataPaths {
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            token_key: data_dir.join("directory/token_key.pem"),
            token_public: data_dir.join("token_public.pem"),
            names_db: data_dir.join("directory/names.redb"),
        }
    }
}

/// Runs the directory until `shutdown` resolves, then drains for at most `--drain-secs`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let limits = config.limits.clone();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| Error::Storage(format!("cannot create {}: {e}", config.data_dir.display())))?;
    let tls_config = tls::server_tls(&config.data_dir, &config.tls)?;
    let paths = DataPaths::new(&config.data_dir);
    let tokens = TokenIssuer::load_or_create(&paths.token_key, &paths.token_public)?;
    let verifier = Arc::new(tokens.verifier().clone());
    let store = NameStore::open(&paths.names_db)?;
    let directory = Arc::new(Directory::new(store, tokens, limits.clone())?);

    let connections = &config.connections;
    let (router, health_reporter) =
        svs_common::serve::base_router(connections, verifier, OPEN_METHODS)?;
    health_reporter
        .set_serving::<DirectoryServer<DirectoryService>>()
        .await;

    let stop = CancellationToken::new();
    let sweeper = {
        let directory = directory.clone();
        let stop = stop.clone();
        let health = health_reporter.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut serving = true;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                directory.sweep();
                // A store that failed (disk full) is re-opened here; health follows it.
                let directory = directory.clone();
                let healthy = tokio::task::spawn_blocking(move || directory.store().recover())
                    .await
                    .unwrap_or(false);
                if healthy != serving && !stop.is_cancelled() {
                    serving = healthy;
                    if healthy {
                        svs_common::serve::mark_serving::<DirectoryServer<DirectoryService>>(
                            &health,
                        )
                        .await;
                    } else {
                        svs_common::serve::mark_not_serving::<DirectoryServer<DirectoryService>>(
                            &health,
                        )
                        .await;
                    }
                }
            }
        })
    };

    let local = listener.local_addr().ok();
    tracing::info!(address = ?local, tls = tls_config.is_some(), "directory-service listening");
    let accept = svs_common::serve::accept_config(connections, tls_config);
    let on_shutdown = {
        let stop = stop.clone();
        let directory = directory.clone();
        let health_reporter = health_reporter.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: health NOT_SERVING, ending streams");
            svs_common::serve::mark_not_serving::<DirectoryServer<DirectoryService>>(
                &health_reporter,
            )
            .await;
            directory.shutdown();
            stop.cancel();
        }
    };
    let serve = router
        .add_service(
            DirectoryServer::new(DirectoryService::new(
                directory.clone(),
                limits.max_pending_registrations,
            ))
            .max_decoding_message_size(limits.max_request_bytes),
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
    let _ = sweeper.await;
    tracing::info!("directory-service stopped");
    result
}
