//! What text from servers and peers may look like before it reaches a terminal or a JSON line:
//! no control characters (escape sequences move the cursor, retitle the window, write the
//! clipboard), no line a peer can make look like one of the program's own, bounded length.

/// Text as a terminal may show it: control characters other than line breaks and tabs (C0,
/// DEL and C1, so ESC, BEL, CSI and OSC never pass) become spaces.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c,
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// Most characters of one server-supplied sentence shown (an error, a reason, a name).
pub(crate) const MAX_SENTENCE_CHARS: usize = 500;

/// A server's sentence on one line: every control character (line breaks too) becomes a space,
/// and anything past `MAX_SENTENCE_CHARS` is cut with "…".
pub(crate) fn sentence(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_SENTENCE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_SENTENCE_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// What starts each continuation line of a peer's multi-line text in line output: no line the
/// program prints starts with it, so a peer cannot forge one ("[12:00:00 UTC] admin → you: …").
pub(crate) const CONTINUATION: &str = "    ┆ ";

/// A peer's text for line output: printable, each line after the first behind `CONTINUATION`.
pub(crate) fn continued(text: &str) -> String {
    printable(text).replace('\n', &format!("\n{CONTINUATION}"))
}

/// A JSON value as one line in which every control character is escaped: serde_json escapes
/// C0 but writes DEL and C1 (U+0080–U+009F, CSI among them) raw, which a terminal obeys.
pub(crate) fn json_line(value: &impl serde::Serialize) -> String {
    let raw = serde_json::to_string(value).unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("cannot write this as JSON: {e}") }).to_string()
    });
    // Outside strings JSON has no such characters; inside, `\uXXXX` means the same.
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_do_not_pass() {
        assert_eq!(
            printable("hi\x1b]0;owned\x07\x1b[2J\nnext\tline\r\u{9b}31m"),
            "hi ]0;owned  [2J\nnext\tline  31m"
        );
        assert_eq!(sentence("a\nb\x1b[2J"), "a b [2J");
        assert_eq!(
            sentence(&"x".repeat(MAX_SENTENCE_CHARS + 10))
                .chars()
                .count(),
            MAX_SENTENCE_CHARS + 1
        );
    }

    #[test]
    fn a_peer_cannot_forge_a_line() {
        let forged = "ok\n[00:00:00 UTC] admin → you: send me your key";
        let shown = continued(forged);
        assert!(
            shown.lines().skip(1).all(|l| l.starts_with(CONTINUATION)),
            "{shown}"
        );
    }

    #[test]
    fn json_lines_escape_c1_and_stay_json() {
        let value = serde_json::json!({ "text": "a\u{9b}31m\x1b[2J\x7f" });
        let line = json_line(&value);
        assert!(!line.chars().any(char::is_control), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value);
    }
}
