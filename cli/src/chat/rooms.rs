//! The room commands of the chat (`#ROOM TEXT`, `/room create`, `/rooms`, `/invite`,
//! `/remove`, `/leave`), shared by the line and full-screen front ends. Each takes the device, reads what
//! arrived meanwhile (MLS decrypts each message once: it is returned to be shown, not lost), acts,
//! and lets the device go; the room feed (`rooms::RoomFeed`) shows what others say.

use crate::chat::command::RoomInput;
use crate::error::CliError;
use crate::home::Home;
use crate::known_peers::Trust;
use crate::rooms::{RoomEvent, RoomInfo, Rooms, device_list};
use crate::session::Session;
use svs_common::names::canonical;

/// What a room command did.
#[derive(Debug, Default)]
pub struct RoomOutcome {
    /// What arrived in rooms before the command acted, to show first.
    pub caught_up: Vec<RoomEvent>,
    /// What the command says.
    pub lines: Vec<String>,
    /// The room the command was about (its conversation), if one.
    pub room: Option<String>,
}

/// Runs one room command on the chat's session.
pub async fn act(
    home: &Home,
    session: &mut Session,
    input: RoomInput,
) -> Result<RoomOutcome, CliError> {
    if let RoomInput::Send { text, .. } = &input {
        crate::commands::send::check_text(text)?;
    }
    let mut rooms = Rooms::open(home, session).await?;
    let caught_up = rooms.sync(session).await?;
    let (lines, room) = match input {
        RoomInput::Send { room, text } => {
            rooms.send(session, &room, &text).await?;
            (Vec::new(), Some(room))
        }
        RoomInput::Create { room, with } => {
            let devices = rooms.create(session, &room, &with).await?;
            let line = format!("created room {room} with {}", device_list(&devices));
            (vec![line], Some(room))
        }
        RoomInput::Invite { room, names } => {
            let added = rooms.add(session, &room, &names).await?;
            (
                vec![format!("added {} to {room}", device_list(&added))],
                Some(room),
            )
        }
        RoomInput::Remove { room, who } => {
            let mut lines = Vec::new();
            for one in &who {
                let removed = rooms.remove(session, &room, one).await?;
                lines.push(format!("removed {} from {room}", device_list(&removed)));
            }
            (lines, Some(room))
        }
        RoomInput::Leave { room } => {
            let label = rooms.leave(session, &room).await?;
            let line = format!("left {label}: this device reads nothing more there");
            (vec![line], Some(room))
        }
        RoomInput::List => (
            room_lines(session, &rooms.list().await?, &session.name),
            None,
        ),
    };
    Ok(RoomOutcome {
        caught_up,
        lines,
        room,
    })
}

/// `/rooms`: one line per room with its people, how far each is trusted, and their devices.
fn room_lines(session: &Session, rooms: &[RoomInfo], me: &str) -> Vec<String> {
    if rooms.is_empty() {
        return vec!["you are in no room yet: /room create ROOM NAME[,NAME…]".into()];
    }
    let mut lines = vec![format!("your rooms ({}):", rooms.len())];
    for room in rooms {
        let people: Vec<String> = room
            .people()
            .into_iter()
            .map(|(name, devices)| {
                let trust = if canonical(&name) == canonical(me) {
                    "you"
                } else {
                    match session.pins.trust(&name) {
                        Some(Trust::Verified) => "verified",
                        Some(Trust::Pinned) => "not verified",
                        None => "no key pinned",
                    }
                };
                let devices = match devices {
                    1 => String::new(),
                    n => format!(", {n} devices"),
                };
                format!("{name} ({trust}{devices})")
            })
            .collect();
        lines.push(format!(
            "  #{}  epoch {}  {}  · code {}",
            room.label,
            room.epoch,
            people.join(", "),
            room.code
        ));
    }
    lines
}
