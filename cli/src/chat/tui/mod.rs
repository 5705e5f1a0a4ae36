//! The full-screen `svs chat` (when stdin and stdout are terminals): one task owns the session,
//! the model and the screen, and redraws after whatever happens next — a key, an event from the
//! directory, a playback's news, the reconnection's progress, a signal. Incoming events only
//! change the model, never the input line.

pub mod editor;
pub mod model;
pub mod terminal;
pub mod theme;
pub mod view;

use crate::chat::actions;
use crate::chat::command::{COMMANDS, HELP, Input, RoomInput, SCREEN_HELP, parse};
use crate::chat::playback::{PlaybackNews, Playbacks};
use crate::chat::rooms;
use crate::commands::Global;
use crate::error::CliError;
use crate::inbox::Inbox;
use crate::player::PlayerReport;
use crate::reconnect::Connected;
use crate::rooms::{RoomFeed, RoomNews};
use crate::session::Session;
use crossterm::event::{
    Event as TermEvent, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};
use editor::Editor;
use futures_util::StreamExt;
use model::{Link, Model, PlayState, Prompt};
use svs_common::proto::directory::Event;
use terminal::Screen;
use theme::Theme;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tonic::Streaming;

/// How long leaving waits for the directory to hear about it.
const QUIT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Lines the mouse wheel scrolls.
const WHEEL_LINES: isize = 3;

/// How the reconnection is going.
enum LinkNews {
    Waiting(String),
    Back(Box<Connected>),
    Failed(CliError),
}

enum Step {
    Terminal(Option<std::io::Result<TermEvent>>),
    Directory(Result<Option<Event>, tonic::Status>),
    Playback(u64, PlaybackNews),
    Link(LinkNews),
    Rooms(Option<RoomNews>),
    Signal,
}

enum Flow {
    Stay,
    Leave,
}

struct Chat<'g> {
    global: &'g Global,
    session: Session,
    stream: Option<Streaming<Event>>,
    inbox: Inbox,
    model: Model,
    editor: Editor,
    theme: Theme,
    playbacks: Playbacks,
    link_tx: mpsc::UnboundedSender<LinkNews>,
    page: usize,
    /// Rooms read beside the chat; `None` once the directory turned out to have none.
    feed: Option<RoomFeed>,
}

/// The next directory event; pending forever while there is no stream (reconnecting).
async fn next_event(stream: &mut Option<Streaming<Event>>) -> Result<Option<Event>, tonic::Status> {
    match stream {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

pub async fn run(global: &Global, scrollback: usize) -> Result<(), CliError> {
    // Registration (and a new key's note) happens before the screen is taken.
    let mut session = global.register().await?;
    let stream = session.subscribe().await?;
    let inbox = session.inbox()?;
    let mut model = Model::new(
        &session.name,
        &hex::encode(session.fingerprint),
        &session.pins,
    );
    model.scrollback = scrollback;
    let (link_tx, mut link_rx) = mpsc::unbounded_channel();
    let mut chat = Chat {
        global,
        session,
        stream: Some(stream),
        inbox,
        model,
        editor: Editor::default(),
        theme: Theme::from_env(),
        playbacks: Playbacks::default(),
        link_tx,
        page: 10,
        feed: None,
    };
    chat.feed = Some(global.room_feed(&chat.inbox)?);
    chat.model.event(
        format!(
            "connected to {} as {}; /help lists commands",
            global.directory, chat.session.name
        ),
        vec![],
    );
    let log = global.home().chat_log_path(&chat.session.name);
    let logged_before = std::fs::metadata(&log).map_or(0, |m| m.len());
    let mut screen = Screen::enter(&log)?;
    let result = chat.run(&mut screen, &mut link_rx).await;
    chat.playbacks.stop_all();
    if let Some(feed) = chat.feed.take() {
        feed.stop().await;
    }
    drop(screen);
    // Others see the leave at once; a directory that cannot be reached does not hold us up.
    let _ = tokio::time::timeout(QUIT_WAIT, chat.session.quit()).await;
    println!("left the chat");
    if std::fs::metadata(&log).map_or(0, |m| m.len()) > logged_before {
        println!("(what libraries printed meanwhile is in {})", log.display());
    }
    result
}

impl Chat<'_> {
    async fn run(
        &mut self,
        screen: &mut Screen,
        link_rx: &mut mpsc::UnboundedReceiver<LinkNews>,
    ) -> Result<(), CliError> {
        let mut terminal_events = EventStream::new();
        // Ctrl-C arrives as a key in raw mode; these come from `kill` or a closed terminal.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        loop {
            let mut drawn = view::Drawn::default();
            screen
                .terminal
                .draw(|frame| drawn = view::draw(frame, &self.model, &self.editor, &self.theme))?;
            self.page = drawn.page;
            self.model.clamp_scroll(drawn.max_scroll);
            // Only cancel-safe futures race here; the work happens after the select.
            let feed = &mut self.feed;
            let step = tokio::select! {
                event = terminal_events.next() => Step::Terminal(event),
                news = async { feed.as_mut()?.next().await }, if feed.is_some() => Step::Rooms(news),
                event = next_event(&mut self.stream) => Step::Directory(event),
                (id, _, news) = self.playbacks.next() => Step::Playback(id, news),
                Some(news) = link_rx.recv() => Step::Link(news),
                _ = interrupt.recv() => Step::Signal,
                _ = terminate.recv() => Step::Signal,
                _ = hangup.recv() => Step::Signal,
            };
            let flow = match step {
                Step::Terminal(None) | Step::Signal => Flow::Leave,
                Step::Terminal(Some(Err(e))) => return Err(e.into()),
                Step::Terminal(Some(Ok(event))) => self.terminal_event(event, screen).await?,
                Step::Directory(event) => self.directory_event(event).await?,
                Step::Playback(id, news) => {
                    self.playback_news(id, news);
                    Flow::Stay
                }
                Step::Link(news) => {
                    self.link_news(news);
                    Flow::Stay
                }
                Step::Rooms(news) => {
                    match news {
                        None => self.feed = None,
                        Some(RoomNews::Events(events)) => {
                            for event in &events {
                                self.model.room_event(event);
                            }
                        }
                        Some(RoomNews::Problem(text)) => {
                            self.model.problem(format!("rooms: {text}"))
                        }
                        Some(RoomNews::Rooms(rooms)) => self.model.set_rooms(&rooms),
                    }
                    Flow::Stay
                }
            };
            if let Flow::Leave = flow {
                return Ok(());
            }
        }
    }

    async fn terminal_event(
        &mut self,
        event: TermEvent,
        screen: &mut Screen,
    ) -> Result<Flow, CliError> {
        match event {
            TermEvent::Key(key) if key.kind != KeyEventKind::Release => {
                return Ok(self.key(key, screen).await);
            }
            TermEvent::Paste(text) if self.model.prompt.is_none() => self.editor.insert_str(&text),
            TermEvent::Mouse(mouse) => match mouse.kind {
                MouseEventKind::ScrollUp => self.model.scroll_by(WHEEL_LINES),
                MouseEventKind::ScrollDown => self.model.scroll_by(-WHEEL_LINES),
                _ => {}
            },
            // A resize is drawn by the next pass.
            _ => {}
        }
        Ok(Flow::Stay)
    }

    async fn key(&mut self, key: KeyEvent, screen: &mut Screen) -> Flow {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        if ctrl && key.code == KeyCode::Char('c') {
            return Flow::Leave;
        }
        if let Some(prompt) = self.model.prompt.take() {
            return self.answer(prompt, key).await;
        }
        match key.code {
            KeyCode::Enter => {
                let line = self.editor.take();
                return self.submit(line).await;
            }
            KeyCode::Char('d') if ctrl && self.editor.is_empty() => return Flow::Leave,
            KeyCode::Char('d') if ctrl => self.editor.delete(),
            KeyCode::Char('w') if ctrl => self.editor.erase_word(),
            KeyCode::Char('u') if ctrl => self.editor.erase_to_start(),
            KeyCode::Char('a') if ctrl => self.editor.home(),
            KeyCode::Char('e') if ctrl => self.editor.end(),
            KeyCode::Char('l') if ctrl => {
                let _ = screen.terminal.clear();
            }
            KeyCode::Char('n') if ctrl => {
                self.model
                    .show((self.model.active + 1) % self.model.views.len());
            }
            KeyCode::Char('p') if ctrl => {
                let n = self.model.views.len();
                self.model.show((self.model.active + n - 1) % n);
            }
            KeyCode::Char(c) if alt && c.is_ascii_digit() && c != '0' => {
                self.model.show(c as usize - '1' as usize);
            }
            KeyCode::Char(c) if !ctrl && !alt => self.editor.insert(c),
            KeyCode::Backspace => self.editor.backspace(),
            KeyCode::Delete => self.editor.delete(),
            KeyCode::Left => self.editor.left(),
            KeyCode::Right => self.editor.right(),
            KeyCode::Home => self.editor.home(),
            KeyCode::End if self.editor.is_empty() => self.model.scroll_by(isize::MIN),
            KeyCode::End => self.editor.end(),
            KeyCode::Up => self.editor.history_up(),
            KeyCode::Down => self.editor.history_down(),
            KeyCode::PageUp => self.model.scroll_by(self.page as isize),
            KeyCode::PageDown => self.model.scroll_by(-(self.page as isize)),
            KeyCode::Tab => self.editor.complete(COMMANDS, &self.model.names()),
            _ => {}
        }
        Flow::Stay
    }

    /// A key while a prompt is open: only its answers count.
    async fn answer(&mut self, prompt: Prompt, key: KeyEvent) -> Flow {
        let answer = match key.code {
            KeyCode::Char(c) => Some(c.to_ascii_lowercase()),
            KeyCode::Esc => Some('n'),
            _ => None,
        };
        match (prompt, answer) {
            (Prompt::KeyChanged { candidate, line }, Some('t')) => {
                if self.trust(&candidate) {
                    return Box::pin(self.submit(line)).await;
                }
                self.editor.restore(&line);
            }
            (Prompt::KeyChanged { line, .. }, Some('n')) => {
                self.model.problem(
                    "not sent: the key change was not accepted; the text is back in the input line",
                );
                self.editor.restore(&line);
            }
            (Prompt::Trust { candidate }, Some('y')) => {
                self.trust(&candidate);
            }
            (Prompt::Trust { candidate }, Some('n')) => self
                .model
                .note(format!("{}'s key: nothing changed", candidate.peer.name)),
            // Anything else leaves the question open.
            (prompt, _) => self.model.prompt = Some(prompt),
        }
        Flow::Stay
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

    /// Acts on an entered line. A line that could not go comes back to the input line.
    async fn submit(&mut self, line: String) -> Flow {
        // Debug builds only, for the test that the terminal survives a panic.
        #[cfg(debug_assertions)]
        if line == "/__panic" && std::env::var_os("SVS_TEST_FAULTS").is_some() {
            panic!("a fault injected by SVS_TEST_FAULTS");
        }
        match parse(&line, self.model.talking_to()) {
            Input::Message { to, text } => self.send(&to, &text, line).await,
            Input::All(text) => {
                let others = actions::everyone_else(&self.session, &self.inbox);
                if others.is_empty() {
                    self.model.problem("nobody else is online");
                    self.editor.restore(&line);
                } else {
                    self.send(&others, &text, line).await;
                }
            }
            Input::Room(input) => self.room(input, line).await,
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
            Input::Quit => return Flow::Leave,
            Input::Empty => {}
            Input::Invalid(why) => {
                self.model.problem(why);
                self.editor.restore(&line);
            }
        }
        Flow::Stay
    }

    /// A room command; the line comes back to the input line if it failed.
    async fn room(&mut self, input: RoomInput, line: String) {
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
            }
            Err(e) => {
                self.model.problem(e.to_string());
                self.editor.restore(&line);
            }
        }
    }

    async fn send(&mut self, to: &[String], text: &str, line: String) {
        match actions::send(&mut self.session, &self.inbox, to, text).await {
            Ok(report) => self.model.sent(to, text, report),
            Err(CliError::KeyChanged { name, .. }) => {
                match actions::trust_candidate(&mut self.session, &self.inbox, &name).await {
                    Ok(candidate) => {
                        self.model.prompt = Some(Prompt::KeyChanged { candidate, line })
                    }
                    Err(e) => {
                        self.model.problem(format!("not sent: {e}"));
                        self.editor.restore(&line);
                    }
                }
            }
            Err(e) => {
                self.model.problem(format!(
                    "not sent: {e} (the text is back in the input line)"
                ));
                self.editor.restore(&line);
            }
        }
    }

    async fn directory_event(
        &mut self,
        event: Result<Option<Event>, tonic::Status>,
    ) -> Result<Flow, CliError> {
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
        Ok(Flow::Stay)
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
