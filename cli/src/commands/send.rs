//! `svs send`: one message to named recipients or everyone, waiting for delivery receipts.

use crate::commands::Global;
use crate::error::CliError;
use crate::inbox::Incoming;
use crate::session::{Session, resolve_recipients};
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
    #[arg(long = "to", value_name = "NAME", required_unless_present = "all")]
    pub to: Vec<String>,
    /// Send to everyone online (except you).
    #[arg(long, conflicts_with = "to")]
    pub all: bool,
    /// Seconds to wait for delivery receipts; 0 counts "queued" as reached.
    #[arg(long, default_value_t = 10)]
    pub wait: u64,
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
    let mut session = global.register().await?;
    let mut stream = session.subscribe().await?;
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
    let (peers, missing) = resolve_recipients(&online, &wanted);
    let mut failed: Vec<String> = missing
        .iter()
        .map(|n| format!("{n} is not online"))
        .collect();
    if !peers.is_empty() {
        let sent = session.send_text(&peers, text).await?;
        let id = hex::encode(sent.message_id);
        let mut waiting = HashSet::new();
        for reach in sent.reaches {
            if reach.queued {
                waiting.insert(reach.recipient);
            } else {
                failed.push(reach.detail);
            }
        }
        if args.wait == 0 {
            for name in &waiting {
                println!("queued for {name}");
            }
        } else {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait);
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
            for name in waiting {
                failed.push(format!(
                    "{name} sent no delivery receipt within {} s",
                    args.wait
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
