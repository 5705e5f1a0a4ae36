//! The `svs` commands and the options they share.

pub mod chat;
pub mod devices;
pub mod display;
pub mod listen;
pub mod peers;
pub mod play;
pub mod room;
pub mod send;
pub mod web;

use crate::error::CliError;
use crate::home::Home;
use crate::session::{ConnectOptions, Session};
use clap::Args;
use std::path::PathBuf;

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Directory service URL, or several replicas' URLs separated by commas (tried in order;
    /// a lost connection fails over to the next).
    #[arg(
        long,
        env = "SVS_DIRECTORY",
        default_value = "https://localhost:50051",
        global = true
    )]
    pub directory: String,
    /// Stream service URL, or several replicas' separated by commas (a playback whose replica
    /// is lost resumes on the next at the frame it reached).
    #[arg(
        long,
        env = "SVS_STREAM",
        default_value = "https://localhost:50052",
        global = true
    )]
    pub stream: String,
    /// CA certificate that signed the services' certificates [default: ./data/tls/ca.pem when present].
    #[arg(long, env = "SVS_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Your name: 1-32 characters of A-Z a-z 0-9 . _ -
    #[arg(long, env = "SVS_NAME", global = true)]
    pub name: Option<String>,
    /// Where keys and pinned peers live [default: ~/.config/svs].
    #[arg(long, env = "SVS_HOME", global = true)]
    pub home: Option<PathBuf>,
    /// Size of a newly generated identity key in bits (2048 to 4096).
    #[arg(long, env = "SVS_KEY_BITS", default_value_t = svs_common::identity::DEFAULT_KEY_BITS, global = true)]
    pub key_bits: usize,
    /// How often `chat` and `listen --rooms` read your rooms when the directory has not said
    /// anything changed (it says so at once when something does), in seconds.
    #[arg(long, env = "SVS_ROOMS_POLL_SECS", default_value_t = crate::rooms::DEFAULT_ROOMS_POLL_SECS, global = true)]
    pub rooms_poll_secs: u64,
}

impl Global {
    pub fn home(&self) -> Home {
        Home::new(self.home.clone().unwrap_or_else(Home::default_root))
    }

    pub fn ca(&self) -> Option<PathBuf> {
        self.ca.clone().or_else(|| {
            let local = PathBuf::from("data/tls/ca.pem");
            local.exists().then_some(local)
        })
    }

    pub fn name(&self) -> Result<String, CliError> {
        self.name
            .clone()
            .ok_or_else(|| CliError::Usage("say who you are with --name NAME (or SVS_NAME)".into()))
    }

    pub fn connect_options(&self) -> Result<ConnectOptions, CliError> {
        Ok(ConnectOptions {
            directory: self.directory.clone(),
            ca: self.ca(),
            name: self.name()?,
            home: self.home(),
            key_bits: self.key_bits,
        })
    }

    /// A feed of this name's rooms, woken by the group activity hints `inbox` receives.
    pub fn room_feed(
        &self,
        inbox: &crate::inbox::Inbox,
    ) -> Result<crate::rooms::RoomFeed, CliError> {
        Ok(crate::rooms::RoomFeed::start(
            self.connect_options()?,
            std::time::Duration::from_secs(self.rooms_poll_secs.max(1)),
            Some(inbox.room_activity()),
        ))
    }

    /// Registers, telling the user on stderr when a new key was made.
    pub async fn register(&self) -> Result<Session, CliError> {
        let options = self.connect_options()?;
        let session = Session::register(&options).await?;
        self.note_new_key(&options, &session);
        Ok(session)
    }

    /// Registers and subscribes again after a lost connection, telling the user on stderr
    /// (`reconnecting…`, then `back online`) and retrying with backoff until it works.
    pub async fn reconnect(&self) -> Result<crate::reconnect::Connected, CliError> {
        let options = self.connect_options()?;
        let connected = crate::reconnect::connect(&options, |e, delay| {
            eprintln!(
                "* reconnecting… next try in {:.1} s ({e})",
                delay.as_secs_f64()
            )
        })
        .await?;
        eprintln!("* back online");
        Ok(connected)
    }

    /// After a lost connection: says so, then registers and subscribes again (retrying) unless
    /// `interrupted` (Ctrl-C) completes first, which gives `None`.
    pub async fn recover(
        &self,
        lost: &CliError,
        interrupted: impl std::future::Future,
    ) -> Result<Option<crate::reconnect::Connected>, CliError> {
        eprintln!("* connection lost ({lost})");
        tokio::select! {
            connected = self.reconnect() => connected.map(Some),
            _ = interrupted => Ok(None),
        }
    }

    fn note_new_key(&self, options: &ConnectOptions, session: &Session) {
        if session.key_was_generated {
            eprintln!(
                "generated a new {}-bit identity key for {} in {} (fingerprint {})",
                options.key_bits,
                session.name,
                options.home.key_path(&session.name).display(),
                svs_common::identity::fingerprint_display(&session.fingerprint)
            );
        }
    }
}
