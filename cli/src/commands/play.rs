//! `svs videos` and `svs play`, and the session token they present to stream-service.

use crate::commands::Global;
use crate::error::CliError;
use crate::player::{self, PlayOptions};
use crate::stream_client::{StreamClient, parse_codec, parse_resolution, resolution_label};
use clap::Args;
use svs_common::proto::stream::{Codec, Pacing, PlayRequest, Resolution};
use svs_common::time::now_ms;

/// A token for stream-service: the cached one while it has a minute left, else a fresh one.
/// The registration is ended at once (stream-service verifies tokens offline, so the token stays
/// valid there until it expires), which keeps playing from showing up as chat presence.
pub async fn stream_token(global: &Global) -> Result<String, CliError> {
    let name = global.name()?;
    let path = global.home().token_path(&name);
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_string();
        let expires = svs_common::token::unverified_claims(&token).map(|c| c.expires_at_ms);
        if expires.is_ok_and(|exp| exp > now_ms() + 60_000) {
            return Ok(token);
        }
    }
    let mut session = global.register().await?;
    let token = session.token.clone();
    let _ = session.quit().await;
    svs_common::identity::write_secret_file(&path, token.as_bytes())?;
    Ok(token)
}

async fn client(global: &Global) -> Result<StreamClient, CliError> {
    let token = stream_token(global).await?;
    StreamClient::connect(&global.stream, global.ca().as_deref(), &token).await
}

#[derive(Debug, Args)]
pub struct VideosArgs {
    /// One JSON array of videos with their renditions.
    #[arg(long)]
    pub json: bool,
}

pub async fn videos(global: &Global, args: VideosArgs) -> Result<(), CliError> {
    let videos = client(global).await?.list_videos().await?;
    if args.json {
        let rows: Vec<_> = videos
            .iter()
            .map(|v| {
                serde_json::json!({
                    "name": v.name,
                    "renditions": v.renditions.iter().map(|r| serde_json::json!({
                        "resolution": resolution_label(r.resolution),
                        "width": r.width, "height": r.height, "fps": r.fps,
                        "frames": r.frame_count, "seconds": r.duration_seconds,
                    })).collect::<Vec<_>>(),
                    "has_audio": v.has_audio,
                })
            })
            .collect();
        println!(
            "{}",
            crate::text::json_line(&serde_json::Value::Array(rows))
        );
        return Ok(());
    }
    if videos.is_empty() {
        println!("no videos (the service makes a demo with `stream-service make-demo`)");
    }
    for v in &videos {
        let duration = v.renditions.first().map_or(0.0, |r| r.duration_seconds);
        let fps = v.renditions.first().map_or(0.0, |r| r.fps);
        let renditions: Vec<_> = v
            .renditions
            .iter()
            .map(|r| resolution_label(r.resolution))
            .collect();
        println!(
            "{:<20} {:>7.1} s  {:>5.1} fps  {}{}",
            crate::text::sentence(&v.name),
            duration,
            fps,
            renditions.join(" "),
            if v.has_audio { "  sound" } else { "" }
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct PlayArgs {
    /// The video's name (see `svs videos`).
    pub video: String,
    /// 240p, 720p, 1440p or auto. Keys 1, 2, 3 and a switch while playing.
    #[arg(long, default_value = "auto", value_parser = parse_resolution)]
    pub resolution: Resolution,
    /// h264 (about a quarter of JPEG's bit rate; after a switch or seek the frames up to the
    /// next keyframe come as JPEG, so the change still shows at the next frame) or jpeg (every
    /// frame stands alone).
    #[arg(long, default_value = "h264", value_parser = parse_codec)]
    pub codec: Codec,
    /// Where to start: seconds (90), mm:ss (1:30) or hh:mm:ss (1:02:03).
    #[arg(long, default_value = "0", value_parser = crate::stream_client::parse_position)]
    pub start: f64,
    /// Decode and count frames without a window (automatic when there is no display).
    #[arg(long)]
    pub headless: bool,
    /// Also write what arrived to an MJPEG AVI file.
    #[arg(long, value_name = "FILE.avi")]
    pub record: Option<std::path::PathBuf>,
    /// As fast as possible instead of real time (downloads, benchmarks).
    #[arg(long)]
    pub fast: bool,
    /// Print a JSON summary as the last line.
    #[arg(long)]
    pub json: bool,
    /// Refuse (and do not decode) pictures of more pixels than this, or whose own header
    /// claims a size other than the stream announced: a decoder allocates what a picture claims,
    /// so a hostile stream service could otherwise make svs allocate gigabytes. The default is a
    /// little above 2560x1440, the largest rendition svs serves.
    #[arg(long, env = "SVS_MAX_PIXELS", default_value_t = crate::picture::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Where the sound goes: auto (the system's sound output; without one, none, quietly),
    /// none (do not even ask for it), or wav:FILE (write what would be heard to a WAV file, in
    /// real time, silence included). Pictures follow the sound: each frame shows when its sound
    /// is heard.
    #[arg(long, env = "SVS_AUDIO", default_value = "auto", value_parser = crate::player::parse_sound_choice)]
    pub audio: crate::player::SoundChoice,
    /// Seconds of decoded sound held at most (the service sends 0.3 s ahead; more than this is
    /// dropped, so no service can grow the player's memory with sound).
    #[arg(long, env = "SVS_AUDIO_BUFFER_MAX_SECS", default_value_t = crate::player::DEFAULT_MAX_BUFFERED_SECONDS, value_parser = audio_buffer_seconds)]
    pub audio_buffer_max_secs: f64,
}

fn audio_buffer_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.5..=60.0).contains(&s) => Ok(s),
        _ => Err("a number of seconds from 0.5 to 60".into()),
    }
}

pub async fn play(global: &Global, args: PlayArgs) -> Result<(), CliError> {
    let mut client = client(global).await?;
    let request = PlayRequest {
        video: args.video.clone(),
        resolution: args.resolution as i32,
        start_seconds: args.start,
        pacing: if args.fast {
            Pacing::AsFastAsPossible
        } else {
            Pacing::Realtime
        } as i32,
        codec: args.codec as i32,
        ..Default::default()
    };
    let options = PlayOptions {
        headless: args.headless,
        record: args.record.clone(),
        live_stats: !args.json,
        reports: None,
        max_pixels: Some(args.max_pixels),
        sound: args.audio.clone(),
        max_sound_buffer_seconds: Some(args.audio_buffer_max_secs),
    };
    if !args.headless && !player::has_display() && !args.json {
        eprintln!("no display (DISPLAY/WAYLAND_DISPLAY unset): playing headless");
    }
    let summary = player::play(&mut client, request, &options).await?;
    if args.json {
        println!("{}", crate::text::json_line(&summary));
    } else {
        println!(
            "{}: {} frames received ({}), {} decoded, {} skipped, last {} {}x{}, first frame after {:.0} ms, {:.1} fps, {:.0} kbit/s, stopped at {} of {}",
            summary.video,
            summary.codec,
            summary.frames_received,
            summary.frames_decoded,
            summary.frames_skipped,
            summary.rendition,
            summary.width,
            summary.height,
            summary.time_to_first_frame_ms,
            summary.mean_fps,
            summary.kbits_per_second,
            player::clock(summary.position_seconds),
            player::clock(summary.duration_seconds)
        );
    }
    if !args.json
        && let Some(sound) = &summary.sound
    {
        match &sound.note {
            Some(why) => println!("sound: none ({})", crate::text::sentence(why)),
            None => println!(
                "sound: {} to {}, {:.0} kbit/s, sound minus picture {:+.0} ms (median), {:.1} s of silence waiting for sound",
                sound.codec,
                sound.output,
                sound.kbits_per_second,
                sound.av_offset_p50_ms,
                sound.underrun_seconds
            ),
        }
    }
    if let Some(path) = &args.record {
        eprintln!("recorded to {}", path.display());
    }
    Ok(())
}
