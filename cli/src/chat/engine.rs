//! The chat's state machine behind every screen that keeps a model (the full-screen terminal and
//! `svs web`): it owns the session, its event stream, the inbox, the room feed, the playbacks and
//! the reconnection, turns what happens into `Model` changes, and acts on entered lines and on
//! answers to its questions. A front end only gathers input and draws the model.

use crate::chat::actions;
use crate::chat::command::{HELP, Input, RoomInput, SCREEN_HELP, parse};
use crate::chat::model::{self, Link, Model, PlayState, Prompt};
use crate::chat::playback::{PlaybackNews, Playbacks};
use crate::chat::rooms;
use crate::commands::Global;
use crate::error::CliError;
use crate::inbox::Inbox;
use crate::player::PlayerReport;
use crate::reconnect::Connected;
use crate::rooms::{RoomFeed, RoomNews};
use crate::session::Session;
use svs_common::proto::directory::Event;
use tokio::sync::mpsc;
use tonic::Streaming;

/// How long leaving waits for the directory to hear about it.
const QUIT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How the reconnection is going.
#[derive(Debug)]
pub enum LinkNews {
    Waiting(String),
    Back(Box<Connected>),
    Failed(CliError),
}

/// Something that happened beside the person's input; `Engine::next` waits for one and
/// `Engine::apply` puts it in the model.
#[derive(Debug)]
pub enum Happening {
    Directory(Result<Option<Event>, tonic::Status>),
    Playback(u64, PlaybackNews),
    Link(LinkNews),
    Rooms(Option<RoomNews>),
}

/// What the front end does after an entered line or an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Stay,
    /// The line did not go: give it back to the person's input box.
    Restore(String),
    Leave,
}

pub struct Engine<'g> {
    global: &'g Global,
    session: Session,
    stream: Option<Streaming<Event>>,
    inbox: Inbox,
    pub model: Model,
    playbacks: Playbacks,
    link_tx: mpsc::UnboundedSender<LinkNews>,
    link_rx: mpsc::UnboundedReceiver<LinkNews>,
    /// Rooms read beside the chat; `None` once the directory turned out to have none.
    feed: Option<RoomFeed>,
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.session.name)
            .field("connected", &self.stream.is_some())
            .finish_non_exhaustive()
    }
}

/// The next directory event; pending forever while there is no stream (reconnecting).
async fn next_event(stream: &mut Option<Streaming<Event>>) -> Result<Option<Event>, tonic::Status> {
    match stream {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

impl<'g> Engine<'g> {
    /// Registers, subscribes and starts reading rooms; the model keeps `scrollback` entries.
    pub async fn start(global: &'g Global, scrollback: usize) -> Result<Self, CliError> {
        let mut session = global.register().await?;
        let stream = session.subscribe().await?;
        let inbox = session.inbox()?;
        let mut model = Model::new(
            &session.name,
            &hex::encode(session.fingerprint),
            &session.pins,
        );
        model.scrollback = scrollback;
        let (link_tx, link_rx) = mpsc::unbounded_channel();
        let feed = Some(global.room_feed(&inbox)?);
        model.event(
            format!(
                "connected to {} as {}; /help lists commands",
                global.directory, session.name
            ),
            vec![],
        );
        Ok(Self {
            global,
            session,
            stream: Some(stream),
            inbox,
            model,
            playbacks: Playbacks::default(),
            link_tx,
            link_rx,
            feed,
        })
    }

    /// The name this chat runs as.
    pub fn name(&self) -> &str {
        &self.session.name
    }

    /// The session's current token (it changes when the chat reconnects): what stream-service
    /// asks for.
    pub fn token(&self) -> &str {
        &self.session.token
    }

    /// The safety number with `name`'s pinned key.
    pub fn safety_number(&self, name: &str) -> Result<String, CliError> {
        actions::safety_number(&self.session, name)
    }

    /// Waits for the next thing that happens. Cancel-safe: a front end races it with its input.
    pub async fn next(&mut self) -> Happening {
        let feed = &mut self.feed;
        tokio::select! {
            news = async { feed.as_mut()?.next().await }, if feed.is_some() => Happening::Rooms(news),
            event = next_event(&mut self.stream) => Happening::Directory(event),
            (id, _, news) = self.playbacks.next() => Happening::Playback(id, news),
            Some(news) = self.link_rx.recv() => Happening::Link(news),
        }
    }

    /// Puts what happened in the model. An error ends the chat.
    pub async fn apply(&mut self, happening: Happening) -> Result<(), CliError> {
        match happening {
            Happening::Directory(event) => self.directory_event(event).await?,
            Happening::Playback(id, news) => self.playback_news(id, news),
            Happening::Link(news) => self.link_news(news),
            Happening::Rooms(None) => self.feed = None,
            Happening::Rooms(Some(RoomNews::Events(events))) => {
                for event in &events {
                    self.model.room_event(event);
                }
            }
            Happening::Rooms(Some(RoomNews::Problem(text))) => {
                self.model.problem(format!("rooms: {text}"))
            }
            Happening::Rooms(Some(RoomNews::Rooms(rooms))) => self.model.set_rooms(&rooms),
        }
        Ok(())
    }

    /// Stops the playbacks and the room feed and tells the directory we left (without waiting
    /// long for one that cannot be reached).
    pub async fn leave(mut self) {
        self.playbacks.stop_all();
        if let Some(feed) = self.feed.take() {
            feed.stop().await;
        }
        let _ = tokio::time::timeout(QUIT_WAIT, self.session.quit()).await;
    }

    /// The answer to the open question (`t`/`y` yes, `n` no). Any other answer, or none open,
    /// leaves things as they are.
    pub async fn answer(&mut self, answer: char) -> After {
        let Some(prompt) = self.model.prompt.take() else {
            return After::Stay;
        };
        match (prompt, answer.to_ascii_lowercase()) {
            (Prompt::KeyChanged { candidate, line }, 't') => {
                if self.trust(&candidate) {
                    return Box::pin(self.submit(line)).await;
                }
                After::Restore(line)
            }
            (Prompt::KeyChanged { line, .. }, 'n') => {
                self.model.problem(
                    "not sent: the key change was not accepted; the text is back in the input line",
                );
                After::Restore(line)
            }
            (Prompt::Trust { candidate }, 'y') => {
                self.trust(&candidate);
                After::Stay
            }
            (Prompt::Trust { candidate }, 'n') => {
                self.model
                    .note(format!("{}'s key: nothing changed", candidate.peer.name));
                After::Stay
            }
            // Anything else leaves the question open.
            (prompt, _) => {
                self.model.prompt = Some(prompt);
                After::Stay
            }
        }
    }

    /// Pins `candidate` as verified and says so; false (with the reason shown) if it failed.
    fn trust(&mut self, candidate: &actions::TrustCandidate) -> bool {
        match candidate.accept(&mut self.session) {
            Ok(note) => {
                self.model.trusted(&candidate.peer);
                self.model.note(note);
                true
            }
            Err(e) => {
                self.model.problem(e.to_string());
                false
            }
        }
    }

    /// Acts on an entered line. A line that could not go comes back (`After::Restore`). While a
    /// question is open nothing is sent: it must be answered first.
    pub async fn submit(&mut self, line: String) -> After {
        if self.model.prompt.is_some() {
            self.model
                .problem("answer the question about the key first; nothing was sent");
            return After::Restore(line);
        }
        // Debug builds only, for the test that the terminal survives a panic.
        #[cfg(debug_assertions)]
        if line == "/__panic" && std::env::var_os("SVS_TEST_FAULTS").is_some() {
            panic!("a fault injected by SVS_TEST_FAULTS");
        }
        match parse(&line, self.model.talking_to()) {
            Input::Message { to, text } => return self.send(&to, &text, line).await,
            Input::All(text) => {
                let others = actions::everyone_else(&self.session, &self.inbox);
                if others.is_empty() {
                    self.model.problem("nobody else is online");
                    return After::Restore(line);
                }
                return self.send(&others, &text, line).await;
            }
            Input::Room(input) => return self.room(input, line).await,
            Input::ShowAll => self.model.show(0),
            Input::Open(name) => self.model.open(&name),
            Input::Who => self
                .model
                .info(actions::who_lines(&self.inbox, &self.session.name)),
            Input::Fingerprint(name) => {
                match actions::fingerprint_line(&self.session, name.as_deref()) {
                    Ok(line) => self.model.info(vec![line]),
                    Err(e) => self.model.problem(e.to_string()),
                }
            }
            Input::Verify(name) => match actions::safety_lines(&self.session, &name) {
                Ok(lines) => self.model.info(lines),
                Err(e) => self.model.problem(e.to_string()),
            },
            Input::Trust(name) => {
                match actions::trust_candidate(&mut self.session, &self.inbox, &name).await {
                    Ok(candidate) => self.model.prompt = Some(Prompt::Trust { candidate }),
                    Err(e) => self.model.problem(e.to_string()),
                }
            }
            Input::Play(video) => {
                let id = self
                    .playbacks
                    .start(self.global, &self.session.token, &video);
                self.model.playbacks.insert(
                    id,
                    PlayState {
                        video: video.clone(),
                        rendition: "…".into(),
                        position_seconds: 0.0,
                        duration_seconds: 0.0,
                    },
                );
                self.model.note(format!("playing {video}"));
            }
            Input::Stop => {
                let stopped = self.playbacks.stop_all();
                self.model.playbacks.clear();
                if stopped.is_empty() {
                    self.model.problem("nothing is playing");
                } else {
                    self.model.note(format!("stopped {}", stopped.join(", ")));
                }
            }
            Input::Help => self.model.info(
                HELP.lines()
                    .chain(SCREEN_HELP.lines())
                    .map(str::to_string)
                    .collect(),
            ),
            Input::Quit => return After::Leave,
            Input::Empty => {}
            Input::Invalid(why) => {
                self.model.problem(why);
                return After::Restore(line);
            }
        }
        After::Stay
    }

    /// A room command; the line comes back if it failed.
    async fn room(&mut self, input: RoomInput, line: String) -> After {
        let said = match &input {
            RoomInput::Send { room, text } => Some((room.clone(), text.clone())),
            _ => None,
        };
        let opens = matches!(input, RoomInput::Create { .. });
        match rooms::act(&self.global.home(), &mut self.session, input).await {
            Ok(outcome) => {
                for event in &outcome.caught_up {
                    self.model.room_event(event);
                }
                if let Some((room, text)) = said {
                    self.model.said_in_room(&room, &text);
                }
                match &outcome.room {
                    Some(room) => {
                        for text in &outcome.lines {
                            self.model.room_note(room, text.clone());
                        }
                        if opens {
                            self.model.open(&model::room_conversation(room));
                        }
                    }
                    None => self.model.info(outcome.lines),
                }
                After::Stay
            }
            Err(e) => {
                self.model.problem(e.to_string());
                After::Restore(line)
            }
        }
    }

    async fn send(&mut self, to: &[String], text: &str, line: String) -> After {
        match actions::send(&mut self.session, &self.inbox, to, text).await {
            Ok(report) => {
                self.model.sent(to, text, report);
                After::Stay
            }
            Err(CliError::KeyChanged { name, .. }) => {
                match actions::trust_candidate(&mut self.session, &self.inbox, &name).await {
                    Ok(candidate) => {
                        self.model.prompt = Some(Prompt::KeyChanged { candidate, line });
                        After::Stay
                    }
                    Err(e) => {
                        self.model.problem(format!("not sent: {e}"));
                        After::Restore(line)
                    }
                }
            }
            Err(e) => {
                self.model.problem(format!(
                    "not sent: {e} (the text is back in the input line)"
                ));
                After::Restore(line)
            }
        }
    }

    async fn directory_event(
        &mut self,
        event: Result<Option<Event>, tonic::Status>,
    ) -> Result<(), CliError> {
        match event {
            Ok(Some(event)) => match self.session.process(event, &mut self.inbox).await {
                Ok(items) => {
                    for item in items {
                        self.model.apply(item, &self.session.pins);
                    }
                    self.model
                        .sync_online(&self.inbox.online(), &self.session.pins);
                }
                Err(e) if e.is_lost_connection() => self.lost(e),
                Err(e) => return Err(e),
            },
            Ok(None) => {
                self.stream = None;
                self.model.link = Link::Offline("the directory ended the session".into());
                self.model
                    .problem("the directory ended the session; /quit to leave");
            }
            Err(status) => match CliError::from(status) {
                e if e.is_lost_connection() => self.lost(e),
                e => return Err(e),
            },
        }
        Ok(())
    }

    /// The connection is gone: say so, and register and subscribe again in the background
    /// (backoff with jitter) while the screen stays usable.
    fn lost(&mut self, e: CliError) {
        self.stream = None;
        self.model.link = Link::Reconnecting(e.to_string());
        self.model
            .alarm(format!("connection lost ({e}); reconnecting…"), vec![]);
        let options = match self.global.connect_options() {
            Ok(options) => options,
            Err(e) => {
                let _ = self.link_tx.send(LinkNews::Failed(e));
                return;
            }
        };
        let tx = self.link_tx.clone();
        tokio::spawn(async move {
            let result = crate::reconnect::connect(&options, |e, delay| {
                let _ = tx.send(LinkNews::Waiting(format!(
                    "{e}; next try in {:.1} s",
                    delay.as_secs_f64()
                )));
            })
            .await;
            let _ = tx.send(match result {
                Ok(connected) => LinkNews::Back(Box::new(connected)),
                Err(e) => LinkNews::Failed(e),
            });
        });
    }

    fn link_news(&mut self, news: LinkNews) {
        match news {
            LinkNews::Waiting(why) => self.model.link = Link::Reconnecting(why),
            LinkNews::Back(connected) => {
                let Connected { session, stream } = *connected;
                self.session = session;
                self.stream = Some(stream);
                self.model.link = Link::Connected;
                self.model.event("back online", vec![]);
            }
            LinkNews::Failed(e) => {
                self.model.link = Link::Offline(e.to_string());
                self.model
                    .problem(format!("cannot reconnect: {e}; /quit to leave"));
            }
        }
    }

    fn playback_news(&mut self, id: u64, news: PlaybackNews) {
        match news {
            PlaybackNews::Report(PlayerReport::Progress {
                rendition,
                position_seconds,
                duration_seconds,
            }) => {
                if let Some(state) = self.model.playbacks.get_mut(&id) {
                    state.rendition = rendition;
                    state.position_seconds = position_seconds;
                    state.duration_seconds = duration_seconds;
                }
            }
            PlaybackNews::Report(PlayerReport::Note(text)) => {
                self.model.note(text.trim_start_matches("* ").to_string())
            }
            PlaybackNews::Ended(result) => {
                let video = self
                    .model
                    .playbacks
                    .remove(&id)
                    .map(|p| p.video)
                    .unwrap_or_default();
                match result {
                    Ok(summary) => self.model.note(summary),
                    Err(e) => self.model.problem(format!("cannot play {video}: {e}")),
                }
            }
        }
    }
}
