//! The player's window under a real X server (Xvfb and xdotool, installed by
//! scripts/install-deps.sh): the real `svs` binary plays the demo in a window, the window's
//! title says where it is, keys typed into it reach the player, and Qt is driven and torn down
//! on one thread (no "Timers cannot be stopped from another thread" at exit).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// An Xvfb server on a display of its own, stopped on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_xvfb() -> Xvfb {
    // A display number no other test run on this machine picks at the same time.
    let number = 200 + std::process::id() % 700;
    let child = Command::new("Xvfb")
        .args([
            &format!(":{number}"),
            "-screen",
            "0",
            "1280x800x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb (scripts/install-deps.sh installs it)");
    let socket = format!("/tmp/.X11-unix/X{number}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::path::Path::new(&socket).exists() {
        assert!(Instant::now() < deadline, "Xvfb did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Xvfb {
        child,
        display: format!(":{number}"),
    }
}

/// `xdotool` on `display`; its stdout.
fn xdotool(display: &str, args: &[&str]) -> String {
    let out = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", display)
        .output()
        .expect("xdotool (scripts/install-deps.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_demo_plays_in_a_window_that_takes_keys_and_qt_ends_on_one_thread() {
    let x = start_xvfb();
    let tmp = tempfile::tempdir().unwrap();
    let (dir, stream) = start_both(tmp.path()).await;
    let runtime_dir = tmp.path().join("xdg");
    std::fs::create_dir(&runtime_dir).unwrap();
    std::fs::set_permissions(
        &runtime_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let svs = |args: &[&str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_svs"))
            .args(args)
            .env("DISPLAY", &x.display)
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .env("SVS_DIRECTORY", &dir.url)
            .env("SVS_STREAM", &stream.url)
            .env("SVS_CA", &dir.ca)
            .env("SVS_HOME", tmp.path().join("viewer"))
            .env("SVS_NAME", "viewer")
            .env("SVS_KEY_BITS", "2048")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // To the end, in a window.
    let out = svs(&["play", "demo", "--resolution", "240p", "--fast", "--json"])
        .wait_with_output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["frames_decoded"], DEMO_FRAMES, "{stdout}");
    assert_eq!(summary["codec"], "h264");
    assert!(
        !stderr.contains("another thread"),
        "Qt was driven from two threads: {stderr}"
    );

    // In real time: the title names video, rendition and position; `3` switches to 1440p and
    // `q` quits before the end.
    let heard = tmp.path().join("heard.wav");
    let wav = format!("wav:{}", heard.display());
    let mut playing = svs(&[
        "play",
        "demo",
        "--resolution",
        "240p",
        "--json",
        "--audio",
        &wav,
    ]);
    // Generous: a loaded machine may take seconds to start a debug build and connect.
    let deadline = Instant::now() + Duration::from_secs(30);
    let window = loop {
        let found = xdotool(&x.display, &["search", "--name", "^demo — "]);
        if let Some(id) = found.lines().next() {
            break id.to_string();
        }
        if playing.try_wait().unwrap().is_some() {
            let out = playing.wait_with_output().await.unwrap();
            panic!(
                "the playback ended before its window was found: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "no window appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let title = xdotool(&x.display, &["getwindowname", &window]);
    assert!(
        title.starts_with("demo — 240p — 0:0") && title.trim_end().ends_with("/ 0:04"),
        "{title}"
    );
    xdotool(&x.display, &["key", "--window", &window, "3"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !xdotool(&x.display, &["getwindowname", &window]).contains("1440p") {
        assert!(
            Instant::now() < deadline,
            "the switch never showed in the title"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // `9` softer, `m` mute: the sound is the player's own, keys reach it too.
    xdotool(&x.display, &["key", "--window", &window, "9"]);
    xdotool(&x.display, &["key", "--window", &window, "m"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    xdotool(&x.display, &["key", "--window", &window, "q"]);
    let out = tokio::time::timeout(Duration::from_secs(30), playing.wait_with_output())
        .await
        .expect("q ends the playback")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["switches"], 1, "{stdout}");
    assert_eq!(summary["sound"]["output"], "wav", "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("volume 90 %") && stderr.contains("sound muted"),
        "the sound keys answered: {stderr}"
    );
    assert!(
        summary["frames_received"].as_u64().unwrap() < DEMO_FRAMES,
        "stopped before the end: {stdout}"
    );
    stream.stop().await;
    dir.stop().await;
}
