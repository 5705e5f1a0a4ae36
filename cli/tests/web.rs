//! `svs web` for real: the `svs` binary serving its page against a directory over TLS, the page in
//! headless Chromium (chromedriver over WebDriver), and people on the real client beside it.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;
use support::client::Client;
use support::{Browser, Chromedriver, SvsWeb, TestDirectory};

const LIMIT: Duration = Duration::from_secs(30);
/// Seconds of the film the player test plays.
const FILM_SECONDS: f64 = 8.0;

/// Keeps what the page shows now as `<target>/tmp/web-screens/NAME.png`, for a person to look at.
async fn keep_screenshot(page: &Browser, name: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screens");
    std::fs::create_dir_all(&dir).unwrap();
    let png = page.client.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Types `line` into the message box and sends it.
async fn say(browser: &Browser, line: &str) {
    browser.type_into("#message", line).await;
    browser.click("#send").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_chat_and_a_cli_user_gets_replies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let alice = SvsWeb::start(
        env!("CARGO_BIN_EXE_svs"),
        &dir,
        None,
        "alice",
        &tmp.path().join("alice"),
    );
    let bob = SvsWeb::start(
        env!("CARGO_BIN_EXE_svs"),
        &dir,
        None,
        "bob",
        &tmp.path().join("bob"),
    );
    let driver = Chromedriver::start().await;
    let alice_page = driver.browser().await;
    let bob_page = driver.browser().await;
    alice.open_in(&alice_page).await;
    bob.open_in(&bob_page).await;
    // The secret left the address bar once the page read it.
    let address = alice_page.eval("return location.href").await;
    assert!(!address.to_string().contains('#'), "{address}");
    alice_page.wait_text("#people", "bob", LIMIT).await;

    say(&alice_page, "@bob hello from <b>alice's</b> browser").await;
    bob_page
        .wait_text(
            "#entries",
            "alice: hello from <b>alice's</b> browser",
            LIMIT,
        )
        .await;
    // Text, never markup: what a peer writes cannot add elements to the page.
    assert_eq!(
        bob_page
            .eval("return document.querySelectorAll('#entries b').length")
            .await,
        serde_json::json!(0)
    );
    alice_page
        .wait_text("#entries .outgoing .state", "delivered", LIMIT)
        .await;
    keep_screenshot(&alice_page, "chat").await;

    // Verify bob: the same safety number `svs verify` prints, with its QR code; "they match"
    // asks to trust, and bob's key turns verified.
    alice_page
        .click("#people li[data-name='bob'] .verify-link")
        .await;
    let shown = alice_page
        .wait_text("#verify-number", " ", LIMIT)
        .await
        .split_whitespace()
        .collect::<String>();
    let (ok, printed, _) =
        support::run::svs(&dir, &tmp.path().join("alice"), "alice", &["verify", "bob"]).await;
    assert!(ok);
    let digits: String = printed
        .lines()
        .filter(|l| {
            l.trim().chars().all(|c| c.is_ascii_digit() || c == ' ') && !l.trim().is_empty()
        })
        .flat_map(|l| l.split_whitespace())
        .collect();
    assert_eq!(shown.len(), 60, "{shown:?}");
    assert_eq!(
        shown, digits,
        "the page and svs verify show the same number"
    );
    let dark = alice_page
        .eval("const c = document.getElementById('verify-qr'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 128) n++; return n / (d.length / 4)")
        .await
        .as_f64()
        .unwrap();
    assert!(
        (0.2..0.6).contains(&dark),
        "a QR code is about half dark modules: {dark}"
    );
    keep_screenshot(&alice_page, "verify").await;
    alice_page.click("#verify-trust").await;
    alice_page
        .wait_text("#prompt-title", "Trust bob", LIMIT)
        .await;
    alice_page.click("#prompt-yes").await;
    alice_page
        .wait_text("#people li[data-name='bob'] .key", "verified", LIMIT)
        .await;
    // The box is empty again: the line went.
    assert_eq!(
        alice_page
            .eval("return document.getElementById('message').value")
            .await,
        serde_json::json!("")
    );

    // bob's conversation is open on alice's page when a person on the CLI writes to her: carol's
    // conversation counts it unread until alice opens it; her reply reaches the CLI.
    alice_page.click("#people li[data-name='bob']").await;
    alice_page.wait_text("#views li.active", "bob", LIMIT).await;
    // A draft half typed meanwhile stays as it is, whatever arrives.
    alice_page
        .type_into("#message", "a draft in progress")
        .await;
    let mut carol = Client::join(&dir, "carol", &tmp.path().join("carol")).await;
    alice_page.wait_text("#people", "carol", LIMIT).await;
    let alice_peer = carol.peer("alice");
    carol
        .session
        .send_text(std::slice::from_ref(&alice_peer), "hi alice, carol here")
        .await
        .unwrap();
    let carol_unread = "return [...document.querySelectorAll('#views li')].find(li => li.textContent.startsWith('carol'))?.querySelector('.unread')?.textContent ?? null";
    alice_page
        .wait_until(
            "carol's conversation shows one unread",
            &format!("return (() => {{ {carol_unread} }})() === '1'"),
            LIMIT,
        )
        .await;
    assert!(!alice_page.text("#entries").await.contains("carol here"));
    assert_eq!(
        alice_page
            .eval("return document.getElementById('message').value")
            .await,
        serde_json::json!("a draft in progress")
    );
    alice_page
        .eval("document.getElementById('message').value = ''; return true")
        .await;
    alice_page
        .eval("[...document.querySelectorAll('#views li')].find(li => li.textContent.startsWith('carol')).click(); return true")
        .await;
    alice_page
        .wait_text("#entries", "carol: hi alice, carol here", LIMIT)
        .await;
    assert_eq!(
        alice_page
            .eval(&format!("return (() => {{ {carol_unread} }})()"))
            .await,
        serde_json::Value::Null,
        "opened, it is read"
    );
    // In an open conversation plain text goes to its person.
    say(&alice_page, "hi carol, from the browser").await;
    assert_eq!(carol.message().await.text, "hi carol, from the browser");

    // A line that cannot go comes back to the box, with the reason in the conversation.
    say(&alice_page, "/open").await;
    alice_page
        .wait_text("#entries", "usage: /open NAME", LIMIT)
        .await;
    alice_page
        .wait_until(
            "the line is back in the box",
            "return document.getElementById('message').value === '/open'",
            LIMIT,
        )
        .await;

    alice_page.close().await;
    bob_page.close().await;
    drop(driver);
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_key_blocks_sending_in_the_page_until_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = TestDirectory::start(&data, &[]).await;
    let port = support::net::port_of(&dir.url);
    let mut ben = dir.register("ben", &tmp.path().join("ben")).await;
    let _ben_events = ben.subscribe().await.unwrap();
    let alice = SvsWeb::start(
        env!("CARGO_BIN_EXE_svs"),
        &dir,
        None,
        "alice",
        &tmp.path().join("alice"),
    );
    let driver = Chromedriver::start().await;
    let page = driver.browser().await;
    alice.open_in(&page).await;
    page.wait_text("#people", "ben", LIMIT).await;
    page.wait_text("#people li[data-name='ben'] .key", "pinned", LIMIT)
        .await;

    // An operator frees "ben" while the directory is down and someone takes it with a new key.
    ben.quit().await.unwrap();
    dir.stop().await;
    page.wait_text("#link", "reconnecting", LIMIT).await;
    assert!(directory_service::release_name(&data, "ben").await.unwrap());
    let dir = TestDirectory::start_on(port, &data, &[]).await;
    page.wait_text("#link", "connected", LIMIT).await;
    let mut new_ben = Client::join(&dir, "ben", &tmp.path().join("new-ben")).await;
    page.wait_text("#people li[data-name='ben'] .key", "changed", LIMIT)
        .await;

    // Sending stops at the warning, both fingerprints side by side; the box is locked.
    say(&page, "@ben are you ben?").await;
    page.wait_text("#prompt-title", "CHANGED", LIMIT).await;
    page.wait_until(
        "the warning covers the page and the box is locked",
        "return !document.getElementById('prompt').hidden && document.getElementById('message').disabled && document.querySelectorAll('#prompt-keys tr.differs').length > 0",
        LIMIT,
    )
    .await;
    keep_screenshot(&page, "key-changed").await;
    // "Don't send" gives the text back.
    page.click("#prompt-no").await;
    page.wait_until(
        "the text is back in the box",
        "return document.getElementById('message').value === '@ben are you ben?' && !document.getElementById('message').disabled",
        LIMIT,
    )
    .await;
    page.wait_text("#entries", "not sent", LIMIT).await;
    // Send again, and trust: the new key is pinned and the message goes.
    page.click("#send").await;
    page.wait_text("#prompt-title", "CHANGED", LIMIT).await;
    page.click("#prompt-yes").await;
    assert_eq!(new_ben.message().await.text, "are you ben?");
    page.wait_text("#people li[data-name='ben'] .key", "verified", LIMIT)
        .await;

    page.close().await;
    drop(driver);
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_server_refuses_other_sites_and_pages_without_the_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TestDirectory::start(&tmp.path().join("data"), &[]).await;
    let alice = SvsWeb::start_with(
        env!("CARGO_BIN_EXE_svs"),
        &dir,
        None,
        "alice",
        &tmp.path().join("alice"),
        &["--max-connections", "4", "--request-timeout-secs", "1"],
    );
    let port = alice.port;

    // A second svs web on the same port says so and leaves.
    let (ok, _, stderr) = support::run::svs(
        &dir,
        &tmp.path().join("alice2"),
        "alice2",
        &["web", "--listen", &format!("127.0.0.1:{port}")],
    )
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("cannot serve the page on 127.0.0.1:"),
        "{stderr}"
    );

    // Connections that say nothing are closed after the request timeout: they cannot keep the
    // page from anyone for long (4 connections at most here, 1 s each).
    let idle: Vec<_> = (0..10)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let page = alice.raw(&format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    ));
    assert!(
        page.starts_with("HTTP/1.1 200"),
        "after idle connections: {page}"
    );
    drop(idle);

    // Its own page, with a strict policy: nothing from elsewhere, no inline script.
    let page = alice.raw(&format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    ));
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let lower = page.to_ascii_lowercase();
    assert!(
        lower.contains("content-security-policy: default-src 'none'; script-src 'self';"),
        "{page}"
    );
    assert!(lower.contains("x-content-type-options: nosniff"));
    assert!(!page.contains("<script>"), "no inline script");
    // DNS rebinding: a site that points its own name at 127.0.0.1 names itself as the Host.
    let rebound = alice.raw(&format!(
        "GET / HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n"
    ));
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    assert!(rebound.contains("answers only to its own address"));
    // Another site's page opening the WebSocket.
    let upgrade = |origin: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    let foreign = alice.raw(&upgrade("http://evil.example"));
    assert!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");
    assert!(foreign.contains("Origin is another site"));
    // The page's own origin may upgrade (what it then must show is the secret).
    let mut own = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    own.write_all(upgrade(&format!("http://127.0.0.1:{port}")).as_bytes())
        .unwrap();
    let mut head = [0u8; 12];
    own.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    drop(own);

    // A page opened without the secret, or with a wrong one, learns nothing.
    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    browser.open(&format!("http://127.0.0.1:{port}/")).await;
    browser
        .wait_text("#banner", "open the address svs web printed", LIMIT)
        .await;
    browser
        .open(&format!("http://127.0.0.1:{port}/#{}", "0".repeat(64)))
        .await;
    browser
        .wait_text("#banner", "does not hold the secret", LIMIT)
        .await;
    assert_eq!(browser.text("#entries").await, "");
    assert_eq!(browser.text("#people").await, "");
    // The right address works in the same browser, and loads nothing from anywhere else.
    alice.open_in(&browser).await;
    browser.wait_text("#me", "alice", LIMIT).await;
    let foreign = browser
        .eval("return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin + '/'))")
        .await;
    assert_eq!(foreign, serde_json::json!([]), "resources from elsewhere");
    let loaded = browser
        .eval("return performance.getEntriesByType('resource').length")
        .await;
    assert!(
        loaded.as_u64().unwrap() >= 2,
        "the page's own script and style were loaded: {loaded}"
    );
    browser.close().await;
    drop(driver);
    dir.stop().await;
}

/// The player's figures as the page keeps them.
async fn player_stats(page: &Browser) -> serde_json::Value {
    page.eval("return window.svsPlayer.stats").await
}

async fn wait_for_player(page: &Browser, what: &str, condition: &str) {
    let script = format!("const s = window.svsPlayer.stats; return !!({condition})");
    let deadline = std::time::Instant::now() + LIMIT;
    while page.eval(&script).await != serde_json::Value::Bool(true) {
        if std::time::Instant::now() > deadline {
            let stats = player_stats(page).await;
            let note = page.text("#player-note").await;
            panic!(
                "{what} did not happen within {LIMIT:?}; the player: {stats}; its note: {note:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_a_video_with_sound_and_its_controls_work() {
    let tmp = tempfile::tempdir().unwrap();
    // A film long enough that a loaded machine does not reach its end before the controls are
    // tried (the shared demo lasts 4 s).
    let (dir, stream) =
        support::start_both_with_film(tmp.path(), "film", FILM_SECONDS, support::DEMO_FPS).await;
    let alice = SvsWeb::start(
        env!("CARGO_BIN_EXE_svs"),
        &dir,
        Some(&stream.url),
        "alice",
        &tmp.path().join("alice"),
    );
    let driver = Chromedriver::start().await;
    let page = driver.browser().await;
    alice.open_in(&page).await;

    // The library, with a poster made from a frame of the video.
    page.click("#show-library").await;
    page.wait_until(
        "the film's poster decoded",
        "const img = document.querySelector('.video[data-video=\"film\"] img'); return !!img && img.complete && img.naturalWidth > 0",
        LIMIT,
    )
    .await;
    page.wait_text(".video[data-video='film'] .meta", "sound", LIMIT)
        .await;

    keep_screenshot(&page, "library").await;

    // It plays at 720p: H.264 decoded by WebCodecs onto the canvas, on the clock of its sound.
    // (What takes a while happens paused, so a loaded machine cannot end
    // it first.)
    page.eval("document.getElementById('resolution').value = '720p'; return true")
        .await;
    page.click(".video[data-video='film']").await;
    wait_for_player(
        &page,
        "frames decoded and drawn with their sound",
        "s.framesDrawn >= 3 && s.h264Frames > 0 && s.soundScheduled > 0 && s.sound && s.sound.codec === 'opus' && s.width === 1280",
    )
    .await;
    let cold_first_frame = player_stats(&page).await["firstFrameMs"].clone();

    // Pause holds the picture; play goes on from there.
    page.click("#play-pause").await;
    wait_for_player(&page, "paused", "s.paused").await;
    let held = player_stats(&page).await["framesDrawn"].as_u64().unwrap();
    // The canvas shows the frame the page says it drew: read the demo's frame mark from its pixels.
    for _ in 0..3 {
        let (mark, drawn) = canvas_mark(&page).await;
        assert_eq!(
            mark,
            Some(drawn),
            "the canvas shows frame {mark:?}, the page drew {drawn}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let after = player_stats(&page).await["framesDrawn"].as_u64().unwrap();
    assert!(
        after <= held + 2,
        "paused, yet {} frames were drawn",
        after - held
    );
    page.wait_text("#stats", "kbit/s", LIMIT).await;
    keep_screenshot(&page, "player").await;
    page.click("#play-pause").await;
    wait_for_player(
        &page,
        "playing again",
        &format!("!s.paused && s.framesDrawn > {after} + 3"),
    )
    .await;

    // The seek bar moves the playback back, to exactly the frame of that moment.
    page.eval("const s = document.getElementById('seek'); s.value = '1'; s.dispatchEvent(new Event('change')); return true")
        .await;
    wait_for_player(&page, "landed after the seek", "s.seekLanded !== null").await;
    let landed = player_stats(&page).await["seekLanded"].as_u64().unwrap();
    assert_eq!(
        landed,
        support::DEMO_FPS as u64,
        "a seek to 0:01 lands on frame {}",
        support::DEMO_FPS
    );
    let (mark, drawn) = canvas_mark(&page).await;
    assert_eq!(
        mark,
        Some(drawn),
        "after the seek the canvas shows frame {mark:?}, the page drew {drawn}"
    );
    // The window player's key 1 switches to 240p.
    page.eval("document.dispatchEvent(new KeyboardEvent('keydown', { key: '1' })); return true")
        .await;
    wait_for_player(
        &page,
        "switched to 240p",
        "s.resolution === '240p' && s.width > 0 && s.width < 500",
    )
    .await;

    wait_for_player(&page, "the video ended", "s.ended === 'the video ended'").await;
    let stats = player_stats(&page).await;
    assert!(
        stats["jpegFrames"].as_u64().unwrap() > 0,
        "a bridge frame after the switch or seek: {stats}"
    );

    // Again, warm: the segments are in the service's cache now.
    page.click("#close-player").await;
    page.eval("document.getElementById('resolution').value = '720p'; return true")
        .await;
    page.click(".video[data-video='film']").await;
    wait_for_player(
        &page,
        "the first frame, warm",
        "s.firstFrameMs !== null && s.width === 1280",
    )
    .await;
    let warm_first_frame = player_stats(&page).await["firstFrameMs"].clone();
    println!(
        "figure: svs web first frame after play at 720p: cold {cold_first_frame} ms, warm {warm_first_frame} ms"
    );

    // `/play film 4` while it plays replaces the playback: nothing the one it replaced still
    // sends (its last frames, its end) reaches the new one. (The box is hidden while the player
    // shows; the form is submitted as its Enter would.)
    page.eval("document.getElementById('message').value = '/play film 4'; document.getElementById('compose').requestSubmit(); return true")
        .await;
    wait_for_player(
        &page,
        "the new playback from 0:04",
        "s.firstFrameMs !== null && s.lastIndex >= 4 * 15",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let stats = player_stats(&page).await;
    assert_eq!(stats["ended"], serde_json::Value::Null, "{stats}");
    assert!(stats["lastIndex"].as_u64().unwrap() >= 60, "{stats}");

    page.close().await;
    drop(driver);
    stream.stop().await;
    dir.stop().await;
}

/// The frame number read from the canvas's pixels (the demo's mark), and the frame the page says
/// it drew last, read at the same moment.
async fn canvas_mark(page: &Browser) -> (Option<u64>, u64) {
    use base64::Engine as _;
    use opencv::core::Vector;
    let both = page
        .eval("const c = document.getElementById('screen'); return [c.toDataURL('image/png'), window.svsPlayer.stats.lastIndex]")
        .await;
    let url = both[0].as_str().unwrap();
    let png = base64::engine::general_purpose::STANDARD
        .decode(url.trim_start_matches("data:image/png;base64,"))
        .unwrap();
    let image = opencv::imgcodecs::imdecode(
        &Vector::<u8>::from_slice(&png),
        opencv::imgcodecs::IMREAD_COLOR,
    )
    .unwrap();
    (
        stream_service::media::frame_mark(&image),
        both[1].as_u64().unwrap(),
    )
}
