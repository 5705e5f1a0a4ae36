//! Test harness: a real directory-service on 127.0.0.1:0 with generated TLS, and clients that
//! register through the real client code.
#![allow(dead_code)]

use clap::Parser;
use directory_service::{Config, server};
use std::path::{Path, PathBuf};
use std::time::Duration;
use svs_cli::home::Home;
use svs_cli::session::{ConnectOptions, Session};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    config: Config,
}

/// Directory config with defaults, a given data dir, and `extra` flags.
pub fn config(data_dir: &Path, extra: &[&str]) -> Config {
    let mut args = vec![
        "directory-service".to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Flags::parse_from(args).config
}

pub struct TestDirectory {
    pub url: String,
    pub ca: PathBuf,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), directory_service::Error>>,
}

impl TestDirectory {
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let config = config(data_dir, extra);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let url = format!("https://localhost:{port}");
        let ca = data_dir.join("tls/ca.pem");
        for _ in 0..200 {
            if ca.exists()
                && svs_common::client::health_check(&url, Some(&ca), "")
                    .await
                    .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        svs_common::client::health_check(&url, Some(&ca), "")
            .await
            .expect("directory became healthy");
        Self {
            url,
            ca,
            data_dir: data_dir.to_path_buf(),
            stop: Some(stop),
            task,
        }
    }

    pub fn options(&self, name: &str, home: &Path) -> ConnectOptions {
        ConnectOptions {
            directory: self.url.clone(),
            ca: Some(self.ca.clone()),
            name: name.to_string(),
            home: Home::new(home.to_path_buf()),
            key_bits: 2048,
        }
    }

    pub async fn register(&self, name: &str, home: &Path) -> Session {
        Session::register(&self.options(name, home))
            .await
            .unwrap_or_else(|e| panic!("{name} registers: {e}"))
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("directory stops within the drain bound")
            .unwrap()
            .unwrap();
    }
}
