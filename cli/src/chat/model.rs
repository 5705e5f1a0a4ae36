//! What the full-screen chat knows and shows: the conversation log, the views over it (all, or
//! one peer), unread marks, delivery state of sent messages, the people, the connection and the
//! playbacks. Pure state: the loop feeds it, the view draws it.

use crate::chat::actions::{SendReport, TrustCandidate};
use crate::inbox::{Incoming, Message};
use crate::known_peers::{KnownPeers, PinCheck, Trust};
use crate::rooms::{RoomEvent, RoomInfo};
use crate::session::ReachState;
use std::collections::BTreeMap;
use svs_common::names::canonical;
use svs_common::proto::directory::Peer;

/// Where a sent message stands for one recipient, as receipts arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to a live session; no receipt yet.
    Sent,
    /// Kept in the recipient's mailbox until they come online.
    Stored,
    /// The recipient's client acknowledged it.
    Delivered,
    /// Not delivered (refused, or expired in the mailbox): why.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Recipient {
    pub name: String,
    pub state: Delivery,
}

#[derive(Debug, Clone)]
pub enum Body {
    Incoming(Message),
    Outgoing {
        to: Vec<String>,
        text: String,
        id: String,
        recipients: Vec<Recipient>,
    },
    /// Joins, leaves, notes; `alarm` for key changes.
    Event {
        text: String,
        alarm: bool,
    },
    /// A line written in a room (`from` is the person; `you` for this device's own).
    Room {
        room: String,
        from: String,
        text: String,
    },
    /// Several lines (help, /who, fingerprints).
    Info(Vec<String>),
    Problem(String),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub time_ms: u64,
    pub body: Body,
    /// Canonical names of the peers this entry is about (the conversations it shows in).
    pub peers: Vec<String>,
    pub unread: bool,
}

/// A conversation pane: everything (`peer` None) or one peer.
#[derive(Debug, Clone)]
pub struct View {
    pub peer: Option<String>,
    /// Lines scrolled up from the newest (0: following the newest).
    pub scroll: usize,
    /// Index of the first entry that was unread when the view was last opened.
    pub marker: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Pinned on first sight.
    Pinned,
    /// Pinned by /trust after comparing fingerprints.
    Verified,
    /// Not the pinned key: sending is blocked until /trust.
    Changed,
}

#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    /// Hex fingerprint of the key last seen (empty if only known from a pin).
    pub fingerprint: String,
    pub online: bool,
    pub key: KeyState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connected,
    /// Lost; trying again (the last failure).
    Reconnecting(String),
    /// Gave up (the reason); /quit to leave.
    Offline(String),
}

#[derive(Debug, Clone)]
pub struct PlayState {
    pub video: String,
    pub rendition: String,
    pub position_seconds: f64,
    pub duration_seconds: f64,
}

/// A question the user must answer before anything else.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// A send was blocked: a recipient's key changed. `t` trusts the new key and sends.
    KeyChanged {
        candidate: TrustCandidate,
        /// The line that was not sent (back to the input line if declined).
        line: String,
    },
    /// `/trust NAME`: both fingerprints; `y` trusts.
    Trust { candidate: TrustCandidate },
}

/// A room as the people pane shows it while its conversation is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPane {
    /// The room's name as shown.
    pub label: String,
    pub epoch: u64,
    /// The code members compare (`svs_common::safety::room_code`).
    pub code: String,
    /// Each person in it with how many of their devices are members, by name.
    pub people: Vec<(String, usize)>,
}

#[derive(Debug)]
pub struct Model {
    pub me: String,
    pub my_fingerprint: String,
    pub entries: Vec<Entry>,
    pub views: Vec<View>,
    pub active: usize,
    pub people: BTreeMap<String, Person>,
    pub link: Link,
    pub playbacks: BTreeMap<u64, PlayState>,
    pub prompt: Option<Prompt>,
    /// Entries kept at most.
    pub scrollback: usize,
    /// This device's rooms by conversation (`#ROOM`, canonical).
    pub rooms: BTreeMap<String, RoomPane>,
}

/// Entries kept by default (`svs chat --scrollback`); older ones are dropped: the pane is a
/// window, not an archive.
pub const DEFAULT_SCROLLBACK: usize = 10_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Model {
    pub fn new(me: &str, my_fingerprint: &str, pins: &KnownPeers) -> Self {
        let mut model = Self {
            me: me.to_string(),
            my_fingerprint: my_fingerprint.to_string(),
            entries: Vec::new(),
            views: vec![View {
                peer: None,
                scroll: 0,
                marker: None,
            }],
            active: 0,
            people: BTreeMap::new(),
            link: Link::Connected,
            playbacks: BTreeMap::new(),
            prompt: None,
            scrollback: DEFAULT_SCROLLBACK,
            rooms: BTreeMap::new(),
        };
        // People talked to before: offline until the roster says otherwise.
        for name in pins.names() {
            if canonical(&name) != canonical(me) {
                let key = key_state(pins, &name, None);
                let pinned = pins.fingerprint(&name).unwrap_or_default().to_string();
                model.person(&name, &pinned, false, key);
            }
        }
        model
    }

    fn person(&mut self, name: &str, fingerprint: &str, online: bool, key: KeyState) {
        let entry = self
            .people
            .entry(canonical(name))
            .or_insert_with(|| Person {
                name: name.to_string(),
                fingerprint: String::new(),
                online,
                key,
            });
        if !fingerprint.is_empty() {
            entry.fingerprint = fingerprint.to_string();
        }
        entry.online = online;
        entry.key = key;
    }

    /// The peer of the active view.
    pub fn talking_to(&self) -> Option<&str> {
        self.views[self.active].peer.as_deref()
    }

    /// What view `view` shows, as a test on entries. The peer's canonical name is worked out
    /// once here, not once per entry: redraws and unread counts run it over the whole log.
    pub fn filter(&self, view: usize) -> impl Fn(&Entry) -> bool + use<> {
        let peer = self.views[view].peer.as_deref().map(canonical);
        move |entry: &Entry| peer.as_ref().is_none_or(|p| entry.peers.contains(p))
    }

    pub fn visible_in(&self, view: usize, entry: &Entry) -> bool {
        self.filter(view)(entry)
    }

    /// Adds an entry; an incoming message is unread unless the active view shows it, and opens a
    /// conversation with its sender.
    pub fn push(&mut self, body: Body, peers: Vec<String>) {
        let mut entry = Entry {
            time_ms: now_ms(),
            body,
            peers,
            unread: false,
        };
        if let Body::Incoming(m) = &entry.body {
            entry.time_ms = m.time;
            self.view_of(&m.from);
            entry.unread = !self.visible_in(self.active, &entry);
        }
        if let Body::Room { room, from, .. } = &entry.body {
            self.view_of(&room_conversation(room));
            entry.unread = from != "you" && !self.visible_in(self.active, &entry);
        }
        // A view scrolled up stays on what it shows.
        let lines = entry_height_hint(&entry);
        for n in 0..self.views.len() {
            if self.views[n].scroll > 0 && self.visible_in(n, &entry) {
                self.views[n].scroll += lines;
            }
        }
        self.entries.push(entry);
        if self.entries.len() > self.scrollback.max(1) {
            let extra = self.entries.len() - self.scrollback.max(1);
            self.entries.drain(..extra);
            for view in &mut self.views {
                view.marker = view.marker.and_then(|m| m.checked_sub(extra));
            }
        }
    }

    /// What happened in a room: in its conversation (`#ROOM`, made if new) and in "all".
    pub fn room_event(&mut self, event: &RoomEvent) {
        let peers = vec![canonical(&room_conversation(event.room()))];
        match event {
            RoomEvent::Message { room, from, text } => self.push(
                Body::Room {
                    room: room.clone(),
                    from: from.name.clone(),
                    text: text.clone(),
                },
                peers,
            ),
            RoomEvent::Warning { .. } => {
                self.alarm(event.line().trim_start_matches("! ").to_string(), peers)
            }
            _ => {
                self.view_of(&room_conversation(event.room()));
                self.event(event.line().trim_start_matches("* ").to_string(), peers)
            }
        }
    }

    /// This device's rooms as the feed last listed them.
    pub fn set_rooms(&mut self, rooms: &[RoomInfo]) {
        self.rooms = rooms
            .iter()
            .map(|room| {
                let pane = RoomPane {
                    label: room.label.clone(),
                    epoch: room.epoch,
                    code: room.code.clone(),
                    people: room.people(),
                };
                (canonical(&room_conversation(&room.label)), pane)
            })
            .collect();
    }

    /// The room whose conversation is open, if one is.
    pub fn active_room(&self) -> Option<&RoomPane> {
        let conversation = self.talking_to()?;
        self.rooms.get(&canonical(conversation))
    }

    /// This device's own line in a room.
    pub fn said_in_room(&mut self, room: &str, text: &str) {
        let peers = vec![canonical(&room_conversation(room))];
        self.push(
            Body::Room {
                room: room.to_string(),
                from: "you".into(),
                text: text.to_string(),
            },
            peers,
        );
    }

    /// A note about a room, in its conversation.
    pub fn room_note(&mut self, room: &str, text: impl Into<String>) {
        let peers = vec![canonical(&room_conversation(room))];
        self.event(text, peers);
    }

    pub fn event(&mut self, text: impl Into<String>, peers: Vec<String>) {
        self.push(
            Body::Event {
                text: text.into(),
                alarm: false,
            },
            peers,
        );
    }

    pub fn alarm(&mut self, text: impl Into<String>, peers: Vec<String>) {
        self.push(
            Body::Event {
                text: text.into(),
                alarm: true,
            },
            peers,
        );
    }

    /// Answers to what the user typed show where they typed it.
    fn here(&self) -> Vec<String> {
        self.talking_to().map(canonical).into_iter().collect()
    }

    pub fn problem(&mut self, text: impl Into<String>) {
        self.push(Body::Problem(text.into()), self.here());
    }

    pub fn info(&mut self, lines: Vec<String>) {
        self.push(Body::Info(lines), self.here());
    }

    /// A note in answer to the user (shown in the active view).
    pub fn note(&mut self, text: impl Into<String>) {
        let here = self.here();
        self.event(text, here);
    }

    /// The view of `name`'s conversation, made if new.
    fn view_of(&mut self, name: &str) -> usize {
        if canonical(name) == canonical(&self.me) {
            return 0;
        }
        if let Some(n) = self
            .views
            .iter()
            .position(|v| v.peer.as_deref().map(canonical) == Some(canonical(name)))
        {
            return n;
        }
        let shown = self
            .people
            .get(&canonical(name))
            .map_or(name.to_string(), |p| p.name.clone());
        self.views.push(View {
            peer: Some(shown),
            scroll: 0,
            marker: None,
        });
        self.views.len() - 1
    }

    /// Opens `name`'s conversation (made if new).
    pub fn open(&mut self, name: &str) {
        let view = self.view_of(name);
        self.show(view);
    }

    /// Makes view `n` the active one: what it shows is read now, and a marker stays before the
    /// first entry that was unread.
    pub fn show(&mut self, n: usize) {
        if n >= self.views.len() {
            return;
        }
        self.active = n;
        let shown = self.filter(n);
        let mut first_unread = None;
        for (i, entry) in self.entries.iter_mut().enumerate() {
            if entry.unread && shown(entry) {
                first_unread.get_or_insert(i);
                entry.unread = false;
            }
        }
        self.views[n].marker = first_unread;
        self.views[n].scroll = 0;
    }

    pub fn unread_in(&self, view: usize) -> usize {
        let shown = self.filter(view);
        self.entries.iter().filter(|e| e.unread && shown(e)).count()
    }

    pub fn unread_total(&self) -> usize {
        self.entries.iter().filter(|e| e.unread).count()
    }

    pub fn scroll_by(&mut self, lines: isize) {
        let view = &mut self.views[self.active];
        view.scroll = view.scroll.saturating_add_signed(lines);
    }

    /// Caps the scroll at what there is to see (the view knows the height after drawing).
    pub fn clamp_scroll(&mut self, max: usize) {
        let view = &mut self.views[self.active];
        view.scroll = view.scroll.min(max);
    }

    /// Brings the roster's online flags in step with the directory's.
    pub fn sync_online(&mut self, online: &[Peer], pins: &KnownPeers) {
        for person in self.people.values_mut() {
            person.online = false;
        }
        for peer in online {
            if canonical(&peer.name) == canonical(&self.me) {
                continue;
            }
            let current = self.people.get(&canonical(&peer.name)).map(|p| p.key);
            let key = key_state(pins, &peer.name, Some(&peer.fingerprint)).max_with(current);
            self.person(&peer.name, &peer.fingerprint, true, key);
        }
    }

    /// What an event from the directory shows.
    pub fn apply(&mut self, item: Incoming, pins: &KnownPeers) {
        match item {
            Incoming::Roster(peers) => {
                let others: Vec<&(Peer, PinCheck)> = peers
                    .iter()
                    .filter(|(p, _)| canonical(&p.name) != canonical(&self.me))
                    .collect();
                let who = match others.len() {
                    0 => "nobody else is online".to_string(),
                    1 => "1 other person is online".to_string(),
                    n => format!("{n} others are online"),
                };
                self.event(who, vec![]);
                for (peer, check) in others {
                    self.seen(peer, check, pins);
                }
            }
            Incoming::Joined(peer, check) => {
                if canonical(&peer.name) != canonical(&self.me) {
                    let fp = short(&peer.fingerprint);
                    self.event(
                        format!("{} joined (key {fp})", peer.name),
                        vec![canonical(&peer.name)],
                    );
                    self.seen(&peer, &check, pins);
                }
            }
            Incoming::Left { name, reason } => {
                if canonical(&name) != canonical(&self.me) {
                    self.event(format!("{name} left ({reason})"), vec![canonical(&name)]);
                }
            }
            Incoming::Message(m) => {
                let mut peers = vec![canonical(&m.from)];
                peers.extend(m.to.iter().map(|t| canonical(t)));
                peers.retain(|p| *p != canonical(&self.me));
                if m.warning.is_some()
                    && let Some(person) = self.people.get_mut(&canonical(&m.from))
                {
                    person.key = KeyState::Changed;
                }
                self.push(Body::Incoming(m), peers);
            }
            Incoming::Delivered { id, to } => self.receipt(&id, &to, Delivery::Delivered),
            Incoming::Undelivered { id, to, reason } => {
                self.receipt(&id, &to, Delivery::Failed(reason))
            }
            Incoming::Dropped { from, why } => self.push(
                Body::Problem(format!("dropped a message from {from}: {why}")),
                vec![canonical(&from)],
            ),
            Incoming::Redelivered | Incoming::ResyncNeeded => {}
        }
    }

    /// A peer seen online with its pin check: a changed key is an alarm in its conversation.
    fn seen(&mut self, peer: &Peer, check: &PinCheck, pins: &KnownPeers) {
        let key = match check {
            PinCheck::Changed { pinned } => {
                self.alarm(
                    format!(
                        "{}'s KEY CHANGED: pinned {} …, now {} …. Sending to {} is blocked until you compare fingerprints with them and /trust {}",
                        peer.name,
                        short(pinned),
                        short(&peer.fingerprint),
                        peer.name,
                        peer.name
                    ),
                    vec![canonical(&peer.name)],
                );
                KeyState::Changed
            }
            _ => key_state(pins, &peer.name, Some(&peer.fingerprint)),
        };
        self.person(&peer.name, &peer.fingerprint, true, key);
    }

    /// Records a message just sent, with each recipient's state.
    pub fn sent(&mut self, to: &[String], text: &str, report: SendReport) {
        for name in &report.unknown {
            self.problem(format!("nobody is registered as {name}"));
        }
        let Some(sent) = report.sent else { return };
        let recipients: Vec<Recipient> = sent
            .reaches
            .iter()
            .map(|r| Recipient {
                name: r.recipient.clone(),
                state: match r.state {
                    ReachState::Delivering => Delivery::Sent,
                    ReachState::Stored => Delivery::Stored,
                    ReachState::Refused => Delivery::Failed(r.detail.clone()),
                },
            })
            .collect();
        let peers = recipients.iter().map(|r| canonical(&r.name)).collect();
        let to = to
            .iter()
            .filter(|t| !report.unknown.contains(t))
            .cloned()
            .collect();
        self.push(
            Body::Outgoing {
                to,
                text: text.to_string(),
                id: hex::encode(sent.message_id),
                recipients,
            },
            peers,
        );
    }

    /// A receipt updates the sent line it belongs to, in place.
    pub fn receipt(&mut self, id: &str, to: &str, state: Delivery) {
        for entry in self.entries.iter_mut().rev() {
            if let Body::Outgoing {
                id: sent_id,
                recipients,
                ..
            } = &mut entry.body
                && sent_id == id
            {
                for r in recipients.iter_mut() {
                    if canonical(&r.name) == canonical(to) {
                        r.state = state.clone();
                    }
                }
                return;
            }
        }
    }

    /// After /trust: the person's key is verified now.
    pub fn trusted(&mut self, peer: &Peer) {
        let online = self
            .people
            .get(&canonical(&peer.name))
            .is_some_and(|p| p.online);
        self.person(&peer.name, &peer.fingerprint, online, KeyState::Verified);
    }

    /// Names for Tab completion: people known, online first.
    pub fn names(&self) -> Vec<String> {
        let mut online: Vec<String> = Vec::new();
        let mut offline = Vec::new();
        for p in self.people.values() {
            if p.online {
                online.push(p.name.clone());
            } else {
                offline.push(p.name.clone());
            }
        }
        online.extend(offline);
        online
    }
}

impl KeyState {
    /// A key known to have changed stays changed until trusted, whatever a later check says.
    fn max_with(self, current: Option<KeyState>) -> KeyState {
        match current {
            Some(KeyState::Changed) if self != KeyState::Verified => KeyState::Changed,
            _ => self,
        }
    }
}

/// The state of `name`'s pin; `fingerprint` is the key seen now (if any).
fn key_state(pins: &KnownPeers, name: &str, fingerprint: Option<&str>) -> KeyState {
    match (pins.fingerprint(name), fingerprint) {
        (Some(pinned), Some(now)) if pinned != now => KeyState::Changed,
        (None, Some(_)) => KeyState::Changed,
        _ => match pins.trust(name) {
            Some(Trust::Verified) => KeyState::Verified,
            _ => KeyState::Pinned,
        },
    }
}

/// A room's conversation name: `#` and the room's (people's names cannot start with `#`).
pub fn room_conversation(room: &str) -> String {
    format!("#{}", room.trim_start_matches('#'))
}

/// The first eight hex digits in two groups (`66cc a1ab`).
pub fn short(hex: &str) -> String {
    crate::commands::display::fingerprint_prefix(hex, 2)
}

/// Lines an entry takes at least (for keeping a scrolled view still).
fn entry_height_hint(entry: &Entry) -> usize {
    match &entry.body {
        Body::Info(lines) => lines.len().max(1),
        Body::Incoming(m) if m.warning.is_some() => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Reach, Sent};

    fn message(from: &str, text: &str) -> Incoming {
        Incoming::Message(Message {
            from: from.into(),
            to: vec!["alice".into()],
            id: text.into(),
            text: text.into(),
            time: 0,
            warning: None,
        })
    }

    fn model() -> (Model, KnownPeers, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let pins = KnownPeers::load(dir.path().join("known_peers")).unwrap();
        (Model::new("alice", "ab", &pins), pins, dir)
    }

    #[test]
    fn unread_messages_are_counted_per_view_and_marked_when_opened() {
        let (mut m, pins, _dir) = model();
        m.open("ben");
        m.apply(message("ben", "seen at once"), &pins);
        m.apply(message("carol", "one"), &pins);
        m.apply(message("carol", "two"), &pins);
        // carol's view was made by her first message; "all" shows hers too.
        assert_eq!(m.views.len(), 3);
        assert_eq!((m.unread_in(0), m.unread_in(1), m.unread_in(2)), (2, 0, 2));
        assert_eq!(m.unread_total(), 2);
        m.show(2);
        assert_eq!(m.unread_total(), 0);
        // The marker sits before carol's first unread message.
        let marked = m.views[2].marker.unwrap();
        assert!(matches!(&m.entries[marked].body, Body::Incoming(x) if x.text == "one"));
    }

    #[test]
    fn receipts_update_the_sent_line_in_place() {
        let (mut m, pins, _dir) = model();
        let report = SendReport {
            unknown: vec!["nobody".into()],
            sent: Some(Sent {
                message_id: [7; 16],
                reaches: vec![
                    Reach {
                        recipient: "ben".into(),
                        state: ReachState::Delivering,
                        detail: String::new(),
                    },
                    Reach {
                        recipient: "carol".into(),
                        state: ReachState::Stored,
                        detail: String::new(),
                    },
                ],
            }),
        };
        m.sent(
            &["ben".into(), "carol".into(), "nobody".into()],
            "hi",
            report,
        );
        let entries = m.entries.len();
        m.apply(
            Incoming::Delivered {
                id: hex::encode([7u8; 16]),
                to: "carol".into(),
            },
            &pins,
        );
        assert_eq!(m.entries.len(), entries, "no new line");
        let Body::Outgoing { to, recipients, .. } = &m.entries.last().unwrap().body else {
            panic!("the sent line is last");
        };
        assert_eq!(to, &["ben".to_string(), "carol".to_string()]);
        assert_eq!(recipients[0].state, Delivery::Sent);
        assert_eq!(recipients[1].state, Delivery::Delivered);
        assert!(matches!(&m.entries[0].body, Body::Problem(p) if p.contains("nobody")));
    }

    #[test]
    fn scrollback_keeps_the_newest_entries_and_markers_follow() {
        let (mut m, pins, _dir) = model();
        m.scrollback = 3;
        m.open("ben");
        for n in 0..5 {
            m.apply(message("carol", &format!("m{n}")), &pins);
        }
        assert_eq!(m.entries.len(), 3);
        m.show(2);
        let marked = m.views[2].marker.unwrap();
        assert!(matches!(&m.entries[marked].body, Body::Incoming(x) if x.text == "m2"));
    }
}
