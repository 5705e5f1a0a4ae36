//! Connections from a chosen loopback source address (Linux routes all of 127.0.0.0/8 to lo), so
//! per-address limits see several clients on one machine: plain TCP, gRPC channels, and TLS
//! connections that have sent nothing yet. Shared by the tests and the soak example.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tonic::transport::Channel;

#[allow(unused_imports)] // not every test binary needs it
pub use super::process::free_port;

/// The port of an `https://host:port` URL.
pub fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("a URL ending in :PORT")
}

/// A TCP connection from `source` to 127.0.0.1:`port`, Nagle off as real clients have it.
pub async fn tcp_from(source: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A gRPC channel to `url` (trusting `ca`) whose connections leave from `source`.
pub async fn channel_from(source: IpAddr, url: &str, ca: &Path) -> Result<Channel, String> {
    let port = port_of(url);
    let connector = tower::service_fn(move |_: http::Uri| async move {
        tcp_from(source, port)
            .await
            .map(hyper_util::rt::TokioIo::new)
    });
    svs_common::client::endpoint(url, Some(ca))
        .map_err(|e| e.to_string())?
        .connect_with_connector(connector)
        .await
        .map_err(|e| e.to_string())
}

/// A gRPC channel to `url` whose connections leave from `proxy` and start with a PROXY protocol
/// v2 header naming `client`, as HAProxy's `send-proxy-v2` writes one.
pub async fn channel_via_proxy(
    proxy: IpAddr,
    client: SocketAddr,
    url: &str,
    ca: &Path,
) -> Result<Channel, String> {
    use tokio::io::AsyncWriteExt;
    let port = port_of(url);
    let connector = tower::service_fn(move |_: http::Uri| async move {
        let mut tcp = tcp_from(proxy, port).await?;
        let destination = SocketAddr::from(([127, 0, 0, 1], port));
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (client, destination),
        )
        .build()?;
        tcp.write_all(&header).await?;
        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tcp))
    });
    svs_common::client::endpoint(url, Some(ca))
        .map_err(|e| e.to_string())?
        .connect_with_connector(connector)
        .await
        .map_err(|e| e.to_string())
}

/// A TLS 1.3 connection (ALPN h2) from `source` to `url` that has sent nothing yet.
pub async fn tls_from(
    source: IpAddr,
    url: &str,
    ca: &Path,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .map_err(|e| std::io::Error::other(e.to_string()))?
    {
        roots
            .add(cert.map_err(|e| std::io::Error::other(e.to_string()))?)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| std::io::Error::other(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tcp_from(source, port_of(url)).await?;
    let name = "localhost"
        .try_into()
        .map_err(|_| std::io::Error::other("server name"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Reads until the peer closes (EOF or an error); returns whether that happened within `within`.
pub async fn closed_within(
    mut stream: impl AsyncReadExt + Unpin,
    within: std::time::Duration,
) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}
