//! grpcurl against both services, as a user would run it: reflection (grpcurl 1.8.6 speaks only
//! v1alpha), describe, health, an unauthenticated Play refused, ListVideos with a token.
//! grpcurl comes from `scripts/install-deps.sh` (.tools/venv) or PATH; the test fails without it.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::path::{Path, PathBuf};
use support::*;

fn grpcurl() -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/grpcurl");
    if local.exists() {
        return local;
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("grpcurl"))
        .find(|p| p.exists())
        .expect(
            "grpcurl not found: run scripts/install-deps.sh (it installs .tools/venv/bin/grpcurl)",
        )
}

/// Runs grpcurl; returns (success, stdout + stderr).
async fn run(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(grpcurl())
            .args(&args)
            .output()
            .expect("grpcurl runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

fn args(ca: &Path, url: &str, rest: &[&str]) -> Vec<String> {
    let target = url.trim_start_matches("https://").to_string();
    let mut v = vec!["-cacert".to_string(), ca.display().to_string()];
    // Flags (and their values) go before the address, the verb and its argument after it.
    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        if rest[i].starts_with('-') {
            before.push(rest[i].to_string());
            before.push(rest[i + 1].to_string());
            i += 2;
        } else {
            after.push(rest[i].to_string());
            i += 1;
        }
    }
    v.extend(before);
    v.push(target);
    v.extend(after);
    v
}

#[tokio::test]
async fn grpcurl_lists_describes_checks_health_and_calls_with_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, stream) = start_both(tmp.path()).await;
    let ca = dir.ca.clone();

    let (ok, out) = run(args(&ca, &dir.url, &["list"])).await;
    assert!(ok, "{out}");
    for service in [
        "svs.directory.v1.Directory",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(out.contains(service), "list shows {service}: {out}");
    }
    let (ok, out) = run(args(
        &ca,
        &dir.url,
        &["describe", "svs.directory.v1.Directory"],
    ))
    .await;
    assert!(
        ok && out.contains("rpc Register") && out.contains("rpc Subscribe"),
        "{out}"
    );
    let (ok, out) = run(args(&ca, &dir.url, &["describe", "grpc.health.v1.Health"])).await;
    assert!(ok && out.contains("rpc Check"), "{out}");
    let (ok, out) = run(args(&ca, &dir.url, &["grpc.health.v1.Health/Check"])).await;
    assert!(ok && out.contains("SERVING"), "{out}");

    let (ok, out) = run(args(&ca, &stream.url, &["list"])).await;
    assert!(ok && out.contains("svs.stream.v1.Stream"), "{out}");
    let (ok, out) = run(args(
        &ca,
        &stream.url,
        &["describe", "svs.stream.v1.Stream"],
    ))
    .await;
    assert!(
        ok && out.contains("rpc Play") && out.contains("rpc Control"),
        "{out}"
    );
    let (ok, out) = run(args(&ca, &stream.url, &["grpc.health.v1.Health/Check"])).await;
    assert!(ok && out.contains("SERVING"), "{out}");

    // Play without a token is refused.
    let (ok, out) = run(args(
        &ca,
        &stream.url,
        &["-d", r#"{"video":"demo"}"#, "svs.stream.v1.Stream/Play"],
    ))
    .await;
    assert!(!ok && out.contains("Unauthenticated"), "{out}");

    // With a token from the directory, ListVideos answers.
    let alice = dir.register("alice", &tmp.path().join("alice")).await;
    let header = format!("authorization: Bearer {}", alice.token);
    let (ok, out) = run(args(
        &ca,
        &stream.url,
        &["-H", &header, "svs.stream.v1.Stream/ListVideos"],
    ))
    .await;
    assert!(
        ok && out.contains("\"demo\"") && out.contains("RESOLUTION_1440P"),
        "{out}"
    );
    // H.264 from 2.5 s (frame 37, between keyframes): JPEG bridge frames, then access units.
    let (ok, out) = run(args(
        &ca,
        &stream.url,
        &[
            "-H",
            &header,
            "-d",
            r#"{"video":"demo","resolution":"RESOLUTION_240P","codec":"CODEC_H264","start_seconds":2.5,"pacing":"PACING_AS_FAST_AS_POSSIBLE"}"#,
            "svs.stream.v1.Stream/Play",
        ],
    ))
    .await;
    let (bridge, h264) = (out.find("\"jpeg\""), out.find("\"h264\""));
    assert!(
        ok && out.contains("CODEC_H264") && bridge.is_some() && h264 > bridge,
        "{out}"
    );
    // With sound: the header announces Opus and packets come numbered from the start.
    let (ok, out) = run(args(
        &ca,
        &stream.url,
        &[
            "-H",
            &header,
            "-d",
            r#"{"video":"demo","resolution":"RESOLUTION_240P","audio":"AUDIO_CODEC_OPUS","pacing":"PACING_AS_FAST_AS_POSSIBLE"}"#,
            "svs.stream.v1.Stream/Play",
        ],
    ))
    .await;
    assert!(
        ok && out.contains("AUDIO_CODEC_OPUS")
            && out.contains("\"packets\"")
            && out.contains("\"firstPacket\""),
        "{out}"
    );
    let (ok, out) = run(args(
        &ca,
        &dir.url,
        &["-H", &header, "svs.directory.v1.Directory/ListPeers"],
    ))
    .await;
    assert!(ok && out.contains("alice"), "{out}");
    // A registered name's key, online or not; an unknown one is listed as such.
    dir.register("bob", &tmp.path().join("bob"))
        .await
        .quit()
        .await
        .unwrap();
    let (ok, out) = run(args(
        &ca,
        &dir.url,
        &[
            "-H",
            &header,
            "-d",
            r#"{"names":["bob","nobody"]}"#,
            "svs.directory.v1.Directory/LookupKeys",
        ],
    ))
    .await;
    assert!(
        ok && out.contains("\"bob\"") && out.contains("fingerprint") && out.contains("nobody"),
        "{out}"
    );
    stream.stop().await;
    dir.stop().await;
}
