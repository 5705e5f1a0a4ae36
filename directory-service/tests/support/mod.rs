//! Helpers shared by the process-level tests (the directory's and the CLI's) and the relay bench.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;

/// A port nothing listens on now (for a child process told its port in advance).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where a child's log goes: `$SVS_TEST_LOGS/<name>.log` when set (to read after a failure),
/// else nowhere.
pub fn log_file(name: &str) -> Stdio {
    match std::env::var_os("SVS_TEST_LOGS") {
        Some(dir) => {
            let path = Path::new(&dir).join(format!("{name}.log"));
            std::fs::File::create(path).map_or_else(|_| Stdio::null(), Stdio::from)
        }
        None => Stdio::null(),
    }
}

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
