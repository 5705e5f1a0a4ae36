//! How the full-screen chat looks on this terminal: colour unless `NO_COLOR` is set, Unicode
//! symbols unless the locale's character set is not UTF-8 (then ASCII, and text from peers
//! shown with `?` for what the terminal could not print).

use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::border;

#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub color: bool,
    pub unicode: bool,
}

/// Whether the locale (LC_ALL, then LC_CTYPE, then LANG, as C programs decide) is UTF-8.
pub fn locale_is_utf8(var: impl Fn(&str) -> Option<String>) -> bool {
    let chosen = ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|name| var(name).filter(|v| !v.is_empty()));
    chosen.is_some_and(|v| {
        let v = v.to_ascii_lowercase();
        v.contains("utf-8") || v.contains("utf8")
    })
}

impl Theme {
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok();
        Self {
            // https://no-color.org: present and not empty.
            color: var("NO_COLOR").is_none_or(|v| v.is_empty()),
            unicode: locale_is_utf8(var),
        }
    }

    fn fg(&self, color: Color) -> Style {
        if self.color {
            Style::default().fg(color)
        } else {
            Style::default()
        }
    }

    /// Key changes and refusals: red, or reversed without colour.
    pub fn alarm(&self) -> Style {
        if self.color {
            Style::default()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        }
    }
    pub fn problem(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    pub fn dim(&self) -> Style {
        self.fg(Color::DarkGray)
    }
    pub fn event(&self) -> Style {
        self.fg(Color::Cyan)
    }
    pub fn me(&self) -> Style {
        self.fg(Color::Green).add_modifier(Modifier::BOLD)
    }
    pub fn peer(&self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }
    pub fn good(&self) -> Style {
        self.fg(Color::Green)
    }
    pub fn bar(&self) -> Style {
        if self.color {
            Style::default().fg(Color::Black).bg(Color::Gray)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }
    pub fn active_tab(&self) -> Style {
        self.bar().add_modifier(Modifier::BOLD)
    }
    pub fn unread(&self) -> Style {
        self.fg(Color::Magenta).add_modifier(Modifier::BOLD)
    }

    pub fn border(&self) -> border::Set<'static> {
        if self.unicode {
            border::PLAIN
        } else {
            border::Set {
                top_left: "+",
                top_right: "+",
                bottom_left: "+",
                bottom_right: "+",
                vertical_left: "|",
                vertical_right: "|",
                horizontal_top: "-",
                horizontal_bottom: "-",
            }
        }
    }

    /// A symbol, or its ASCII stand-in.
    pub fn symbol(&self, unicode: &'static str, ascii: &'static str) -> &'static str {
        if self.unicode { unicode } else { ascii }
    }

    /// Text as this terminal can show it: without UTF-8, every non-ASCII character is `?`.
    /// Control characters never reach the terminal (a peer cannot move the cursor).
    pub fn printable(&self, text: &str) -> String {
        crate::commands::display::printable(text)
            .chars()
            .map(|c| match c {
                '\n' | '\t' => ' ',
                c if !self.unicode && !c.is_ascii() => '?',
                c => c,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_decides_the_character_set() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(locale_is_utf8(env(&[("LANG", "en_US.UTF-8")])));
        assert!(locale_is_utf8(env(&[
            ("LC_CTYPE", "C.utf8"),
            ("LANG", "C")
        ])));
        assert!(!locale_is_utf8(env(&[
            ("LC_ALL", "C"),
            ("LANG", "en_US.UTF-8")
        ])));
        assert!(!locale_is_utf8(env(&[("LANG", "de_DE.ISO-8859-1")])));
        assert!(!locale_is_utf8(env(&[])));
    }

    #[test]
    fn peers_cannot_send_escape_sequences() {
        let ascii = Theme {
            color: false,
            unicode: false,
        };
        assert_eq!(ascii.printable("hi\x1b[2Jé"), "hi [2J?");
        let utf8 = Theme {
            color: true,
            unicode: true,
        };
        assert_eq!(utf8.printable("é\t→\u{9b}"), "é → ");
    }
}
