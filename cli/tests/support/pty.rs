//! The real `svs` binary in a pseudo-terminal, its screen kept by a vt100 parser: what a person
//! would see, read row by row.

use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, SlavePty, native_pty_system};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) struct PtyApp {
    master: Box<dyn MasterPty + Send>,
    /// Kept open so the terminal's settings can be read after the program exits.
    _slave: Box<dyn SlavePty + Send>,
    child: Box<dyn Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    parser: Arc<Mutex<vt100::Parser>>,
    pub cols: u16,
}

impl PtyApp {
    /// Runs `svs ARGS` on a `rows`×`cols` terminal with `env` added.
    pub(crate) fn spawn(args: &[&str], env: &[(&str, &str)], rows: u16, cols: u16) -> Self {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_svs"));
        command.args(args);
        command.env_remove("DISPLAY");
        command.env_remove("NO_COLOR");
        command.env("TERM", "xterm-256color");
        command.env("LANG", "C.UTF-8");
        for (k, v) in env {
            command.env(k, v);
        }
        let child = pair.slave.spawn_command(command).unwrap();
        let parser = Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0)));
        let mut reader = pair.master.try_clone_reader().unwrap();
        let fed = parser.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                fed.lock().unwrap().process(&buf[..n]);
            }
        });
        let writer = pair.master.take_writer().unwrap();
        Self {
            master: pair.master,
            _slave: pair.slave,
            child,
            writer,
            parser,
            cols,
        }
    }

    /// Types bytes as a person would.
    pub(crate) fn type_keys(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    pub(crate) fn rows(&self) -> Vec<String> {
        let parser = self.parser.lock().unwrap();
        parser.screen().rows(0, self.cols).collect()
    }

    pub(crate) fn screen_text(&self) -> String {
        self.rows().join("\n")
    }

    /// The last row: the input line.
    pub(crate) fn input_line(&self) -> String {
        self.rows().last().cloned().unwrap_or_default()
    }

    /// Reads the screen's state with `look`.
    pub(crate) fn screen<T>(&self, look: impl FnOnce(&vt100::Screen) -> T) -> T {
        look(self.parser.lock().unwrap().screen())
    }

    /// Waits until `ready` holds for the screen's rows; how long it took. Panics with the screen
    /// after `limit`.
    pub(crate) fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        ready: impl Fn(&[String]) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if ready(&self.rows()) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{what}: not seen within {limit:?}; the screen:\n{}",
                self.screen_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `text` shows anywhere on the screen.
    pub(crate) fn wait_for(&self, text: &str, limit: Duration) -> Duration {
        self.wait_until(&format!("{text:?}"), limit, |rows| {
            rows.iter().any(|r| r.contains(text))
        })
    }

    pub(crate) fn resize(&mut self, rows: u16, cols: u16) {
        self.master
            .resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        self.parser
            .lock()
            .unwrap()
            .screen_mut()
            .set_size(rows, cols);
        self.cols = cols;
    }

    /// Sends a signal (`TERM`, `HUP`, …) to the program, as `kill` would.
    pub(crate) fn kill_with(&self, signal: &str) {
        let pid = self.child.process_id().expect("the program runs");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the program to end; its exit status.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> portable_pty::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last bytes.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "svs did not exit; the screen:\n{}",
                self.screen_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts the terminal is as the shell left it: main screen, cursor shown, no mouse or paste
    /// mode, and line editing, echo and signals back on.
    pub(crate) fn assert_terminal_restored(&self) {
        self.screen(|s| {
            assert!(!s.alternate_screen(), "back on the main screen");
            assert!(!s.hide_cursor(), "cursor shown");
            assert_eq!(s.mouse_protocol_mode(), vt100::MouseProtocolMode::None);
            assert!(!s.bracketed_paste());
        });
        let stty = self.stty();
        let modes: Vec<&str> = stty.split_whitespace().collect();
        for mode in ["icanon", "echo", "isig"] {
            assert!(modes.contains(&mode), "{mode} restored: {stty}");
        }
    }

    /// `stty -a` of the terminal, as the shell would find it.
    pub(crate) fn stty(&self) -> String {
        let tty = self.master.tty_name().expect("the pty has a name");
        let out = std::process::Command::new("stty")
            .arg("-F")
            .arg(&tty)
            .arg("-a")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PtyApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
