//! The accept loop shared by both services. A connection holds a global slot and a slot of its
//! address (IPv6 by /64) for its whole life; it must finish TLS and send the HTTP/2 preface within
//! one deadline; once served, it is closed after holding no stream for the idle timeout. Behind a
//! trusted proxy the address is the client's, from the PROXY protocol header read first (within
//! the same deadline).

use super::activity::{Activity, ConnectionInfo};
use super::address::{AddressKey, AddressSlot, PerAddressSlots};
use super::log_throttle::LogThrottle;
use super::proxy_protocol::{self, TrustedProxies};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

/// What every HTTP/2 client sends first (RFC 9113, section 3.4).
pub const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How connections are accepted.
#[derive(Debug, Clone)]
pub struct AcceptConfig {
    /// `None` serves plaintext (debugging only).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Connections open at once from one address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// Longest from accept to a finished TLS handshake and a complete HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// A served connection holding no stream this long is closed.
    pub idle_timeout: Duration,
    /// Proxies whose connections start with a PROXY protocol v2 header naming the client.
    pub trusted_proxies: TrustedProxies,
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    fn pinned(&mut self) -> Pin<&mut dyn AsyncReadWrite> {
        match self {
            Transport::Plain(s) => Pin::new(s),
            Transport::Tls(s) => Pin::new(s.as_mut()),
        }
    }
}

trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncReadWrite for T {}

/// One accepted connection. It replays the preface it was checked with, holds its slots until it
/// closes, and fails its reads once it has been idle too long (hyper then closes it).
pub struct ServerIo {
    transport: Transport,
    preface_left: usize,
    info: ConnectionInfo,
    idle_timeout: Duration,
    idle_check: Pin<Box<Sleep>>,
    _global: OwnedSemaphorePermit,
    _address: AddressSlot,
}

impl std::fmt::Debug for ServerIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIo").finish_non_exhaustive()
    }
}

impl Connected for ServerIo {
    type ConnectInfo = ConnectionInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl ServerIo {
    /// `Ready(())` once the connection has been idle for the timeout; otherwise arms the timer for
    /// the next moment that could be true.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.idle_check.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match self.info.activity.idle_since() {
                Some(since) if now.duration_since(since) >= self.idle_timeout => {
                    return Poll::Ready(());
                }
                Some(since) => self.idle_check.as_mut().reset(since + self.idle_timeout),
                None => self.idle_check.as_mut().reset(now + self.idle_timeout),
            }
        }
        Poll::Pending
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.poll_idle(cx).is_ready() {
            tracing::debug!(peer = ?this.info.remote, "closing a connection that held no stream");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "idle connection closed",
            )));
        }
        if this.preface_left > 0 {
            let start = HTTP2_PREFACE.len() - this.preface_left;
            let n = this.preface_left.min(buf.remaining());
            buf.put_slice(&HTTP2_PREFACE[start..start + n]);
            this.preface_left -= n;
            return Poll::Ready(Ok(()));
        }
        this.transport.pinned().poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().transport.pinned().poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .transport
            .pinned()
            .poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().transport.pinned().poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().transport.pinned().poll_shutdown(cx)
    }
}

static REFUSED_GLOBAL: LogThrottle = LogThrottle::new(Duration::from_secs(10));
static REFUSED_ADDRESS: LogThrottle = LogThrottle::new(Duration::from_secs(10));

/// Accepts connections until `stop` is cancelled, yielding ready-to-serve streams for
/// `tonic::transport::Server::serve_with_incoming_shutdown`.
pub fn incoming(
    listener: TcpListener,
    config: AcceptConfig,
    stop: CancellationToken,
) -> ReceiverStream<Result<ServerIo, io::Error>> {
    let (ready_tx, ready_rx) = mpsc::channel(64);
    let global = Arc::new(Semaphore::new(config.max_connections));
    let per_address = PerAddressSlots::new(config.max_connections_per_address);
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
            // Behind a trusted proxy the client's address is known only once its header is
            // read: that connection takes its address slot then.
            let from_proxy = config.trusted_proxies.contains(peer.ip());
            let address_slot = if from_proxy {
                None
            } else {
                let Some(slot) = take_address_slot(&per_address, peer, &config) else {
                    continue;
                };
                Some(slot)
            };
            let Ok(global_slot) = global.clone().try_acquire_owned() else {
                if let Some(skipped) = REFUSED_GLOBAL.check() {
                    tracing::warn!(
                        limit = config.max_connections,
                        more_refused = skipped,
                        "connection limit reached; closing new connections"
                    );
                }
                continue;
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
            }
            let ready_tx = ready_tx.clone();
            let config = config.clone();
            let stop = stop.clone();
            let per_address = per_address.clone();
            tokio::spawn(async move {
                let deadline = config.handshake_timeout;
                let ready = tokio::select! {
                    _ = stop.cancelled() => return,
                    ready = tokio::time::timeout(
                        deadline,
                        prepare(tcp, peer, address_slot, &per_address, &config),
                    ) => ready,
                };
                let (transport, remote, address_slot) = match ready {
                    Ok(Ok(Some(prepared))) => prepared,
                    Ok(Ok(None)) => return,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "connection refused before serving");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "no TLS handshake and HTTP/2 preface in time; closed");
                        return;
                    }
                };
                let io = ServerIo {
                    transport,
                    preface_left: HTTP2_PREFACE.len(),
                    info: ConnectionInfo {
                        remote: Some(remote),
                        activity: Activity::new(),
                    },
                    idle_timeout: config.idle_timeout,
                    idle_check: Box::pin(tokio::time::sleep(config.idle_timeout)),
                    _global: global_slot,
                    _address: address_slot,
                };
                let _ = ready_tx.send(Ok(io)).await;
            });
        }
    });
    ReceiverStream::new(ready_rx)
}

/// A slot of `client`'s address, or `None` (logged, throttled) when the address holds them all.
fn take_address_slot(
    per_address: &PerAddressSlots,
    client: std::net::SocketAddr,
    config: &AcceptConfig,
) -> Option<AddressSlot> {
    let address = AddressKey::of(client.ip());
    let slot = per_address.try_acquire(address);
    if slot.is_none()
        && let Some(skipped) = REFUSED_ADDRESS.check()
    {
        tracing::warn!(%address, limit = config.max_connections_per_address, more_refused = skipped,
            "per-address connection limit reached; closing new connections from that address");
    }
    slot
}

/// Everything before serving: the PROXY protocol header on a trusted proxy's connection (then
/// the client's address slot), TLS, the HTTP/2 preface. Returns the transport, the client's
/// address and its slot; `None` when the client's address holds every slot.
async fn prepare(
    mut tcp: TcpStream,
    peer: std::net::SocketAddr,
    address_slot: Option<AddressSlot>,
    per_address: &PerAddressSlots,
    config: &AcceptConfig,
) -> io::Result<Option<(Transport, std::net::SocketAddr, AddressSlot)>> {
    let (remote, slot) = match address_slot {
        Some(slot) => (peer, slot),
        None => {
            // A LOCAL header (the proxy's own health check) is counted as the proxy.
            let client = proxy_protocol::read_header(&mut tcp).await?.unwrap_or(peer);
            match take_address_slot(per_address, client, config) {
                Some(slot) => (client, slot),
                None => return Ok(None),
            }
        }
    };
    Ok(Some((handshake(tcp, config).await?, remote, slot)))
}

/// TLS (when configured), then the client's HTTP/2 preface, checked and consumed (`ServerIo`
/// replays it to hyper).
async fn handshake(tcp: TcpStream, config: &AcceptConfig) -> io::Result<Transport> {
    let mut transport = match &config.tls {
        None => Transport::Plain(tcp),
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            Transport::Tls(Box::new(acceptor.accept(tcp).await?))
        }
    };
    let mut preface = [0u8; HTTP2_PREFACE.len()];
    transport.pinned().read_exact(&mut preface).await?;
    if &preface != HTTP2_PREFACE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an HTTP/2 client (no preface)",
        ));
    }
    Ok(transport)
}
