//! Who may use the page: requests must name this server as their Host (a DNS-rebinding site
//! names its own), a WebSocket must come from this server's own page (Origin), and a page must
//! prove it was given the secret printed at start before the chat talks to it. Every answer
//! carries headers that let the page load nothing from anywhere else.

use std::net::SocketAddr;

/// The Content-Security-Policy of every answer: only this server's own scripts, styles and
/// connections; no inline script, no frames, no forms posting elsewhere.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; \
     worker-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The other headers every answer carries.
pub(super) const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("cache-control", "no-store"),
];

#[derive(Debug)]
pub(super) struct Guard {
    /// Host header values that mean this server (`127.0.0.1:PORT`, `localhost:PORT`, …).
    hosts: Vec<String>,
    /// Hex of 32 random bytes; the page gets it in the address's fragment, never in a request.
    secret: String,
}

impl Guard {
    /// For a server bound to `bound`. Bound to every interface (`0.0.0.0`, as inside a
    /// container whose port is published to the host's loopback), it answers to the loopback
    /// names, and its address is given as 127.0.0.1.
    pub(super) fn new(bound: SocketAddr) -> Result<Self, crate::CliError> {
        let port = bound.port();
        let mut hosts = Vec::new();
        if !bound.ip().is_unspecified() {
            hosts.push(bound.to_string());
        }
        if bound.ip().is_loopback() || bound.ip().is_unspecified() {
            for name in ["127.0.0.1", "localhost", "[::1]"] {
                let host = format!("{name}:{port}");
                if !hosts.contains(&host) {
                    hosts.push(host);
                }
            }
        }
        let secret = hex::encode(svs_common::identity::random::<32>()?);
        Ok(Self { hosts, secret })
    }

    /// The address to open: this server, the secret in the fragment.
    pub(super) fn page_url(&self) -> String {
        format!("http://{}/#{}", self.hosts[0], self.secret)
    }

    /// Whether a request's Host header names this server.
    pub(super) fn host_allowed(&self, host: Option<&str>) -> bool {
        host.is_some_and(|h| self.hosts.iter().any(|ok| ok.eq_ignore_ascii_case(h)))
    }

    /// Whether a WebSocket's Origin is this server's own page.
    pub(super) fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin.and_then(|o| o.strip_prefix("http://")) else {
            return false;
        };
        self.hosts.iter().any(|ok| ok.eq_ignore_ascii_case(origin))
    }

    /// Whether `offered` is the secret (compared in constant time).
    pub(super) fn secret_matches(&self, offered: &str) -> bool {
        let (a, b) = (self.secret.as_bytes(), offered.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new("127.0.0.1:8730".parse().expect("address")).expect("guard")
    }

    #[test]
    fn only_this_servers_names_pass() {
        let g = guard();
        assert!(g.host_allowed(Some("127.0.0.1:8730")));
        assert!(g.host_allowed(Some("LOCALHOST:8730")));
        assert!(!g.host_allowed(Some("evil.example:8730")));
        assert!(!g.host_allowed(Some("127.0.0.1:8731")));
        assert!(!g.host_allowed(None));
        assert!(g.origin_allowed(Some("http://localhost:8730")));
        assert!(!g.origin_allowed(Some("http://evil.example:8730")));
        assert!(!g.origin_allowed(Some("https://localhost:8730")));
        assert!(!g.origin_allowed(Some("null")));
        assert!(!g.origin_allowed(None));
    }

    #[test]
    fn the_secret_is_in_the_fragment_and_must_match_whole() {
        let g = guard();
        let url = g.page_url();
        let secret = url.split_once('#').expect("fragment").1;
        assert_eq!(secret.len(), 64);
        assert!(g.secret_matches(secret));
        assert!(!g.secret_matches(&secret[..63]));
        assert!(!g.secret_matches(""));
        assert_ne!(guard().page_url(), url, "every start has a new secret");
    }

    #[test]
    fn every_interface_means_the_loopback_names_and_another_address_only_itself() {
        let all = Guard::new("0.0.0.0:8730".parse().expect("address")).expect("guard");
        assert!(all.page_url().starts_with("http://127.0.0.1:8730/#"));
        assert!(all.host_allowed(Some("localhost:8730")));
        assert!(!all.host_allowed(Some("0.0.0.0:8730")));
        let lan = Guard::new("192.168.1.5:8730".parse().expect("address")).expect("guard");
        assert!(lan.page_url().starts_with("http://192.168.1.5:8730/#"));
        assert!(lan.host_allowed(Some("192.168.1.5:8730")));
        assert!(!lan.host_allowed(Some("localhost:8730")));
    }
}
