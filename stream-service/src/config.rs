//! Configuration: flags with environment fallbacks, every limit named with its default.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// How the stream service runs.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SVS_STREAM_LISTEN", default_value = "0.0.0.0:50052")]
    pub listen: SocketAddr,
    /// The video library: <name>_240p.mp4, <name>_720p.mp4, <name>_1440p.mp4.
    #[arg(long, env = "SVS_VIDEOS", default_value = "./videos")]
    pub videos: PathBuf,
    /// Where encoded frames are cached [default: <data-dir>/cache].
    #[arg(long, env = "SVS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The directory's public token key [default: <data-dir>/token_public.pem].
    #[arg(long, env = "SVS_TOKEN_PUBLIC_KEY")]
    pub token_public_key: Option<PathBuf>,
    /// Data dir (shared with directory-service: TLS material and the public token key), TLS,
    /// connections, logs.
    #[command(flatten)]
    pub server: svs_server::ServerOptions,
    #[command(flatten)]
    /// Every limit, each with its flag.
    pub limits: Limits,
}

impl Config {
    /// Where the segment cache lives.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("cache"))
    }

    /// The directory's token public key (given, or in the shared data dir).
    pub fn token_public_key(&self) -> PathBuf {
        self.token_public_key
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("token_public.pem"))
    }
}

fn segment_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.2..=30.0).contains(&s) => Ok(s),
        _ => Err("a number of seconds from 0.2 to 30".into()),
    }
}

impl Limits {
    /// Encoder threads: as set, or one per core.
    pub fn encoders(&self) -> usize {
        self.encoders.map(usize::from).unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
        })
    }
}

/// Limits and tunables.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// JPEG quality of encoded frames (1-100).
    #[arg(long, env = "SVS_JPEG_QUALITY", default_value_t = 80, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub jpeg_quality: i32,
    /// H.264 quantiser (0-51; lower is sharper and bigger). 27 keeps the PSNR within 2 dB of
    /// JPEG quality 80 on fine moving detail at under a third of its bit rate (README, measured
    /// figures).
    #[arg(long, env = "SVS_H264_QP", default_value_t = 27, value_parser = clap::value_parser!(u8).range(0..=51))]
    pub h264_qp: u8,
    /// H.264 quantiser for flat groups of pictures (a keyframe under 0.15 bits per pixel at
    /// --h264-qp: test patterns, slides, cartoons), where a finer one costs little.
    #[arg(long, env = "SVS_H264_FLAT_QP", default_value_t = 24, value_parser = clap::value_parser!(u8).range(0..=51))]
    pub h264_flat_qp: u8,
    /// Frame cache size cap in bytes; least recently used segments are evicted beyond it.
    #[arg(long, env = "SVS_CACHE_MAX_BYTES", default_value_t = 20 * 1024 * 1024 * 1024)]
    pub cache_max_bytes: u64,
    /// Seconds of video in one cache segment (the unit encoded, kept and evicted).
    #[arg(long, env = "SVS_SEGMENT_SECONDS", default_value_t = 2.0, value_parser = segment_seconds)]
    pub segment_seconds: f64,
    /// Encoder threads (a viewer waiting for a frame goes first, then read-ahead, then
    /// warming) [default: the number of cores].
    #[arg(long, env = "SVS_ENCODERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub encoders: Option<u16>,
    /// Segments encoded ahead of each playing viewer.
    #[arg(long, env = "SVS_READ_AHEAD_SEGMENTS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=30))]
    pub read_ahead_segments: u64,
    /// Segments at the start of every rendition encoded when the library changes, before anyone
    /// asks, so most starts are warm (0: off).
    #[arg(long, env = "SVS_PREWARM_SEGMENTS", default_value_t = 1)]
    pub prewarm_segments: u64,
    /// Playbacks open at once, in total.
    #[arg(long, env = "SVS_MAX_STREAMS", default_value_t = 1000)]
    pub max_streams: usize,
    /// Playbacks open at once per session.
    #[arg(long, env = "SVS_MAX_STREAMS_PER_SESSION", default_value_t = 8)]
    pub max_streams_per_session: usize,
    /// Largest message sent (a 1440p JPEG frame is typically 0.2-1 MB).
    #[arg(long, env = "SVS_MAX_FRAME_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_frame_bytes: usize,
    /// Opus bit rate of the sound, in bits per second (6,000-510,000; 96,000 is transparent
    /// stereo for most film sound).
    #[arg(long, env = "SVS_AUDIO_BITRATE", default_value_t = crate::audio::DEFAULT_BITRATE, value_parser = clap::value_parser!(u32).range(6_000..=510_000))]
    pub audio_bitrate: u32,
    /// Bytes of encoded sound kept in memory (ten seconds are about 120 KB at 96 kbit/s; a
    /// chunk no one holds is made again in about 10 ms when needed).
    #[arg(long, env = "SVS_SOUND_CACHE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub sound_cache_max_bytes: u64,
    /// Seconds between rescans of the videos directory.
    #[arg(long, env = "SVS_RESCAN_SECS", default_value_t = 2)]
    pub rescan_secs: u64,
    /// Seconds to wait at start for directory-service to write its public token key.
    #[arg(long, env = "SVS_TOKEN_KEY_WAIT_SECS", default_value_t = 30)]
    pub token_key_wait_secs: u64,
}
