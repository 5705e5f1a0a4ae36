//! How events read in a terminal.

use crate::inbox::{Incoming, Message};
use crate::known_peers::PinCheck;
use crate::text::sentence;
use svs_common::proto::directory::Peer;

pub use crate::text::printable;

/// A hex fingerprint in groups of four digits, as people read them aloud.
pub fn hex_groups(hex: &str) -> Vec<String> {
    let chars: Vec<char> = hex.chars().collect();
    chars
        .chunks(4)
        .map(|group| group.iter().collect())
        .collect()
}

/// The first `groups` groups of four hex digits (`66cc a1ab` for 2).
pub fn fingerprint_prefix(hex: &str, groups: usize) -> String {
    let mut shown = hex_groups(hex);
    shown.truncate(groups);
    shown.join(" ")
}

fn short_fingerprint(hex: &str) -> String {
    fingerprint_prefix(hex, 8)
}

fn pin_note(peer: &Peer, check: &PinCheck) -> String {
    match check {
        PinCheck::Matches => String::new(),
        PinCheck::NewlyPinned => " (first time seen: key pinned)".into(),
        PinCheck::Changed { pinned } => format!(
            "\n!!! WARNING: {}'s key CHANGED (pinned {}…). Sending to {} is refused until you verify and run /trust {}",
            peer.name,
            short_fingerprint(pinned),
            peer.name,
            peer.name
        ),
    }
}

/// A one-line description of a peer.
pub fn peer_line(peer: &Peer, me: &str) -> String {
    let you = if svs_common::names::canonical(&peer.name) == svs_common::names::canonical(me) {
        " (you)"
    } else {
        ""
    };
    format!(
        "{}{you}  key {}…",
        sentence(&peer.name),
        short_fingerprint(&peer.fingerprint)
    )
}

fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// A message as one line (plus a warning line if its key changed).
pub fn message_line(m: &Message, me: &str) -> String {
    let to = if m.to.len() == 1
        && svs_common::names::canonical(&m.to[0]) == svs_common::names::canonical(me)
    {
        "you".to_string()
    } else {
        m.to.join(", ")
    };
    let mut line = format!(
        "[{} UTC] {} → {}: {}",
        clock(m.time),
        m.from,
        to,
        crate::text::continued(&m.text)
    );
    if let Some(w) = &m.warning {
        line = format!("!!! {w}\n{line}");
    }
    line
}

/// What the chat shows for an event.
pub fn render(item: &Incoming, me: &str) -> String {
    match item {
        Incoming::Roster(peers) => {
            let mut out = format!("online now ({}):", peers.len());
            for (peer, check) in peers {
                out.push_str(&format!(
                    "\n  {}{}",
                    peer_line(peer, me),
                    pin_note(peer, check)
                ));
            }
            out
        }
        Incoming::Joined(peer, check) => {
            format!("* {} joined{}", peer_line(peer, me), pin_note(peer, check))
        }
        Incoming::Left { name, reason } => format!("* {name} left ({})", sentence(reason)),
        Incoming::Message(m) => message_line(m, me),
        Incoming::Delivered { id, to } => {
            format!("  ✓ delivered to {to} ({})", &id[..8.min(id.len())])
        }
        Incoming::Undelivered { id, to, reason } => {
            format!(
                "  ✗ not delivered to {to} ({}): {}",
                &id[..8.min(id.len())],
                sentence(reason)
            )
        }
        Incoming::Dropped { from, why } => {
            format!("! dropped a message from {from}: {}", sentence(why))
        }
        Incoming::ResyncNeeded => "* resynchronising the directory".into(),
        Incoming::Redelivered => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_read_in_groups_of_four() {
        let hex = "66cca1ab0c4f3a77e409";
        assert_eq!(super::fingerprint_prefix(hex, 2), "66cc a1ab");
        assert_eq!(super::fingerprint_prefix(hex, 1), "66cc");
        assert_eq!(
            super::fingerprint_prefix(hex, 8),
            "66cc a1ab 0c4f 3a77 e409"
        );
    }
}
