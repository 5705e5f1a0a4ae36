//! The accept loop shared by both services: TCP_NODELAY, a connection limit held for the life of
//! each connection, TLS handshakes off the accept path with a deadline, and shutdown.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How connections are accepted.
#[derive(Clone)]
pub struct AcceptConfig {
    /// `None` serves plaintext (debugging only).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One accepted connection, holding its slot of the connection limit until it closes.
pub struct ServerIo {
    transport: Transport,
    info: TcpConnectInfo,
    _slot: OwnedSemaphorePermit,
}

impl Connected for ServerIo {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections until `stop` is cancelled, yielding ready-to-serve streams for
/// `tonic::transport::Server::serve_with_incoming_shutdown`.
pub fn incoming(
    listener: TcpListener,
    config: AcceptConfig,
    stop: CancellationToken,
) -> ReceiverStream<Result<ServerIo, io::Error>> {
    let (ready_tx, ready_rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, limit = config.max_connections, "connection limit reached; closing new connection");
                continue;
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
            }
            let ready_tx = ready_tx.clone();
            let config = config.clone();
            tokio::spawn(async move {
                if let Some(io) = handshake(tcp, peer, &config, slot).await {
                    let _ = ready_tx.send(Ok(io)).await;
                }
            });
        }
    });
    ReceiverStream::new(ready_rx)
}

async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    config: &AcceptConfig,
    slot: OwnedSemaphorePermit,
) -> Option<ServerIo> {
    let info = TcpConnectInfo {
        local_addr: tcp.local_addr().ok(),
        remote_addr: Some(peer),
    };
    let transport = match &config.tls {
        None => Transport::Plain(tcp),
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            match tokio::time::timeout(config.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => Transport::Tls(Box::new(stream)),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return None;
                }
            }
        }
    };
    Some(ServerIo {
        transport,
        info,
        _slot: slot,
    })
}

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
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .map_err(|e| crate::Error::Tls(format!("reflection: {e}")))?;
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| crate::Error::Tls(format!("reflection: {e}")))?;
    Ok((v1, v1alpha))
}

/// Runs `serve` until it finishes or, once `stop` fires, at most `drain` longer.
pub async fn with_bounded_drain(
    serve: impl std::future::Future<Output = Result<(), tonic::transport::Error>>,
    stop: CancellationToken,
    drain: Duration,
) -> Result<(), tonic::transport::Error> {
    tokio::select! {
        result = serve => result,
        _ = async { stop.cancelled().await; tokio::time::sleep(drain).await } => {
            tracing::warn!(seconds = drain.as_secs(), "drain time exceeded; closing remaining connections");
            Ok(())
        }
    }
}

/// Connection settings both services take, as flags with environment fallbacks.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionOptions {
    /// Connections open at once; more are closed on accept.
    #[arg(long, env = "SVS_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
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
}

/// What every svs server has before its own service: keepalive and unary timeout, the token
/// layer, grpc.health.v1 and reflection (v1 and v1alpha). Returns the router and the health
/// reporter (the caller marks its service SERVING).
pub fn base_router(
    options: &ConnectionOptions,
    auth: crate::auth::AuthLayer,
) -> Result<
    (
        tonic::transport::server::Router<
            tower::layer::util::Stack<crate::auth::AuthLayer, tower::layer::util::Identity>,
        >,
        tonic_health::server::HealthReporter,
    ),
    crate::Error,
> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let (reflection_v1, reflection_v1alpha) = reflection()?;
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(options.keepalive_secs)))
        .http2_keepalive_timeout(Some(Duration::from_secs(options.keepalive_timeout_secs)))
        .timeout(Duration::from_secs(options.request_timeout_secs))
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
        handshake_timeout: Duration::from_secs(10),
    }
}

/// Marks the whole server and `S` NOT_SERVING (first step of shutdown).
pub async fn mark_not_serving<S: tonic::server::NamedService>(
    reporter: &tonic_health::server::HealthReporter,
) {
    reporter.set_not_serving::<S>().await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
}
