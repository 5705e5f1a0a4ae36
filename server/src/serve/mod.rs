//! What both services run on: the accept loop and its limits (`accept`), per-address accounting
//! (`address`), stream counting for idle connections (`activity`), throttled log lines, and the
//! base router with health, reflection, timeouts and the admission layers.

pub mod accept;
pub mod activity;
pub mod address;
pub mod log_throttle;
pub mod proxy_protocol;
pub mod watched_body;

pub use accept::{AcceptConfig, ServerIo, incoming};
pub use activity::{ActivityLayer, ConnectionInfo};

use std::sync::Arc;
use std::time::Duration;

/// gRPC reflection for every svs proto and grpc.health.v1, in both protocol versions (grpcurl
/// 1.8.7 and older speak only v1alpha).
fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    crate::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(svs_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .map_err(|e| crate::Error::Reflection(e.to_string()))?;
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| crate::Error::Reflection(e.to_string()))?;
    Ok((v1, v1alpha))
}

/// Connection settings both services take, as flags with environment fallbacks.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionOptions {
    /// Connections open at once; more are closed on accept.
    #[arg(long, env = "SVS_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: one /64), so that one address
    /// cannot take every slot.
    #[arg(long, env = "SVS_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 64)]
    pub max_connections_per_address: usize,
    /// Seconds from accept until the client must have finished TLS and sent the HTTP/2 preface.
    #[arg(long, env = "SVS_HANDSHAKE_TIMEOUT_SECS", default_value_t = 5)]
    pub handshake_timeout_secs: u64,
    /// Seconds a connection may hold no gRPC stream before it is closed (clients reconnect when
    /// they next call).
    #[arg(long, env = "SVS_IDLE_CONNECTION_SECS", default_value_t = 120)]
    pub idle_connection_secs: u64,
    /// Calls per second one client address may make without a token (registration, health,
    /// reflection).
    #[arg(long, env = "SVS_OPEN_CALL_RATE", default_value_t = 20.0)]
    pub open_call_rate: f64,
    /// Burst of calls without a token one address may make.
    #[arg(long, env = "SVS_OPEN_CALL_BURST", default_value_t = 60.0)]
    pub open_call_burst: f64,
    /// Seconds a unary call may take.
    #[arg(long, env = "SVS_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,
    /// Seconds between HTTP/2 keepalive pings; a peer silent for this plus the keepalive timeout
    /// is disconnected.
    #[arg(long, env = "SVS_KEEPALIVE_SECS", default_value_t = 10)]
    pub keepalive_secs: u64,
    /// Seconds to wait for a keepalive answer.
    #[arg(long, env = "SVS_KEEPALIVE_TIMEOUT_SECS", default_value_t = 20)]
    pub keepalive_timeout_secs: u64,
    /// Seconds to wait for open calls to finish on shutdown.
    #[arg(long, env = "SVS_DRAIN_SECS", default_value_t = 5)]
    pub drain_secs: u64,
    /// Addresses or ranges of TCP proxies that put a PROXY protocol v2 header before each
    /// connection (HAProxy `send-proxy-v2`), comma-separated, e.g. 172.28.0.10 or 10.0.0.0/24.
    /// Connections from them must start with one, and the client address it names is the one
    /// per-address limits count; no other connection is read for a header. Default: none.
    #[arg(long, env = "SVS_PROXY_PROTOCOL_FROM", value_delimiter = ',',
        value_parser = proxy_protocol::parse_range)]
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
}

/// The layers every request passes: RPC metrics, stream counting for idle connections, then
/// admission (so refused calls are counted too).
pub type BaseLayers = tower::layer::util::Stack<
    crate::auth::AuthLayer,
    tower::layer::util::Stack<
        ActivityLayer,
        tower::layer::util::Stack<crate::metrics::RpcMetricsLayer, tower::layer::util::Identity>,
    >,
>;

/// What every svs server has before its own service: keepalive and unary timeout, stream
/// counting, admission (tokens, and a per-address budget for calls without one), grpc.health.v1
/// and reflection (v1 and v1alpha). `open_methods` need no token. Returns the router and the
/// health reporter (the caller marks its service SERVING).
pub fn base_router(
    options: &ConnectionOptions,
    verifier: Arc<svs_common::token::TokenVerifier>,
    open_methods: &[&str],
) -> Result<
    (
        tonic::transport::server::Router<BaseLayers>,
        tonic_health::server::HealthReporter,
    ),
    crate::Error,
> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let (reflection_v1, reflection_v1alpha) = reflection()?;
    let auth = crate::auth::AuthLayer::new(
        verifier,
        open_methods,
        address::PerAddressRate::new(options.open_call_rate, options.open_call_burst),
    );
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(options.keepalive_secs)))
        .http2_keepalive_timeout(Some(Duration::from_secs(options.keepalive_timeout_secs)))
        .timeout(Duration::from_secs(options.request_timeout_secs))
        .layer(crate::metrics::RpcMetricsLayer::default())
        .layer(ActivityLayer::default())
        .layer(auth)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok((router, reporter))
}

/// Accept settings for `incoming` from the connection options.
pub fn accept_config(
    options: &ConnectionOptions,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> AcceptConfig {
    AcceptConfig {
        tls,
        max_connections: options.max_connections,
        max_connections_per_address: options.max_connections_per_address,
        handshake_timeout: Duration::from_secs(options.handshake_timeout_secs),
        idle_timeout: Duration::from_secs(options.idle_connection_secs),
        trusted_proxies: proxy_protocol::TrustedProxies::new(options.proxy_protocol_from.clone()),
    }
}

/// Marks the whole server and the service `name` SERVING or NOT_SERVING (shutdown, or a store
/// that cannot be written).
pub async fn set_serving(
    reporter: &tonic_health::server::HealthReporter,
    name: &str,
    serving: bool,
) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    reporter.set_service_status(name, status).await;
    reporter.set_service_status("", status).await;
}
