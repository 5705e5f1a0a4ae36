//! What a keystroke costs the full-screen chat: one redraw of the screen (110×30, ratatui's test
//! backend) with 100 and with 10,000 entries in the conversation, in the `all` view and in one
//! peer's. Prints medians; asserts nothing about time (shared machines are noisy).
#![allow(clippy::unwrap_used)] // bench code: a panic is the failure report

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::time::Instant;
use svs_cli::chat::model::Model;
use svs_cli::chat::tui::editor::Editor;
use svs_cli::chat::tui::theme::Theme;
use svs_cli::chat::tui::view;
use svs_cli::inbox::{Incoming, Message};
use svs_cli::known_peers::KnownPeers;

fn model_with(entries: usize) -> Model {
    let dir = tempfile::tempdir().unwrap();
    let pins = KnownPeers::load(dir.path().join("known_peers")).unwrap();
    let mut model = Model::new("alice", &"ab".repeat(32), &pins);
    for n in 0..entries {
        let from = ["ben", "carol", "dan", "eve"][n % 4];
        let text = format!(
            "message {n}: {}",
            "a fairly ordinary sentence of chat that wraps now and then ".repeat(1 + n % 3)
        );
        model.apply(
            Incoming::Message(Message {
                from: from.into(),
                to: vec!["alice".into()],
                id: format!("{n:032x}"),
                text,
                time: 1_700_000_000_000 + n as u64 * 1000,
                warning: None,
            }),
            &pins,
        );
    }
    model
}

fn median_draw_ms(model: &Model, rounds: usize) -> f64 {
    let mut terminal = Terminal::new(TestBackend::new(110, 30)).unwrap();
    let mut editor = Editor::default();
    let theme = Theme {
        color: true,
        unicode: true,
    };
    let mut times = Vec::with_capacity(rounds);
    for n in 0..rounds {
        editor.insert(char::from(b'a' + (n % 26) as u8));
        let start = Instant::now();
        terminal
            .draw(|frame| {
                view::draw(frame, model, &editor, &theme);
            })
            .unwrap();
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    println!("redraw per keystroke, 110x30, median of 200:");
    for entries in [100, 10_000] {
        let mut model = model_with(entries);
        let all = median_draw_ms(&model, 200);
        model.open("ben");
        let ben = median_draw_ms(&model, 200);
        println!("  {entries:>6} entries: all view {all:.3} ms, one peer's view {ben:.3} ms");
    }
}
