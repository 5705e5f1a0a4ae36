//! What both services do around their own service: the flags they share, binding and logging in
//! `main`, and serving until shutdown — health NOT_SERVING first, then the service's own hook
//! (ending its streams), then a drain bounded by `--drain-secs`.

use crate::serve::{self, BaseLayers, ConnectionOptions};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;

/// Flags every service takes besides its listen address and its own limits.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerOptions {
    /// Directory for TLS material, the token key(s) and the service's own files.
    #[arg(long, env = "SVS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    /// TLS: generated material or the operator's own.
    pub tls: crate::tls::TlsOptions,
    #[command(flatten)]
    /// Limits on connections and calls.
    pub connections: ConnectionOptions,
    #[command(flatten)]
    /// The Prometheus endpoint.
    pub metrics: crate::metrics::MetricsOptions,
    /// Emit logs as JSON lines (filter with RUST_LOG).
    #[arg(long, env = "SVS_LOG_JSON")]
    pub log_json: bool,
}

/// A service's `main` after parsing: logging, the listener, `run`, an exit code.
pub async fn run_main<F, Fut, E>(listen: SocketAddr, log_json: bool, run: F) -> ExitCode
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
{
    init_logging(log_json);
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(listener).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", svs_common::error::with_causes(&e));
            ExitCode::FAILURE
        }
    }
}

/// Everything `serve_until_shutdown` needs besides the router.
#[derive(Debug)]
pub struct Serving {
    /// The bound listener.
    pub listener: TcpListener,
    /// TLS configuration (`None` only with --insecure).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Limits on connections and calls.
    pub options: ConnectionOptions,
    /// Health, set NOT_SERVING on the way out.
    pub health: tonic_health::server::HealthReporter,
    /// The gRPC service name (`NamedService::NAME`) marked NOT_SERVING at shutdown.
    pub service_name: &'static str,
    /// Cancelled when shutdown starts; the service's background tasks watch it.
    pub stop: CancellationToken,
}

/// Serves `router` until `shutdown` resolves, then marks health NOT_SERVING, runs `on_shutdown`
/// (the service ends its long streams there) and waits at most `--drain-secs` for open calls.
pub async fn serve_until_shutdown(
    router: Router<BaseLayers>,
    serving: Serving,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_shutdown: impl FnOnce() + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let Serving {
        listener,
        tls,
        options,
        health,
        service_name,
        stop,
    } = serving;
    tracing::info!(address = ?listener.local_addr().ok(), tls = tls.is_some(), service = service_name, "listening");
    let accept = serve::accept_config(&options, tls);
    let on_signal = {
        let stop = stop.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: health NOT_SERVING, ending streams");
            serve::set_serving(&health, service_name, false).await;
            on_shutdown();
            stop.cancel();
        }
    };
    let served = router
        .serve_with_incoming_shutdown(serve::incoming(listener, accept, stop.clone()), on_signal);
    let drain = Duration::from_secs(options.drain_secs);
    let result = tokio::select! {
        result = served => result,
        _ = async { stop.cancelled().await; tokio::time::sleep(drain).await } => {
            tracing::warn!(seconds = drain.as_secs(), "drain time exceeded; closing remaining connections");
            Ok(())
        }
    };
    stop.cancel();
    result
}

/// Logs to stderr via tracing-subscriber, filtered by RUST_LOG (default `info`, with symphonia's
/// remarks on every mp4 it opens, such as "ignoring stss atom", kept to errors).
fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,symphonia=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
