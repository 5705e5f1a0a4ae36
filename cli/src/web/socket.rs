//! One open page: it proves it holds the secret, then receives the model after every change and
//! sends what the person does; its library listing and its playback (one at a time) run beside
//! it and reach it through one queue. A page that says something else gets a sentence back; a
//! page that never proves itself is dropped.

use super::media::{self, PlayOrder, Steer};
use super::{Action, Reply, Request, Shared};
use axum::extract::ws::{Message, WebSocket};
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

/// How long a new page has to send its secret.
const HELLO_WAIT: Duration = Duration::from_secs(5);
/// Messages queued for a page before its playback waits (a slow page slows the stream, which
/// the service answers by skipping frames, as for any slow viewer).
const PAGE_QUEUE: usize = 8;
/// Steering a playback queued at most (pause, seek, switch).
const STEER_QUEUE: usize = 8;

/// What a page sends, as JSON with a `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum FromPage {
    Hello {
        secret: String,
    },
    Line {
        text: String,
    },
    Answer {
        key: String,
    },
    Show {
        view: usize,
    },
    /// The library: the videos, then a poster each.
    Videos,
    /// Play a video here (stops the one playing).
    Play {
        video: String,
        #[serde(default = "auto")]
        resolution: String,
        #[serde(default)]
        start_seconds: f64,
        #[serde(default)]
        sound: bool,
        /// The page's number for this playback, echoed on everything it sends.
        #[serde(default)]
        serial: u64,
    },
    /// Steer the playback: `pause`, `resume`, `seek` (with `seconds`), `switch` (with
    /// `resolution`).
    Steer {
        action: String,
        seconds: Option<f64>,
        resolution: Option<String>,
    },
    /// Stop the playback.
    Stop,
    /// The safety number with a person (and its QR code).
    Verify {
        name: String,
    },
}

fn auto() -> String {
    "auto".into()
}

/// A playback of this page: where to steer it.
type Playing = Option<mpsc::Sender<Steer>>;

fn say(kind: &str, text: &str) -> Message {
    Message::Text(
        serde_json::json!({ "type": kind, "text": text })
            .to_string()
            .into(),
    )
}

pub(super) async fn page(mut ws: WebSocket, mut shared: Shared, _permit: OwnedSemaphorePermit) {
    if !hello(&mut ws, &shared).await {
        let _ = ws
            .send(say(
                "refused",
                "this page does not hold the secret svs web printed; open the address it printed",
            ))
            .await;
        let _ = ws.send(Message::Close(None)).await;
        return;
    }
    let state = shared.state.borrow_and_update().clone();
    if ws
        .send(Message::Text(state.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let (out_tx, mut out) = mpsc::channel(PAGE_QUEUE);
    let mut playing: Playing = None;
    // The library listing under way, if one is (a page asking again meanwhile waits for it).
    let mut listing: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            changed = shared.state.changed() => {
                if changed.is_err() {
                    // The chat ended.
                    let _ = ws.send(say("ended", "svs web stopped")).await;
                    return;
                }
                let state = shared.state.borrow_and_update().clone();
                if ws.send(Message::Text(state.to_string().into())).await.is_err() {
                    return;
                }
            }
            Some(message) = out.recv() => {
                if ws.send(message).await.is_err() {
                    return;
                }
            }
            message = ws.recv() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let answer = match serde_json::from_str::<FromPage>(&text) {
                    Ok(FromPage::Hello { .. }) => None,
                    Ok(FromPage::Line { text }) => act(&shared, Action::Line(text)).await,
                    Ok(FromPage::Answer { key }) => match key.chars().next() {
                        Some(c) if key.chars().count() == 1 => act(&shared, Action::Answer(c)).await,
                        _ => Some(say("problem", "an answer is one letter")),
                    },
                    Ok(FromPage::Show { view }) => act(&shared, Action::Show(view)).await,
                    Ok(FromPage::Videos) => {
                        if listing.as_ref().is_none_or(|task| task.is_finished()) {
                            let token = shared.token.borrow().clone();
                            listing = Some(tokio::spawn(media::library(shared.stream.clone(), token, out_tx.clone())));
                        }
                        None
                    }
                    Ok(FromPage::Play { video, resolution, start_seconds, sound, serial }) => {
                        match crate::stream_client::parse_resolution(&resolution) {
                            Ok(resolution) if start_seconds.is_finite() && start_seconds >= 0.0 => {
                                let (steer_tx, steering) = mpsc::channel(STEER_QUEUE);
                                // Replacing the sender ends the playback before (its steering closes).
                                playing = Some(steer_tx);
                                let order = PlayOrder { video, resolution, start_seconds, sound, serial };
                                let token = shared.token.borrow().clone();
                                tokio::spawn(media::play(shared.stream.clone(), token, order, out_tx.clone(), steering));
                                None
                            }
                            Ok(_) => Some(say("problem", "a start is a number of seconds from 0")),
                            Err(why) => Some(say("problem", &why)),
                        }
                    }
                    Ok(FromPage::Steer { action, seconds, resolution }) => {
                        match steer(&action, seconds, resolution.as_deref()) {
                            Ok(steer) => match &playing {
                                Some(tx) if tx.try_send(steer).is_ok() => None,
                                Some(_) => Some(say("problem", "the playback is busy; try again")),
                                None => Some(say("problem", "nothing is playing")),
                            },
                            Err(why) => Some(say("problem", &why)),
                        }
                    }
                    Ok(FromPage::Verify { name }) => act(&shared, Action::Verify(name)).await,
                    Ok(FromPage::Stop) => {
                        playing = None;
                        None
                    }
                    Err(e) => Some(say("problem", &format!("svs web did not understand the page: {e}"))),
                };
                if let Some(answer) = answer
                    && ws.send(answer).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

/// What a steering request from the page means.
fn steer(action: &str, seconds: Option<f64>, resolution: Option<&str>) -> Result<Steer, String> {
    match (action, seconds, resolution) {
        ("pause", _, _) => Ok(Steer::Pause),
        ("resume", _, _) => Ok(Steer::Resume),
        ("seek", Some(s), _) if s.is_finite() && s >= 0.0 => Ok(Steer::Seek(s)),
        ("seek", _, _) => Err("a seek needs seconds from 0".into()),
        ("switch", _, Some(r)) => crate::stream_client::parse_resolution(r).map(Steer::Switch),
        ("switch", _, None) => Err("a switch needs a resolution".into()),
        _ => Err(format!("no such playback action: {action}")),
    }
}

/// Waits for the page's first message: the secret.
async fn hello(ws: &mut WebSocket, shared: &Shared) -> bool {
    let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(HELLO_WAIT, ws.recv()).await
    else {
        return false;
    };
    matches!(
        serde_json::from_str::<FromPage>(&text),
        Ok(FromPage::Hello { secret }) if shared.guard.secret_matches(&secret)
    )
}

/// Hands an action to the chat; what to tell the page back (a line that must return to its box).
async fn act(shared: &Shared, action: Action) -> Option<Message> {
    let (reply, answer) = oneshot::channel();
    if shared
        .actions
        .send(Request { action, reply })
        .await
        .is_err()
    {
        return Some(say("ended", "svs web stopped"));
    }
    match answer.await {
        Ok(Reply::Restore(line)) => Some(say("restore", &line)),
        Ok(Reply::Done) => None,
        Ok(Reply::Safety { name, number }) => Some(safety(&name, number)),
        Err(_) => Some(say("ended", "svs web stopped")),
    }
}

/// The safety number for the page: its digits in groups, and the QR code's modules (one
/// character a module, `1` dark, row after row) for the page to draw.
fn safety(name: &str, number: Result<String, String>) -> Message {
    let value = match number {
        Ok(number) => match qrcode::QrCode::new(number.as_bytes()) {
            Ok(code) => serde_json::json!({
                "type": "safety",
                "name": name,
                "number": number,
                "display": svs_common::safety::display(&number),
                "qr_width": code.width(),
                "qr_modules": code
                    .to_colors()
                    .iter()
                    .map(|c| if *c == qrcode::Color::Dark { '1' } else { '0' })
                    .collect::<String>(),
            }),
            Err(e) => {
                serde_json::json!({"type": "safety", "name": name, "error": format!("making the QR code: {e}")})
            }
        },
        Err(why) => serde_json::json!({"type": "safety", "name": name, "error": why}),
    };
    Message::Text(value.to_string().into())
}
