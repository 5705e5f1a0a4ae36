//! What a typed chat line means: `@NAME TEXT`, `#ROOM TEXT`, `/command …`, or (in a
//! conversation with one peer or room) plain text for it.

pub const HELP: &str = "\
commands:
  @NAME TEXT          send TEXT to NAME, online or not (also /msg NAME TEXT; NAME,NAME for several)
  /all TEXT           send TEXT to everyone online
  /who                who is online, with key fingerprints
  /fingerprint [NAME] your key's fingerprint, or NAME's pinned one
  /verify NAME        the safety number you and NAME compare (svs verify NAME --qr draws it)
  /trust NAME         accept NAME's current key after checking it with them (shows both)
  #ROOM TEXT          write TEXT in a room (end-to-end encrypted with MLS; see /rooms)
  /room create ROOM NAME[,NAME…]   make a room with those people (all their devices)
  /rooms              your rooms, their members and how far you trust each
  /invite ROOM NAME…  add people to a room
  /remove ROOM NAME[/DEVICE]…   remove people (or one device) from a room
  /leave [ROOM]       leave a room (the open one without ROOM): this device reads nothing more
  /play VIDEO         play a video in a window (headless without a display) while chatting
  /stop               stop the playbacks started here
  /quit               leave (Ctrl-D and Ctrl-C work too)
  /help               this text";

/// What the full-screen chat adds.
pub const SCREEN_HELP: &str = "\
full screen:
  /open NAME, Alt-2…9  a conversation with NAME (plain text then goes to NAME)
  /open #ROOM          a room's conversation (plain text then goes to the room)
  /all, Alt-1          every conversation at once
  PageUp/PageDown, mouse wheel   scroll; End on an empty line: back to the newest
  Up/Down history, Tab completes names and commands, Ctrl-W/Ctrl-U erase a word/the line";

/// Every command, for completion.
pub const COMMANDS: &[&str] = &[
    "/all",
    "/fingerprint",
    "/help",
    "/invite",
    "/leave",
    "/msg",
    "/open",
    "/play",
    "/quit",
    "/remove",
    "/room",
    "/rooms",
    "/stop",
    "/trust",
    "/verify",
    "/who",
];

/// A parsed input line.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Message {
        to: Vec<String>,
        text: String,
    },
    All(String),
    /// `/all` alone: show every conversation.
    ShowAll,
    Open(String),
    Who,
    Fingerprint(Option<String>),
    Trust(String),
    Verify(String),
    Room(RoomInput),
    Play(String),
    Stop,
    Quit,
    Help,
    Empty,
    Invalid(String),
}

/// What a room command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomInput {
    Send { room: String, text: String },
    Create { room: String, with: Vec<String> },
    List,
    Invite { room: String, names: Vec<String> },
    Remove { room: String, who: Vec<String> },
    Leave { room: String },
}

/// A room's conversation is named `#ROOM` (names of people cannot start with `#`).
pub fn room_of(conversation: &str) -> Option<&str> {
    conversation.strip_prefix('#').filter(|r| !r.is_empty())
}

/// Names separated by commas or spaces.
fn name_list(text: &str) -> Vec<String> {
    text.split([',', ' ', '\t'])
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// `/room …`, `/invite …`, `/remove …` after the command word.
fn room_command(word: &str, rest: &str) -> Input {
    let (first, others) = rest
        .split_once(char::is_whitespace)
        .map_or((rest, ""), |(a, b)| (a, b.trim()));
    let room = first.trim_start_matches('#').to_string();
    match word {
        "room" => match first {
            "create" | "new" => {
                let (room, with) = others
                    .split_once(char::is_whitespace)
                    .map_or((others, ""), |(a, b)| (a, b.trim()));
                let with = name_list(with);
                if room.is_empty() || with.is_empty() {
                    Input::Invalid("usage: /room create ROOM NAME[,NAME…]".into())
                } else {
                    Input::Room(RoomInput::Create {
                        room: room.trim_start_matches('#').to_string(),
                        with,
                    })
                }
            }
            "list" | "" => Input::Room(RoomInput::List),
            _ => Input::Invalid(
                "usage: /room create ROOM NAME[,NAME…] (or /rooms, /invite, /remove, #ROOM TEXT)"
                    .into(),
            ),
        },
        "invite" if !room.is_empty() && !others.is_empty() => Input::Room(RoomInput::Invite {
            room,
            names: name_list(others),
        }),
        "invite" => Input::Invalid("usage: /invite ROOM NAME…".into()),
        _ if !room.is_empty() && !others.is_empty() => Input::Room(RoomInput::Remove {
            room,
            who: name_list(others),
        }),
        _ => Input::Invalid("usage: /remove ROOM NAME[/DEVICE]…".into()),
    }
}

/// Parses one typed line. `talking_to` is the peer (or `#ROOM`) of the open conversation, if
/// any: plain text goes to them.
pub fn parse(line: &str, talking_to: Option<&str>) -> Input {
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
    if let Some(rest) = line.strip_prefix('#') {
        let (room, text) = split(rest);
        if room.is_empty() || text.is_empty() {
            return Input::Invalid("usage: #ROOM TEXT".into());
        }
        return Input::Room(RoomInput::Send { room, text });
    }
    let Some(command) = line.strip_prefix('/') else {
        if let Some(room) = talking_to.and_then(room_of) {
            return Input::Room(RoomInput::Send {
                room: room.to_string(),
                text: line.to_string(),
            });
        }
        return match talking_to {
            Some(peer) => message(peer.to_string(), line.to_string()),
            None => {
                Input::Invalid("start a message with @NAME or /all; /help lists commands".into())
            }
        };
    };
    let (word, rest) = split(command);
    match word.as_str() {
        "msg" => {
            let (to, text) = split(&rest);
            message(to, text)
        }
        "all" if !rest.is_empty() => Input::All(rest),
        "all" => Input::ShowAll,
        "open" | "query" if !rest.is_empty() => Input::Open(rest),
        "open" | "query" => Input::Invalid("usage: /open NAME".into()),
        "who" => Input::Who,
        "fingerprint" => Input::Fingerprint((!rest.is_empty()).then_some(rest)),
        "trust" if !rest.is_empty() => Input::Trust(rest),
        "trust" => Input::Invalid("usage: /trust NAME".into()),
        "verify" if !rest.is_empty() => Input::Verify(rest),
        "verify" => Input::Invalid("usage: /verify NAME".into()),
        "rooms" => Input::Room(RoomInput::List),
        "room" | "invite" | "remove" => room_command(&word, &rest),
        "leave" => match (rest.trim_start_matches('#'), talking_to.and_then(room_of)) {
            ("", Some(room)) => Input::Room(RoomInput::Leave {
                room: room.to_string(),
            }),
            ("", None) => Input::Invalid("usage: /leave ROOM".into()),
            (room, _) => Input::Room(RoomInput::Leave {
                room: room.to_string(),
            }),
        },
        "play" if !rest.is_empty() => Input::Play(rest),
        "play" => Input::Invalid("usage: /play VIDEO".into()),
        "stop" => Input::Stop,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse("@bob hi there", None),
            Input::Message {
                to: vec!["bob".into()],
                text: "hi there".into()
            }
        );
        assert_eq!(
            parse("/msg bob,carol yo", None),
            Input::Message {
                to: vec!["bob".into(), "carol".into()],
                text: "yo".into()
            }
        );
        assert_eq!(parse("/all hello", None), Input::All("hello".into()));
        assert_eq!(parse("/all", None), Input::ShowAll);
        assert_eq!(parse("/open ben", None), Input::Open("ben".into()));
        assert_eq!(parse("/quit", None), Input::Quit);
        assert_eq!(parse("/play demo", None), Input::Play("demo".into()));
        assert_eq!(parse("/fingerprint", None), Input::Fingerprint(None));
        assert!(matches!(parse("hello", None), Input::Invalid(_)));
        assert!(matches!(parse("@bob", None), Input::Invalid(_)));
        assert!(matches!(parse("/nope", None), Input::Invalid(_)));
    }

    #[test]
    fn parses_room_commands() {
        let send = |room: &str, text: &str| {
            Input::Room(RoomInput::Send {
                room: room.into(),
                text: text.into(),
            })
        };
        assert_eq!(
            parse("#movie starting now", None),
            send("movie", "starting now")
        );
        assert_eq!(parse("later", Some("#movie")), send("movie", "later"));
        assert!(matches!(parse("#movie", None), Input::Invalid(_)));
        assert_eq!(
            parse("/room create movie bob, carol", None),
            Input::Room(RoomInput::Create {
                room: "movie".into(),
                with: vec!["bob".into(), "carol".into()]
            })
        );
        assert!(matches!(
            parse("/room create movie", None),
            Input::Invalid(_)
        ));
        assert_eq!(parse("/rooms", None), Input::Room(RoomInput::List));
        assert_eq!(parse("/room", None), Input::Room(RoomInput::List));
        assert_eq!(
            parse("/invite #movie dave erin", None),
            Input::Room(RoomInput::Invite {
                room: "movie".into(),
                names: vec!["dave".into(), "erin".into()]
            })
        );
        assert_eq!(
            parse("/remove movie carol/1a2b3c4d", None),
            Input::Room(RoomInput::Remove {
                room: "movie".into(),
                who: vec!["carol/1a2b3c4d".into()]
            })
        );
        assert!(matches!(parse("/remove movie", None), Input::Invalid(_)));
        let leave = Input::Room(RoomInput::Leave {
            room: "movie".into(),
        });
        assert_eq!(parse("/leave #movie", None), leave);
        assert_eq!(parse("/leave", Some("#movie")), leave);
        assert!(matches!(parse("/leave", Some("bob")), Input::Invalid(_)));
        assert!(matches!(parse("/room dance", None), Input::Invalid(_)));
    }

    #[test]
    fn plain_text_goes_to_the_open_conversation() {
        assert_eq!(
            parse("  hello there ", Some("ben")),
            Input::Message {
                to: vec!["ben".into()],
                text: "hello there".into()
            }
        );
        // Commands and explicit recipients still win.
        assert_eq!(parse("/who", Some("ben")), Input::Who);
        assert_eq!(
            parse("@carol hi", Some("ben")),
            Input::Message {
                to: vec!["carol".into()],
                text: "hi".into()
            }
        );
    }
}
