//! Starts the directory on a listener: TLS, health, reflection, the auth layer, the sweeper, and
//! a shutdown that ends streams with a status and drains within a bound.

use crate::Error;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::directory::Directory;
use crate::error::Refusal;
use crate::groups::GroupsService;
use crate::service::DirectoryService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use svs_common::proto::directory::directory_server::DirectoryServer;
use svs_common::proto::directory::groups_server::GroupsServer;
use svs_common::token::TokenIssuer;
use svs_server::run::{Serving, serve_until_shutdown};
use svs_server::{serve, tls};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::server::HealthReporter;

/// Methods callable without a token.
pub(crate) const OPEN_METHODS: &[&str] = &[
    "/svs.directory.v1.Directory/GetChallenge",
    "/svs.directory.v1.Directory/Register",
];

/// Where the directory keeps its files under the data dir.
#[derive(Debug)]
pub(crate) struct DataPaths {
    pub token_key: std::path::PathBuf,
    pub token_public: std::path::PathBuf,
    /// Name bindings and mailboxes.
    pub names_db: std::path::PathBuf,
}

impl DataPaths {
    pub(crate) fn new(data_dir: &std::path::Path) -> Self {
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
    let server = &config.server;
    std::fs::create_dir_all(&server.data_dir)
        .map_err(|e| svs_common::Error::io(format!("creating {}", server.data_dir.display()), e))?;
    let tls_config = tls::server_tls(&server.data_dir, &server.tls)?;
    let _metrics = svs_server::metrics::start(&server.metrics).await?;
    let paths = DataPaths::new(&server.data_dir);
    let clustered = config.cluster.nats_url.is_some();
    let token_key = config.token_key.clone().unwrap_or(paths.token_key.clone());
    if clustered && !token_key.exists() {
        return Err(Refusal::InvalidArgument(format!(
            "cluster mode needs the token key every replica shares, and {} does not exist: create it once with `directory-service new-token-key PATH` and give every replica --token-key PATH",
            token_key.display()
        )).into());
    }
    let tokens = TokenIssuer::load_or_create(&token_key, &paths.token_public)?;
    let verifier = Arc::new(tokens.verifier().clone());
    let directory = Arc::new(if clustered {
        let cluster = Cluster::connect(&config.cluster).await?;
        Directory::clustered(&cluster, tokens, &limits).await?
    } else {
        let path = paths.names_db.clone();
        let db = crate::error::blocking(move || crate::directory::open_db(&path)).await?;
        Directory::embedded(db, tokens, &limits).await?
    });

    let (router, health) = serve::base_router(&server.connections, verifier, OPEN_METHODS)?;
    let service_name = <DirectoryServer<DirectoryService> as NamedService>::NAME;
    serve::set_serving(&health, service_name, true).await;

    let stop = CancellationToken::new();
    let sweeper = tokio::spawn(sweep(directory.clone(), health.clone(), stop.clone()));
    let router = router.add_service(
        DirectoryServer::new(DirectoryService::new(directory.clone(), &limits))
            .max_decoding_message_size(limits.max_request_bytes),
    );
    let max_group_request = limits
        .max_request_bytes
        .max(2 * limits.max_group_message_bytes + 64 * 1024);
    let router = router.add_service(
        GroupsServer::new(GroupsService::new(
            directory.clone(),
            directory.groups.clone(),
            limits.max_group_message_bytes,
        ))
        .max_decoding_message_size(max_group_request),
    );
    let serving = Serving {
        listener,
        tls: tls_config,
        options: server.connections.clone(),
        health,
        service_name,
        stop: stop.clone(),
    };
    let stopping = directory.clone();
    let result = serve_until_shutdown(router, serving, shutdown, move || stopping.shutdown())
        .await
        .map_err(Error::from);
    directory.leave_cluster().await;
    let _ = sweeper.await;
    tracing::info!("directory-service stopped");
    result
}

/// Once a second until `stop`: expires sessions, used challenges and mail, cuts subscribers too
/// slow to read their events, re-opens a database that failed, and keeps health in step with the
/// store (NOT_SERVING while the database, or NATS in cluster mode, cannot be used).
async fn sweep(directory: Arc<Directory>, health: HealthReporter, stop: CancellationToken) {
    let service_name = <DirectoryServer<DirectoryService> as NamedService>::NAME;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut serving = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        directory.sweep().await;
        // Re-opening touches the disk: only for a database that failed, on a blocking thread.
        let healthy = directory.is_healthy() || {
            let directory = directory.clone();
            tokio::task::spawn_blocking(move || directory.recover())
                .await
                .unwrap_or(false)
        };
        if healthy != serving && !stop.is_cancelled() {
            serving = healthy;
            serve::set_serving(&health, service_name, healthy).await;
        }
    }
}
