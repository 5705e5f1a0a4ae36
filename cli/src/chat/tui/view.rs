//! Draws the model: conversation tabs, the conversation (wrapped, scrolled), the people pane,
//! the status bar, the input line, and a prompt over them when one is open.

use super::editor::Editor;
use super::theme::Theme;
use crate::chat::model::{Body, Delivery, Entry, KeyState, Link, Model, Prompt, RoomPane, short};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use unicode_width::UnicodeWidthChar;

/// Narrower than this, the people pane is left out (the status bar still counts who is online).
pub const PEOPLE_PANE_MIN_WIDTH: u16 = 50;

/// What drawing learned that the loop needs: the conversation's height (a page) and how far it
/// can scroll.
#[derive(Debug, Default, Clone, Copy)]
pub struct Drawn {
    pub page: usize,
    pub max_scroll: usize,
}

fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!("{:02}:{:02}", (secs / 3600) % 24, (secs / 60) % 60)
}

pub fn draw(frame: &mut Frame, model: &Model, editor: &Editor, theme: &Theme) -> Drawn {
    let [tabs, middle, status, input] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let (conversation, people) = if middle.width >= PEOPLE_PANE_MIN_WIDTH {
        let side = (middle.width / 4).clamp(16, 28);
        let [c, p] =
            Layout::horizontal([Constraint::Min(1), Constraint::Length(side)]).areas(middle);
        (c, Some(p))
    } else {
        (middle, None)
    };
    draw_tabs(frame, tabs, model, theme);
    let drawn = draw_conversation(frame, conversation, model, theme);
    if let Some(area) = people {
        draw_people(frame, area, model, theme);
    }
    draw_status(frame, status, model, theme);
    draw_input(frame, input, editor, theme);
    if let Some(prompt) = &model.prompt {
        draw_prompt(frame, conversation, prompt, theme);
    }
    drawn
}

fn draw_tabs(frame: &mut Frame, area: Rect, model: &Model, theme: &Theme) {
    let mut spans = Vec::new();
    for (n, view) in model.views.iter().enumerate() {
        let name = view.peer.as_deref().unwrap_or("all");
        let label = format!(" {} {} ", n + 1, theme.printable(name));
        let style = if n == model.active {
            theme.active_tab()
        } else {
            Style::default()
        };
        spans.push(Span::styled(label, style));
        let unread = model.unread_in(n);
        if unread > 0 && n != model.active {
            spans.push(Span::styled(format!("({unread}) "), theme.unread()));
        }
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn delivery_label(state: &Delivery, theme: &Theme) -> Span<'static> {
    match state {
        Delivery::Sent => Span::styled("sent", theme.dim()),
        Delivery::Stored => Span::styled("stored", theme.dim()),
        Delivery::Delivered => Span::styled(
            theme.symbol("✓ delivered", "delivered").to_string(),
            theme.good(),
        ),
        Delivery::Failed(why) => Span::styled(
            format!("not delivered: {}", theme.printable(why)),
            theme.problem(),
        ),
    }
}

/// An entry as logical lines (before wrapping).
fn entry_lines(entry: &Entry, model: &Model, theme: &Theme) -> Vec<Line<'static>> {
    let time = Span::styled(format!("{} ", clock(entry.time_ms)), theme.dim());
    let arrow = theme.symbol("→", "->");
    match &entry.body {
        Body::Incoming(m) => {
            let mut lines = Vec::new();
            if let Some(warning) = &m.warning {
                lines.push(Line::from(Span::styled(
                    format!("!!! {}", theme.printable(warning)),
                    theme.alarm(),
                )));
            }
            let to_me_only = m.to.len() == 1
                && svs_common::names::canonical(&m.to[0])
                    == svs_common::names::canonical(&model.me);
            let who = if to_me_only {
                m.from.clone()
            } else {
                format!("{} {arrow} {}", m.from, m.to.join(", "))
            };
            // A message of several lines keeps its line breaks, indented under the first.
            let mut text = m.text.split('\n');
            lines.push(Line::from(vec![
                time,
                Span::styled(theme.printable(&who), theme.peer()),
                Span::raw(": "),
                Span::raw(theme.printable(text.next().unwrap_or_default())),
            ]));
            lines.extend(text.map(|more| Line::from(format!("      {}", theme.printable(more)))));
            lines
        }
        Body::Outgoing {
            to,
            text,
            recipients,
            ..
        } => {
            let mut spans = vec![
                time,
                Span::styled(format!("you {arrow} {}", to.join(", ")), theme.me()),
                Span::raw(": "),
                Span::raw(theme.printable(text)),
                Span::styled("  ·  ", theme.dim()),
            ];
            match recipients.as_slice() {
                [one] => spans.push(delivery_label(&one.state, theme)),
                many => {
                    for (n, r) in many.iter().enumerate() {
                        if n > 0 {
                            spans.push(Span::raw(", "));
                        }
                        spans.push(Span::raw(format!("{} ", r.name)));
                        spans.push(delivery_label(&r.state, theme));
                    }
                }
            }
            vec![Line::from(spans)]
        }
        Body::Event { text, alarm } => {
            let style = if *alarm { theme.alarm() } else { theme.event() };
            let mark = if *alarm { "!!! " } else { "* " };
            vec![Line::from(vec![
                time,
                Span::styled(format!("{mark}{}", theme.printable(text)), style),
            ])]
        }
        Body::Room { room, from, text } => {
            let style = if from == "you" {
                theme.me()
            } else {
                theme.peer()
            };
            let mut text = text.split('\n');
            let mut lines = vec![Line::from(vec![
                time,
                Span::styled(format!("#{} ", room.trim_start_matches('#')), theme.dim()),
                Span::styled(theme.printable(from), style),
                Span::raw(": "),
                Span::raw(theme.printable(text.next().unwrap_or_default())),
            ])];
            lines.extend(text.map(|more| Line::from(format!("      {}", theme.printable(more)))));
            lines
        }
        Body::Info(lines) => lines
            .iter()
            .map(|l| Line::from(theme.printable(l)))
            .collect(),
        Body::Problem(text) => vec![Line::from(vec![
            time,
            Span::styled(format!("! {}", theme.printable(text)), theme.problem()),
        ])],
    }
}

/// Wraps a styled line to `width` columns, breaking after the last space that fits (or inside
/// a word longer than the line). Continuation lines are indented by two columns.
pub fn wrap(line: &Line<'static>, width: usize) -> Vec<Line<'static>> {
    let cells: Vec<(char, Style)> = line
        .spans
        .iter()
        .flat_map(|s| {
            s.content
                .chars()
                .map(move |c| (c, line.style.patch(s.style)))
        })
        .collect();
    let width = width.max(4);
    let mut out = Vec::new();
    let mut start = 0;
    let mut indent = 0;
    while start < cells.len() || out.is_empty() {
        let mut used = indent;
        let mut end = start;
        let mut last_space = None;
        while end < cells.len() {
            let w = cells[end].0.width().unwrap_or(0);
            if used + w > width {
                break;
            }
            if cells[end].0 == ' ' {
                last_space = Some(end);
            }
            used += w;
            end += 1;
        }
        if end < cells.len()
            && let Some(space) = last_space.filter(|s| *s > start)
        {
            end = space + 1;
        }
        if end == start && start < cells.len() {
            end = start + 1; // a character wider than the line
        }
        let mut spans: Vec<Span<'static>> = Vec::new();
        if indent > 0 {
            spans.push(Span::raw(" ".repeat(indent)));
        }
        // The indent is a span of its own, never grown.
        let indent_spans = spans.len();
        for &(c, style) in &cells[start..end] {
            let can_grow = spans.len() > indent_spans;
            match spans.last_mut() {
                Some(last) if can_grow && last.style == style => last.content.to_mut().push(c),
                _ => spans.push(Span::styled(c.to_string(), style)),
            }
        }
        out.push(Line::from(spans));
        start = end;
        indent = 2;
    }
    out
}

/// The newest lines of the active view, enough to fill `wanted` rows (in order, oldest first),
/// and whether they are all there is. Only what can be seen is wrapped, so a long history costs
/// nothing per keystroke.
fn newest_lines(
    model: &Model,
    theme: &Theme,
    width: usize,
    wanted: usize,
) -> (Vec<Line<'static>>, bool) {
    let view = &model.views[model.active];
    let shown = model.filter(model.active);
    let mut reversed: Vec<Line<'static>> = Vec::new();
    for (n, entry) in model.entries.iter().enumerate().rev() {
        if reversed.len() >= wanted {
            return (reversed.into_iter().rev().collect(), false);
        }
        if !shown(entry) {
            continue;
        }
        let mut lines: Vec<Line<'static>> = entry_lines(entry, model, theme)
            .iter()
            .flat_map(|line| wrap(line, width))
            .collect();
        if view.marker == Some(n) {
            let rule = theme.symbol("─", "-").repeat(width.saturating_sub(8) / 2);
            lines.insert(
                0,
                Line::from(Span::styled(format!("{rule} new {rule}"), theme.unread())),
            );
        }
        reversed.extend(lines.into_iter().rev());
    }
    (reversed.into_iter().rev().collect(), true)
}

fn draw_conversation(frame: &mut Frame, area: Rect, model: &Model, theme: &Theme) -> Drawn {
    let view = &model.views[model.active];
    let width = area.width as usize;
    let height = area.height as usize;
    // One line more than shown, so scrolling further up is possible while there is more.
    let (lines, complete) = newest_lines(model, theme, width, height + view.scroll + 1);
    let max_scroll = lines.len().saturating_sub(height);
    let max_scroll = if complete {
        max_scroll
    } else {
        max_scroll.max(view.scroll + 1)
    };
    let scroll = view.scroll.min(lines.len().saturating_sub(height));
    let end = lines.len() - scroll;
    let start = end.saturating_sub(height);
    let mut shown: Vec<Line<'static>> = lines[start..end].to_vec();
    if scroll > 0
        && let Some(last) = shown.last_mut()
    {
        *last = Line::from(Span::styled(
            format!(
                "-- {scroll} more line{} below: PageDown --",
                if scroll == 1 { "" } else { "s" }
            ),
            theme.bar(),
        ));
    }
    // Short conversations sit at the bottom, next to the input line, as chat clients do.
    let top_pad = height.saturating_sub(shown.len());
    let mut padded = vec![Line::raw(""); top_pad];
    padded.extend(shown);
    frame.render_widget(Paragraph::new(padded), area);
    Drawn {
        page: height.saturating_sub(1).max(1),
        max_scroll,
    }
}

fn draw_people(frame: &mut Frame, area: Rect, model: &Model, theme: &Theme) {
    let block = Block::default()
        .borders(Borders::LEFT)
        .border_set(theme.border())
        .border_style(theme.dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if let Some(room) = model.active_room() {
        frame.render_widget(Paragraph::new(room_lines(room, model, theme)), inner);
        return;
    }
    let narrow = inner.width < 20;
    let mut lines = Vec::new();
    let online: Vec<_> = model.people.values().filter(|p| p.online).collect();
    let offline: Vec<_> = model.people.values().filter(|p| !p.online).collect();
    lines.push(Line::from(Span::styled(
        format!("online ({})", online.len()),
        theme.dim(),
    )));
    let dot = theme.symbol("●", "*");
    let ring = theme.symbol("○", "-");
    let offline_header = (!offline.is_empty()).then(|| format!("offline ({})", offline.len()));
    for (header, group, mark, name_style) in [
        (None, &online, dot, theme.peer()),
        (offline_header, &offline, ring, theme.dim()),
    ] {
        if let Some(header) = header {
            lines.push(Line::from(Span::styled(header, theme.dim())));
        }
        for person in group.iter() {
            lines.push(Line::from(vec![
                Span::styled(format!("{mark} "), name_style),
                Span::styled(theme.printable(&person.name), name_style),
            ]));
            let fp = if person.fingerprint.is_empty() {
                String::new()
            } else {
                let groups = if narrow { 1 } else { 2 };
                format!(
                    "{} ",
                    crate::commands::display::fingerprint_prefix(&person.fingerprint, groups)
                )
            };
            let (word, style) = match person.key {
                KeyState::Pinned => ("pinned", theme.dim()),
                KeyState::Verified => (theme.symbol("✓ verified", "verified"), theme.good()),
                KeyState::Changed => ("KEY CHANGED", theme.alarm()),
            };
            lines.push(Line::from(vec![
                Span::styled(format!("  {fp}"), theme.dim()),
                Span::styled(word, style),
            ]));
        }
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The people pane while a room's conversation is open: the room, its code, and each member
/// person with how far their key is trusted and how many devices they have in it.
fn room_lines(room: &RoomPane, model: &Model, theme: &Theme) -> Vec<Line<'static>> {
    let mut lines = vec![
        Line::from(Span::styled(
            format!("#{}", theme.printable(room.label.trim_start_matches('#'))),
            theme.peer(),
        )),
        Line::from(Span::styled(format!("code {}", room.code), theme.dim())),
        Line::from(Span::styled(
            format!("members ({})", room.people.len()),
            theme.dim(),
        )),
    ];
    for (name, devices) in &room.people {
        let person = model.people.get(&svs_common::names::canonical(name));
        let me = svs_common::names::canonical(name) == svs_common::names::canonical(&model.me);
        let (word, style) = if me {
            ("you", theme.me())
        } else {
            match person.map(|p| p.key) {
                Some(KeyState::Verified) => (theme.symbol("✓ verified", "verified"), theme.good()),
                Some(KeyState::Pinned) => ("pinned", theme.dim()),
                Some(KeyState::Changed) => ("KEY CHANGED", theme.alarm()),
                None => ("not seen yet", theme.dim()),
            }
        };
        let online = me || person.is_some_and(|p| p.online);
        let mark = if online {
            theme.symbol("●", "*")
        } else {
            theme.symbol("○", "-")
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{mark} "), theme.peer()),
            Span::styled(theme.printable(name), theme.peer()),
        ]));
        let devices = match devices {
            1 => String::new(),
            n => format!(" · {n} devices"),
        };
        lines.push(Line::from(vec![
            Span::styled("  ", theme.dim()),
            Span::styled(word, style),
            Span::styled(devices, theme.dim()),
        ]));
    }
    lines
}

fn draw_status(frame: &mut Frame, area: Rect, model: &Model, theme: &Theme) {
    let bar = theme.bar();
    let sep = Span::styled(theme.symbol(" │ ", " | "), bar);
    let mut spans = vec![Span::styled(
        format!(
            " {} {}",
            theme.printable(&model.me),
            short(&model.my_fingerprint)
        ),
        bar.add_modifier(ratatui::style::Modifier::BOLD),
    )];
    spans.push(sep.clone());
    spans.push(match &model.link {
        Link::Connected => Span::styled("connected", bar),
        Link::Reconnecting(_) => Span::styled("reconnecting…", theme.alarm()),
        Link::Offline(_) => Span::styled("offline", theme.alarm()),
    });
    let unread = model.unread_total();
    if unread > 0 {
        spans.push(sep.clone());
        spans.push(Span::styled(format!("{unread} unread"), bar));
    }
    let online = model.people.values().filter(|p| p.online).count();
    spans.push(sep.clone());
    spans.push(Span::styled(format!("{online} online"), bar));
    for play in model.playbacks.values() {
        spans.push(sep.clone());
        spans.push(Span::styled(
            format!(
                "{} {} {} {} / {}",
                theme.symbol("▶", ">"),
                theme.printable(&play.video),
                play.rendition,
                crate::player::clock(play.position_seconds),
                crate::player::clock(play.duration_seconds)
            ),
            bar,
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)).style(bar), area);
}

fn draw_input(frame: &mut Frame, area: Rect, editor: &Editor, theme: &Theme) {
    let prompt = "> ";
    let room = (area.width as usize)
        .saturating_sub(prompt.len() + 1)
        .max(1);
    let chars: Vec<char> = theme.printable(&editor.text()).chars().collect();
    let cursor = editor.cursor().min(chars.len());
    // Scroll sideways so the cursor stays in view.
    let mut first = 0;
    let width_between = |a: usize, b: usize| {
        chars[a..b]
            .iter()
            .map(|c| c.width().unwrap_or(0))
            .sum::<usize>()
    };
    while width_between(first, cursor) > room {
        first += 1;
    }
    let visible: String = chars[first..].iter().collect();
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(prompt, theme.me()),
            Span::raw(visible),
        ])),
        area,
    );
    let x = area.x + (prompt.len() + width_between(first, cursor)) as u16;
    frame.set_cursor_position((x.min(area.right().saturating_sub(1)), area.y));
}

fn draw_prompt(frame: &mut Frame, over: Rect, prompt: &Prompt, theme: &Theme) {
    let (title, mut lines, keys) = match prompt {
        Prompt::KeyChanged { candidate, .. } => (
            format!(" {}'s KEY CHANGED ", candidate.peer.name),
            vec![
                format!(
                    "The directory has another key for {} than the one you pinned.",
                    candidate.peer.name
                ),
                "Compare fingerprints with them (in person or on a call) before trusting it."
                    .to_string(),
                String::new(),
            ],
            "t: trust the new key and send    Esc: do not send (the text stays in the input line)",
        ),
        Prompt::Trust { candidate } => (
            format!(" trust {}'s key? ", candidate.peer.name),
            vec![
                "Read both fingerprints to them; trust only if theirs matches the right column."
                    .to_string(),
                String::new(),
            ],
            "y: trust    n or Esc: cancel",
        ),
    };
    let candidate = match prompt {
        Prompt::KeyChanged { candidate, .. } | Prompt::Trust { candidate } => candidate,
    };
    lines.extend(candidate.side_by_side());
    lines.push(String::new());
    lines.push(keys.to_string());
    let width = over.width.min(86);
    let inner_width = width.saturating_sub(2) as usize;
    let wrapped: Vec<Line<'static>> = lines
        .iter()
        .flat_map(|l| wrap(&Line::from(theme.printable(l)), inner_width))
        .collect();
    let height = (wrapped.len() as u16 + 2).min(over.height);
    let area = Rect {
        x: over.x + (over.width - width) / 2,
        y: over.y + over.height.saturating_sub(height) / 2,
        width,
        height,
    };
    let style = match prompt {
        Prompt::KeyChanged { .. } => theme.alarm(),
        Prompt::Trust { .. } => theme.bar(),
    };
    let block = Block::bordered()
        .border_set(theme.border())
        .title(Span::styled(theme.printable(&title), style))
        .border_style(style);
    frame.render_widget(Clear, area);
    frame.render_widget(Paragraph::new(wrapped).block(block), area);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn wraps_at_spaces_and_indents_what_follows() {
        let line = Line::from("12:00 ben: the quick brown fox jumps");
        assert_eq!(
            text(&wrap(&line, 16)),
            ["12:00 ben: the ", "  quick brown ", "  fox jumps"]
        );
        // A word longer than the line is cut.
        assert_eq!(
            text(&wrap(&Line::from("abcdefghij"), 6)),
            ["abcdef", "  ghij"]
        );
        assert_eq!(text(&wrap(&Line::from(""), 6)), [""]);
        // Wide characters count double.
        assert_eq!(
            text(&wrap(&Line::from("日本語テキスト"), 6)),
            ["日本語", "  テキ", "  スト"]
        );
    }
}
