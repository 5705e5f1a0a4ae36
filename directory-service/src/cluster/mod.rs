//! Cluster mode: several directory replicas sharing one NATS JetStream. This module owns the
//! connection and the JetStream objects; `kv_bindings` keeps name bindings in a key-value bucket,
//! `mail` keeps mailboxes in a stream, `presence` shares who is online on which replica, `groups`
//! is the MLS delivery service's store.
//!
//! What NATS holds (docs/protocol.md, Cluster mode, has the byte layout):
//! - `svs_names` (KV): canonical name → SPKI DER of the key that owns it.
//! - `svs_presence` (KV): each replica's heartbeat and the names online on it.
//! - `SVS_MAIL` (stream): sealed envelopes and receipts per recipient, until acknowledged or
//!   expired. The relay never has plaintext, so neither has NATS.
//! - `svs_mls` (KV) and the `SVS_MLS_LOG`, `SVS_MLS_WELCOME`, `SVS_MLS_KP` streams: devices,
//!   group logs (MLS messages, ciphertext to NATS as to the directory), Welcomes, key packages.

pub(crate) mod activity;
pub(crate) mod groups;
pub(crate) mod kv_bindings;
pub(crate) mod mail;
pub(crate) mod presence;

use crate::Error;
use crate::error::Refusal;
use async_nats::jetstream;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// How a directory joins a cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterOptions {
    /// NATS server with JetStream (several separated by commas), e.g. nats://nats:4222. Makes
    /// this directory one replica of a cluster: names, presence and mailboxes live in NATS and
    /// every replica serves every client. Without it everything stays in this process's own
    /// database.
    #[arg(long = "nats", env = "SVS_NATS_URL")]
    pub nats_url: Option<String>,
    /// NATS credentials file (.creds) when the server requires one.
    #[arg(long, env = "SVS_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// NATS user name, when the server requires a user and password (docker/nats.conf's user is
    /// `svs-directory`); the password is read from --nats-password-file.
    #[arg(long, env = "SVS_NATS_USER", requires = "nats_password_file")]
    pub nats_user: Option<String>,
    /// File holding the NATS user's password (one line; keep it 0600). Read at start, never
    /// logged.
    #[arg(long, env = "SVS_NATS_PASSWORD_FILE", requires = "nats_user")]
    pub nats_password_file: Option<PathBuf>,
    /// CA certificate (PEM) that signs the NATS server's certificate: turns TLS to NATS on.
    #[arg(long, env = "SVS_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// Seconds without a heartbeat after which another replica counts as gone and its names are
    /// announced `left`. Heartbeats go every fifth of this.
    #[arg(long, env = "SVS_REPLICA_TIMEOUT_SECS", default_value_t = 10)]
    pub replica_timeout_secs: u64,
    /// Seconds to keep trying to reach NATS at start before giving up.
    #[arg(long, env = "SVS_NATS_CONNECT_SECS", default_value_t = 30)]
    pub nats_connect_secs: u64,
}

/// Key-value bucket of name bindings.
pub(crate) const NAMES_BUCKET: &str = "svs_names";
/// Key-value bucket of presence.
pub(crate) const PRESENCE_BUCKET: &str = "svs_presence";
/// Stream of mailboxes.
pub(crate) const MAIL_STREAM: &str = "SVS_MAIL";

/// A connection to the cluster's NATS, shared by the parts that use it.
#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    /// This replica's id: random per start, so a restarted replica never inherits a dead one's
    /// presence.
    pub replica: String,
    pub replica_timeout: Duration,
}

impl Cluster {
    /// Connects (retrying for `--nats-connect-secs`); the client reconnects by itself afterwards.
    pub(crate) async fn connect(options: &ClusterOptions) -> Result<Self, Error> {
        let url = options
            .nats_url
            .as_deref()
            .ok_or_else(|| Refusal::InvalidArgument("cluster mode needs --nats".into()))?;
        let replica = hex::encode(svs_common::identity::random::<6>()?);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(options.nats_connect_secs);
        let mut wait = Duration::from_millis(200);
        let client = loop {
            match connect_options(options, &replica).await?.connect(url).await {
                Ok(client) => break client,
                // Wrong or missing credentials do not get better by waiting.
                Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation => {
                    return Err(Refusal::InvalidArgument(format!(
                        "NATS at {url} refused this replica's credentials ({e}): check --nats-user and --nats-password-file (or --nats-creds)"
                    )).into());
                }
                Err(e) if tokio::time::Instant::now() + wait < deadline => {
                    tracing::warn!(error = %e, url, "NATS not reachable yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(3));
                }
                Err(e) => {
                    return Err(Refusal::Unavailable(format!(
                        "cannot reach NATS at {url} within {} s: {e}",
                        options.nats_connect_secs
                    ))
                    .into());
                }
            }
        };
        tracing::info!(url, %replica, "connected to NATS: running as a cluster replica");
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(Duration::from_secs(5));
        Ok(Self {
            client,
            jetstream,
            replica,
            replica_timeout: Duration::from_secs(options.replica_timeout_secs.max(2)),
        })
    }

    /// Whether NATS answers now (health reports NOT_SERVING while it does not).
    pub(crate) fn is_up(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// UNAVAILABLE while NATS is away.
    pub(crate) fn check_up(&self) -> Result<(), Error> {
        match self.is_up() {
            true => Ok(()),
            false => Err(Refusal::Unavailable(
                "the directory cannot reach its NATS cluster right now; nothing was stored, try again shortly".into(),
            ).into()),
        }
    }

    /// A key-value bucket (history 1, on disk), created if it does not exist yet: replicas
    /// starting together create it with the same config, which JetStream accepts.
    ///
    /// The bucket's stream is made here with the layout async-nats itself uses (`KV_<bucket>` on
    /// `$KV.<bucket>.>`), because its `create_key_value` first reads account fields that Debian's
    /// nats-server 2.9 does not send.
    pub(crate) async fn bucket(
        &self,
        bucket: &str,
        description: &str,
        max_age: Duration,
        max_value_bytes: i32,
    ) -> Result<jetstream::kv::Store, Error> {
        if let Ok(store) = self.jetstream.get_key_value(bucket).await {
            return Ok(store);
        }
        let config = jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.to_string()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age,
            max_message_size: max_value_bytes,
            storage: jetstream::stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        };
        self.jetstream
            .create_stream(config)
            .await
            .map_err(|e| nats(&format!("creating the {bucket} bucket"), e))?;
        self.jetstream
            .get_key_value(bucket)
            .await
            .map_err(|e| nats(&format!("opening the {bucket} bucket"), e))
    }
}

async fn connect_options(
    options: &ClusterOptions,
    replica: &str,
) -> Result<async_nats::ConnectOptions, Error> {
    let mut connect = async_nats::ConnectOptions::new()
        .name(format!("directory-service {replica}"))
        .connection_timeout(Duration::from_secs(3))
        .request_timeout(Some(Duration::from_secs(5)))
        .ping_interval(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => tracing::warn!("lost NATS; reconnecting"),
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                other => tracing::debug!(event = %other, "NATS"),
            }
        });
    if let Some(creds) = &options.nats_creds {
        connect = connect.credentials_file(creds).await.map_err(|e| {
            Refusal::InvalidArgument(format!("cannot read {}: {e}", creds.display()))
        })?;
    }
    if let (Some(user), Some(file)) = (&options.nats_user, &options.nats_password_file) {
        let password = tokio::fs::read_to_string(file).await.map_err(|e| {
            Refusal::InvalidArgument(format!("cannot read {}: {e}", file.display()))
        })?;
        let password = password.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err(Refusal::InvalidArgument(format!(
                "{} is empty: it should hold the NATS password",
                file.display()
            ))
            .into());
        }
        connect = connect.user_and_password(user.clone(), password.to_string());
    }
    if let Some(ca) = &options.nats_ca {
        connect = connect.add_root_certificates(ca.clone()).require_tls(true);
    }
    Ok(connect)
}

/// An error from NATS, as UNAVAILABLE: the caller may retry once NATS is back.
pub(crate) fn nats(what: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Nats {
        what: what.to_string(),
        source: e.into(),
    }
}

/// A canonical name as one subject token or key part (names may hold '.', which NATS splits on).
pub(crate) fn name_token(canonical: &str) -> String {
    hex::encode(canonical.as_bytes())
}

/// The canonical name back from `name_token`.
pub(crate) fn name_from_token(token: &str) -> Option<String> {
    String::from_utf8(hex::decode(token).ok()?).ok()
}

/// A NATS timestamp as milliseconds since the epoch.
pub(crate) fn unix_ms(time: &time::OffsetDateTime) -> u64 {
    u64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Runs one NATS round trip and counts it: `svs_directory_nats_seconds{op}` (a summary of the
/// time it took) and `svs_directory_nats_errors_total{op}`.
pub(crate) async fn timed<T, E>(
    op: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = std::time::Instant::now();
    let result = call.await;
    metrics::histogram!("svs_directory_nats_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!("svs_directory_nats_errors_total", "op" => op).increment(1);
    }
    result
}
