//! What a typed chat line means: `@NAME TEXT`, `/command …`, or (in a conversation with one
//! peer) plain text for that peer.

pub const HELP: &str = "\
commands:
  @NAME TEXT          send TEXT to NAME, online or not (also /msg NAME TEXT; NAME,NAME for several)
  /all TEXT           send TEXT to everyone online
  /who                who is online, with key fingerprints
  /fingerprint [NAME] your key's fingerprint, or NAME's pinned one
  /trust NAME         accept NAME's current key after checking it with them (shows both)
  /play VIDEO         play a video in a window (headless without a display) while chatting
  /stop               stop the playbacks started here
  /quit               leave (Ctrl-D and Ctrl-C work too)
  /help               this text";

/// What the full-screen chat adds.
pub const SCREEN_HELP: &str = "\
full screen:
  /open NAME, Alt-2…9  a conversation with NAME (plain text then goes to NAME)
  /all, Alt-1          every conversation at once
  PageUp/PageDown, mouse wheel   scroll; End on an empty line: back to the newest
  Up/Down history, Tab completes names and commands, Ctrl-W/Ctrl-U erase a word/the line";

/// Every command, for completion.
pub const COMMANDS: &[&str] = &[
    "/all",
    "/fingerprint",
    "/help",
    "/msg",
    "/open",
    "/play",
    "/quit",
    "/stop",
    "/trust",
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
    Play(String),
    Stop,
    Quit,
    Help,
    Empty,
    Invalid(String),
}

/// Parses one typed line. `talking_to` is the peer of the open conversation, if any: plain text
/// goes to them.
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
    let Some(command) = line.strip_prefix('/') else {
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
