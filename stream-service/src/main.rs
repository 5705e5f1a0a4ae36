//! stream-service binary: parses flags and runs the library. Subcommands: `make-demo`, `ingest`,
//! `health`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use stream_service::Progress;
use stream_service::{Config, media};

#[derive(Parser)]
#[command(
    name = "stream-service",
    version,
    about = "svs stream service: videos served at 240p, 720p and 1440p as paced H.264 (or JPEG) frames, with switching, AUTO, pause and seek",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Write two demo videos in all three renditions: a moving test pattern with the frame
    /// number and rendition drawn on it (`demo`), and a flight over a fractal with fine moving
    /// detail (`detail`), on which compression figures are honest. Each gets a sound track
    /// (`<name>.wav`): a 1 kHz beep at every whole second, when frame number k × fps shows.
    MakeDemo {
        #[arg(long, env = "SVS_VIDEOS", default_value = "./videos")]
        videos: PathBuf,
        #[arg(long, default_value = "demo")]
        name: String,
        /// Name of the fine-detail demo.
        #[arg(long, default_value = "detail")]
        detail_name: String,
        /// Write only the test pattern.
        #[arg(long)]
        no_detail: bool,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 30.0)]
        fps: f64,
    },
    /// Make the three renditions of one source file (same frame rate and frame count), and
    /// keep its sound (if it has a track svs reads) as `<name>.wav` beside them.
    Ingest {
        /// Any video file OpenCV can read.
        file: PathBuf,
        /// Name of the video in the library.
        #[arg(long)]
        name: String,
        #[arg(long, env = "SVS_VIDEOS", default_value = "./videos")]
        videos: PathBuf,
    },
    /// Check a running service over grpc.health.v1 (exit 0 when SERVING); for container healthchecks.
    Health(svs_server::HealthArgs),
}

fn finish(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::MakeDemo {
            videos,
            name,
            detail_name,
            no_detail,
            seconds,
            fps,
        }) => {
            let mut names = vec![name];
            if !no_detail {
                names.push(detail_name);
            }
            if let Some(bad) = names
                .iter()
                .find_map(|n| svs_common::names::validate(n).err())
            {
                return finish(Err(bad.to_string()));
            }
            let frames = 3 * names.len() as u64 * (seconds * fps).round().max(1.0) as u64;
            let mut progress = Progress::on_stderr("make-demo", frames);
            let mut made = media::make_demo(&videos, &names[0], seconds, fps, &mut progress);
            if let (Ok(()), Some(detail)) = (&made, names.get(1)) {
                made = media::make_detail_demo(&videos, detail, seconds, fps, &mut progress);
            }
            progress.finish();
            let written = names
                .iter()
                .map(|n| format!("{n}_240p.mp4, {n}_720p.mp4, {n}_1440p.mp4, {n}.wav"))
                .collect::<Vec<_>>()
                .join(", ");
            finish(
                made.map(|()| format!("wrote {written} to {}", videos.display()))
                    .map_err(|e| svs_common::error::with_causes(&e)),
            )
        }
        Some(Command::Ingest { file, name, videos }) => {
            if let Err(e) = svs_common::names::validate(&name) {
                return finish(Err(e.to_string()));
            }
            let frames = media::probe(&file).map_or(0, |p| p.frame_count);
            let mut progress = Progress::on_stderr("ingest", frames);
            let ingested = media::ingest(&file, &videos, &name, &mut progress);
            progress.finish();
            finish(
                ingested
                    .map(|n| {
                        format!(
                            "wrote three renditions of {n} frames as {name}_*.mp4 (and its sound, if any, as {name}.wav) in {}",
                            videos.display()
                        )
                    })
                    .map_err(|e| svs_common::error::with_causes(&e)),
            )
        }
        Some(Command::Health(args)) => args.run("https://localhost:50052").await,
        None => {
            let config = cli.config;
            svs_server::run_main(config.listen, config.server.log_json, |listener| {
                stream_service::run(config, listener, svs_server::shutdown::signal(), None)
            })
            .await
        }
    }
}
