//! Owns the terminal while the full-screen chat runs: raw mode, the alternate screen, mouse
//! reports and bracketed paste on entry; all of it undone when the `Screen` is dropped (normal
//! exit, an error, Ctrl-C handled as a key) and by a panic hook before the panic message prints.
//! Meanwhile stderr points at a log file: a library writing a warning there (Qt when a player
//! window opens, OpenCV) would otherwise scribble over the screen.

use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
};
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use crossterm::{cursor, execute};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use std::io::{Stdout, stdout};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Mutex, Once};

pub type Term = Terminal<CrosstermBackend<Stdout>>;

/// The terminal in full-screen mode; dropping it gives the terminal back as it was.
#[derive(Debug)]
pub struct Screen {
    pub terminal: Term,
}

/// The real stderr while it points at the log file.
static SAVED_STDERR: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// Points stderr at `log` (appended, 0600), keeping the real one to put back.
fn stderr_to(log: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = log.parent() {
        svs_common::identity::create_private_dir(dir).map_err(std::io::Error::other)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)?;
    let saved = std::io::stderr().as_fd().try_clone_to_owned()?;
    rustix::stdio::dup2_stderr(&file)?;
    if let Ok(mut slot) = SAVED_STDERR.lock() {
        slot.get_or_insert(saved);
    }
    Ok(())
}

/// Puts the terminal back: stderr, cursor shown, main screen, mouse and paste modes off, cooked
/// mode. Safe to call more than once.
pub fn restore() {
    if let Some(saved) = SAVED_STDERR.lock().ok().and_then(|mut s| s.take()) {
        let _ = rustix::stdio::dup2_stderr(&saved);
    }
    let _ = execute!(
        stdout(),
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        cursor::Show
    );
    let _ = disable_raw_mode();
}

static PANIC_HOOK: Once = Once::new();

impl Screen {
    /// Takes the terminal; what is written to stderr meanwhile goes to `log`.
    pub fn enter(log: &Path) -> std::io::Result<Self> {
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        stderr_to(log)?;
        let entered = (|| {
            enable_raw_mode()?;
            execute!(
                stdout(),
                EnterAlternateScreen,
                EnableMouseCapture,
                EnableBracketedPaste
            )?;
            Terminal::new(CrosstermBackend::new(stdout()))
        })();
        match entered {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}
