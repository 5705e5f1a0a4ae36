//! The directory assembled: registration, the registry of live sessions, the relay and the
//! mailboxes, over the embedded database or a cluster's NATS, and the periodic upkeep they share.

use crate::Error;
use crate::bindings::{NameStore, RedbBindings};
use crate::challenges::Challenges;
use crate::cluster::Cluster;
use crate::cluster::activity::Activity;
use crate::cluster::groups::JetStreamGroups;
use crate::cluster::kv_bindings::KvBindings;
use crate::cluster::mail::JetStreamMailboxes;
use crate::cluster::presence::Presence;
use crate::config::Limits;
use crate::db::Db;
use crate::groups::{GroupLimits, GroupStore, RedbGroups};
use crate::mailbox::{Mailboxes, Quotas, RedbMailboxes};
use crate::registration::Registrar;
use crate::registry::{Registry, SessionLimits};
use crate::relay::{Relay, RelayLimits};
use crate::subscriber::QueueLimits;
use std::sync::Arc;
use std::time::Duration;
use svs_common::token::TokenIssuer;

/// Registration, presence and relay.
pub(crate) struct Directory {
    pub registrar: Registrar,
    pub registry: Arc<Registry>,
    pub relay: Relay,
    mail: Arc<dyn Mailboxes>,
    /// The embedded database (not in cluster mode).
    db: Option<Arc<Db>>,
    /// This replica's part in cluster presence.
    presence: Option<Presence>,
    /// The MLS delivery service's store.
    pub groups: Arc<dyn GroupStore>,
    /// In cluster mode, group activity hints through NATS (embedded: straight to the registry).
    activity: Option<Activity>,
    /// How long group log entries and Welcomes are kept.
    groups_ttl: Duration,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

/// Opens (or creates) the directory's database with every table it needs.
pub(crate) fn open_db(path: &std::path::Path) -> Result<Arc<Db>, Error> {
    Ok(Arc::new(Db::open(path, |db| {
        crate::bindings::create_tables(db)?;
        crate::mailbox::redb_store::create_tables(db)?;
        crate::groups::create_tables(db)
    })?))
}

fn group_limits(limits: &Limits) -> GroupLimits {
    GroupLimits {
        max_devices_per_name: limits.max_devices_per_name,
        max_key_packages_per_device: limits.max_key_packages_per_device,
        max_log_entries_per_group: limits.max_group_log_entries,
        max_welcomes_per_device: limits.max_welcomes_per_device,
        max_fetch_bytes: limits.max_group_message_bytes.max(1 << 20),
        ttl_ms: limits.mailbox_ttl.as_millis() as u64,
    }
}

fn quotas(limits: &Limits) -> Quotas {
    Quotas {
        ttl_ms: limits.mailbox_ttl.as_millis() as u64,
        max_messages: limits.mailbox_max_messages,
        max_bytes: limits.mailbox_max_bytes,
        max_messages_per_sender: limits.mailbox_max_messages_per_sender,
        max_bytes_per_sender: limits.mailbox_max_bytes_per_sender,
        max_total_bytes: limits.mail_max_total_bytes,
        min_free_disk_bytes: limits.min_free_disk_mb.saturating_mul(1 << 20),
        remember_ids_ms: 2 * limits.max_clock_skew_secs * 1000,
    }
}

impl Directory {
    /// A directory on its own database. Must be called inside a tokio runtime (the mailbox
    /// writer answers through it).
    pub(crate) async fn embedded(
        db: Arc<Db>,
        tokens: TokenIssuer,
        limits: &Limits,
    ) -> Result<Self, Error> {
        let names = NameStore::open(Arc::new(RedbBindings::new(db.clone()))).await?;
        let mail: Arc<dyn Mailboxes> = Arc::new(RedbMailboxes::open(db.clone(), quotas(limits))?);
        let groups = Arc::new(RedbGroups::new(db.clone(), group_limits(limits)));
        let mut directory = Self::assemble(names, mail, groups, tokens, limits)?;
        directory.db = Some(db);
        Ok(directory)
    }

    /// One replica of a cluster: names, mailboxes and presence in NATS.
    pub(crate) async fn clustered(
        cluster: &Cluster,
        tokens: TokenIssuer,
        limits: &Limits,
    ) -> Result<Self, Error> {
        let names = NameStore::open(Arc::new(KvBindings::open(cluster).await?)).await?;
        let mail: Arc<dyn Mailboxes> =
            Arc::new(JetStreamMailboxes::open(cluster, quotas(limits)).await?);
        let groups = Arc::new(JetStreamGroups::open(cluster, group_limits(limits)).await?);
        let mut directory = Self::assemble(names, mail, groups, tokens, limits)?;
        directory.presence = Some(Presence::start(cluster, &directory.registry).await?);
        directory.activity = Some(Activity::start(cluster, &directory.registry).await?);
        Ok(directory)
    }

    fn assemble(
        names: Arc<NameStore>,
        mail: Arc<dyn Mailboxes>,
        groups: Arc<dyn GroupStore>,
        tokens: TokenIssuer,
        limits: &Limits,
    ) -> Result<Self, Error> {
        let registry = Arc::new(Registry::new(
            SessionLimits {
                max_per_name: limits.max_sessions_per_name.max(1),
                idle: Duration::from_secs(limits.idle_session_secs),
                queue: QueueLimits {
                    messages: limits.queue_messages,
                    bytes: limits.queue_bytes,
                    events: limits.queue_events,
                    presence_window: Duration::from_millis(limits.presence_batch_ms),
                },
                send_rate: limits.send_rate,
                send_burst: limits.send_burst,
                name_send_rate: limits.send_rate_per_name,
                name_send_burst: limits.send_burst_per_name,
            },
            mail.clone(),
        ));
        let sink_registry = Arc::downgrade(&registry);
        mail.set_sink(Arc::new(move |committed| {
            if let Some(registry) = sink_registry.upgrade() {
                registry.deliver(committed);
            }
        }));
        let relay = Relay::new(
            registry.clone(),
            names.clone(),
            mail.clone(),
            RelayLimits {
                max_recipients: limits.max_recipients,
                max_message_bytes: limits.max_message_bytes,
                max_clock_skew_ms: limits.max_clock_skew_secs * 1000,
                ttl: limits.mailbox_ttl,
            },
        );
        let challenges = Challenges::new(limits.challenge_secs * 1000, limits.max_used_challenges)?;
        let registrar = Registrar::new(
            challenges,
            names,
            tokens,
            registry.clone(),
            limits.token_hours * 3600 * 1000,
        );
        Ok(Self {
            registrar,
            registry,
            relay,
            mail,
            db: None,
            presence: None,
            groups,
            activity: None,
            groups_ttl: limits.mailbox_ttl,
        })
    }

    /// Tells the live streams of `names` (canonical), on every replica, that the group has new
    /// entries.
    pub(crate) async fn announce_group_activity(&self, names: &[String], group_id: &[u8]) {
        match &self.activity {
            Some(activity) => activity.announce(names, group_id).await,
            None => self.registry.push_group_activity(names, group_id),
        }
    }

    /// Whether the store answers (the embedded database, or NATS in cluster mode).
    pub(crate) fn is_healthy(&self) -> bool {
        self.mail.is_healthy()
    }

    /// Re-opens an embedded database that failed (disk work: call on a blocking thread).
    /// In cluster mode the NATS client reconnects by itself.
    pub(crate) fn recover(&self) -> bool {
        match &self.db {
            Some(db) => db.recover(),
            None => self.is_healthy(),
        }
    }

    /// Periodic upkeep: used challenges, expired or idle sessions, stalled subscribers, and
    /// expired mail.
    pub(crate) async fn sweep(&self) {
        self.registrar.sweep();
        self.registry.sweep();
        if self.is_healthy()
            && let Err(e) = self.relay.expire().await
        {
            tracing::warn!(error = %e, "could not expire mail this time");
        }
        if self.is_healthy() {
            let before =
                svs_common::time::now_ms().saturating_sub(self.groups_ttl.as_millis() as u64);
            if let Err(e) = self.groups.expire(before).await {
                tracing::warn!(error = %e, "could not expire group logs this time");
            }
        }
    }

    /// Ends every stream with UNAVAILABLE; used on shutdown.
    pub(crate) fn shutdown(&self) {
        self.registry.shutdown();
    }

    /// In cluster mode, tells the other replicas this one's sessions ended (call after the
    /// streams closed), so they announce them now rather than after the replica timeout.
    pub(crate) async fn leave_cluster(&self) {
        if let Some(presence) = &self.presence {
            presence.leave(Duration::from_secs(3)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Refusal;
    use crate::registry::SessionRef;
    use crate::subscriber::{Outbox, Subscriber};
    use clap::Parser;
    use svs_common::identity;
    use svs_common::proto::directory::{Event, Outcome, event};
    use svs_common::sealed::{SealParams, SealRecipient};
    use svs_common::time::now_ms;
    use svs_common::token::TokenVerifier;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: Limits,
    }

    struct Fixture {
        directory: Directory,
        verifier: TokenVerifier,
        key: svs_common::rsa::PrivateKey,
        _tmp: tempfile::TempDir,
    }

    async fn fixture(flags: &[&str]) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let db = open_db(&tmp.path().join("names.redb")).unwrap();
        let tokens = TokenIssuer::new(identity::generate(2048).unwrap());
        let verifier = tokens.verifier().clone();
        // Presence is not batched here: these tests read queues with short timeouts.
        let mut args = vec!["test", "--presence-batch-ms", "0"];
        args.extend_from_slice(flags);
        let limits = Flags::parse_from(args).limits;
        Fixture {
            directory: Directory::embedded(db, tokens, &limits).await.unwrap(),
            verifier,
            key: identity::generate(2048).unwrap(),
            _tmp: tmp,
        }
    }

    impl Fixture {
        /// Registers `name` (all names share one key here) as the service does: the statement,
        /// the claim, the session.
        async fn register(&self, name: &str) -> Result<crate::registration::Registered, Error> {
            let spki = identity::public_key_der(&self.key.to_public_key());
            let registrar = &self.directory.registrar;
            let issued = registrar.challenge(name, &spki)?;
            let signature = svs_common::registration::sign(
                &self.key,
                &issued.service_id,
                name,
                &spki,
                &issued.challenge,
            )?;
            let proven = registrar.prove(name, &spki, &issued.challenge, &signature)?;
            registrar.claim(&proven).await?;
            registrar.open_session(proven)
        }

        /// Registers `name` and resolves its session.
        async fn join(&self, name: &str) -> SessionRef {
            let registered = self.register(name).await.unwrap();
            let claims = self.verifier.verify(&registered.token, now_ms()).unwrap();
            self.directory.registry.session(&claims).unwrap()
        }

        fn subscribe(&self, session: &SessionRef) -> (Arc<Subscriber>, Outbox) {
            self.directory.registry.subscribe(session, true).unwrap()
        }

        /// Seals a message from `from` to `to` and sends it; the outcome for `to`.
        async fn send(&self, from: &SessionRef, to: &str, text: &str) -> (Outcome, [u8; 16]) {
            let key = self.key.to_public_key();
            let envelope = svs_common::sealed::seal(
                &mut identity::os_rng(),
                &SealParams {
                    sender: &from.name,
                    sender_key: &self.key,
                    counter: now_ms(),
                    timestamp_ms: now_ms(),
                    recipients: &[SealRecipient {
                        name: to,
                        key: &key,
                    }],
                },
                text.as_bytes(),
            )
            .unwrap();
            let (header, outcomes) = self.directory.relay.send(from, envelope).await.unwrap();
            (outcomes[0].outcome(), header.message_id)
        }
    }

    /// Every event queued in `outbox` now.
    async fn drain(outbox: &mut Outbox, sub: &Subscriber) -> Vec<Event> {
        let mut events = Vec::new();
        while let Ok(Some(Ok(event))) =
            tokio::time::timeout(Duration::from_millis(100), outbox.next(sub)).await
        {
            events.push(event);
        }
        events
    }

    fn left_reasons(events: &[Event], name: &str) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(event::Kind::Left(left)) if left.name == name => Some(left.reason.clone()),
                _ => None,
            })
            .collect()
    }

    fn message_ids(events: &[Event]) -> Vec<[u8; 16]> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(event::Kind::Envelope(env)) => Some(
                    svs_common::sealed::Header::decode(&env.header)
                        .unwrap()
                        .message_id,
                ),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_subscriber_cut_for_piling_up_events_is_announced_too_slow() {
        let f = fixture(&["--queue-events", "4"]).await;
        let watcher = f.join("watcher").await;
        let (watcher_sub, mut watcher_outbox) = f.subscribe(&watcher);
        let sleeper = f.join("sleeper").await;
        let (sleeper_sub, _never_read) = f.subscribe(&sleeper);
        // Others come and go; the watcher reads, the sleeper's presence events pile up past 4.
        let mut seen = Vec::new();
        for n in 0..3 {
            let other = f.join(&format!("other{n}")).await;
            f.directory.registry.quit(&other);
            seen.extend(drain(&mut watcher_outbox, &watcher_sub).await);
        }
        assert!(sleeper_sub.cut_as_too_slow());
        // Its stream ends (what the gRPC stream guard reports) before any sweep runs.
        f.directory
            .registry
            .subscription_ended(&sleeper.canonical, sleeper.id, &sleeper_sub);
        seen.extend(drain(&mut watcher_outbox, &watcher_sub).await);
        assert_eq!(left_reasons(&seen, "sleeper"), ["too slow"]);
    }

    #[tokio::test]
    async fn a_stream_ended_by_shutdown_is_not_announced_too_slow() {
        let f = fixture(&[]).await;
        let alice = f.join("alice").await;
        let (alice_sub, _alice_outbox) = f.subscribe(&alice);
        let bob = f.join("bob").await;
        let (bob_sub, mut bob_outbox) = f.subscribe(&bob);
        f.directory.shutdown();
        // A sweep during the drain must not call the closed streams "too slow".
        f.directory.sweep().await;
        assert_eq!(f.directory.registry.snapshot().peers.len(), 2);
        f.directory
            .registry
            .subscription_ended(&alice.canonical, alice.id, &alice_sub);
        assert_eq!(f.directory.registry.snapshot().peers.len(), 1);
        // Bob's stream is closed: its last word is the shutdown status.
        let last = bob_outbox.next(&bob_sub).await;
        assert!(
            matches!(&last, Some(Err(s)) if s.code() == tonic::Code::Unavailable),
            "{last:?}"
        );
    }

    #[tokio::test]
    async fn several_sessions_of_a_name_share_presence_and_each_gets_new_mail() {
        let f = fixture(&["--max-sessions-per-name", "3"]).await;
        let watcher = f.join("watcher").await;
        let (watcher_sub, mut watcher_outbox) = f.subscribe(&watcher);
        drain(&mut watcher_outbox, &watcher_sub).await;
        let one = f.join("alice").await;
        let two = f.join("Alice").await;
        let _three = f.join("alice").await;
        let fourth = f.register("alice").await;
        assert!(
            matches!(fourth, Err(Error::Refused(Refusal::ResourceExhausted(_)))),
            "a fourth session is over the cap"
        );
        let (one_sub, mut one_outbox) = f.subscribe(&one);
        let (two_sub, mut two_outbox) = f.subscribe(&two);
        let (outcome, id) = f.send(&watcher, "alice", "hi both").await;
        assert_eq!(outcome, Outcome::Delivering);
        assert_eq!(message_ids(&drain(&mut one_outbox, &one_sub).await), [id]);
        assert_eq!(message_ids(&drain(&mut two_outbox, &two_sub).await), [id]);
        // One joined for the name; its first two sessions leaving announce nothing.
        f.directory.registry.quit(&one);
        f.directory.registry.quit(&two);
        let seen = drain(&mut watcher_outbox, &watcher_sub).await;
        let joins = seen
            .iter()
            .filter(|e| matches!(&e.kind, Some(event::Kind::Joined(_))))
            .count();
        assert_eq!(joins, 1);
        assert!(left_reasons(&seen, "alice").is_empty());
        assert_eq!(f.directory.registry.session_count("alice"), 1);
    }

    #[tokio::test]
    async fn stored_mail_arrives_in_order_before_new_and_a_slow_reader_catches_up_from_disk() {
        let f = fixture(&["--queue-messages", "2"]).await;
        let alice = f.join("alice").await;
        let bob = f.join("bob").await;
        let mut sent = Vec::new();
        for n in 0..5 {
            let (outcome, id) = f.send(&alice, "bob", &format!("stored {n}")).await;
            assert_eq!(outcome, Outcome::Stored);
            sent.push(id);
        }
        let (bob_sub, mut bob_outbox) = f.subscribe(&bob);
        // Bob reads nothing while eight more arrive: his two-message queue overflows to disk.
        for n in 0..8 {
            let (outcome, id) = f.send(&alice, "bob", &format!("live {n}")).await;
            assert_eq!(outcome, Outcome::Delivering);
            sent.push(id);
        }
        let got = message_ids(&drain(&mut bob_outbox, &bob_sub).await);
        assert_eq!(got, sent, "every message once, in the order accepted");
        // Caught up, he is live again: the next one comes straight through.
        let (_, id) = f.send(&alice, "bob", "after").await;
        assert_eq!(message_ids(&drain(&mut bob_outbox, &bob_sub).await), [id]);
    }

    #[tokio::test]
    async fn an_ack_sends_a_receipt_live_or_stored_and_the_mail_leaves() {
        let f = fixture(&[]).await;
        let alice = f.join("alice").await;
        let bob = f.join("bob").await;
        let (_, id) = f.send(&alice, "bob", "read me later").await;
        // Alice goes away before bob reads it.
        f.directory.registry.quit(&alice);
        let (bob_sub, mut bob_outbox) = f.subscribe(&bob);
        assert_eq!(message_ids(&drain(&mut bob_outbox, &bob_sub).await), [id]);
        let acked = f
            .directory
            .relay
            .ack(&bob, &[bytes::Bytes::copy_from_slice(&id)], &[])
            .await
            .unwrap();
        assert_eq!(acked, 1);
        // A second subscription of bob's finds nothing left.
        let (bob_sub2, mut bob_outbox2) = f.subscribe(&bob);
        assert!(message_ids(&drain(&mut bob_outbox2, &bob_sub2).await).is_empty());
        // Alice comes back and finds the stored receipt; acknowledging it removes it.
        let alice = f.join("alice").await;
        let (alice_sub, mut alice_outbox) = f.subscribe(&alice);
        let seqs: Vec<u64> = drain(&mut alice_outbox, &alice_sub)
            .await
            .iter()
            .filter_map(|e| match &e.kind {
                Some(event::Kind::Delivered(d)) if d.message_id.as_ref() == id => {
                    Some(d.stored_seq)
                }
                _ => None,
            })
            .collect();
        assert_eq!(seqs.len(), 1);
        assert!(seqs[0] > 0);
        assert_eq!(f.directory.relay.ack(&alice, &[], &seqs).await.unwrap(), 1);
        let (alice_sub2, mut alice_outbox2) = f.subscribe(&alice);
        let again = drain(&mut alice_outbox2, &alice_sub2).await;
        assert!(
            !again
                .iter()
                .any(|e| matches!(&e.kind, Some(event::Kind::Delivered(_)))),
            "an acknowledged receipt is not delivered again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_without_a_stream_expires_after_the_idle_time_on_the_tokio_clock() {
        let f = fixture(&["--idle-session-secs", "60"]).await;
        let watcher = f.join("watcher").await;
        let (watcher_sub, mut watcher_outbox) = f.subscribe(&watcher);
        let _one_shot = f.join("script").await;
        drain(&mut watcher_outbox, &watcher_sub).await;
        tokio::time::advance(Duration::from_secs(59)).await;
        f.directory.sweep().await;
        assert_eq!(f.directory.registry.session_count("script"), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        f.directory.sweep().await;
        assert_eq!(f.directory.registry.session_count("script"), 0);
        // The subscribed one stays, however long it is quiet.
        assert_eq!(f.directory.registry.session_count("watcher"), 1);
        let seen = drain(&mut watcher_outbox, &watcher_sub).await;
        assert_eq!(left_reasons(&seen, "script"), ["expired"]);
    }
}
