//! The input line: editing (Home/End, Ctrl-W, Ctrl-U, …), history (Up/Down) and Tab completion.
//! Incoming events never touch it; only keys do.

/// Lines of history kept.
pub const HISTORY_LINES: usize = 500;

#[derive(Debug, Default)]
pub struct Editor {
    chars: Vec<char>,
    cursor: usize,
    history: Vec<String>,
    /// Where Up/Down is in the history (`None`: editing the draft).
    browsing: Option<usize>,
    draft: String,
    /// The last Tab's matches and which one is shown, to cycle on the next Tab.
    completing: Option<Completion>,
}

#[derive(Debug)]
struct Completion {
    start: usize,
    matches: Vec<String>,
    shown: usize,
}

impl Editor {
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }

    /// Cursor position in characters.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    fn edited(&mut self) {
        self.completing = None;
    }

    pub fn insert(&mut self, c: char) {
        self.chars.insert(self.cursor, c);
        self.cursor += 1;
        self.edited();
    }

    /// Pasted text: line breaks become spaces (one message), other control characters go.
    pub fn insert_str(&mut self, text: &str) {
        for c in text.chars() {
            match c {
                '\n' | '\r' | '\t' => self.insert(' '),
                c if c.is_control() => {}
                c => self.insert(c),
            }
        }
    }

    pub fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            self.chars.remove(self.cursor);
        }
        self.edited();
    }

    pub fn delete(&mut self) {
        if self.cursor < self.chars.len() {
            self.chars.remove(self.cursor);
        }
        self.edited();
    }

    pub fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
        self.edited();
    }

    pub fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.chars.len());
        self.edited();
    }

    pub fn home(&mut self) {
        self.cursor = 0;
        self.edited();
    }

    pub fn end(&mut self) {
        self.cursor = self.chars.len();
        self.edited();
    }

    /// Ctrl-W: the word before the cursor (and the spaces after it).
    pub fn erase_word(&mut self) {
        let mut start = self.cursor;
        while start > 0 && self.chars[start - 1].is_whitespace() {
            start -= 1;
        }
        while start > 0 && !self.chars[start - 1].is_whitespace() {
            start -= 1;
        }
        self.chars.drain(start..self.cursor);
        self.cursor = start;
        self.edited();
    }

    /// Ctrl-U: everything before the cursor.
    pub fn erase_to_start(&mut self) {
        self.chars.drain(..self.cursor);
        self.cursor = 0;
        self.edited();
    }

    fn set(&mut self, text: &str) {
        self.chars = text.chars().collect();
        self.cursor = self.chars.len();
        self.edited();
    }

    /// Puts a line back (a message that could not go): the user's text is never lost.
    pub fn restore(&mut self, text: &str) {
        self.browsing = None;
        self.set(text);
    }

    /// Enter: the line, remembered in the history.
    pub fn take(&mut self) -> String {
        let line = self.text();
        if !line.trim().is_empty() && self.history.last() != Some(&line) {
            self.history.push(line.clone());
            if self.history.len() > HISTORY_LINES {
                self.history.remove(0);
            }
        }
        self.browsing = None;
        self.draft.clear();
        self.set("");
        line
    }

    pub fn history_up(&mut self) {
        let at = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = self.text();
                self.history.len() - 1
            }
            Some(0) => 0,
            Some(n) => n - 1,
        };
        self.browsing = Some(at);
        let line = self.history[at].clone();
        self.set(&line);
    }

    pub fn history_down(&mut self) {
        match self.browsing {
            None => {}
            Some(n) if n + 1 < self.history.len() => {
                self.browsing = Some(n + 1);
                let line = self.history[n + 1].clone();
                self.set(&line);
            }
            Some(_) => {
                self.browsing = None;
                let draft = std::mem::take(&mut self.draft);
                self.set(&draft);
            }
        }
    }

    /// Tab: completes the word before the cursor: a command at the start of the line, else a
    /// name (after `@`, in `@a,b` lists, or as a command's argument). One match is completed
    /// with a space after it; several are cycled through on each Tab.
    pub fn complete(&mut self, commands: &[&str], names: &[String]) {
        if let Some(c) = &mut self.completing {
            c.shown = (c.shown + 1) % c.matches.len();
            let (start, word) = (c.start, c.matches[c.shown].clone());
            self.replace_from(start, &word);
            return;
        }
        let mut start = self.cursor;
        while start > 0 && !self.chars[start - 1].is_whitespace() && self.chars[start - 1] != ',' {
            start -= 1;
        }
        let word: String = self.chars[start..self.cursor].iter().collect();
        let (prefix, stem) = match word.strip_prefix('@') {
            Some(stem) => ("@", stem.to_string()),
            None => ("", word.clone()),
        };
        let candidates: Vec<String> = if start == 0 && word.starts_with('/') {
            commands.iter().map(|c| c.to_string()).collect()
        } else {
            names.iter().map(|n| format!("{prefix}{n}")).collect()
        };
        let stem = format!("{prefix}{stem}").to_lowercase();
        let mut matches: Vec<String> = candidates
            .into_iter()
            .filter(|c| c.to_lowercase().starts_with(&stem))
            .collect();
        matches.sort();
        matches.dedup();
        match matches.len() {
            0 => {}
            1 => {
                let word = format!("{} ", matches[0]);
                self.replace_from(start, &word);
            }
            _ => {
                self.replace_from(start, &matches[0].clone());
                self.completing = Some(Completion {
                    start,
                    matches,
                    shown: 0,
                });
            }
        }
    }

    fn replace_from(&mut self, start: usize, word: &str) {
        let after: Vec<char> = self.chars.split_off(self.cursor);
        self.chars.truncate(start);
        self.chars.extend(word.chars());
        self.cursor = self.chars.len();
        self.chars.extend(after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> Editor {
        let mut e = Editor::default();
        e.insert_str(text);
        e
    }

    #[test]
    fn edits_words_and_lines() {
        let mut e = typed("@ben hello there");
        e.erase_word();
        assert_eq!(e.text(), "@ben hello ");
        e.home();
        e.right();
        e.delete();
        assert_eq!(e.text(), "@en hello ");
        e.end();
        e.left();
        e.left();
        e.erase_to_start();
        assert_eq!((e.text(), e.cursor()), ("o ".to_string(), 0));
        e.insert('x');
        assert_eq!(e.text(), "xo ");
    }

    #[test]
    fn history_walks_back_and_returns_to_the_draft() {
        let mut e = typed("first");
        e.take();
        e.insert_str("second");
        e.take();
        e.insert_str("draft");
        e.history_up();
        assert_eq!(e.text(), "second");
        e.history_up();
        e.history_up();
        assert_eq!(e.text(), "first");
        e.history_down();
        assert_eq!(e.text(), "second");
        e.history_down();
        assert_eq!(e.text(), "draft");
    }

    #[test]
    fn tab_completes_commands_and_names() {
        let names = vec!["ben".to_string(), "bertha".to_string(), "carol".into()];
        let commands = ["/open", "/play", "/quit"];
        let mut e = typed("/op");
        e.complete(&commands, &names);
        assert_eq!(e.text(), "/open ");
        e.insert_str("ca");
        e.complete(&commands, &names);
        assert_eq!(e.text(), "/open carol ");
        let mut e = typed("@be");
        e.complete(&commands, &names);
        assert_eq!(e.text(), "@ben");
        e.complete(&commands, &names);
        assert_eq!(e.text(), "@bertha", "a second Tab shows the next match");
        let mut e = typed("@carol,B");
        e.complete(&commands, &names);
        assert_eq!(e.text(), "@carol,ben");
        // Text after the cursor stays where it was.
        let mut e = typed("@c hi");
        e.home();
        e.right();
        e.right();
        e.complete(&commands, &names);
        assert_eq!(e.text(), "@carol  hi");
    }
}
