//! Video for one page: the library with a poster per video, and playbacks whose frames and sound
//! go from stream-service to the page as they came (no re-encoding), after the same size checks
//! `svs play` makes (a hostile service's picture claiming another size, or too many pixels, is
//! dropped with a note instead of reaching the browser's decoder).
//!
//! Binary WebSocket messages to the page: one byte saying what follows (`FRAME`, `SOUND`,
//! `POSTER`), a 4-byte big-endian length of a JSON header, the header, then the payload (the
//! JPEG or H.264 access unit; the Opus packets one after another, their sizes in the header; the
//! poster's JPEG).

use crate::picture::{DEFAULT_MAX_PIXELS, check_size};
use crate::stream_client::{StreamClient, codec_label, resolution_label};
use axum::extract::ws::Message;
use serde_json::{Value, json};
use std::path::PathBuf;
use svs_common::proto::stream::{
    AudioCodec, Codec, Pacing, PlayRequest, PlayResponse, Resolution, Video, control_request,
    frame::Picture, notice, play_response,
};
use tokio::sync::mpsc;

/// A frame: header `{index, pts, resolution, width, height, keyframe, codec, skipped_total}`.
const FRAME: u8 = 1;
/// Sound: header `{first_packet, pts, sizes}`, the Opus packets one after another.
const SOUND: u8 = 2;
/// A video's poster: header `{video}`, a JPEG.
const POSTER: u8 = 3;
/// Posters fetched for one library listing, at most.
const MAX_POSTERS: usize = 64;
/// Dropped frames the page hears about one by one; after that, one note per `DROP_NOTE_EVERY`.
const DROPS_NOTED: u64 = 5;
const DROP_NOTE_EVERY: u64 = 1_000;

/// Where stream-service is and how to prove who we are to it.
#[derive(Debug, Clone)]
pub(super) struct StreamAccess {
    pub(super) url: String,
    pub(super) ca: Option<PathBuf>,
}

/// What a page asks of a running playback.
#[derive(Debug, Clone, Copy)]
pub(super) enum Steer {
    Pause,
    Resume,
    Seek(f64),
    Switch(Resolution),
}

/// A page's request to play.
#[derive(Debug, Clone)]
pub(super) struct PlayOrder {
    pub(super) video: String,
    pub(super) resolution: Resolution,
    pub(super) start_seconds: f64,
    pub(super) sound: bool,
    /// The page's number for this playback, on everything it sends: the page drops what a
    /// playback it already replaced or stopped still sends.
    pub(super) serial: u64,
}

fn binary(kind: u8, header: &Value, payload: &[&[u8]]) -> Message {
    let header = header.to_string();
    let size = 5 + header.len() + payload.iter().map(|p| p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(kind);
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(header.as_bytes());
    for part in payload {
        out.extend_from_slice(part);
    }
    Message::Binary(out.into())
}

/// `value` with the playback's serial.
fn stamped(mut value: Value, serial: u64) -> Value {
    value["serial"] = json!(serial);
    value
}

fn text(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

/// Lists the videos, then sends a poster for each (a frame from a tenth of the way in, 240p JPEG).
pub(super) async fn library(access: StreamAccess, token: String, to_page: mpsc::Sender<Message>) {
    let listed = async {
        let mut client = StreamClient::connect(&access.url, access.ca.as_deref(), &token).await?;
        let videos = client.list_videos().await?;
        Ok::<_, crate::CliError>((client, videos))
    };
    let (mut client, videos) = match listed.await {
        Ok(listed) => listed,
        Err(e) => {
            let _ = to_page
                .send(text(json!({"type": "videos", "error": e.to_string()})))
                .await;
            return;
        }
    };
    let listing: Vec<Value> = videos.iter().map(video_json).collect();
    if to_page
        .send(text(json!({"type": "videos", "videos": listing})))
        .await
        .is_err()
    {
        return;
    }
    for video in videos.iter().take(MAX_POSTERS) {
        if let Some(jpeg) = poster(&mut client, video).await
            && to_page
                .send(binary(POSTER, &json!({"video": video.name}), &[&jpeg]))
                .await
                .is_err()
        {
            return;
        }
    }
}

fn video_json(video: &Video) -> Value {
    let first = video.renditions.first();
    json!({
        "name": video.name,
        "has_audio": video.has_audio,
        "duration_seconds": first.map_or(0.0, |r| r.duration_seconds),
        "fps": first.map_or(0.0, |r| r.fps),
        "renditions": video.renditions.iter().map(|r| resolution_label(r.resolution)).collect::<Vec<_>>(),
    })
}

/// One JPEG frame of `video` at its smallest rendition, checked like any other picture.
async fn poster(client: &mut StreamClient, video: &Video) -> Option<Vec<u8>> {
    let smallest = video.renditions.iter().min_by_key(|r| r.width)?;
    let request = PlayRequest {
        video: video.name.clone(),
        resolution: smallest.resolution,
        start_seconds: smallest.duration_seconds / 10.0,
        pacing: Pacing::AsFastAsPossible as i32,
        codec: Codec::Jpeg as i32,
        ..Default::default()
    };
    let mut playing = client.play(request).await.ok()?;
    // The first frame; the playback ends when the stream is dropped.
    while let Ok(Some(message)) = playing.stream.message().await {
        if let Some(play_response::Kind::Frame(frame)) = message.kind {
            let picture = frame.picture?;
            check_size(&picture, (frame.width, frame.height), DEFAULT_MAX_PIXELS).ok()?;
            return match picture {
                Picture::Jpeg(jpeg) => Some(jpeg.to_vec()),
                Picture::H264(_) => None,
            };
        }
    }
    None
}

/// Plays `order` for the page until the video ends, the page stops it (`steering` closes) or the
/// page goes away.
pub(super) async fn play(
    access: StreamAccess,
    token: String,
    order: PlayOrder,
    to_page: mpsc::Sender<Message>,
    mut steering: mpsc::Receiver<Steer>,
) {
    let ended = match playback(&access, &token, &order, &to_page, &mut steering).await {
        Ok(reason) => json!({"type": "play_ended", "video": order.video, "reason": reason}),
        Err(e) => json!({"type": "play_ended", "video": order.video, "error": e.to_string()}),
    };
    let _ = to_page.send(text(stamped(ended, order.serial))).await;
}

async fn playback(
    access: &StreamAccess,
    token: &str,
    order: &PlayOrder,
    to_page: &mpsc::Sender<Message>,
    steering: &mut mpsc::Receiver<Steer>,
) -> Result<&'static str, crate::CliError> {
    let mut client = StreamClient::connect(&access.url, access.ca.as_deref(), token).await?;
    let request = PlayRequest {
        video: order.video.clone(),
        resolution: order.resolution as i32,
        start_seconds: order.start_seconds,
        pacing: Pacing::Realtime as i32,
        codec: Codec::H264 as i32,
        audio: if order.sound {
            AudioCodec::Opus as i32
        } else {
            AudioCodec::Unspecified as i32
        },
    };
    let mut playing = client.play(request).await?;
    let header = &playing.header;
    let sound = header.audio.as_ref().map(|a| {
        json!({
            "codec": "opus",
            "sample_rate": a.sample_rate,
            "channels": a.channels,
            "frame_samples": a.frame_samples,
            "bitrate": a.bitrate,
        })
    });
    let started = json!({
        "type": "play_started",
        "video": order.video,
        "playback_id": header.playback_id,
        "resolution": resolution_label(header.resolution),
        "width": header.width,
        "height": header.height,
        "fps": header.fps,
        "frame_count": header.frame_count,
        "duration_seconds": if header.fps > 0.0 { header.frame_count as f64 / header.fps } else { 0.0 },
        "adaptive": header.adaptive,
        "codec": codec_label(header.codec),
        "sound": sound,
    });
    if to_page
        .send(text(stamped(started, order.serial)))
        .await
        .is_err()
    {
        return Ok("the page went away");
    }
    let playback_id = header.playback_id.clone();
    let mut dropped = 0u64;
    loop {
        tokio::select! {
            // A stop (the steering closed) wins over frames waiting to go.
            biased;
            steer = steering.recv() => {
                let Some(steer) = steer else { return Ok("stopped") };
                let action = match steer {
                    Steer::Pause => control_request::Action::Pause(true),
                    Steer::Resume => control_request::Action::Resume(true),
                    Steer::Seek(seconds) => control_request::Action::SeekSeconds(seconds),
                    Steer::Switch(to) => control_request::Action::SwitchTo(to as i32),
                };
                if let Err(e) = client.control(&playback_id, action).await {
                    let note = json!({"type": "play_notice", "text": format!("not done: {e}")});
                    if to_page.send(text(stamped(note, order.serial))).await.is_err() {
                        return Ok("the page went away");
                    }
                }
            }
            message = playing.stream.message() => {
                let Some(message) = message.map_err(crate::CliError::stream)? else {
                    return Ok("the video ended");
                };
                let Some(out) = to_message(message, &mut dropped, order.serial) else { continue };
                if to_page.send(out).await.is_err() {
                    return Ok("the page went away");
                }
            }
        }
    }
}

/// What the page gets for one message of the playback (nothing for an empty one, nor for most
/// of a flood of bad frames: `dropped` counts them).
fn to_message(message: PlayResponse, dropped: &mut u64, serial: u64) -> Option<Message> {
    match message.kind? {
        play_response::Kind::Frame(frame) => {
            let picture = frame.picture.as_ref()?;
            if let Err(why) = check_size(picture, (frame.width, frame.height), DEFAULT_MAX_PIXELS) {
                *dropped += 1;
                let note = match *dropped {
                    n if n <= DROPS_NOTED => format!("frame {} dropped: {why}", frame.index),
                    n if n % DROP_NOTE_EVERY == 0 => format!("{n} frames dropped so far"),
                    _ => return None,
                };
                return Some(text(stamped(
                    json!({ "type": "play_notice", "text": note }),
                    serial,
                )));
            }
            let (codec, bytes) = match picture {
                Picture::Jpeg(b) => ("jpeg", b),
                Picture::H264(b) => ("h264", b),
            };
            let header = json!({
                "index": frame.index,
                "pts": frame.pts_seconds,
                "resolution": resolution_label(frame.resolution),
                "width": frame.width,
                "height": frame.height,
                "keyframe": frame.keyframe,
                "codec": codec,
                "skipped_total": frame.skipped_total,
            });
            Some(binary(FRAME, &stamped(header, serial), &[bytes]))
        }
        play_response::Kind::Audio(audio) => {
            let sizes: Vec<usize> = audio.packets.iter().map(|p| p.len()).collect();
            let header = json!({
                "first_packet": audio.first_packet,
                "pts": audio.pts_seconds,
                "sizes": sizes,
            });
            let parts: Vec<&[u8]> = audio.packets.iter().map(|p| p.as_ref()).collect();
            Some(binary(SOUND, &stamped(header, serial), &parts))
        }
        play_response::Kind::Notice(notice) => Some(text(stamped(
            match notice.kind? {
                notice::Kind::Switched(switched) => json!({
                    "type": "play_notice",
                    "switched_to": resolution_label(switched.to),
                    "text": format!(
                        "{} → {} ({})",
                        resolution_label(switched.from),
                        resolution_label(switched.to),
                        crate::text::sentence(&switched.reason)
                    ),
                }),
                notice::Kind::State(state) => json!({
                    "type": "play_notice",
                    "state": crate::text::sentence(&state),
                    "text": crate::text::sentence(&state),
                }),
            },
            serial,
        ))),
        play_response::Kind::Header(_) => None,
    }
}
