//! `svs chat`: the interactive client. Incoming events print as they arrive; typed lines are
//! commands or messages. Messages to someone offline are stored for them; a lost connection is
//! re-established by itself (`reconnecting…`, `back online`).

use crate::commands::{Global, display};
use crate::error::CliError;
use crate::inbox::Inbox;
use crate::session::{ReachState, Session};
use svs_common::identity;
use tokio::io::{AsyncBufReadExt, BufReader};

pub const HELP: &str = "\
commands:
  @NAME TEXT          send TEXT to NAME, online or not (also /msg NAME TEXT)
  /all TEXT           send TEXT to everyone online
  /who                who is online, with key fingerprints
  /fingerprint [NAME] your key's fingerprint, or NAME's pinned one
  /trust NAME         accept NAME's current key after checking it with them
  /play VIDEO         play a video in a window (headless without a display) while chatting
  /quit               leave (Ctrl-D and Ctrl-C work too)
  /help               this text";

/// A parsed input line.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Message { to: Vec<String>, text: String },
    All(String),
    Who,
    Fingerprint(Option<String>),
    Trust(String),
    Play(String),
    Quit,
    Help,
    Empty,
    Invalid(String),
}

/// Parses one typed line.
pub fn parse(line: &str) -> Input {
    let line = line.trim();
    let split = |rest: &str| {
        let mut parts = rest.splitn(2, char::is_whitespace);
        (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").trim().to_string(),
        )
    };
    if line.is_empty() {
        return Input::Empty;
    }
    if let Some(rest) = line.strip_prefix('@') {
        let (to, text) = split(rest);
        return message(to, text);
    }
    let Some(command) = line.strip_prefix('/') else {
        return Input::Invalid("start a message with @NAME or /all; /help lists commands".into());
    };
    let (word, rest) = split(command);
    match word.as_str() {
        "msg" => {
            let (to, text) = split(&rest);
            message(to, text)
        }
        "all" if !rest.is_empty() => Input::All(rest),
        "all" => Input::Invalid("usage: /all TEXT".into()),
        "who" => Input::Who,
        "fingerprint" => Input::Fingerprint((!rest.is_empty()).then_some(rest)),
        "trust" if !rest.is_empty() => Input::Trust(rest),
        "trust" => Input::Invalid("usage: /trust NAME".into()),
        "play" if !rest.is_empty() => Input::Play(rest),
        "play" => Input::Invalid("usage: /play VIDEO".into()),
        "quit" | "exit" => Input::Quit,
        "help" => Input::Help,
        other => Input::Invalid(format!("unknown command /{other}; /help lists commands")),
    }
}

fn message(to: String, text: String) -> Input {
    if to.is_empty() || text.is_empty() {
        return Input::Invalid("usage: @NAME TEXT".into());
    }
    Input::Message {
        to: to.split(',').map(str::to_string).collect(),
        text,
    }
}

enum Step {
    Line(Option<String>),
    Event(Option<svs_common::proto::directory::Event>),
    Lost(CliError),
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
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
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
            _ = &mut ctrl_c => Step::Interrupted,
        };
        match step {
            Step::Line(None) | Step::Interrupted => break Ok(()),
            Step::Line(Some(line)) => {
                match handle_line(global, &mut session, &mut inbox, &line).await {
                    Ok(true) => {}
                    Ok(false) => break Ok(()),
                    Err(e) if e.is_lost_connection() => {
                        println!("! not sent: {e}; type it again once back online")
                    }
                    Err(e) => println!("! {e}"),
                }
            }
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
    let _ = session.quit().await;
    println!("left the chat");
    result
}

/// Acts on one typed line. Returns false to leave.
async fn handle_line(
    global: &Global,
    session: &mut Session,
    inbox: &mut Inbox,
    line: &str,
) -> Result<bool, CliError> {
    match parse(line) {
        Input::Play(video) => {
            // The playback runs beside the chat: messages keep arriving while it plays.
            let (url, ca, token) = (global.stream.clone(), global.ca(), session.token.clone());
            println!("* playing {video}");
            tokio::spawn(async move {
                let result = async {
                    let mut client =
                        crate::stream_client::StreamClient::connect(&url, ca.as_deref(), &token)
                            .await?;
                    let request = svs_common::proto::stream::PlayRequest {
                        video: video.clone(),
                        resolution: svs_common::proto::stream::Resolution::Auto as i32,
                        start_seconds: 0.0,
                        pacing: svs_common::proto::stream::Pacing::Realtime as i32,
                        codec: svs_common::proto::stream::Codec::H264 as i32,
                    };
                    crate::player::play(
                        &mut client,
                        request,
                        &crate::player::PlayOptions::default(),
                    )
                    .await
                }
                .await;
                match result {
                    Ok(s) => println!(
                        "* played {}: {} frames, {} skipped, last {} {}x{}",
                        s.video,
                        s.frames_received,
                        s.frames_skipped,
                        s.rendition,
                        s.width,
                        s.height
                    ),
                    Err(e) => println!("! cannot play {video}: {e}"),
                }
            });
        }
        Input::Empty => {}
        Input::Quit => return Ok(false),
        Input::Help => println!("{HELP}"),
        Input::Invalid(why) => println!("! {why}"),
        Input::Who => {
            for peer in inbox.online() {
                println!("  {}", display::peer_line(&peer, &session.name));
            }
        }
        Input::Fingerprint(None) => {
            println!(
                "your key: {}",
                identity::fingerprint_display(&session.fingerprint)
            )
        }
        Input::Fingerprint(Some(name)) => match session.pins.fingerprint(&name) {
            Some(hex) => println!("{name}: {hex}"),
            None => println!("! no key is pinned for {name}"),
        },
        Input::Trust(name) => {
            let canonical = svs_common::names::canonical(&name);
            match inbox
                .online()
                .into_iter()
                .find(|p| svs_common::names::canonical(&p.name) == canonical)
            {
                Some(peer) => {
                    session.pins.pin(&peer.name, &peer.public_key_der)?;
                    println!("now trusting {}'s key {}", peer.name, peer.fingerprint);
                }
                None => println!("! {name} is not online"),
            }
        }
        Input::All(text) => {
            let me = svs_common::names::canonical(&session.name);
            let others: Vec<String> = inbox
                .online()
                .into_iter()
                .filter(|p| svs_common::names::canonical(&p.name) != me)
                .map(|p| p.name)
                .collect();
            if others.is_empty() {
                println!("! nobody else is online");
            } else {
                send(session, inbox, &others, &text).await?;
            }
        }
        Input::Message { to, text } => send(session, inbox, &to, &text).await?,
    }
    Ok(true)
}

async fn send(
    session: &mut Session,
    inbox: &mut Inbox,
    to: &[String],
    text: &str,
) -> Result<(), CliError> {
    crate::commands::send::check_text(text)?;
    let (peers, unknown) = session.resolve(inbox, to).await?;
    for name in unknown {
        println!("! nobody is registered as {name}");
    }
    if peers.is_empty() {
        return Ok(());
    }
    let sent = session.send_text(&peers, text).await?;
    for reach in &sent.reaches {
        match reach.state {
            ReachState::Delivering => {}
            ReachState::Stored => println!("  … {}", reach.detail),
            ReachState::Refused => println!("  ✗ {}", reach.detail),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse("@bob hi there"),
            Input::Message {
                to: vec!["bob".into()],
                text: "hi there".into()
            }
        );
        assert_eq!(
            parse("/msg bob,carol yo"),
            Input::Message {
                to: vec!["bob".into(), "carol".into()],
                text: "yo".into()
            }
        );
        assert_eq!(parse("/all hello"), Input::All("hello".into()));
        assert_eq!(parse("/quit"), Input::Quit);
        assert_eq!(parse("/play demo"), Input::Play("demo".into()));
        assert_eq!(parse("/fingerprint"), Input::Fingerprint(None));
        assert!(matches!(parse("hello"), Input::Invalid(_)));
        assert!(matches!(parse("@bob"), Input::Invalid(_)));
        assert!(matches!(parse("/nope"), Input::Invalid(_)));
    }
}
