//! Prometheus metrics: one process-wide recorder (the `metrics` facade rendered by
//! metrics-exporter-prometheus), served as plain-text HTTP on `--metrics-listen` when it is set
//! (off by default: it says how busy the service is, so bind it where only operators reach), and
//! a layer counting RPCs by method and gRPC status code.

use crate::serve::watched_body::{StartWatch, WatchLayer, Watcher};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::OnceLock;
use tokio::net::TcpListener;

/// Where metrics are served.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsOptions {
    /// Serve Prometheus metrics over plain HTTP on this address (e.g. 127.0.0.1:9101); off
    /// when unset.
    #[arg(long, env = "SVS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use (`None` if another recorder was installed).
fn recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "cannot install the metrics recorder");
                None
            }
        })
        .as_ref()
}

/// The metrics endpoint while it runs; stops when dropped.
#[derive(Debug)]
pub struct MetricsEndpoint {
    /// Where it listens.
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts serving metrics if `options` asks for it.
pub async fn start(options: &MetricsOptions) -> Result<Option<MetricsEndpoint>, crate::Error> {
    let Some(listen) = options.metrics_listen else {
        return Ok(None);
    };
    let Some(handle) = recorder() else {
        return Ok(None);
    };
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| crate::Error::Listen(format!("metrics on {listen}: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| crate::Error::Listen(format!("metrics on {listen}: {e}")))?;
    tracing::info!(%address, "serving Prometheus metrics");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async move {
                    let body = http_body_util::Full::new(bytes::Bytes::from(handle.render()));
                    http::Response::builder()
                        .header("content-type", "text/plain; version=0.0.4")
                        .body(body)
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let served = hyper::server::conn::http1::Builder::new()
                    .header_read_timeout(std::time::Duration::from_secs(5))
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(io, service);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), served).await;
            });
        }
    });
    Ok(Some(MetricsEndpoint { address, task }))
}

/// The label of every call whose path is not a method these servers serve: a caller choosing
/// paths at will must not be able to add series (each costs memory and scrape time for good).
pub const UNKNOWN_METHOD: &str = "unknown";

/// The reflection methods (their descriptors are not exported by tonic-reflection).
const REFLECTION_METHODS: &[&str] = &[
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Every method path svs serves (`/package.Service/Method`), read from the descriptor sets of
/// the svs protos and grpc.health.v1: the only values the `method` label takes besides
/// `UNKNOWN_METHOD`.
fn known_methods() -> &'static HashSet<&'static str> {
    static KNOWN: OnceLock<HashSet<&'static str>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known: HashSet<&'static str> = REFLECTION_METHODS.iter().copied().collect();
        for encoded in [
            svs_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(encoded)
            else {
                tracing::error!(
                    "a built-in descriptor set does not decode; its methods count as unknown"
                );
                continue;
            };
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        let path =
                            format!("/{}.{}/{}", file.package(), service.name(), method.name());
                        // Leaked once per method for the process's life: a fixed, small set.
                        known.insert(Box::leak(path.into_boxed_str()));
                    }
                }
            }
        }
        known
    })
}

/// The `method` label for a request path: the path itself when svs serves it, else
/// `UNKNOWN_METHOD`.
pub fn method_label(path: &str) -> &'static str {
    known_methods().get(path).copied().unwrap_or(UNKNOWN_METHOD)
}

/// Counts every RPC as `svs_rpc_total{method, code}` when its response ends.
#[derive(Debug, Clone, Default)]
pub struct CountRpcs;

impl StartWatch for CountRpcs {
    type Watcher = Call;
    fn start<B>(&self, request: &http::Request<B>) -> Option<Call> {
        Some(Call {
            method: method_label(request.uri().path()),
            code: None,
        })
    }
}

/// The layer that counts RPCs.
pub type RpcMetricsLayer = WatchLayer<CountRpcs>;

/// One call: its method, and its status once known.
#[derive(Debug)]
pub struct Call {
    method: &'static str,
    code: Option<tonic::Code>,
}

fn code_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(tonic::Code::from_i32(value))
}

impl Watcher for Call {
    /// A call refused before any message is "trailers only": its status is in the headers.
    fn headers(&mut self, headers: &http::HeaderMap) {
        self.code = self.code.or(code_of(headers));
    }

    fn trailers(&mut self, trailers: &http::HeaderMap) {
        self.code = self.code.or(code_of(trailers));
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // A body dropped before its status: the client went away.
        let code = self.code.unwrap_or(tonic::Code::Cancelled);
        metrics::counter!("svs_rpc_total", "method" => self.method, "code" => format!("{code:?}"))
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_are_labels() {
        assert_eq!(
            method_label("/svs.directory.v1.Directory/Send"),
            "/svs.directory.v1.Directory/Send"
        );
        assert_eq!(
            method_label("/svs.stream.v1.Stream/Play"),
            "/svs.stream.v1.Stream/Play"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(
            method_label("/svs.directory.v1.Directory/Sendx"),
            UNKNOWN_METHOD
        );
        assert_eq!(method_label("/made/up"), UNKNOWN_METHOD);
        assert_eq!(method_label(""), UNKNOWN_METHOD);
    }
}
