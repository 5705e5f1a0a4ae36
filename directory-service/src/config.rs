//! Configuration: flags with environment fallbacks, every limit named with its default.

use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;

/// How the directory service runs.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SVS_DIRECTORY_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Data dir (TLS material, the token key, the name database), TLS, connections, logs.
    #[command(flatten)]
    pub server: svs_server::ServerOptions,
    /// The key session tokens are signed with (PEM, 0600). Default: `directory/token_key.pem`
    /// under the data dir, created on first start. Replicas of a cluster must share one: make it
    /// once with `directory-service new-token-key PATH` and give each the same file.
    #[arg(long, env = "SVS_TOKEN_KEY")]
    pub token_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    /// Cluster mode: the NATS to share names, presence and mailboxes through.
    pub cluster: crate::cluster::ClusterOptions,
    #[command(flatten)]
    /// Every limit, each with its flag.
    pub limits: Limits,
}

/// Limits against abuse and overload. Each has a flag and an environment variable.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Largest message plaintext in bytes.
    #[arg(long, env = "SVS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,
    /// Most recipients of one message.
    #[arg(long, env = "SVS_MAX_RECIPIENTS", default_value_t = 256)]
    pub max_recipients: usize,
    /// Largest gRPC request in bytes (an envelope to the most recipients with 4096-bit keys fits).
    #[arg(long, env = "SVS_MAX_REQUEST_BYTES", default_value_t = 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Messages waiting in one subscriber's memory queue; past this, it reads the rest from its
    /// mailbox on disk as it catches up (nothing is dropped).
    #[arg(long, env = "SVS_QUEUE_MESSAGES", default_value_t = 256)]
    pub queue_messages: usize,
    /// Bytes waiting in one subscriber's memory queue (as for --queue-messages).
    #[arg(long, env = "SVS_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub queue_bytes: usize,
    /// How long an unread message (or a receipt for an offline sender) is kept in a mailbox,
    /// e.g. 30d, 12h, 90s. The sender is told when one expires unread.
    #[arg(long, env = "SVS_MAILBOX_TTL", default_value = "30d", value_parser = humantime::parse_duration)]
    pub mailbox_ttl: Duration,
    /// Unread messages one name's mailbox may hold; senders are told when it is full.
    #[arg(long, env = "SVS_MAILBOX_MAX_MESSAGES", default_value_t = 10_000)]
    pub mailbox_max_messages: u64,
    /// Bytes of unread messages one name's mailbox may hold.
    #[arg(long, env = "SVS_MAILBOX_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub mailbox_max_bytes: u64,
    /// Unread messages from one sender that one name's mailbox may hold, so one sender cannot
    /// fill a mailbox and shut out everyone else.
    #[arg(
        long,
        env = "SVS_MAILBOX_MAX_MESSAGES_PER_SENDER",
        default_value_t = 1_000
    )]
    pub mailbox_max_messages_per_sender: u64,
    /// Bytes of unread messages from one sender that one name's mailbox may hold.
    #[arg(long, env = "SVS_MAILBOX_MAX_BYTES_PER_SENDER", default_value_t = 8 * 1024 * 1024)]
    pub mailbox_max_bytes_per_sender: u64,
    /// Devices one name may publish for MLS groups.
    #[arg(long, env = "SVS_MAX_DEVICES_PER_NAME", default_value_t = 8)]
    pub max_devices_per_name: usize,
    /// One-time MLS key packages the directory holds per device.
    #[arg(long, env = "SVS_MAX_KEY_PACKAGES_PER_DEVICE", default_value_t = 100)]
    pub max_key_packages_per_device: usize,
    /// Longest MLS commit, Welcome or application message, in bytes.
    #[arg(long, env = "SVS_MAX_GROUP_MESSAGE_BYTES", default_value_t = 256 * 1024)]
    pub max_group_message_bytes: usize,
    /// Entries one group's log may hold (entries leave it after --mailbox-ttl).
    #[arg(long, env = "SVS_MAX_GROUP_LOG_ENTRIES", default_value_t = 10_000)]
    pub max_group_log_entries: u64,
    /// Welcome messages waiting for one device.
    #[arg(long, env = "SVS_MAX_WELCOMES_PER_DEVICE", default_value_t = 64)]
    pub max_welcomes_per_device: usize,
    /// Bytes of unread messages all mailboxes together may hold (each recipient's copy counted).
    #[arg(long, env = "SVS_MAIL_MAX_TOTAL_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub mail_max_total_bytes: u64,
    /// Mail is refused (MAILBOX_FULL, saying why) while the data dir's disk has less than this
    /// many MiB free, so registrations and acknowledgements still find room; 0 turns it off.
    #[arg(long, env = "SVS_MIN_FREE_DISK_MB", default_value_t = 256)]
    pub min_free_disk_mb: u64,
    /// Names not registered before that one address (an IPv4 address, an IPv6 /64) may claim
    /// per hour (at most this many at once, then one per 3600/N seconds); names already bound
    /// register without limit. Names cost nothing to make and each holds a mailbox. 0 closes
    /// registration: only names bound before may register.
    #[arg(
        long,
        env = "SVS_MAX_NEW_NAMES_PER_ADDRESS_PER_HOUR",
        default_value_t = 30
    )]
    pub max_new_names_per_address_per_hour: u32,
    /// Sessions one name may hold at once (terminals, scripts, machines sharing the key).
    #[arg(long, env = "SVS_MAX_SESSIONS_PER_NAME", default_value_t = 8)]
    pub max_sessions_per_name: usize,
    /// Presence events and receipts waiting in one subscriber's queue before it is disconnected
    /// as too slow (they are small and are never dropped silently).
    #[arg(long, env = "SVS_QUEUE_EVENTS", default_value_t = 16 * 1024)]
    pub queue_events: usize,
    /// Joins and leaves closer together than this many milliseconds reach each subscriber in
    /// batches (one write instead of one each); 0 sends each at once.
    #[arg(long, env = "SVS_PRESENCE_BATCH_MS", default_value_t = 25)]
    pub presence_batch_ms: u64,
    /// Messages per second one session may send (sustained).
    #[arg(long, env = "SVS_SEND_RATE", default_value_t = 50.0)]
    pub send_rate: f64,
    /// Messages one session may send in a burst.
    #[arg(long, env = "SVS_SEND_BURST", default_value_t = 200.0)]
    pub send_burst: f64,
    /// Messages per second one name may send across all its sessions (so sessions do not
    /// multiply the rate; the budget outlives the sessions while it refills).
    #[arg(long, env = "SVS_SEND_RATE_PER_NAME", default_value_t = 50.0)]
    pub send_rate_per_name: f64,
    /// Messages one name may send in a burst across all its sessions.
    #[arg(long, env = "SVS_SEND_BURST_PER_NAME", default_value_t = 200.0)]
    pub send_burst_per_name: f64,
    /// Used registration challenges remembered at once to refuse their reuse (only successful
    /// registrations enter; each is forgotten when its challenge expires).
    #[arg(long, env = "SVS_MAX_USED_CHALLENGES", default_value_t = 100_000)]
    pub max_used_challenges: usize,
    /// Registrations waiting for or doing their RSA work at once; more are refused with
    /// RESOURCE_EXHAUSTED until one finishes.
    #[arg(long, env = "SVS_MAX_PENDING_REGISTRATIONS", default_value_t = 64)]
    pub max_pending_registrations: usize,
    /// Threads doing RSA work (registration and token signing) at once; the rest of
    /// the cores stay free for the streams. The default is one fewer than the cores, at least 1.
    #[arg(long, env = "SVS_CRYPTO_THREADS", default_value_t = default_crypto_threads())]
    pub crypto_threads: usize,
    /// Seconds a registration challenge stays valid.
    #[arg(long, env = "SVS_CHALLENGE_SECS", default_value_t = 30)]
    pub challenge_secs: u64,
    /// Hours a session token stays valid.
    #[arg(long, env = "SVS_TOKEN_HOURS", default_value_t = 12)]
    pub token_hours: u64,
    /// Seconds a session without a subscription stays online without any call.
    #[arg(long, env = "SVS_IDLE_SESSION_SECS", default_value_t = 60)]
    pub idle_session_secs: u64,
    /// Largest accepted difference between a message timestamp and the service clock, in seconds.
    #[arg(long, env = "SVS_MAX_CLOCK_SKEW_SECS", default_value_t = 300)]
    pub max_clock_skew_secs: u64,
}

/// One thread fewer than the machine has cores, at least one.
fn default_crypto_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}
