//! The full-screen `svs chat` (when stdin and stdout are terminals): one task owns the session,
//! the model and the screen, and redraws after whatever happens next — a key, an event from the
//! directory, a playback's news, the reconnection's progress, a signal. Incoming events only
//! change the model, never the input line.

pub mod editor;
pub mod terminal;
pub mod theme;
pub mod view;

use crate::chat::command::COMMANDS;
use crate::chat::engine::{After, Engine};
use crate::commands::Global;
use crate::error::CliError;
use crossterm::event::{
    Event as TermEvent, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};
use editor::Editor;
use futures_util::StreamExt;
use terminal::Screen;
use theme::Theme;
use tokio::signal::unix::{SignalKind, signal};

/// Lines the mouse wheel scrolls.
const WHEEL_LINES: isize = 3;

enum Flow {
    Stay,
    Leave,
}

struct Chat<'g> {
    engine: Engine<'g>,
    editor: Editor,
    theme: Theme,
    page: usize,
}

pub async fn run(global: &Global, scrollback: usize) -> Result<(), CliError> {
    // Registration (and a new key's note) happens before the screen is taken.
    let engine = Engine::start(global, scrollback).await?;
    let mut chat = Chat {
        engine,
        editor: Editor::default(),
        theme: Theme::from_env(),
        page: 10,
    };
    let log = global.home().chat_log_path(chat.engine.name());
    let logged_before = std::fs::metadata(&log).map_or(0, |m| m.len());
    let mut screen = Screen::enter(&log)?;
    let result = chat.run(&mut screen).await;
    drop(screen);
    // Others see the leave at once; a directory that cannot be reached does not hold us up.
    chat.engine.leave().await;
    println!("left the chat");
    if std::fs::metadata(&log).map_or(0, |m| m.len()) > logged_before {
        println!("(what libraries printed meanwhile is in {})", log.display());
    }
    result
}

impl Chat<'_> {
    async fn run(&mut self, screen: &mut Screen) -> Result<(), CliError> {
        let mut terminal_events = EventStream::new();
        // Ctrl-C arrives as a key in raw mode; these come from `kill` or a closed terminal.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        loop {
            let mut drawn = view::Drawn::default();
            screen.terminal.draw(|frame| {
                drawn = view::draw(frame, &self.engine.model, &self.editor, &self.theme)
            })?;
            self.page = drawn.page;
            self.engine.model.clamp_scroll(drawn.max_scroll);
            // Only cancel-safe futures race here; the work happens after the select.
            let flow = tokio::select! {
                event = terminal_events.next() => match event {
                    None => Flow::Leave,
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(event)) => self.terminal_event(event, screen).await,
                },
                happening = self.engine.next() => {
                    self.engine.apply(happening).await?;
                    Flow::Stay
                }
                _ = interrupt.recv() => Flow::Leave,
                _ = terminate.recv() => Flow::Leave,
                _ = hangup.recv() => Flow::Leave,
            };
            if let Flow::Leave = flow {
                return Ok(());
            }
        }
    }

    async fn terminal_event(&mut self, event: TermEvent, screen: &mut Screen) -> Flow {
        let model = &mut self.engine.model;
        match event {
            TermEvent::Key(key) if key.kind != KeyEventKind::Release => {
                return self.key(key, screen).await;
            }
            TermEvent::Paste(text) if model.prompt.is_none() => self.editor.insert_str(&text),
            TermEvent::Mouse(mouse) => match mouse.kind {
                MouseEventKind::ScrollUp => model.scroll_by(WHEEL_LINES),
                MouseEventKind::ScrollDown => model.scroll_by(-WHEEL_LINES),
                _ => {}
            },
            // A resize is drawn by the next pass.
            _ => {}
        }
        Flow::Stay
    }

    /// What the engine says after a line or an answer.
    fn after(&mut self, after: After) -> Flow {
        match after {
            After::Stay => Flow::Stay,
            After::Restore(line) => {
                self.editor.restore(&line);
                Flow::Stay
            }
            After::Leave => Flow::Leave,
        }
    }

    async fn key(&mut self, key: KeyEvent, screen: &mut Screen) -> Flow {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        if ctrl && key.code == KeyCode::Char('c') {
            return Flow::Leave;
        }
        if self.engine.model.prompt.is_some() {
            // Only the question's answers count while it is open.
            let answer = match key.code {
                KeyCode::Char(c) => c,
                KeyCode::Esc => 'n',
                _ => return Flow::Stay,
            };
            let after = self.engine.answer(answer).await;
            return self.after(after);
        }
        let model = &mut self.engine.model;
        match key.code {
            KeyCode::Enter => {
                let line = self.editor.take();
                let after = self.engine.submit(line).await;
                return self.after(after);
            }
            KeyCode::Char('d') if ctrl && self.editor.is_empty() => return Flow::Leave,
            KeyCode::Char('d') if ctrl => self.editor.delete(),
            KeyCode::Char('w') if ctrl => self.editor.erase_word(),
            KeyCode::Char('u') if ctrl => self.editor.erase_to_start(),
            KeyCode::Char('a') if ctrl => self.editor.home(),
            KeyCode::Char('e') if ctrl => self.editor.end(),
            KeyCode::Char('l') if ctrl => {
                let _ = screen.terminal.clear();
            }
            KeyCode::Char('n') if ctrl => model.show((model.active + 1) % model.views.len()),
            KeyCode::Char('p') if ctrl => {
                let n = model.views.len();
                model.show((model.active + n - 1) % n);
            }
            KeyCode::Char(c) if alt && c.is_ascii_digit() && c != '0' => {
                model.show(c as usize - '1' as usize);
            }
            KeyCode::Char(c) if !ctrl && !alt => self.editor.insert(c),
            KeyCode::Backspace => self.editor.backspace(),
            KeyCode::Delete => self.editor.delete(),
            KeyCode::Left => self.editor.left(),
            KeyCode::Right => self.editor.right(),
            KeyCode::Home => self.editor.home(),
            KeyCode::End if self.editor.is_empty() => model.scroll_by(isize::MIN),
            KeyCode::End => self.editor.end(),
            KeyCode::Up => self.editor.history_up(),
            KeyCode::Down => self.editor.history_down(),
            KeyCode::PageUp => model.scroll_by(self.page as isize),
            KeyCode::PageDown => model.scroll_by(-(self.page as isize)),
            KeyCode::Tab => self.editor.complete(COMMANDS, &model.names()),
            _ => {}
        }
        Flow::Stay
    }
}
