//! `svs room`: rooms on MLS, end-to-end encrypted with forward secrecy. Each device of a person
//! is its own member, certified by the person's identity key.

use crate::commands::Global;
use crate::error::CliError;
use crate::rooms::{KeyRefresh, REFRESH_KEY_PACKAGES, RoomEvent, Rooms, device_list};
use crate::session::Session;
use clap::{Args, Subcommand};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct RoomArgs {
    /// Give this device fresh keys in each room at least this often (a commit updating its
    /// leaf: a copy of its state taken before reads nothing after), e.g. 24h, 90m.
    #[arg(long, env = "SVS_MLS_UPDATE_EVERY", default_value = "24h", value_parser = humantime::parse_duration)]
    pub update_every: Duration,
    /// ... and after this many messages sent in a room.
    #[arg(long, env = "SVS_MLS_UPDATE_AFTER_MESSAGES", default_value_t = crate::rooms::DEFAULT_UPDATE_AFTER_MESSAGES)]
    pub update_after_messages: u64,
    #[command(subcommand)]
    pub command: RoomCommand,
}

#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// Create a room with every device of the people named (and your other devices).
    Create {
        /// The room's name (1-64 bytes, no spaces).
        room: String,
        /// A person to add; repeat or separate with commas.
        #[arg(
            long = "with",
            value_name = "NAME",
            value_delimiter = ',',
            required = true
        )]
        with: Vec<String>,
    },
    /// List this device's rooms and their members (joins rooms you were added to).
    List,
    /// Write a line in a room.
    Send {
        room: String,
        /// The message. Read from standard input when absent.
        text: Vec<String>,
    },
    /// Leave a room: this device asks the others to remove it, and forgets the room at once
    /// (your other devices stay until they leave too).
    Leave { room: String },
    /// Print what was said and done in your rooms since you last read them.
    Read {
        /// Keep reading (every --interval) until Ctrl-C, --count or --timeout.
        #[arg(long)]
        follow: bool,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this many seconds; fails if --count messages did not arrive by then.
        #[arg(long)]
        timeout: Option<u64>,
        /// How often to look for new entries while following, in milliseconds.
        #[arg(long, default_value_t = 500)]
        interval: u64,
        /// One JSON object per line: kind, room, from, device, text.
        #[arg(long)]
        json: bool,
    },
    /// Add every device of people to a room.
    Add {
        room: String,
        #[arg(value_delimiter = ',', required = true)]
        names: Vec<String>,
    },
    /// Remove every device of a person (NAME) or one device (NAME/xxxxxxxx) from a room: they
    /// read nothing said after.
    Remove { room: String, who: String },
}

async fn open(global: &Global, refresh: KeyRefresh) -> Result<(Session, Rooms), CliError> {
    let mut session = global.register().await?;
    let rooms = Rooms::open(&global.home(), &mut session)
        .await?
        .with_refresh(refresh);
    Ok((session, rooms))
}

/// Events read while catching up before another command: to stderr, as what happened meanwhile
/// (MLS can decrypt each message once, so they are shown now or never).
pub fn caught_up(events: &[RoomEvent]) {
    for event in events {
        eprintln!("{}", event.line());
    }
}

/// Prints room events: messages on stdout (a line, or JSON), the rest on stderr (or as JSON
/// `event` lines); returns how many messages.
pub fn print_events(events: &[RoomEvent], json: bool) -> usize {
    let mut messages = 0;
    for event in events {
        if let RoomEvent::Message { room, from, text } = event {
            messages += 1;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "kind": "message", "room": room, "from": from.name,
                        "device": svs_mls::device_id_hex(&from.device_id), "text": text,
                    })
                );
            } else {
                println!("{}", event.line());
            }
        } else if json {
            println!(
                "{}",
                serde_json::json!({ "kind": "event", "text": event.line() })
            );
        } else {
            eprintln!("{}", event.line());
        }
    }
    messages
}

pub async fn run(global: &Global, args: RoomArgs) -> Result<(), CliError> {
    let refresh = KeyRefresh {
        every: args.update_every,
        after_messages: args.update_after_messages.max(1),
    };
    let (mut session, mut rooms) = open(global, refresh).await?;
    let result = match args.command {
        RoomCommand::Read {
            follow,
            count,
            timeout,
            interval,
            json,
        } => {
            let reading = Reading {
                follow,
                count,
                timeout,
                interval: Duration::from_millis(interval.max(50)),
                json,
            };
            read(global, &mut session, rooms, reading, refresh).await
        }
        command => run_with(&mut session, &mut rooms, command).await,
    };
    let _ = session.quit().await;
    result
}

/// How `svs room read` reads.
#[derive(Debug)]
struct Reading {
    follow: bool,
    count: Option<usize>,
    timeout: Option<u64>,
    interval: Duration,
    json: bool,
}

/// Prints new events; while following, lets go of the device between rounds so other `svs`
/// commands of this name can use it.
async fn read(
    global: &Global,
    session: &mut Session,
    rooms: Rooms,
    reading: Reading,
    refresh: KeyRefresh,
) -> Result<(), CliError> {
    let deadline = reading
        .timeout
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut received = 0;
    let mut rooms = Some(rooms);
    let mut refreshed = tokio::time::Instant::now();
    loop {
        let mut current = match rooms.take() {
            Some(rooms) => rooms,
            None => Rooms::load(&global.home(), session)
                .await?
                .0
                .with_refresh(refresh),
        };
        received += print_events(&current.sync(session).await?, reading.json);
        if refreshed.elapsed() >= REFRESH_KEY_PACKAGES {
            current.refresh_key_packages(session).await?;
            refreshed = tokio::time::Instant::now();
        }
        drop(current);
        if reading.count.is_some_and(|c| received >= c) {
            return Ok(());
        }
        if !reading.follow && reading.count.is_none() {
            return Ok(());
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return match reading.count {
                Some(c) => Err(CliError::Usage(format!(
                    "timed out after receiving {received} of {c} messages"
                ))),
                None => Ok(()),
            };
        }
        tokio::select! {
            _ = tokio::time::sleep(reading.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// `svs send --room ROOM`.
pub async fn send(global: &Global, room: &str, text: &str) -> Result<(), CliError> {
    let (mut session, mut rooms) = open(global, KeyRefresh::default()).await?;
    let result = send_in(&mut session, &mut rooms, room, text).await;
    let _ = session.quit().await;
    result
}

async fn send_in(
    session: &mut Session,
    rooms: &mut Rooms,
    room: &str,
    text: &str,
) -> Result<(), CliError> {
    caught_up(&rooms.sync(session).await?);
    rooms.send(session, room, text).await?;
    println!("sent to {room}");
    Ok(())
}

async fn run_with(
    session: &mut Session,
    rooms: &mut Rooms,
    command: RoomCommand,
) -> Result<(), CliError> {
    match command {
        RoomCommand::Create { room, with } => {
            caught_up(&rooms.sync(session).await?);
            let devices = rooms.create(session, &room, &with).await?;
            println!("created room {room} with {}", device_list(&devices));
        }
        RoomCommand::List => {
            caught_up(&rooms.sync(session).await?);
            for info in rooms.list().await? {
                println!(
                    "{}  (epoch {})  {}  · code {}",
                    info.label,
                    info.epoch,
                    device_list(&info.members),
                    info.code
                );
            }
            if rooms.index().rooms().is_empty() {
                eprintln!("this device ({}) is in no room yet", rooms.me());
            }
        }
        RoomCommand::Send { room, text } => {
            let text = crate::commands::send::message_text(&text)?;
            send_in(session, rooms, &room, &text).await?;
        }
        RoomCommand::Add { room, names } => {
            caught_up(&rooms.sync(session).await?);
            let added = rooms.add(session, &room, &names).await?;
            println!("added {} to {room}", device_list(&added));
        }
        RoomCommand::Remove { room, who } => {
            caught_up(&rooms.sync(session).await?);
            let removed = rooms.remove(session, &room, &who).await?;
            println!("removed {} from {room}", device_list(&removed));
        }
        RoomCommand::Leave { room } => {
            caught_up(&rooms.sync(session).await?);
            let label = rooms.leave(session, &room).await?;
            println!("left {label}: this device reads nothing more there");
        }
        RoomCommand::Read { .. } => unreachable!("read is run by `read`"),
    }
    Ok(())
}
