//! The `svs` binary: parses the command line and runs a command from the library.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use svs_cli::commands::{Global, chat, devices, listen, peers, play, room, send, web};

#[derive(Parser)]
#[command(
    name = "svs",
    version,
    about = "svs: end-to-end encrypted chat and video streaming over gRPC",
    long_about = "svs: end-to-end encrypted chat and video streaming over gRPC.\n\n\
        Messages are sealed on your machine for each recipient's key (RSA-OAEP + AES-256-GCM) and \
        signed with yours (RSA-PSS); the directory only relays ciphertext. Your key is created on \
        first use under --home and each peer's key is pinned the first time you see it."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Interactive chat: full screen on a terminal (conversations, people, status; /help inside),
    /// line by line with --plain or when piped.
    Chat(chat::ChatArgs),
    /// List who is online with key fingerprints.
    Who(peers::WhoArgs),
    /// Send one message; exits non-zero naming every recipient it did not reach.
    Send(send::SendArgs),
    /// Print received messages, one per line.
    Listen(listen::ListenArgs),
    /// Show your key's fingerprint, or a peer's with the safety number you compare (also
    /// `svs verify NAME [--qr]`).
    #[command(visible_alias = "verify")]
    Fingerprint(peers::FingerprintArgs),
    /// Trust a peer's current key (after a key change you verified).
    Trust(peers::TrustArgs),
    /// Register and print a session token (for grpcurl and other tools).
    Token,
    /// Your devices (each its own MLS member); remove a lost one from the directory and your rooms.
    Devices(devices::DevicesArgs),
    /// Rooms on MLS: create, list, send, read, add, remove (forward secrecy, a key per device).
    Room(room::RoomArgs),
    /// List the videos and their renditions.
    Videos(play::VideosArgs),
    /// Play a video in a window (keys: 1 2 3 a to switch, space pause, arrows seek, q quit).
    Play(play::PlayArgs),
    /// The chat in your browser: serves a page on 127.0.0.1 and prints its address (with a
    /// secret); keys and crypto stay in this program.
    Web(web::WebArgs),
}

/// The main thread serves video windows (Qt wants them all on the thread it exits on); the
/// command runs on a runtime thread beside it.
fn main() -> ExitCode {
    let cli = Cli::parse();
    svs_cli::window::serve(move || {
        match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(run(cli)),
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn run(cli: Cli) -> ExitCode {
    let global = &cli.global;
    let result = match cli.command {
        Command::Chat(args) => chat::run(global, args).await,
        Command::Who(args) => peers::who(global, args).await,
        Command::Send(args) => send::run(global, args).await,
        Command::Listen(args) => listen::run(global, args).await,
        Command::Fingerprint(args) => peers::fingerprint(global, args),
        Command::Trust(args) => peers::trust(global, args).await,
        Command::Token => peers::token(global).await,
        Command::Room(args) => room::run(global, args).await,
        Command::Devices(args) => devices::run(global, args).await,
        Command::Videos(args) => play::videos(global, args).await,
        Command::Play(args) => play::play(global, args).await,
        Command::Web(args) => web::run(global, args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
