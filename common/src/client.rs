//! Client connections: TLS with a given CA (or the public web roots), HTTP/2 keepalive, and
//! connection failures explained as sentences that name the fix.

use crate::Error;
use std::path::Path;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Largest message a client accepts (a 1440p frame fits with room).
pub const CLIENT_MAX_DECODE: usize = 16 * 1024 * 1024;

/// HTTP/2 receive window per stream: a whole 1440p frame (typically 0.1–0.5 MB) arrives without
/// waiting for window updates, and a link with 50 ms of round trip still carries 160 Mbit/s;
/// yet a viewer that stops reading holds at most this much before the service starts skipping
/// (h2's default of 64 KiB needed several round trips per 1440p frame).
pub const STREAM_WINDOW: u32 = 1024 * 1024;

/// Opens a channel to `urls`: one `https://host:port` (or `http://` for --plaintext services),
/// or several separated by commas (replicas), tried in order until one answers, so a client
/// reconnecting after losing one replica fails over to the next.
pub async fn connect(urls: &str, ca: Option<&Path>) -> Result<Channel, Error> {
    let list = url_list(urls);
    let mut failures = Vec::new();
    for url in &list {
        match connect_one(url, ca).await {
            Ok(channel) => return Ok(channel),
            Err(Error::Connect { url, reason }) if list.len() > 1 => {
                failures.push(format!("{url}: {reason}"));
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Connect {
        url: urls.to_string(),
        reason: match failures.len() {
            0 => "no address given".into(),
            n => format!(
                "none of the {n} addresses answered ({})",
                failures.join("; ")
            ),
        },
    })
}

/// The addresses in a comma-separated list, in order.
pub fn url_list(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

async fn connect_one(url: &str, ca: Option<&Path>) -> Result<Channel, Error> {
    endpoint(url, ca)?
        .connect()
        .await
        .map_err(|e| Error::Connect {
            url: url.to_string(),
            reason: explain_connect_error(&e),
        })
}

/// The endpoint `connect` uses: TLS with `ca` (or the web roots) for https, keepalive, timeouts.
pub fn endpoint(url: &str, ca: Option<&Path>) -> Result<Endpoint, Error> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| Error::Connect {
            url: url.to_string(),
            reason: format!("this is not a valid URL ({e}); expected https://HOST:PORT"),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(2 * STREAM_WINDOW)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let endpoint = if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        match ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| Error::Connect {
                    url: url.to_string(),
                    reason: format!("cannot read the CA certificate {}: {e}", path.display()),
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            None => tls = tls.with_webpki_roots(),
        }
        endpoint.tls_config(tls).map_err(|e| Error::Connect {
            url: url.to_string(),
            reason: format!("TLS setup failed: {e}"),
        })?
    } else {
        endpoint
    };
    Ok(endpoint)
}

fn explain_connect_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = String::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        chain.push_str(&e.to_string());
        chain.push_str(": ");
        current = e.source();
    }
    if chain.contains("UnknownIssuer") || chain.contains("invalid peer certificate") {
        "the server's certificate is not trusted; pass the CA that signed it with --ca FILE (for a local setup: --ca data/tls/ca.pem)".into()
    } else if chain.contains("NotValidForName") {
        "the server's certificate is not valid for this host name; connect by a name it lists (e.g. localhost) or regenerate it with --tls-san".into()
    } else if chain.contains("refused") {
        "nothing is listening there; is the service running?".into()
    } else if chain.contains("timed out") || chain.contains("deadline") {
        "the connection timed out".into()
    } else if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
        "the server does not speak TLS there; for a --plaintext service use http://".into()
    } else {
        chain.trim_end_matches(": ").to_string()
    }
}

/// Asks `grpc.health.v1.Health/Check` for `service` ("" = the whole server).
pub async fn health_check(url: &str, ca: Option<&Path>, service: &str) -> Result<(), Error> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let channel = connect(url, ca).await?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|s| Error::Connect {
            url: url.to_string(),
            reason: format!("health check failed: {}", s.message()),
        })?;
    let status = response.into_inner().status();
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        Err(Error::Connect {
            url: url.to_string(),
            reason: format!("the service reports {}", status.as_str_name()),
        })
    }
}

/// Waits until the CA file exists (when given) and the service answers SERVING, for at most
/// `limit`. For tests, benchmarks and start-up scripts.
pub async fn wait_healthy(url: &str, ca: Option<&Path>, limit: Duration) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let ca_ready = ca.is_none_or(|p| p.exists());
        let result = if ca_ready {
            health_check(url, ca, "").await
        } else {
            Err(Error::Connect {
                url: url.into(),
                reason: "no CA file yet".into(),
            })
        };
        if result.is_ok() || tokio::time::Instant::now() >= deadline {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
