//! The full-screen `svs chat` as a person sees it: the real binary in a pseudo-terminal (its
//! screen read with a vt100 parser) against a real directory over TLS, with peers driven through
//! the real client code.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::time::Duration;
use support::TestDirectory;
use support::client::Client;
use support::pty::PtyApp;

/// Long enough for a loaded CI machine; the figures printed say how long it really took.
const LIMIT: Duration = Duration::from_secs(20);

fn chat(dir: &TestDirectory, name: &str, home: &std::path::Path, env: &[(&str, &str)]) -> PtyApp {
    chat_with_stream(dir, "https://localhost:1", name, home, env)
}

fn chat_with_stream(
    dir: &TestDirectory,
    stream: &str,
    name: &str,
    home: &std::path::Path,
    env: &[(&str, &str)],
) -> PtyApp {
    let (url, ca, home) = (
        dir.url.clone(),
        dir.ca.display().to_string(),
        home.display().to_string(),
    );
    PtyApp::spawn(
        &[
            "--directory",
            &url,
            "--stream",
            stream,
            "--ca",
            &ca,
            "--name",
            name,
            "--home",
            &home,
            "--key-bits",
            "2048",
            "chat",
        ],
        env,
        30,
        110,
    )
}

/// Blocking waits on the screen run beside the runtime, not on it.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

type SharedApp = std::sync::Arc<std::sync::Mutex<PtyApp>>;

/// Looks at (and waits on) the screen of an app the test's async peers run beside.
async fn look<T: Send + 'static>(
    app: &SharedApp,
    f: impl FnOnce(&PtyApp) -> T + Send + 'static,
) -> T {
    let app = app.clone();
    blocking(move || f(&app.lock().unwrap())).await
}

fn people_pane_has(rows: &[String], cols: usize, name: &str) -> bool {
    // The people pane is the right quarter of the screen.
    rows.iter().any(|r| {
        let right: String = r.chars().skip(cols * 3 / 4 - 2).collect();
        right.contains(name)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_survives_incoming_messages_and_sent_lines_show_their_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let mut ben = Client::join(&dir, "ben", &tmp.path().join("ben")).await;
    let app = std::sync::Arc::new(std::sync::Mutex::new(chat(
        &dir,
        "alice",
        &tmp.path().join("alice"),
        &[],
    )));
    look(&app, move |app| {
        app.wait_for("connected to", LIMIT);
        let cols = app.cols as usize;
        app.wait_until("ben in the people pane", LIMIT, |rows| {
            people_pane_has(rows, cols, "ben")
        });
        app.wait_for("connected", LIMIT);
        // While it runs, the terminal is in raw mode (what the end of this test checks undone).
        let modes = app.stty();
        assert!(modes.split_whitespace().any(|m| m == "-icanon"), "{modes}");
    })
    .await;
    let alice = ben.wait_for_peer("alice").await;

    // Half a line typed, then ben's message arrives.
    app.lock().unwrap().type_keys("@ben hel");
    look(&app, move |app| {
        app.wait_until("the typed text", LIMIT, |rows| {
            rows.last().unwrap().trim_end() == "> @ben hel"
        });
    })
    .await;
    ben.session
        .send_text(std::slice::from_ref(&alice), "interrupting message")
        .await
        .unwrap();
    look(&app, move |app| {
        app.wait_for("ben: interrupting message", LIMIT);
        assert_eq!(
            app.input_line().trim_end(),
            "> @ben hel",
            "the input line is untouched:\n{}",
            app.screen_text()
        );
        // ben's conversation is unread in its own tab (the "all" view shows it, so not there).
        assert!(app.rows()[0].contains("2 ben"), "{}", app.screen_text());
    })
    .await;

    // The rest of the line, then Enter: ben gets it whole, and the line says delivered.
    app.lock().unwrap().type_keys("lo there\r");
    let got = ben.message().await;
    assert_eq!(got.text, "hello there");
    look(&app, move |app| {
        app.wait_until("the delivery receipt", LIMIT, |rows| {
            rows.iter()
                .any(|r| r.contains("you → ben: hello there") && r.contains("✓ delivered"))
        });
        assert_eq!(app.input_line().trim_end(), ">");
    })
    .await;

    // Alt-2 opens ben's conversation: plain text goes to him, Tab completes commands.
    app.lock().unwrap().type_keys("\x1b2");
    look(&app, move |app| {
        app.wait_until("ben's conversation", LIMIT, |rows| {
            !rows.iter().any(|r| r.contains("connected to https"))
        });
        assert!(app.screen_text().contains("ben: interrupting message"));
    })
    .await;
    app.lock().unwrap().type_keys("just for you\r/wh\t");
    assert_eq!(ben.message().await.text, "just for you");
    look(&app, move |app| {
        app.wait_until("/who completed", LIMIT, |rows| {
            rows.last().unwrap().trim_end() == "> /who"
        });
    })
    .await;
    app.lock().unwrap().type_keys("\r\x1b1");

    // carol joins: the people pane shows her.
    let joined = std::time::Instant::now();
    let mut carol = Client::join(&dir, "carol", &tmp.path().join("carol")).await;
    let seen = look(&app, move |app| {
        let cols = app.cols as usize;
        app.wait_until("carol in the people pane", LIMIT, |rows| {
            people_pane_has(rows, cols, "carol")
        });
        joined.elapsed()
    })
    .await;
    println!(
        "people pane showed carol {} ms after she joined",
        seen.as_millis()
    );

    // carol leaves; a message for her is stored, and the same line turns delivered when she is
    // back and reads it.
    carol.session.quit().await.unwrap();
    drop(carol);
    look(&app, move |app| {
        app.wait_for("carol left", LIMIT);
        app.wait_for("offline (1)", LIMIT);
    })
    .await;
    app.lock().unwrap().type_keys("@carol see you later\r");
    look(&app, move |app| {
        app.wait_until("the stored state", LIMIT, |rows| {
            rows.iter()
                .any(|r| r.contains("you → carol: see you later") && r.contains("stored"))
        });
    })
    .await;
    let mut carol = Client::join(&dir, "carol", &tmp.path().join("carol")).await;
    assert_eq!(carol.message().await.text, "see you later");
    look(&app, move |app| {
        app.wait_until("delivered in place", LIMIT, |rows| {
            rows.iter()
                .any(|r| r.contains("you → carol: see you later") && r.contains("✓ delivered"))
        });
        // Updated in place: one line for that message, not a second one.
        let lines = app
            .rows()
            .iter()
            .filter(|r| r.contains("see you later"))
            .count();
        assert_eq!(lines, 1, "{}", app.screen_text());
    })
    .await;

    // Ctrl-C: the program leaves and the terminal is as it was.
    let mut app = std::sync::Arc::try_unwrap(app)
        .ok()
        .unwrap()
        .into_inner()
        .unwrap();
    app.type_keys("\x03");
    let status = blocking(move || {
        let status = app.wait_exit(LIMIT);
        (status, app)
    })
    .await;
    let (status, app) = status;
    assert!(status.success(), "{status:?}");
    app.assert_terminal_restored();
    app.wait_for("left the chat", LIMIT);
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrow_plain_terminals_and_resizes_keep_the_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let mut ben = Client::join(&dir, "ben", &tmp.path().join("ben")).await;
    // No colour, and a locale that is not UTF-8: ASCII only.
    let mut app = chat(
        &dir,
        "alice",
        &tmp.path().join("alice"),
        &[("NO_COLOR", "1"), ("LANG", "C"), ("LC_ALL", "C")],
    );
    app.wait_for("ben", LIMIT);
    app.type_keys("@ben draft");
    app.wait_until("typed", LIMIT, |rows| {
        rows.last().unwrap().trim_end() == "> @ben draft"
    });
    let alice = ben.wait_for_peer("alice").await;
    ben.session
        .send_text(&[alice], "héllo → you")
        .await
        .unwrap();
    app.wait_for("ben: h?llo ? you", LIMIT);
    let check = |app: &PtyApp, cols: usize| {
        let rows = app.rows();
        for row in &rows {
            assert!(row.chars().count() <= cols, "{row:?}");
            assert!(row.is_ascii(), "ASCII only without UTF-8: {row:?}");
        }
        assert_eq!(rows.last().unwrap().trim_end(), "> @ben draft");
        let status = &rows[rows.len() - 2];
        assert!(
            status.contains("alice") && status.contains("connected"),
            "status bar: {status:?}"
        );
        app.screen(|s| {
            let (h, w) = s.size();
            for r in 0..h {
                for c in 0..w {
                    let cell = s.cell(r, c).unwrap();
                    assert_eq!(cell.fgcolor(), vt100::Color::Default, "NO_COLOR: no colour");
                    assert_eq!(cell.bgcolor(), vt100::Color::Default, "NO_COLOR: no colour");
                }
            }
        });
    };
    check(&app, 110);
    // Narrow: 60 columns, 16 rows.
    app.resize(16, 60);
    app.wait_until("redrawn at 60 columns", LIMIT, |rows| {
        rows.len() == 16 && rows[14].contains("connected")
    });
    // The message is still there, wrapped within the width.
    app.wait_for("h?llo", LIMIT);
    check(&app, 60);
    // Wide again: the people pane is back.
    app.resize(40, 140);
    app.wait_until("redrawn at 140 columns", LIMIT, |rows| {
        rows.len() == 40 && people_pane_has(rows, 140, "online (1)")
    });
    check(&app, 140);
    // A long conversation scrolls: PageUp shows older lines, the wheel comes back down.
    let alice = ben.peer("alice");
    for n in 0..60 {
        ben.session
            .send_text(std::slice::from_ref(&alice), &format!("line {n}"))
            .await
            .unwrap();
    }
    app.wait_for("ben: line 59", LIMIT);
    app.type_keys("\x1b[5~");
    app.wait_for("more lines below", LIMIT);
    assert!(!app.screen_text().contains("ben: line 59"));
    for _ in 0..20 {
        app.type_keys("\x1b[<65;10;10M");
    }
    app.wait_until("back at the newest", LIMIT, |rows| {
        rows.iter().any(|r| r.contains("ben: line 59"))
            && !rows.iter().any(|r| r.contains("more lines below"))
    });
    // Enter sends the draft typed before the resizes.
    app.type_keys(" done\r");
    assert_eq!(ben.message().await.text, "draft done");
    app.type_keys("/quit\r");
    assert!(app.wait_exit(LIMIT).success());
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_key_blocks_sending_behind_a_prompt_after_a_reconnect() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = TestDirectory::start(&data, &[]).await;
    let port = support::net::port_of(&dir.url);
    let mut ben = dir.register("ben", &tmp.path().join("ben")).await;
    let _ben_events = ben.subscribe().await.unwrap();
    let mut app = chat(&dir, "alice", &tmp.path().join("alice"), &[]);
    app.wait_until("ben pinned", LIMIT, |rows| {
        rows.iter().any(|r| r.contains("pinned"))
    });
    // The directory goes away; an operator frees "ben" and someone registers it with a new key.
    ben.quit().await.unwrap();
    dir.stop().await;
    app.wait_for("reconnecting…", LIMIT);
    assert!(directory_service::release_name(&data, "ben").await.unwrap());
    let dir = TestDirectory::start_on(port, &data, &[]).await;
    app.wait_for("back online", LIMIT);
    let mut new_ben = Client::join(&dir, "ben", &tmp.path().join("new-ben")).await;
    app.wait_for("KEY CHANGED", LIMIT);
    let cols = app.cols as usize;
    app.wait_until("the people pane flags ben", LIMIT, |rows| {
        people_pane_has(rows, cols, "KEY CHANGED")
    });

    // Sending to ben stops at a prompt showing both fingerprints; Esc keeps the text.
    app.type_keys("@ben are you ben?\r");
    app.wait_for("t: trust the new key and send", LIMIT);
    app.wait_for("the directory has now", LIMIT);
    app.type_keys("\x1b");
    app.wait_until("the text back in the input line", LIMIT, |rows| {
        rows.last().unwrap().trim_end() == "> @ben are you ben?"
    });
    assert!(app.screen_text().contains("not sent"));
    // Enter again, and t: the new key is trusted and the message goes.
    app.type_keys("\r");
    app.wait_for("t: trust the new key and send", LIMIT);
    app.type_keys("t");
    assert_eq!(new_ben.message().await.text, "are you ben?");
    app.wait_until("ben verified", LIMIT, |rows| {
        people_pane_has(rows, cols, "verified")
    });
    assert!(
        !app.screen_text().contains("t: trust the new key"),
        "prompt closed"
    );
    // `kill` (SIGTERM) also gives the terminal back.
    app.kill_with("TERM");
    assert!(app.wait_exit(LIMIT).success());
    app.assert_terminal_restored();
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_or_with_plain_chat_stays_line_by_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let mut ben = Client::join(&dir, "ben", &tmp.path().join("ben")).await;
    // Pipes: the line program, as scripts use it.
    let home = tmp.path().join("alice");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_svs"))
        .args(["--directory", &dir.url, "--name", "alice", "chat"])
        .arg("--ca")
        .arg(&dir.ca)
        .arg("--home")
        .arg(&home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ben.wait_for_peer("alice").await;
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"@ben from a pipe\n").await.unwrap();
    assert_eq!(ben.message().await.text, "from a pipe");
    drop(stdin);
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("connected to"), "{stdout}");
    assert!(!stdout.contains("\x1b["), "no escape sequences: {stdout:?}");
    assert!(stdout.ends_with("left the chat\n"), "{stdout}");

    // A panic (injected; debug builds only) gives the terminal back before its message prints.
    let mut app = chat(
        &dir,
        "alice",
        &home,
        &[("SVS_TEST_FAULTS", "1"), ("RUST_BACKTRACE", "0")],
    );
    app.wait_for("connected to", LIMIT);
    app.type_keys("/__panic\r");
    assert!(!app.wait_exit(LIMIT).success());
    app.assert_terminal_restored();
    app.wait_for("a fault injected by SVS_TEST_FAULTS", LIMIT);

    // --plain on a terminal: the same line program.
    let (url, ca) = (dir.url.clone(), dir.ca.display().to_string());
    let home = home.display().to_string();
    let mut app = PtyApp::spawn(
        &[
            "--directory",
            &url,
            "--ca",
            &ca,
            "--name",
            "alice",
            "--home",
            &home,
            "chat",
            "--plain",
        ],
        &[],
        30,
        110,
    );
    app.wait_for("type /help for commands", LIMIT);
    assert!(!app.screen(|s| s.alternate_screen()));
    app.type_keys("/quit\r");
    assert!(app.wait_exit(LIMIT).success());
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_shows_its_progress_in_the_status_bar_and_its_summary_in_the_conversation() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, stream) = support::start_both(tmp.path()).await;
    let mut app = chat_with_stream(&dir, &stream.url, "alice", &tmp.path().join("alice"), &[]);
    app.wait_for("nobody else is online", LIMIT);
    app.type_keys("/play demo\r@nob");
    // While it plays (headless: no display here), the status bar says where it is.
    app.wait_until("the playback in the status bar", LIMIT, |rows| {
        let status = &rows[rows.len() - 2];
        status.contains("▶ demo 720p 0:0") && status.contains("/ 0:04")
    });
    app.wait_for("played demo: 60 frames (60 decoded), 0 skipped", LIMIT);
    let rows = app.rows();
    assert!(
        !rows[rows.len() - 2].contains("▶"),
        "the status bar lets it go"
    );
    assert_eq!(rows.last().unwrap().trim_end(), "> @nob", "typing went on");
    // Nothing was written over the screen: every row but the panes' is where it belongs.
    assert!(rows[0].starts_with(" 1 all"), "{}", app.screen_text());
    app.type_keys("\x15/play nosuchvideo\r");
    app.wait_for("cannot play nosuchvideo", LIMIT);
    app.type_keys("/quit\r");
    assert!(app.wait_exit(LIMIT).success());
    stream.stop().await;
    dir.stop().await;
}
