//! Unauthenticated callers cannot grow the metrics: 100,000 calls to made-up method paths (no
//! token, a forged token) against the real directory over TLS, and 20,000 against the stream
//! service, leave the number of series on `/metrics` unchanged, and the calls are held to the
//! per-address budget. (Its own test binary: the recorder is process-wide.)
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use support::net::free_port;
use support::process::{metric_series as series, scrape_metrics as scrape};
use support::{TestDirectory, TestStream, demo_videos};

/// An empty protobuf message, the body of every made-up call.
#[derive(Clone, PartialEq, prost::Message)]
struct Nothing {}

/// `calls` unary calls to random paths over one TLS channel, `tasks` at a time, half of them
/// with a forged bearer token. Returns (calls refused for the budget, other refusals).
async fn flood(url: &str, ca: &std::path::Path, calls: u64, tasks: u64) -> (u64, u64) {
    let channel = svs_common::client::connect(url, Some(ca)).await.unwrap();
    let (over_budget, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for worker in 0..tasks {
        let channel = channel.clone();
        let (over_budget, refused) = (over_budget.clone(), refused.clone());
        workers.push(tokio::spawn(async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            let mut n = worker;
            while n < calls {
                grpc.ready().await.unwrap();
                let path = format!("/made.up{n}.Service{}/Method{:x}", n % 97, n * 7919);
                let path = http::uri::PathAndQuery::try_from(path).unwrap();
                let mut request = tonic::Request::new(Nothing {});
                if n % 2 == 0 {
                    request.metadata_mut().insert(
                        "authorization",
                        format!("Bearer svs1.forged{n}.x").parse().unwrap(),
                    );
                }
                let codec = tonic_prost::ProstCodec::<Nothing, Nothing>::default();
                let status = grpc.unary(request, path, codec).await.unwrap_err();
                match status.code() {
                    tonic::Code::ResourceExhausted => over_budget.fetch_add(1, Ordering::Relaxed),
                    tonic::Code::Unauthenticated => refused.fetch_add(1, Ordering::Relaxed),
                    other => panic!("a made-up call answered {other:?}: {status:?}"),
                };
                n += tasks;
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    (
        over_budget.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    )
}

#[tokio::test]
async fn calls_to_made_up_methods_add_no_series() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let videos = tmp.path().join("videos");
    demo_videos(&videos);
    let (dir_port, stream_port) = (free_port(), free_port());
    let dir = TestDirectory::start(
        &data,
        &["--metrics-listen", &format!("127.0.0.1:{dir_port}")],
    )
    .await;
    let stream = TestStream::start(
        &data,
        &videos,
        &["--metrics-listen", &format!("127.0.0.1:{stream_port}")],
    )
    .await;

    // A few first, so the series for refused unknown calls exist before counting.
    flood(&dir.url, &dir.ca, 100, 4).await;
    flood(&stream.url, &stream.ca, 100, 4).await;
    let before = series(&scrape(dir_port).await);

    let started = Instant::now();
    let (over_budget, refused) = flood(&dir.url, &dir.ca, 100_000, 32).await;
    let took = started.elapsed();
    flood(&stream.url, &stream.ca, 20_000, 32).await;
    let after_text = scrape(dir_port).await;
    let after = series(&after_text);
    println!(
        "100,000 made-up calls in {took:.1?}: {refused} unauthenticated, {over_budget} over the \
         per-address budget; series {} before, {} after; /metrics {} bytes",
        before.len(),
        after.len(),
        after_text.len()
    );
    let new: Vec<_> = after.difference(&before).collect();
    let rpc_new: Vec<_> = new
        .iter()
        .filter(|s| s.starts_with("svs_rpc_total"))
        .collect();
    assert!(
        rpc_new.is_empty(),
        "made-up calls added series: {rpc_new:?}"
    );
    assert!(
        after_text.contains("method=\"unknown\""),
        "made-up calls are counted under one label"
    );
    // Held to the budget for calls without a token: a burst of 60 and 20 a second.
    let allowed = 60.0 + 20.0 * took.as_secs_f64() + 5.0;
    assert!(
        (refused as f64) <= allowed,
        "{refused} made-up calls were looked at in {took:?}; the budget allows {allowed:.0}"
    );
    let stream_series = series(&scrape(stream_port).await);
    let stream_unknown = stream_series
        .iter()
        .filter(|s| s.starts_with("svs_rpc_total") && s.contains("made.up"))
        .count();
    assert_eq!(
        stream_unknown, 0,
        "no stream-service series names a made-up path"
    );
    stream.stop().await;
    dir.stop().await;
}
