//! Reading a service's Prometheus text.

/// The svs series (name and labels, without the value) of a Prometheus text.
pub fn metric_series(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("svs_"))
        .map(|l| {
            l.rsplit_once(' ')
                .map_or(l, |(series, _)| series)
                .to_string()
        })
        .collect()
}

/// The Prometheus text a service serves on 127.0.0.1:`port` (any path; see README, Metrics).
pub async fn scrape_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn series_drop_values_and_foreign_metrics() {
        let text = "# HELP x\nsvs_rpc_total{method=\"a\"} 3\nprocess_cpu 1\nsvs_up 1\n";
        let series: Vec<_> = super::metric_series(text).into_iter().collect();
        assert_eq!(series, ["svs_rpc_total{method=\"a\"}", "svs_up"]);
    }
}
