//! A registered session with the directory: proves the key, holds the token, seals and sends
//! messages, acknowledges arrivals and quits. This is the client code the tests drive.

use crate::error::CliError;
use crate::home::Home;
use crate::inbox::{Inbox, Incoming};
use crate::known_peers::{KnownPeers, PinCheck};
use std::path::PathBuf;
use std::sync::Arc;
use svs_common::identity::{self, Fingerprint};
use svs_common::proto::directory::directory_client::DirectoryClient;
use svs_common::proto::directory::*;
use svs_common::rsa::PrivateKey;
use svs_common::sealed::{self, SealParams, SealRecipient};
use svs_common::{names, registration, time::now_ms};
use tonic::Streaming;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub directory: String,
    pub ca: Option<PathBuf>,
    pub name: String,
    pub home: Home,
    /// Size of a newly generated identity key.
    pub key_bits: usize,
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer").finish_non_exhaustive()
    }
}

impl Bearer {
    pub fn new(token: &str) -> Result<Self, CliError> {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            CliError::Usage("the token contains characters not allowed in metadata".into())
        })?;
        Ok(Self(value))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The directory API with the session's token attached.
pub type Api = DirectoryClient<InterceptedService<Channel, Bearer>>;
/// The MLS delivery service on the same connection and token.
pub type GroupsApi =
    svs_common::proto::directory::groups_client::GroupsClient<InterceptedService<Channel, Bearer>>;

/// Loads the identity key of `name`, generating it on first use. Returns whether it is new.
pub fn load_identity(home: &Home, name: &str, bits: usize) -> Result<(PrivateKey, bool), CliError> {
    names::validate(name)?;
    Ok(identity::load_or_generate(&home.key_path(name), bits)?)
}

/// Where a message stands for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReachState {
    /// Stored and handed to a live session of the recipient.
    Delivering,
    /// Stored until the recipient comes online.
    Stored,
    /// Not stored (unknown name, other key, full mailbox, duplicate).
    Refused,
}

/// The longest "try again in …" a send or a registration waits out by itself; a longer one (a
/// very slow rate, or a server that wants to park the client) is returned to the user with its
/// sentence.
pub const MAX_SEND_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Registration attempts when the directory answers RESOURCE_EXHAUSTED ("try again in a moment").
pub const REGISTER_ATTEMPTS: u32 = 5;

/// GetChallenge, then Register with the signed statement.
async fn prove_key(
    channel: &Channel,
    key: &Arc<PrivateKey>,
    name: &str,
    spki: &[u8],
) -> Result<RegisterResponse, CliError> {
    let mut open = DirectoryClient::new(channel.clone());
    let challenge = open
        .get_challenge(GetChallengeRequest {
            name: name.to_string(),
            public_key_der: spki.to_vec().into(),
        })
        .await?
        .into_inner();
    // The RSA signature runs on a blocking thread, not on the runtime.
    let signature = {
        let (key, name, spki) = (key.clone(), name.to_string(), spki.to_vec());
        let (service_id, nonce) = (challenge.service_id.clone(), challenge.challenge.clone());
        crate::error::blocking(move || registration::sign(&key, &service_id, &name, &spki, &nonce))
            .await??
    };
    Ok(open
        .register(RegisterRequest {
            name: name.to_string(),
            public_key_der: spki.to_vec().into(),
            challenge: challenge.challenge,
            signature: signature.into(),
        })
        .await?
        .into_inner())
}

/// One recipient's fate, as reported to the user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reach {
    pub recipient: String,
    pub state: ReachState,
    pub detail: String,
}

impl Reach {
    /// Whether the message is on its way (stored or delivering).
    pub fn accepted(&self) -> bool {
        self.state != ReachState::Refused
    }
}

/// The result of sending one message.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message_id: [u8; 16],
    pub reaches: Vec<Reach>,
}

/// A live registration.
pub struct Session {
    pub name: String,
    pub fingerprint: Fingerprint,
    pub token: String,
    pub token_expires_at_ms: u64,
    pub key_was_generated: bool,
    key: Arc<PrivateKey>,
    api: Api,
    groups: GroupsApi,
    /// The last counter used, and where it is kept between runs.
    counter: u64,
    counter_path: std::path::PathBuf,
    replay_path: std::path::PathBuf,
    pub pins: KnownPeers,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// Connects, proves possession of the name's key and starts a session.
    pub async fn register(options: &ConnectOptions) -> Result<Session, CliError> {
        let channel =
            svs_common::client::connect(&options.directory, options.ca.as_deref()).await?;
        Self::register_on(options, channel).await
    }

    /// `register` over a channel the caller made (a load generator spreading clients over
    /// source addresses, say).
    pub async fn register_on(
        options: &ConnectOptions,
        channel: tonic::transport::Channel,
    ) -> Result<Session, CliError> {
        let (key, key_was_generated) = {
            let home = options.home.clone();
            let name = options.name.clone();
            let bits = options.key_bits;
            crate::error::blocking(move || load_identity(&home, &name, bits)).await??
        };
        let key = Arc::new(key);
        let spki = identity::public_key_der(&key.to_public_key());
        // A directory answering "not now" (everyone registering at once) is asked again a few
        // times, waiting as long as it asks (at least the reconnect backoff), before the refusal
        // reaches the user; a long wait (an address's new names used up) is reported at once.
        let mut backoff = crate::backoff::Backoff::default();
        let mut attempts = 0;
        let registered = loop {
            attempts += 1;
            match prove_key(&channel, &key, &options.name, &spki).await {
                Err(CliError::RefusedForNow { after, .. })
                    if attempts < REGISTER_ATTEMPTS && after <= MAX_SEND_RETRY_WAIT =>
                {
                    tokio::time::sleep(backoff.next_delay().max(after)).await;
                }
                other => break other?,
            }
        };
        let groups = svs_common::proto::directory::groups_client::GroupsClient::with_interceptor(
            channel.clone(),
            Bearer::new(&registered.token)?,
        )
        .max_decoding_message_size(svs_common::client::CLIENT_MAX_DECODE);
        let api = DirectoryClient::with_interceptor(channel, Bearer::new(&registered.token)?)
            .max_decoding_message_size(svs_common::client::CLIENT_MAX_DECODE);
        let pins = KnownPeers::load(options.home.known_peers_path())?;
        let counter_path = options.home.counter_path(&options.name);
        let counter = std::fs::read_to_string(&counter_path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        Ok(Session {
            name: options.name.clone(),
            fingerprint: identity::fingerprint_der(&spki),
            token: registered.token,
            token_expires_at_ms: registered.expires_at_ms,
            key_was_generated,
            key,
            api,
            groups,
            counter,
            counter_path,
            replay_path: options.home.replay_path(&options.name),
            pins,
        })
    }

    /// The MLS delivery service, as this session.
    pub fn groups(&mut self) -> &mut GroupsApi {
        &mut self.groups
    }

    /// The identity key (for certifying a new device of this person).
    pub fn identity_key(&self) -> Arc<PrivateKey> {
        self.key.clone()
    }

    /// A receiving side for this session's identity, with its replay state from the home dir.
    pub fn inbox(&self) -> Result<Inbox, CliError> {
        Inbox::new(self.name.clone(), self.key.clone()).with_replay_file(self.replay_path.clone())
    }

    pub async fn list_peers(&mut self) -> Result<ListPeersResponse, CliError> {
        Ok(self.api.list_peers(ListPeersRequest {}).await?.into_inner())
    }

    /// The registered keys of names, online or not.
    pub async fn lookup_keys(&mut self, names: &[String]) -> Result<LookupKeysResponse, CliError> {
        Ok(self
            .api
            .lookup_keys(LookupKeysRequest {
                names: names.to_vec(),
            })
            .await?
            .into_inner())
    }

    /// Recipients by name: from the online roster, else looked up (someone offline gets the
    /// message from their mailbox). Returns the peers and the names nobody registered.
    pub async fn resolve(
        &mut self,
        inbox: &Inbox,
        wanted: &[String],
    ) -> Result<(Vec<Peer>, Vec<String>), CliError> {
        let (mut found, offline) = resolve_recipients(&inbox.online(), wanted);
        if offline.is_empty() {
            return Ok((found, offline));
        }
        let looked_up = self.lookup_keys(&offline).await?;
        for peer in looked_up.peers {
            let canonical = names::canonical(&peer.name);
            if !found.iter().any(|f| names::canonical(&f.name) == canonical) {
                found.push(peer);
            }
        }
        Ok((found, looked_up.unknown))
    }

    /// The session's event stream, with the name's mail (stored first, then new).
    pub async fn subscribe(&mut self) -> Result<Streaming<Event>, CliError> {
        self.subscribe_with(true).await
    }

    /// The event stream; `with_mail` false leaves the name's mail for sessions that show it.
    pub async fn subscribe_with(&mut self, with_mail: bool) -> Result<Streaming<Event>, CliError> {
        let request = SubscribeRequest {
            without_mail: !with_mail,
        };
        Ok(self.api.subscribe(request).await?.into_inner())
    }

    /// Strictly increasing across runs, even if the clock steps back: the larger of microseconds
    /// since the epoch and the last counter used plus one. The value is written to the home
    /// directory before the message is sealed with it.
    fn next_counter(&mut self) -> Result<u64, CliError> {
        let next = (self.counter + 1).max(now_ms() * 1000);
        identity::write_secret_file(&self.counter_path, next.to_string().as_bytes())?;
        self.counter = next;
        Ok(next)
    }

    /// Seals `text` for `recipients` (peers as the directory lists them) and sends it.
    /// Refuses recipients whose key differs from the pinned one.
    pub async fn send_text(&mut self, recipients: &[Peer], text: &str) -> Result<Sent, CliError> {
        let mut keys = Vec::with_capacity(recipients.len());
        for peer in recipients {
            if let PinCheck::Changed { pinned } =
                self.pins.check(&peer.name, &peer.public_key_der)?
            {
                return Err(CliError::KeyChanged {
                    name: peer.name.clone(),
                    pinned,
                    now: peer.fingerprint.clone(),
                });
            }
            keys.push((
                peer.name.clone(),
                identity::parse_public_key(&peer.public_key_der)?,
            ));
        }
        let counter = self.next_counter()?;
        let key = self.key.clone();
        let name = self.name.clone();
        let plaintext = text.as_bytes().to_vec();
        let envelope = crate::error::blocking(move || {
            let recipients: Vec<SealRecipient<'_>> = keys
                .iter()
                .map(|(name, key)| SealRecipient { name, key })
                .collect();
            sealed::seal(
                &mut identity::os_rng(),
                &SealParams {
                    sender: &name,
                    sender_key: &key,
                    counter,
                    timestamp_ms: now_ms(),
                    recipients: &recipients,
                },
                &plaintext,
            )
        })
        .await??;
        self.send_envelope(envelope).await
    }

    /// Sends an already sealed envelope (tests use this to send forged ones). A "not now"
    /// refusal (a send rate) is tried again after the delay it names, a few times, when that
    /// delay is short ([`MAX_SEND_RETRY_WAIT`]: a server cannot park the client for a year); any
    /// other refusal is final and returned at once.
    pub async fn send_envelope(&mut self, envelope: Envelope) -> Result<Sent, CliError> {
        const SEND_ATTEMPTS: u32 = 5;
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            let request = SendRequest {
                envelope: Some(envelope.clone()),
            };
            match self.api.send(request).await {
                Ok(response) => break response.into_inner(),
                Err(status) => match crate::error::retry_delay(&status) {
                    Some(delay) if attempt < SEND_ATTEMPTS && delay <= MAX_SEND_RETRY_WAIT => {
                        tokio::time::sleep(delay.max(std::time::Duration::from_millis(20))).await;
                    }
                    _ => return Err(status.into()),
                },
            }
        };
        let message_id = response.message_id.as_ref().try_into().map_err(|_| {
            CliError::Refused("the directory returned a malformed message id".into())
        })?;
        let reaches = response
            .outcomes
            .into_iter()
            .map(|o| Reach {
                state: match o.outcome() {
                    Outcome::Delivering => ReachState::Delivering,
                    Outcome::Stored => ReachState::Stored,
                    _ => ReachState::Refused,
                },
                recipient: o.recipient,
                detail: o.detail,
            })
            .collect();
        Ok(Sent {
            message_id,
            reaches,
        })
    }

    /// Waits for the next event and processes it. `None` when the stream ended cleanly.
    pub async fn next_incoming(
        &mut self,
        stream: &mut Streaming<Event>,
        inbox: &mut Inbox,
    ) -> Result<Option<Vec<Incoming>>, CliError> {
        match stream.message().await? {
            Some(event) => Ok(Some(self.process(event, inbox).await?)),
            None => Ok(None),
        }
    }

    /// Processes events until the subscription's snapshot (possibly several pages) is complete;
    /// returns what arrived meanwhile, the roster included.
    pub async fn await_roster(
        &mut self,
        stream: &mut Streaming<Event>,
        inbox: &mut Inbox,
    ) -> Result<Vec<Incoming>, CliError> {
        let mut seen = Vec::new();
        loop {
            let items = self
                .next_incoming(stream, inbox)
                .await?
                .ok_or_else(|| CliError::Refused("the directory ended the stream".into()))?;
            let done = items.iter().any(|i| matches!(i, Incoming::Roster(_)));
            seen.extend(items);
            if done {
                return Ok(seen);
            }
        }
    }

    /// Interprets one event: an envelope is checked, decrypted, recorded in the replay file and
    /// only then acknowledged (so a crash never loses it; a redelivery is acknowledged again and
    /// not shown); every envelope is acknowledged whether it opens or not (no decryption
    /// oracle). Stored receipts are acknowledged too. Resyncs the roster when presence events
    /// were missed.
    pub async fn process(
        &mut self,
        event: Event,
        inbox: &mut Inbox,
    ) -> Result<Vec<Incoming>, CliError> {
        let mut ack = AckRequest::default();
        let mut items = match event.kind {
            Some(event::Kind::Envelope(envelope)) => {
                let header = sealed::Header::decode(&envelope.header).ok();
                if let Some(header) = &header {
                    ack.message_ids.push(header.message_id.to_vec().into());
                    if !inbox.knows_key(&header.sender, &self.pins) {
                        // Someone offline wrote while we were away: their registered key.
                        let found = self
                            .lookup_keys(std::slice::from_ref(&header.sender))
                            .await?;
                        for peer in &found.peers {
                            inbox.learn_key(peer);
                        }
                    }
                }
                vec![self.open(envelope, inbox).await?]
            }
            kind => {
                // A receipt kept in the mailbox (stored_seq > 0) is acknowledged so it goes.
                let stored_seq = match &kind {
                    Some(event::Kind::Delivered(d)) => d.stored_seq,
                    Some(event::Kind::Undelivered(u)) => u.stored_seq,
                    _ => 0,
                };
                if stored_seq > 0 {
                    ack.receipt_seqs.push(stored_seq);
                }
                inbox.handle(Event { kind }, &mut self.pins)
            }
        };
        if !ack.message_ids.is_empty() || !ack.receipt_seqs.is_empty() {
            self.api.ack(ack).await?;
        }
        items.retain(|i| !matches!(i, Incoming::Redelivered));
        if items.iter().any(|i| matches!(i, Incoming::ResyncNeeded)) {
            let snapshot = self.list_peers().await?;
            items.retain(|i| !matches!(i, Incoming::ResyncNeeded));
            items.extend(inbox.resync(snapshot, &mut self.pins));
        }
        Ok(items)
    }

    /// Check, decrypt (RSA on a blocking thread) and record one envelope.
    async fn open(&mut self, envelope: Envelope, inbox: &mut Inbox) -> Result<Incoming, CliError> {
        let verified = match inbox.check(envelope, &mut self.pins) {
            Err(dropped) => return Ok(dropped),
            Ok(verified) => verified,
        };
        let (verified, plaintext) = crate::error::blocking(move || {
            let plaintext = verified.decrypt();
            (verified, plaintext)
        })
        .await?;
        let (sender, counter, id) = verified.identity();
        let incoming = inbox.finish(verified, plaintext);
        // Recorded as received before it is shown, so a restart cannot accept it again.
        if matches!(incoming, Incoming::Message(_))
            && let Some(write) = inbox.plan_record(&sender, counter, &id)
        {
            crate::error::blocking(move || write.apply()).await??;
        }
        Ok(incoming)
    }

    /// Ends the session: the token is revoked and everyone sees the leave.
    pub async fn quit(&mut self) -> Result<(), CliError> {
        self.api.quit(QuitRequest {}).await?;
        Ok(())
    }
}

/// Picks recipients from the online roster by name; names not online are returned separately.
pub fn resolve_recipients(online: &[Peer], wanted: &[String]) -> (Vec<Peer>, Vec<String>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in wanted {
        let canonical = names::canonical(name);
        match online
            .iter()
            .find(|p| names::canonical(&p.name) == canonical)
        {
            Some(peer) if !found.iter().any(|f: &Peer| f.name == peer.name) => {
                found.push(peer.clone())
            }
            Some(_) => {}
            None => missing.push(name.clone()),
        }
    }
    (found, missing)
}
