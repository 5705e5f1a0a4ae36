//! A real nats-server with JetStream, run with the configuration compose deploys
//! (docker/nats.conf: one user, `svs-directory`, with a password made per test).

use crate::process::{free_port, log_file, wait_for_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// docker/nats.conf: the tests run exactly what compose deploys.
const NATS_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker/nats.conf");
/// The user docker/nats.conf defines.
pub const NATS_USER: &str = "svs-directory";

/// nats-server on a fixed port and store, so it can be stopped and run again.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    /// The replicas' password, in a 0600 file next to the store.
    password_file: PathBuf,
    /// Whether it ran before (then a restart keeps its port: the replicas know it).
    started_once: bool,
    /// `--tls --tlscert … --tlskey …` when NATS serves TLS.
    tls: Vec<String>,
}

impl NatsServer {
    /// Plain TCP, JetStream kept in `store`.
    pub async fn start(store: &Path) -> Self {
        Self::start_with(store, Vec::new()).await
    }

    /// With extra nats-server flags for TLS (`--tls --tlscert … --tlskey …`).
    pub async fn start_with(store: &Path, tls: Vec<String>) -> Self {
        let password_file = store.with_file_name("nats_password");
        // nats-server parses an environment variable as a config value: a password must start
        // with a letter ("8e12…" would be read as a number and refused), as compose's does.
        let password = format!(
            "svs{}",
            hex::encode(svs_common::identity::random::<24>().unwrap())
        );
        svs_common::identity::write_secret_file(&password_file, password.as_bytes()).unwrap();
        let mut nats = Self {
            child: None,
            port: free_port(),
            store: store.to_path_buf(),
            password_file,
            started_once: false,
            tls,
        };
        nats.run().await;
        nats
    }

    /// Starts nats-server on its port and waits until it takes connections. The first start may
    /// move to another port: a free port can be taken by another test between picking and
    /// binding, and nats-server then exits.
    pub async fn run(&mut self) {
        let first_start = self.child.is_none() && !self.started_once;
        for _ in 0..5 {
            if self.spawn_and_wait().await {
                self.started_once = true;
                return;
            }
            assert!(
                first_start,
                "nats-server did not start again on port {}",
                self.port
            );
            self.port = free_port();
        }
        panic!("nats-server did not start (see SVS_TEST_LOGS)");
    }

    /// Whether nats-server came up on its port (false when it exited: the port was taken).
    async fn spawn_and_wait(&mut self) -> bool {
        let password = std::fs::read_to_string(&self.password_file).unwrap();
        let mut child = Command::new("nats-server")
            .args(["-c", NATS_CONF])
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-sd", &self.store.display().to_string()])
            .args(&self.tls)
            .env("SVS_NATS_PASSWORD", password)
            .stdout(Stdio::null())
            .stderr(log_file(&format!("nats-{}", self.port)))
            .spawn()
            .expect("nats-server runs (scripts/install-deps.sh installs it)");
        if !wait_for_port(&mut child, self.port, Duration::from_secs(30)).await {
            return false;
        }
        self.child = Some(child);
        true
    }

    /// Kills it (its store stays for `run`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The URL a client connects to.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_empty() { "nats" } else { "tls" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The file holding the replicas' password.
    pub fn password_file(&self) -> &Path {
        &self.password_file
    }

    /// The flags a directory replica needs to sign in to this NATS.
    pub fn credentials(&self) -> [String; 4] {
        [
            "--nats-user".into(),
            NATS_USER.into(),
            "--nats-password-file".into(),
            self.password_file.display().to_string(),
        ]
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
