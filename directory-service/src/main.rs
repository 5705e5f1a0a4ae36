//! directory-service binary: parses flags and runs the library. Subcommands for operators:
//! `release NAME` and `health`.

use clap::{Parser, Subcommand};
use directory_service::{Config, server};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "directory-service",
    version,
    about = "svs directory: registration, who is online, and the end-to-end encrypted message relay",
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
    /// Free a name so that another key can register it, deleting its mailbox (stop the service
    /// first).
    Release {
        /// The name to free.
        name: String,
        #[arg(long, env = "SVS_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Check a running service over grpc.health.v1 (exit 0 when SERVING); for container healthchecks.
    Health(svs_common::client::HealthArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Release { name, data_dir }) => {
            match server::release_name(&data_dir, &name) {
                Ok(true) => println!("released {name}: any key may register it now"),
                Ok(false) => println!("{name} was not bound to any key"),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Some(Command::Health(args)) => args.run("https://localhost:50051").await,
        None => {
            let config = cli.config;
            svs_server::run_main(config.listen, config.server.log_json, |listener| {
                server::run(config, listener, svs_server::shutdown::signal())
            })
            .await
        }
    }
}
