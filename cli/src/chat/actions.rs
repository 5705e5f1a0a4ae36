//! The chat commands that act (send, trust, who, fingerprint), shared by the line and the
//! full-screen front ends: each returns what happened and the front end shows it its own way.

use crate::error::CliError;
use crate::inbox::Inbox;
use crate::session::{Sent, Session};
use svs_common::identity;
use svs_common::names;
use svs_common::proto::directory::Peer;

/// What sending one message did.
#[derive(Debug)]
pub struct SendReport {
    /// Names nobody registered.
    pub unknown: Vec<String>,
    /// The directory's answer, when anyone was left to send to.
    pub sent: Option<Sent>,
}

/// Seals `text` for `to` (online or not) and sends it. A recipient whose key changed stops the
/// whole send with `CliError::KeyChanged`.
pub async fn send(
    session: &mut Session,
    inbox: &Inbox,
    to: &[String],
    text: &str,
) -> Result<SendReport, CliError> {
    crate::commands::send::check_text(text)?;
    let (peers, unknown) = session.resolve(inbox, to).await?;
    let sent = if peers.is_empty() {
        None
    } else {
        Some(session.send_text(&peers, text).await?)
    };
    Ok(SendReport { unknown, sent })
}

/// Everyone online but me (the recipients of `/all`).
pub fn everyone_else(session: &Session, inbox: &Inbox) -> Vec<String> {
    let me = names::canonical(&session.name);
    inbox
        .online()
        .into_iter()
        .filter(|p| names::canonical(&p.name) != me)
        .map(|p| p.name)
        .collect()
}

/// A key the user may decide to trust: the one the directory has now, and the pinned one.
#[derive(Debug, Clone)]
pub struct TrustCandidate {
    pub peer: Peer,
    /// Hex fingerprint pinned so far (`None`: nothing usable pinned).
    pub pinned: Option<String>,
}

/// Groups of four hex digits, `per_line` groups to a line.
fn grouped(hex: &str, per_line: usize) -> Vec<String> {
    crate::commands::display::hex_groups(hex)
        .chunks(per_line)
        .map(|row| row.join(" "))
        .collect()
}

impl TrustCandidate {
    /// Both fingerprints side by side, four groups of four hex digits a row, rows marked where
    /// they differ.
    pub fn side_by_side(&self) -> Vec<String> {
        let now = grouped(&self.peer.fingerprint, 4);
        let pinned = self
            .pinned
            .as_deref()
            .map(|p| grouped(p, 4))
            .unwrap_or_default();
        let mut lines = vec![format!(
            "  {:<19}   {:<19}",
            "pinned", "the directory has now"
        )];
        for (n, row) in now.iter().enumerate() {
            let old = pinned.get(n).map(String::as_str).unwrap_or("(none)");
            let mark = if old == row { " " } else { "≠" };
            lines.push(format!("{mark} {old:<19}   {row:<19}"));
        }
        lines
    }

    /// Whether the pin already is this key.
    pub fn unchanged(&self) -> bool {
        self.pinned.as_deref() == Some(self.peer.fingerprint.as_str())
    }

    /// Pins this key as verified.
    pub fn accept(&self, session: &mut Session) -> Result<String, CliError> {
        session
            .pins
            .pin(&self.peer.name, &self.peer.public_key_der)?;
        Ok(format!(
            "now trusting {}'s key {}",
            self.peer.name,
            identity::fingerprint_display(&identity::fingerprint_der(&self.peer.public_key_der))
        ))
    }
}

/// `name`'s current key (from the roster, else looked up in the directory) with its pin.
pub async fn trust_candidate(
    session: &mut Session,
    inbox: &Inbox,
    name: &str,
) -> Result<TrustCandidate, CliError> {
    let (mut peers, unknown) = session.resolve(inbox, &[name.to_string()]).await?;
    let peer = match peers.pop() {
        Some(peer) if unknown.is_empty() => peer,
        _ => return Err(CliError::Usage(format!("nobody is registered as {name}"))),
    };
    let pinned = session.pins.fingerprint(&peer.name).map(str::to_string);
    Ok(TrustCandidate { peer, pinned })
}

/// `/who`: one line per peer online.
pub fn who_lines(inbox: &Inbox, me: &str) -> Vec<String> {
    let online = inbox.online();
    let mut lines = vec![format!("online now ({}):", online.len())];
    lines.extend(
        online
            .iter()
            .map(|p| format!("  {}", crate::commands::display::peer_line(p, me))),
    );
    lines
}

/// The safety number of you and NAME's pinned key (60 digits, the same on both sides).
pub fn safety_number(session: &Session, name: &str) -> Result<String, CliError> {
    let theirs = session
        .pins
        .key(name)
        .ok_or_else(|| CliError::Usage(format!("no key is pinned for {name} yet")))?;
    let mine = identity::public_key_der(&session.identity_key().to_public_key());
    Ok(svs_common::safety::safety_number(
        &session.name,
        &mine,
        name,
        theirs,
    ))
}

/// `/verify NAME`: the safety number of you and NAME's pinned key, as both of you see it.
pub fn safety_lines(session: &Session, name: &str) -> Result<Vec<String>, CliError> {
    let number = safety_number(session, name)?;
    let mut lines = vec![format!(
        "safety number with {name} (the same on both sides; compare it with them):"
    )];
    lines.extend(
        svs_common::safety::display(&number)
            .lines()
            .map(|l| format!("  {l}")),
    );
    lines.push(format!(
        "if it matches, /trust {name} marks the key verified; svs verify {name} --qr draws it as a QR code"
    ));
    Ok(lines)
}

/// `/fingerprint [NAME]`.
pub fn fingerprint_line(session: &Session, name: Option<&str>) -> Result<String, CliError> {
    match name {
        None => Ok(format!(
            "your key: {}",
            identity::fingerprint_display(&session.fingerprint)
        )),
        Some(name) => match session.pins.fingerprint(name) {
            Some(hex) => Ok(format!("{name}: {hex}")),
            None => Err(CliError::Usage(format!("no key is pinned for {name}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_line_up_and_differences_are_marked() {
        let now = "aa".repeat(32);
        let mut pinned = now.clone();
        pinned.replace_range(40..44, "0000");
        let candidate = TrustCandidate {
            peer: Peer {
                name: "ben".into(),
                fingerprint: now.clone(),
                ..Peer::default()
            },
            pinned: Some(pinned),
        };
        let lines = candidate.side_by_side();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[1].starts_with("  aaaa aaaa aaaa aaaa   aaaa"));
        assert!(lines[3].starts_with("≠ aaaa aaaa 0000 aaaa   aaaa aaaa aaaa aaaa"));
        assert!(!candidate.unchanged());
    }
}
