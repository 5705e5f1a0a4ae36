//! `svs play` through a real sound device: PulseAudio with a null sink (a sound card that plays
//! to nowhere, at the real pace; installed by scripts/install-deps.sh) behind ALSA's `pulse`
//! plugin, which is what cpal opens. `parec` records what the sink played, and the demo's beeps
//! are found in the recording. And on a machine whose sound output cannot be opened, the player
//! goes on without sound, quietly. (No sound card is mocked: the null sink is a real PulseAudio
//! device; only the loudspeaker is missing.)
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// A PulseAudio server of this test's own (its socket in the test's directory) with one null
/// sink, stopped on drop.
struct PulseAudio {
    child: Child,
    socket: PathBuf,
    runtime: PathBuf,
}

impl Drop for PulseAudio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_pulseaudio(root: &Path) -> PulseAudio {
    let runtime = root.join("pulse-run");
    std::fs::create_dir_all(&runtime).unwrap();
    let socket = runtime.join("native");
    let child = Command::new("pulseaudio")
        .args([
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
        ])
        .args(["--disallow-exit", "--log-target=stderr"])
        .arg(format!(
            "--load=module-native-protocol-unix socket={} auth-anonymous=1",
            socket.display()
        ))
        .arg("--load=module-null-sink sink_name=svs_null rate=48000")
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("HOME", root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pulseaudio (scripts/install-deps.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "PulseAudio did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    PulseAudio {
        child,
        socket,
        runtime,
    }
}

/// A home whose ALSA default device is PulseAudio (what desktops have).
fn alsa_home(root: &Path) -> PathBuf {
    let home = root.join("alsa-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join(".asoundrc"),
        "pcm.!default { type pulse }\nctl.!default { type pulse }\n",
    )
    .unwrap();
    home
}

/// `svs play demo --headless --json` with `env`; (exit ok, summary, stderr).
async fn play(
    dir: &TestDirectory,
    stream: &TestStream,
    svs_home: &Path,
    env: &[(&str, &Path)],
) -> (bool, serde_json::Value, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_svs"));
    command
        .args([
            "play",
            "demo",
            "--resolution",
            "240p",
            "--headless",
            "--json",
        ])
        .env("SVS_DIRECTORY", &dir.url)
        .env("SVS_STREAM", &stream.url)
        .env("SVS_CA", &dir.ca)
        .env("SVS_HOME", svs_home)
        .env("SVS_NAME", "listener")
        .env("SVS_KEY_BITS", "2048")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY");
    for (key, value) in env {
        command.env(key, value);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("svs play finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        summary,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn svs_play_is_heard_through_a_real_sound_device_with_its_beeps_a_second_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, stream) = start_both(tmp.path()).await;
    let pulse = start_pulseaudio(tmp.path());
    let home = alsa_home(tmp.path());
    let server = PathBuf::from(format!("unix:{}", pulse.socket.display()));

    // What the null sink plays, recorded raw (16-bit stereo at 48 kHz) from its monitor.
    let recording = tmp.path().join("heard.raw");
    let mut recorder = Command::new("parec")
        .args([
            "-d",
            "svs_null.monitor",
            "--format=s16le",
            "--rate=48000",
            "--channels=2",
        ])
        .env("PULSE_SERVER", &server)
        .env("XDG_RUNTIME_DIR", &pulse.runtime)
        .stdout(std::fs::File::create(&recording).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("parec (scripts/install-deps.sh installs pulseaudio-utils)");

    let (ok, summary, stderr) = play(
        &dir,
        &stream,
        &tmp.path().join("listener"),
        &[
            ("HOME", &home),
            ("PULSE_SERVER", &server),
            ("XDG_RUNTIME_DIR", &pulse.runtime),
        ],
    )
    .await;
    std::thread::sleep(Duration::from_millis(300));
    let _ = recorder.kill();
    let _ = recorder.wait();
    assert!(ok, "{stderr}");
    let sound = &summary["sound"];
    assert_eq!(sound["output"], "device", "{summary}");
    assert_eq!(sound["packets"], 200, "{summary}");
    assert!(
        sound["av_offset_p50_ms"].as_f64().unwrap().abs() < 40.0,
        "{summary}"
    );

    let bytes = std::fs::read(&recording).unwrap();
    let left: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|f| f32::from(i16::from_le_bytes([f[0], f[1]])) / 32768.0)
        .collect();
    let onsets = sound::beep_onsets(&left, 48_000);
    assert_eq!(
        onsets.len(),
        4,
        "four beeps heard on the device: {onsets:?}"
    );
    // A device may clip the very start of a stream (PulseAudio did, by 20 ms, here): the
    // beeps after the first are measured.
    for pair in onsets[1..].windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (gap - 1.0).abs() < 0.02,
            "beeps {gap:.3} s apart on the device: {onsets:?}"
        );
    }
    dir.stop().await;
    stream.stop().await;
}

#[tokio::test]
async fn without_a_sound_device_svs_play_shows_the_pictures_and_says_why_only_in_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, stream) = start_both(tmp.path()).await;
    // ALSA's default is a PulseAudio server that is not there.
    let home = alsa_home(tmp.path());
    let nowhere = tmp.path().join("no-such-socket");
    let server = PathBuf::from(format!("unix:{}", nowhere.display()));
    let (ok, summary, stderr) = play(
        &dir,
        &stream,
        &tmp.path().join("listener"),
        &[("HOME", &home), ("PULSE_SERVER", &server)],
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(summary["frames_decoded"], support::DEMO_FRAMES, "{summary}");
    assert_eq!(summary["sound"]["output"], "none", "{summary}");
    assert!(summary["sound"]["note"].is_string(), "{summary}");
    assert!(
        !stderr.contains("sound") && !stderr.contains("ALSA"),
        "quiet without a sound card: {stderr}"
    );
    dir.stop().await;
    stream.stop().await;
}
