//! `svs listen`: print each received message as a line (text or JSON) for scripts. Stored
//! messages arrive first; a lost connection is re-established by itself (stderr says so), and
//! nothing is lost or printed twice across it.

use crate::commands::Global;
use crate::commands::display;
use crate::error::CliError;
use crate::inbox::Incoming;
use crate::rooms::{RoomFeed, RoomNews};
use clap::Args;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<usize>,
    /// Stop after this many seconds; fails if --count messages did not arrive by then.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// One JSON object per message: from, to, id, text, time (ms since the epoch).
    #[arg(long)]
    pub json: bool,
    /// Also print what is said in your rooms (`svs room`), looking every 500 ms; a room line
    /// is `[ROOM] NAME: text` (JSON: kind, room, from, device, text). Counts toward --count.
    #[arg(long)]
    pub rooms: bool,
}

/// Prints what the room feed says, adding room messages to `received` and notifying `done`
/// once `count` is reached; stops the feed when `stop` fires.
async fn print_rooms(
    mut feed: RoomFeed,
    json: bool,
    count: Option<usize>,
    received: Arc<AtomicUsize>,
    done: Arc<Notify>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let news = tokio::select! {
            news = feed.next() => news,
            _ = &mut stop => break,
        };
        let Some(news) = news else { break };
        match news {
            RoomNews::Events(events) => {
                let messages = crate::commands::room::print_events(&events, json);
                let total = received.fetch_add(messages, Ordering::SeqCst) + messages;
                if count.is_some_and(|c| total >= c) {
                    done.notify_one();
                }
            }
            RoomNews::Problem(text) => eprintln!("* could not read rooms: {text}"),
            RoomNews::Rooms(_) => {}
        }
    }
    feed.stop().await;
}

pub async fn run(global: &Global, args: ListenArgs) -> Result<(), CliError> {
    let mut session = global.register().await?;
    let mut stream = session.subscribe().await?;
    let mut inbox = session.inbox()?;
    let deadline = args
        .timeout
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let received = Arc::new(AtomicUsize::new(0));
    let rooms_done = Arc::new(Notify::new());
    let rooms = match args.rooms {
        true => {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(print_rooms(
                global.room_feed(&inbox)?,
                args.json,
                args.count,
                received.clone(),
                rooms_done.clone(),
                stopped,
            ));
            Some((task, stop))
        }
        false => None,
    };
    // One listener for the whole loop, so a Ctrl-C during processing is not lost.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let outcome = loop {
        if args
            .count
            .is_some_and(|c| received.load(Ordering::SeqCst) >= c)
        {
            break Ok(());
        }
        let next = async {
            match deadline {
                Some(d) => {
                    tokio::time::timeout_at(d, session.next_incoming(&mut stream, &mut inbox))
                        .await
                        .ok()
                }
                None => Some(session.next_incoming(&mut stream, &mut inbox).await),
            }
        };
        let next = tokio::select! {
            next = next => next,
            _ = rooms_done.notified() => break Ok(()),
            _ = &mut ctrl_c => break Ok(()),
        };
        let items = match next {
            Some(Err(e)) if e.is_lost_connection() => match global.recover(&e, &mut ctrl_c).await {
                Ok(Some(connected)) => {
                    session = connected.session;
                    stream = connected.stream;
                    continue;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            },
            None => {
                break match args.count {
                    Some(c) if received.load(Ordering::SeqCst) < c => {
                        Err(CliError::Usage(format!(
                            "timed out after receiving {} of {c} messages",
                            received.load(Ordering::SeqCst)
                        )))
                    }
                    _ => Ok(()),
                };
            }
            Some(Err(e)) => break Err(e),
            Some(Ok(None)) => {
                break Err(CliError::Refused("the directory ended the stream".into()));
            }
            Some(Ok(Some(items))) => items,
        };
        for item in items {
            match &item {
                Incoming::Message(m) => {
                    received.fetch_add(1, Ordering::SeqCst);
                    if args.json {
                        println!("{}", crate::text::json_line(m));
                    } else {
                        println!("{}", display::message_line(m, &session.name));
                    }
                }
                other => eprintln!("{}", display::render(other, &session.name)),
            }
        }
    };
    if let Some((task, stop)) = rooms {
        let _ = stop.send(());
        // The feed ends its session (at most 3 s); then the task is done.
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let _ = session.quit().await;
    outcome
}
