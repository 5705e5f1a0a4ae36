//! The PROXY protocol, version 2 (as HAProxy's `send-proxy-v2` writes it): a proxy in TCP
//! pass-through puts the client's address in a short binary header before the TLS bytes, so
//! per-address limits see the client rather than the proxy. A header is read only on connections
//! from the configured proxy addresses (`--proxy-protocol-from`), and there it is required; no
//! other connection is ever read for one, so no client can claim someone else's address.

use ipnet::IpNet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest address-and-extension part of a header accepted (HAProxy's are under 100 bytes; the
/// format allows 65,535).
pub const MAX_HEADER_BODY: usize = 1024;

/// The fixed part of a v2 header: the 12-byte signature, version and command, family and
/// protocol, and the length of what follows (RFC-like spec: haproxy doc/proxy-protocol.txt, 2.2).
const FIXED_PART: usize = 16;

/// The addresses whose connections start with a PROXY protocol v2 header.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trusts PROXY headers from `ranges` only.
    pub fn new(ranges: Vec<IpNet>) -> Self {
        Self(ranges)
    }

    /// Whether a connection from `ip` carries a header (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|range| range.contains(&ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parses one `--proxy-protocol-from` entry: an address (`172.28.0.10`) or a range
/// (`172.28.0.0/16`, `fd00::/64`).
pub fn parse_range(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    text.parse::<IpNet>().map_err(|_| {
        format!("{text:?} is not an IP address or range (for example 172.28.0.10 or 172.28.0.0/16)")
    })
}

/// Reads the header from the start of a connection; returns the client's address, or `None`
/// when the header names none (a LOCAL command: the proxy's own health check, or an address
/// family other than IPv4 and IPv6).
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<SocketAddr>> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut header = vec![0u8; FIXED_PART];
    stream.read_exact(&mut header).await?;
    if !header.starts_with(ppp::v2::PROTOCOL_PREFIX) {
        return Err(invalid(
            "a connection from a trusted proxy did not start with a PROXY protocol v2 header"
                .into(),
        ));
    }
    let body = usize::from(u16::from_be_bytes([header[14], header[15]]));
    if body > MAX_HEADER_BODY {
        return Err(invalid(format!(
            "a PROXY protocol header of {body} bytes (at most {MAX_HEADER_BODY} are read)"
        )));
    }
    header.resize(FIXED_PART + body, 0);
    stream.read_exact(&mut header[FIXED_PART..]).await?;
    let parsed = ppp::v2::Header::try_from(header.as_slice())
        .map_err(|e| invalid(format!("a malformed PROXY protocol header: {e}")))?;
    if parsed.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match parsed.addresses {
        ppp::v2::Addresses::IPv4(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v2::Addresses::IPv6(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Command, IPv4, Protocol, Version};

    fn proxied(client: [u8; 4], port: u16) -> Vec<u8> {
        let addresses: ppp::v2::Addresses = IPv4::new(client, [10, 0, 0, 2], port, 50051).into();
        Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn the_clients_address_is_read_and_what_follows_is_left() {
        let mut bytes = proxied([203, 0, 113, 7], 40000);
        bytes.extend_from_slice(b"TLS starts here");
        let mut reader = bytes.as_slice();
        let client = read_header(&mut reader).await.unwrap();
        assert_eq!(client, Some("203.0.113.7:40000".parse().unwrap()));
        assert_eq!(reader, b"TLS starts here");
    }

    #[tokio::test]
    async fn a_local_header_names_no_client() {
        let bytes = Builder::new(Version::Two | Command::Local, 0)
            .build()
            .unwrap();
        assert_eq!(read_header(&mut bytes.as_slice()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn no_header_a_huge_one_or_a_short_one_is_refused() {
        let mut tls_hello = vec![0x16, 0x03, 0x01, 0x02, 0x00];
        tls_hello.resize(64, 0);
        assert!(read_header(&mut tls_hello.as_slice()).await.is_err());
        let mut huge = proxied([1, 2, 3, 4], 1);
        huge[14..16].copy_from_slice(&60_000u16.to_be_bytes());
        assert!(read_header(&mut huge.as_slice()).await.is_err());
        let short = proxied([1, 2, 3, 4], 1);
        assert!(read_header(&mut &short[..20]).await.is_err());
    }

    #[test]
    fn ranges_and_single_addresses_parse() {
        let trusted = TrustedProxies::new(vec![
            parse_range("172.28.0.10").unwrap(),
            parse_range("fd00::/64").unwrap(),
        ]);
        assert!(trusted.contains("172.28.0.10".parse().unwrap()));
        assert!(trusted.contains("::ffff:172.28.0.10".parse().unwrap()));
        assert!(!trusted.contains("172.28.0.11".parse().unwrap()));
        assert!(trusted.contains("fd00::1234".parse().unwrap()));
        assert!(parse_range("proxy").is_err());
    }
}
