//! Sound end to end: the real service reads the demo's WAV track and an ffmpeg-made film's AAC
//! track, encodes Opus, sends it ahead of the pictures in order (through seek, pause and switch),
//! and the real player, writing what it hears to a WAV file in real time, shows every frame when
//! its sound is heard. Beeps (one at every whole second) are found in the decoded sound, so each
//! check measures where the sound really is.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use svs_test_support as support;

use std::path::Path;
use std::time::Duration;
use support::sound::{beep_onsets, play_and_listen};
use support::*;
use svs_cli::stream_client::StreamClient;
use svs_common::proto::stream::{
    AudioCodec, Codec, Pacing, PlayRequest, PlayResponse, Resolution, control_request, notice,
    play_response,
};
use tonic::Streaming;

fn request(video: &str, start: f64, pacing: Pacing) -> PlayRequest {
    PlayRequest {
        video: video.into(),
        resolution: Resolution::Resolution240p as i32,
        start_seconds: start,
        pacing: pacing as i32,
        codec: Codec::H264 as i32,
        audio: AudioCodec::Opus as i32,
    }
}

struct Setup {
    tmp: tempfile::TempDir,
    issuer: svs_common::token::TokenIssuer,
    stream: TestStream,
}

async fn setup(prepare: impl FnOnce(&Path)) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let videos = tmp.path().join("videos");
    demo_videos(&videos);
    prepare(&videos);
    let issuer = test_issuer(&data);
    let stream = TestStream::start(&data, &videos, &[]).await;
    Setup {
        tmp,
        issuer,
        stream,
    }
}

impl Setup {
    async fn client(&self) -> StreamClient {
        self.stream
            .client(&token(&self.issuer, "listener", 3_600_000))
            .await
    }
}

async fn next(stream: &mut Streaming<PlayResponse>) -> Option<play_response::Kind> {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a message in time")
        .expect("no error")
        .map(|m| m.kind.expect("a kind"))
}

/// Decodes consecutive packets to the left channel at 48 kHz.
fn decode_left(packets: &[bytes::Bytes]) -> Vec<f32> {
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
    let mut pcm = vec![0.0f32; 5_760 * 2];
    let mut left = Vec::new();
    for packet in packets {
        let n = decoder.decode_float(packet, &mut pcm, false).unwrap();
        assert_eq!(n, 960, "every packet is 20 ms");
        left.extend(pcm[..n * 2].iter().step_by(2));
    }
    left
}

/// Plays `request` as fast as the reader goes and returns the packets (checked to be
/// consecutive from the start position and ahead of every frame) and the frames' times.
async fn sound_and_frames(
    client: &mut StreamClient,
    request: PlayRequest,
) -> (u64, Vec<bytes::Bytes>, Vec<f64>) {
    let start = request.start_seconds;
    let playing = client.play(request).await.unwrap();
    let track = playing
        .header
        .audio
        .expect("the header announces the sound");
    assert_eq!(
        (
            track.codec,
            track.sample_rate,
            track.channels,
            track.frame_samples
        ),
        (AudioCodec::Opus as i32, 48_000, 2, 960)
    );
    let duration = playing.header.frame_count as f64 / playing.header.fps;
    let mut stream = playing.stream;
    let mut first_packet = None;
    let mut packets = Vec::new();
    let mut frames = Vec::new();
    while let Some(kind) = next(&mut stream).await {
        match kind {
            play_response::Kind::Audio(audio) => {
                let expected =
                    *first_packet.get_or_insert(audio.first_packet) + packets.len() as u64;
                assert_eq!(audio.first_packet, expected, "packets continue each other");
                assert!((audio.pts_seconds - audio.first_packet as f64 * 0.02).abs() < 1e-9);
                packets.extend(audio.packets);
            }
            play_response::Kind::Frame(frame) => {
                let sent_until = (first_packet.unwrap_or(0) + packets.len() as u64) as f64 * 0.02;
                assert!(
                    sent_until >= (frame.pts_seconds + 0.2).min(duration - 0.02),
                    "sound up to {sent_until:.2} s was out before the frame at {:.2} s",
                    frame.pts_seconds
                );
                frames.push(frame.pts_seconds);
            }
            _ => {}
        }
    }
    let first = first_packet.expect("sound came");
    assert_eq!(
        first,
        (start / 0.02).floor() as u64,
        "sound starts where asked"
    );
    assert_eq!(
        first + packets.len() as u64,
        (duration / 0.02).ceil() as u64,
        "sound runs to the video's end"
    );
    (first, packets, frames)
}

fn assert_beeps_at(onsets: &[f64], expected: &[f64], tolerance: f64) {
    assert_eq!(
        onsets.len(),
        expected.len(),
        "beeps at {onsets:?}, expected at {expected:?}"
    );
    for (got, want) in onsets.iter().zip(expected) {
        assert!(
            (got - want).abs() <= tolerance,
            "a beep at {got:.4} s, expected at {want:.3} s (±{tolerance}): {onsets:?}"
        );
    }
}

#[tokio::test]
async fn the_demo_sound_comes_ahead_of_the_pictures_and_beeps_on_each_second() {
    let s = setup(|_| {}).await;
    let mut client = s.client().await;
    let listed = client.list_videos().await.unwrap();
    assert!(listed.iter().all(|v| v.has_audio), "{listed:?}");

    let (_, packets, frames) =
        sound_and_frames(&mut client, request("demo", 0.0, Pacing::AsFastAsPossible)).await;
    assert_eq!(frames.len() as u64, DEMO_FRAMES);
    let onsets = beep_onsets(&decode_left(&packets), 48_000);
    assert_beeps_at(&onsets, &[0.0, 1.0, 2.0, 3.0], 0.004);

    // From the middle: packet 2.5 / 0.02 on, beeps where the video has them.
    let (first, packets, _) =
        sound_and_frames(&mut client, request("demo", 2.5, Pacing::AsFastAsPossible)).await;
    let onsets = beep_onsets(&decode_left(&packets), 48_000);
    let from_start: Vec<f64> = onsets.iter().map(|t| t + first as f64 * 0.02).collect();
    assert_beeps_at(&from_start, &[3.0], 0.004);
    s.stream.stop().await;
}

#[tokio::test]
async fn pictures_only_unless_sound_is_asked_and_unknown_values_are_refused() {
    let s = setup(|_| {}).await;
    let mut client = s.client().await;
    let mut silent = request("demo", 0.0, Pacing::AsFastAsPossible);
    silent.audio = AudioCodec::Unspecified as i32;
    let playing = client.play(silent).await.unwrap();
    assert_eq!(playing.header.audio, None);
    let mut stream = playing.stream;
    let mut frames = 0;
    while let Some(kind) = next(&mut stream).await {
        assert!(
            !matches!(kind, play_response::Kind::Audio(_)),
            "sound that was not asked for"
        );
        frames += u64::from(matches!(kind, play_response::Kind::Frame(_)));
    }
    assert_eq!(frames, DEMO_FRAMES);

    let mut odd = request("demo", 0.0, Pacing::AsFastAsPossible);
    odd.audio = 9;
    let Err(refused) = client.play(odd).await else {
        panic!("an unknown audio value was accepted")
    };
    let refused = refused.to_string();
    assert!(refused.contains("unknown audio value 9"), "{refused}");
    s.stream.stop().await;
}

#[tokio::test]
async fn sound_jumps_with_a_seek_stops_while_paused_and_goes_on_through_a_switch() {
    let s = setup(|_| {}).await;
    let mut client = s.client().await;
    let playing = client
        .play(request("demo", 0.0, Pacing::Realtime))
        .await
        .unwrap();
    let id = playing.header.playback_id.clone();
    let mut stream = playing.stream;
    let mut expected_next = 0u64;
    let take_audio = |audio: &svs_common::proto::stream::Audio, expected: &mut u64| {
        assert_eq!(audio.first_packet, *expected, "sound continues");
        *expected = audio.first_packet + audio.packets.len() as u64;
    };
    // A few frames in, switch rendition: the sound goes on unbroken.
    let mut frames = 0;
    while frames < 5 {
        match next(&mut stream).await.unwrap() {
            play_response::Kind::Audio(a) => take_audio(&a, &mut expected_next),
            play_response::Kind::Frame(_) => frames += 1,
            _ => {}
        }
    }
    client
        .control(
            &id,
            control_request::Action::SwitchTo(Resolution::Resolution720p as i32),
        )
        .await
        .unwrap();
    let mut switched = false;
    let mut audio_after_switch = false;
    while !(switched && audio_after_switch) {
        match next(&mut stream).await.unwrap() {
            play_response::Kind::Audio(a) => {
                take_audio(&a, &mut expected_next);
                audio_after_switch = switched;
            }
            play_response::Kind::Notice(n) => {
                switched |= matches!(n.kind, Some(notice::Kind::Switched(_)));
            }
            _ => {}
        }
    }

    // Paused: neither frames nor sound for as long as it lasts.
    client
        .control(&id, control_request::Action::Pause(true))
        .await
        .unwrap();
    loop {
        match next(&mut stream).await.unwrap() {
            play_response::Kind::Notice(n)
                if n.kind == Some(notice::Kind::State("paused".into())) =>
            {
                break;
            }
            play_response::Kind::Audio(a) => take_audio(&a, &mut expected_next),
            _ => {}
        }
    }
    let quiet = tokio::time::timeout(Duration::from_millis(800), stream.message()).await;
    assert!(quiet.is_err(), "something came while paused: {quiet:?}");
    client
        .control(&id, control_request::Action::Resume(true))
        .await
        .unwrap();

    // A seek to 3 s: after its notice the sound starts again at packet 150.
    client
        .control(&id, control_request::Action::SeekSeconds(3.0))
        .await
        .unwrap();
    let mut seeked = false;
    loop {
        match next(&mut stream).await.unwrap() {
            play_response::Kind::Notice(n) => {
                if let Some(notice::Kind::State(state)) = &n.kind {
                    seeked |= state.starts_with("seeked to frame");
                }
            }
            play_response::Kind::Audio(a) if seeked => {
                assert_eq!(a.first_packet, 150, "the sound jumps with the seek");
                break;
            }
            play_response::Kind::Audio(a) => take_audio(&a, &mut expected_next),
            _ => {}
        }
    }
    s.stream.stop().await;
}

/// Makes `film_240p.mp4` the way people's films are made: x264 with a keyframe every 5 s and
/// AAC sound at 44.1 kHz (resampled to 48 kHz by the service), beeping at every half second
/// past a whole one (not at 0: an AAC encoder's first frame smears a sound that starts with
/// the file, which is no timing error).
fn ffmpeg_film(videos: &Path) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=426x240:rate=25"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "aevalsrc='if(between(mod(t,1),0.5,0.6),0.5*sin(2*PI*1000*t),0)':s=44100:c=stereo",
        ])
        .args([
            "-t", "6", "-c:v", "libx264", "-g", "125", "-pix_fmt", "yuv420p",
        ])
        .args(["-c:a", "aac", "-b:a", "128k"])
        .arg(videos.join("film_240p.mp4"))
        .output()
        .expect("ffmpeg (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_ffmpeg_film_plays_its_aac_sound_on_time_from_the_start_and_from_the_middle() {
    let s = setup(ffmpeg_film).await;
    let mut client = s.client().await;
    let film = client
        .list_videos()
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.name == "film")
        .expect("the film is listed");
    assert!(film.has_audio, "its AAC track is found in the mp4");

    let (_, packets, _) =
        sound_and_frames(&mut client, request("film", 0.0, Pacing::AsFastAsPossible)).await;
    let onsets = beep_onsets(&decode_left(&packets), 48_000);
    assert_beeps_at(&onsets, &[0.5, 1.5, 2.5, 3.5, 4.5, 5.5], 0.002);

    let (first, packets, _) =
        sound_and_frames(&mut client, request("film", 3.8, Pacing::AsFastAsPossible)).await;
    let onsets: Vec<f64> = beep_onsets(&decode_left(&packets), 48_000)
        .iter()
        .map(|t| t + first as f64 * 0.02)
        .collect();
    assert_beeps_at(&onsets, &[4.5, 5.5], 0.002);
    s.stream.stop().await;
}

#[tokio::test]
async fn the_player_shows_each_frame_when_its_beep_is_heard() {
    let s = setup(|_| {}).await;
    let mut client = s.client().await;
    let heard = play_and_listen(
        &mut client,
        request("demo", 0.0, Pacing::Realtime),
        &s.tmp.path().join("heard.wav"),
        DEMO_FPS,
    )
    .await;
    let sound = heard.summary.sound.clone().expect("a sound summary");
    assert_eq!(
        (sound.codec.as_str(), sound.output.as_str()),
        ("opus", "wav")
    );
    assert_eq!(sound.packets, 200);
    assert_eq!(sound.undecodable, 0);
    assert!(
        sound.underrun_seconds < 0.5,
        "{:.2} s of silence waiting for sound",
        sound.underrun_seconds
    );

    // Where each beep is in what was heard, and where in it each second's frame showed (a
    // frame skipped on a slow machine is left out: the others still measure).
    let onsets = &heard.onsets;
    assert_eq!(onsets.len(), 4, "four beeps heard: {onsets:?}");
    for pair in onsets.windows(2) {
        assert!(
            (pair[1] - pair[0] - 1.0).abs() < 0.002,
            "beeps a second apart in what was heard: {onsets:?}"
        );
    }
    let offsets: Vec<(f64, u64)> = heard
        .beep_frames
        .iter()
        .map(|(index, offset)| (offset.expect("the frame showed by the sound clock"), *index))
        .collect();
    assert!(offsets.len() >= 3, "most beep frames shown: {offsets:?}");
    // A frame shows when its sound is heard: EBU R37 allows sound 40 ms early to 60 ms late.
    for (offset_ms, index) in &offsets {
        assert!(
            (-60.0..=40.0).contains(offset_ms),
            "frame {index} showed {offset_ms:+.0} ms from its beep ({offsets:?})"
        );
    }
    assert!(
        sound.av_offset_p50_ms.abs() <= 20.0,
        "median sound minus picture {:.1} ms",
        sound.av_offset_p50_ms
    );
    s.stream.stop().await;
}
