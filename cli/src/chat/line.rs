//! The line-oriented chat (`--plain`, or stdin/stdout not a terminal): incoming events print as
//! they arrive, typed lines are commands or messages. Scripts and pipes drive this one.

use crate::chat::actions;
use crate::chat::command::{HELP, Input, parse};
use crate::chat::playback::{PlaybackNews, Playbacks};
use crate::commands::{Global, display};
use crate::error::CliError;
use crate::inbox::Inbox;
use crate::player::PlayerReport;
use crate::rooms::RoomNews;
use crate::session::{ReachState, Session};
use svs_common::identity;
use tokio::io::{AsyncBufReadExt, BufReader};

enum Step {
    Line(Option<String>),
    Event(Option<svs_common::proto::directory::Event>),
    Lost(CliError),
    Playback(String, PlaybackNews),
    Rooms(Option<RoomNews>),
    Interrupted,
}

pub async fn run(global: &Global) -> Result<(), CliError> {
    let mut session = global.register().await?;
    println!(
        "connected to {} as {} (your key {})",
        global.directory,
        session.name,
        identity::fingerprint_display(&session.fingerprint)
    );
    println!("type /help for commands");
    let mut stream = session.subscribe().await?;
    let mut inbox = session.inbox()?;
    let mut playbacks = Playbacks::default();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    // Rooms are read beside the chat; `None` once the directory turned out to have none.
    let mut feed = Some(global.room_feed(&inbox)?);
    // One listener for the whole loop: a Ctrl-C that arrives while an iteration is busy is kept
    // for the next select instead of being lost with a listener made anew each pass.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let result = loop {
        // Only cancel-safe futures race here; processing happens after the select.
        let step = tokio::select! {
            line = lines.next_line() => Step::Line(line.unwrap_or(None)),
            event = stream.message() => match event {
                Ok(e) => Step::Event(e),
                Err(status) => match CliError::from(status) {
                    e if e.is_lost_connection() => Step::Lost(e),
                    e => break Err(e),
                },
            },
            (_, video, news) = playbacks.next() => Step::Playback(video, news),
            news = async { feed.as_mut()?.next().await }, if feed.is_some() => Step::Rooms(news),
            _ = &mut ctrl_c => Step::Interrupted,
        };
        match step {
            Step::Line(None) | Step::Interrupted => break Ok(()),
            Step::Line(Some(line)) => {
                match handle_line(global, &mut session, &mut inbox, &mut playbacks, &line).await {
                    Ok(true) => {}
                    Ok(false) => break Ok(()),
                    Err(e) if e.is_lost_connection() => {
                        println!("! not sent: {e}; type it again once back online")
                    }
                    Err(e) => println!("! {e}"),
                }
            }
            Step::Playback(video, news) => match news {
                PlaybackNews::Report(PlayerReport::Note(text)) => println!("{text}"),
                PlaybackNews::Report(PlayerReport::Progress { .. }) => {}
                PlaybackNews::Ended(Ok(summary)) => println!("* {summary}"),
                PlaybackNews::Ended(Err(e)) => println!("! cannot play {video}: {e}"),
            },
            Step::Rooms(None) => feed = None,
            Step::Rooms(Some(RoomNews::Events(events))) => {
                for event in &events {
                    println!("{}", event.line());
                }
            }
            Step::Rooms(Some(RoomNews::Problem(text))) => println!("! rooms: {text}"),
            // `/rooms` lists them on demand.
            Step::Rooms(Some(RoomNews::Rooms(_))) => {}
            Step::Event(None) => {
                break Err(CliError::Refused("the directory ended the session".into()));
            }
            Step::Lost(e) => match global.recover(&e, &mut ctrl_c).await {
                Ok(Some(connected)) => {
                    session = connected.session;
                    stream = connected.stream;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            },
            Step::Event(Some(event)) => match session.process(event, &mut inbox).await {
                Ok(items) => {
                    for item in items {
                        println!("{}", display::render(&item, &session.name));
                    }
                }
                Err(e) if e.is_lost_connection() => {
                    println!("* connection lost ({e}); the message will come again");
                }
                Err(e) => break Err(e),
            },
        }
    };
    playbacks.stop_all();
    if let Some(feed) = feed {
        feed.stop().await;
    }
    let _ = session.quit().await;
    println!("left the chat");
    result
}

/// Acts on one typed line. Returns false to leave.
async fn handle_line(
    global: &Global,
    session: &mut Session,
    inbox: &mut Inbox,
    playbacks: &mut Playbacks,
    line: &str,
) -> Result<bool, CliError> {
    match parse(line, None) {
        Input::Play(video) => {
            // The playback runs beside the chat: messages keep arriving while it plays.
            println!("* playing {video}");
            playbacks.start(global, &session.token, &video);
        }
        Input::Stop => {
            let stopped = playbacks.stop_all();
            if stopped.is_empty() {
                println!("! nothing is playing");
            } else {
                println!("* stopped {}", stopped.join(", "));
            }
        }
        Input::Empty => {}
        Input::Quit => return Ok(false),
        Input::Help => println!("{HELP}"),
        Input::Invalid(why) => println!("! {why}"),
        Input::ShowAll => println!("! usage: /all TEXT"),
        Input::Open(_) => println!("! /open works in the full-screen chat; write @NAME TEXT here"),
        Input::Who => {
            for line in actions::who_lines(inbox, &session.name).iter().skip(1) {
                println!("{line}");
            }
        }
        Input::Fingerprint(name) => {
            println!("{}", actions::fingerprint_line(session, name.as_deref())?)
        }
        Input::Verify(name) => {
            for line in actions::safety_lines(session, &name)? {
                println!("{line}");
            }
        }
        Input::Trust(name) => {
            let candidate = actions::trust_candidate(session, inbox, &name).await?;
            for line in candidate.side_by_side() {
                println!("{line}");
            }
            println!("{}", candidate.accept(session)?);
        }
        Input::All(text) => {
            let others = actions::everyone_else(session, inbox);
            if others.is_empty() {
                println!("! nobody else is online");
            } else {
                send(session, inbox, &others, &text).await?;
            }
        }
        Input::Message { to, text } => send(session, inbox, &to, &text).await?,
        Input::Room(input) => {
            let outcome = crate::chat::rooms::act(&global.home(), session, input).await?;
            for event in &outcome.caught_up {
                println!("{}", event.line());
            }
            for line in &outcome.lines {
                println!("* {line}");
            }
        }
    }
    Ok(true)
}

async fn send(
    session: &mut Session,
    inbox: &mut Inbox,
    to: &[String],
    text: &str,
) -> Result<(), CliError> {
    let report = actions::send(session, inbox, to, text).await?;
    for name in report.unknown {
        println!("! nobody is registered as {name}");
    }
    for reach in report.sent.iter().flat_map(|s| &s.reaches) {
        match reach.state {
            ReachState::Delivering => {}
            ReachState::Stored => println!("  … {}", reach.detail),
            ReachState::Refused => println!("  ✗ {}", reach.detail),
        }
    }
    Ok(())
}
