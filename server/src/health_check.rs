//! The `health` subcommand both services have: a grpc.health.v1 check over TLS, for container
//! healthchecks.

use svs_common::client::health_check;

/// `health [--url URL] [--ca FILE]`: exit status 0 when the service answers SERVING.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Service URL [default: the service's own port on localhost].
    #[arg(long)]
    pub url: Option<String>,
    /// CA certificate that signed the service's certificate.
    #[arg(long, env = "SVS_CA", default_value = "./data/tls/ca.pem")]
    pub ca: std::path::PathBuf,
}

impl HealthArgs {
    /// Runs the check and reports on stdout/stderr.
    pub async fn run(&self, default_url: &str) -> std::process::ExitCode {
        let url = self.url.as_deref().unwrap_or(default_url);
        let ca = self.ca.exists().then_some(self.ca.as_path());
        match health_check(url, ca, "").await {
            Ok(()) => {
                println!("SERVING");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    }
}
