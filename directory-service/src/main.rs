//! directory-service binary: parses flags and runs the library. Subcommands for operators:
//! `release NAME` and `health`.

use clap::{Parser, Subcommand};
use directory_service::Config;
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
    /// first; with --nats it works on the cluster while the replicas run).
    Release {
        /// The name to free.
        name: String,
        #[arg(long, env = "SVS_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        #[command(flatten)]
        cluster: directory_service::ClusterOptions,
    },
    /// Create the token key that the replicas of a cluster share (3072-bit RSA, PEM, 0600);
    /// refuses to overwrite an existing file.
    NewTokenKey {
        /// Where to write it.
        path: PathBuf,
        /// Succeed without writing when the file exists (for a setup step run at every start).
        #[arg(long)]
        if_missing: bool,
    },
    /// Check a running service over grpc.health.v1 (exit 0 when SERVING); for container healthchecks.
    Health(svs_server::HealthArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::NewTokenKey { path, if_missing }) if if_missing && path.exists() => {
            println!("kept {}: it exists already", path.display());
            ExitCode::SUCCESS
        }
        Some(Command::NewTokenKey { path, .. }) => {
            match directory_service::new_token_key(&path).await {
                Ok(()) => {
                    println!(
                        "wrote {}: give every directory replica --token-key {}",
                        path.display(),
                        path.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}", svs_common::error::with_causes(&e));
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Release {
            name,
            data_dir,
            cluster,
        }) => {
            let released = match cluster.nats_url {
                Some(_) => directory_service::release_name_in_cluster(&cluster, &name).await,
                None => directory_service::release_name(&data_dir, &name).await,
            };
            match released {
                Ok(true) => println!("released {name}: any key may register it now"),
                Ok(false) => println!("{name} was not bound to any key"),
                Err(e) => {
                    eprintln!("error: {}", svs_common::error::with_causes(&e));
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Some(Command::Health(args)) => args.run("https://localhost:50051").await,
        None => {
            let config = cli.config;
            svs_server::run_main(config.listen, config.server.log_json, |listener| {
                directory_service::run(config, listener, svs_server::shutdown::signal())
            })
            .await
        }
    }
}
