//! `svs send`: one message to named recipients (online or not) or everyone online. It is done
//! once the directory has stored the message for each recipient; `--wait` also waits for their
//! receipts.

use crate::commands::Global;
use crate::error::CliError;
use crate::inbox::Incoming;
use crate::session::{ReachState, Session};
use clap::Args;
use std::collections::HashSet;
use std::io::Read;
use std::time::Duration;
use svs_common::proto::directory::Event;
use tonic::Streaming;

/// Largest message the client will seal (the directory's default limit).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Recipient name; repeat for several.
    #[arg(long = "to", value_name = "NAME", required_unless_present_any = ["all", "room"])]
    pub to: Vec<String>,
    /// Send to everyone online (except you).
    #[arg(long, conflicts_with = "to")]
    pub all: bool,
    /// Send to a room (MLS: every member device, forward secrecy; see `svs room`).
    #[arg(long, value_name = "ROOM", conflicts_with_all = ["to", "all", "wait"])]
    pub room: Option<String>,
    /// Also wait up to this many seconds for each recipient to read it (their receipt); fails
    /// naming those who have not. Without it, stored counts as sent.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "60")]
    pub wait: Option<u64>,
    /// The message. Read from standard input when absent.
    pub text: Vec<String>,
}

/// Reads the message from the arguments or stdin and checks its size.
pub fn message_text(words: &[String]) -> Result<String, CliError> {
    let text = if words.is_empty() {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf)?;
        buf.trim_end_matches('\n').to_string()
    } else {
        words.join(" ")
    };
    check_text(&text)?;
    Ok(text)
}

/// Refuses empty and oversized messages with a sentence.
pub fn check_text(text: &str) -> Result<(), CliError> {
    if text.is_empty() {
        return Err(CliError::Usage("the message is empty".into()));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(CliError::Usage(format!(
            "the message is {} bytes; the limit is {MAX_TEXT_BYTES} bytes",
            text.len()
        )));
    }
    Ok(())
}

pub async fn run(global: &Global, args: SendArgs) -> Result<(), CliError> {
    let text = message_text(&args.text)?;
    if let Some(room) = &args.room {
        return crate::commands::room::send(global, room, &text).await;
    }
    let mut session = global.register().await?;
    // Presence and receipts only: this one-shot command would not show the name's mail.
    let mut stream = session.subscribe_with(false).await?;
    let result = send_and_wait(&mut session, &mut stream, &args, &text).await;
    // Quit while the stream is still open, so others see "quit" rather than "disconnected".
    let _ = session.quit().await;
    drop(stream);
    result
}

/// Sends `text` and reports each recipient on stdout; fails naming those not reached.
pub async fn send_and_wait(
    session: &mut Session,
    stream: &mut Streaming<Event>,
    args: &SendArgs,
    text: &str,
) -> Result<(), CliError> {
    let mut inbox = session.inbox()?;
    // The subscription starts with the snapshot of who is online.
    session.await_roster(stream, &mut inbox).await?;
    let online = inbox.online();
    let me = svs_common::names::canonical(&session.name);
    let wanted: Vec<String> = if args.all {
        online
            .iter()
            .filter(|p| svs_common::names::canonical(&p.name) != me)
            .map(|p| p.name.clone())
            .collect()
    } else {
        args.to.clone()
    };
    if wanted.is_empty() {
        return Err(CliError::Usage("nobody else is online".into()));
    }
    let (peers, unknown) = session.resolve(&inbox, &wanted).await?;
    let mut failed: Vec<String> = unknown
        .iter()
        .map(|n| format!("nobody is registered as {n}"))
        .collect();
    if !peers.is_empty() {
        let sent = session.send_text(&peers, text).await?;
        let id = hex::encode(sent.message_id);
        let mut waiting = HashSet::new();
        for reach in sent.reaches {
            match reach.state {
                ReachState::Refused => failed.push(reach.detail),
                _ => {
                    println!("{}", crate::text::sentence(&reach.detail));
                    waiting.insert(reach.recipient);
                }
            }
        }
        if let Some(wait) = args.wait {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            while !waiting.is_empty() {
                let next =
                    tokio::time::timeout_at(deadline, session.next_incoming(stream, &mut inbox))
                        .await;
                let Ok(next) = next else { break };
                let Some(items) = next? else { break };
                for item in items {
                    match item {
                        Incoming::Delivered { id: got, to } if got == id => {
                            waiting.remove(&to);
                            println!("delivered to {to}");
                        }
                        Incoming::Undelivered {
                            id: got,
                            to,
                            reason,
                        } if got == id => {
                            waiting.remove(&to);
                            failed.push(reason);
                        }
                        _ => {}
                    }
                }
            }
            let mut unread: Vec<String> = waiting.into_iter().collect();
            unread.sort();
            for name in unread {
                failed.push(format!(
                    "{name} has not read it yet (waited {wait} s; it stays in their mailbox)"
                ));
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::NotReached(failed))
    }
}
