//! `svs web`'s figures: the real `svs web` (this build) against the services in-process over TLS,
//! its page in headless Chromium over WebDriver. Prints, asserting nothing about time (shared
//! machines are noisy):
//! - the first frame after play at 720p: the first play since the service started, then again;
//! - over 30 s at 720p and at 1440p: frames drawn, dropped by the page, skipped by the service;
//! - a message typed in the page until the CLI has it, and sent from the CLI until the page shows
//!   it (p50/p99 of 50 each; both ends read the same machine clock);
//! - the page's JavaScript heap and `svs web`'s memory after 1,000 more messages.
#![allow(clippy::unwrap_used)] // bench code: a panic is the failure report

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use svs_common::stats::percentile;
use svs_test_support::client::Client;
use svs_test_support::{Browser, Chromedriver, SvsWeb, rss_kib, start_both_with_film};

const FILM_SECONDS: f64 = 34.0;
const WATCH: Duration = Duration::from_secs(30);
const LIMIT: Duration = Duration::from_secs(60);
const ROUND_TRIPS: usize = 50;
const CHAT_MESSAGES: usize = 1_000;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

async fn stats(page: &Browser) -> serde_json::Value {
    page.eval("return window.svsPlayer.stats").await
}

/// `/play film` typed in the page at `resolution`; waits for its first frame.
async fn play(page: &Browser, resolution: &str) -> serde_json::Value {
    page.eval(&format!(
        "document.getElementById('resolution').value = '{resolution}'; \
         const b = document.getElementById('message'); b.value = '/play film'; \
         document.getElementById('compose').requestSubmit(); return true"
    ))
    .await;
    page.wait_until(
        "the first frame",
        &format!(
            "const s = window.svsPlayer.stats; return s.video === 'film' && s.firstFrameMs !== null && s.resolution === '{resolution}'"
        ),
        LIMIT,
    )
    .await;
    stats(page).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, stream) = start_both_with_film(tmp.path(), "film", FILM_SECONDS, 30.0).await;
    let web = SvsWeb::start(
        env!("CARGO_BIN_EXE_svs"),
        &dir,
        Some(&stream.url),
        "alice",
        &tmp.path().join("alice"),
    );
    let driver = Chromedriver::start().await;
    let page = driver.browser().await;
    web.open_in(&page).await;

    let cold = play(&page, "720p").await["firstFrameMs"].clone();
    let warm = play(&page, "720p").await["firstFrameMs"].clone();
    println!("first frame after play at 720p: first since start {cold} ms, again {warm} ms");
    for resolution in ["720p", "1440p"] {
        play(&page, resolution).await;
        let before = stats(&page).await;
        tokio::time::sleep(WATCH).await;
        let after = stats(&page).await;
        let count = |key: &str| after[key].as_u64().unwrap() - before[key].as_u64().unwrap();
        println!(
            "{resolution} over {} s: {} frames drawn, {} dropped by the page, {} skipped by the service, {} kbit/s, late {} ms at the end",
            WATCH.as_secs(),
            count("framesDrawn"),
            count("framesDropped"),
            count("skippedTotal"),
            after["kbitsPerSecond"],
            after["lateMs"],
        );
    }
    page.eval(
        "document.getElementById('message').value = '/stop'; document.getElementById('compose').requestSubmit(); return true",
    )
    .await;

    // Messages both ways, in the "all" conversation.
    let mut bob = Client::join(&dir, "bob", &tmp.path().join("bob")).await;
    page.wait_text("#people", "bob", LIMIT).await;
    page.eval(
        "document.querySelector('#views li[data-view=\"0\"]').click(); \
         window.seenAt = {}; \
         new MutationObserver(() => { for (const li of document.querySelectorAll('#entries li.incoming')) { \
           const m = li.textContent.match(/cli (\\d+)$/); if (m && !(m[1] in window.seenAt)) window.seenAt[m[1]] = Date.now(); } }) \
           .observe(document.getElementById('entries'), { childList: true, subtree: true }); return true",
    )
    .await;
    let mut to_cli = Vec::new();
    for n in 0..ROUND_TRIPS {
        let typed = page
            .eval(&format!(
                "const b = document.getElementById('message'); b.value = '@bob web {n}'; \
                 document.getElementById('compose').requestSubmit(); return Date.now()"
            ))
            .await
            .as_f64()
            .unwrap();
        let message = bob.message().await;
        assert_eq!(message.text, format!("web {n}"));
        to_cli.push(now_ms() - typed);
    }
    let alice = bob.peer("alice");
    let mut to_page = Vec::new();
    for n in 0..ROUND_TRIPS {
        let sent = now_ms();
        bob.session
            .send_text(std::slice::from_ref(&alice), &format!("cli {n}"))
            .await
            .unwrap();
        page.wait_until(
            "the message shown",
            &format!("return '{n}' in window.seenAt"),
            LIMIT,
        )
        .await;
        let seen = page
            .eval(&format!("return window.seenAt['{n}']"))
            .await
            .as_f64()
            .unwrap();
        to_page.push(seen - sent);
    }
    let p = |values: &mut Vec<f64>, at: f64| percentile(values, at).unwrap_or(f64::NAN);
    println!(
        "message page→CLI: p50 {:.0} ms, p99 {:.0} ms; CLI→page: p50 {:.0} ms, p99 {:.0} ms ({ROUND_TRIPS} each)",
        p(&mut to_cli, 0.5),
        p(&mut to_cli, 0.99),
        p(&mut to_page, 0.5),
        p(&mut to_page, 0.99),
    );

    for n in 0..CHAT_MESSAGES {
        bob.session
            .send_text(
                std::slice::from_ref(&alice),
                &format!("chatter {n}: a fairly ordinary sentence of chat"),
            )
            .await
            .unwrap();
    }
    page.wait_text("#entries", &format!("chatter {}", CHAT_MESSAGES - 1), LIMIT)
        .await;
    let heap = page
        .eval("return performance.memory ? performance.memory.usedJSHeapSize : null")
        .await;
    println!(
        "after {} messages in the conversation: page JS heap {:.1} MiB, svs web RSS {:.1} MiB",
        CHAT_MESSAGES + 2 * ROUND_TRIPS,
        heap.as_f64().unwrap_or(0.0) / 1_048_576.0,
        rss_kib(web.pid()).unwrap_or(0) as f64 / 1024.0,
    );
    page.close().await;
    drop(driver);
    stream.stop().await;
    dir.stop().await;
}
