//! One open page: it proves it holds the secret, then receives the model after every change and
//! sends what the person does. A page that says something else gets a sentence back; a page that
//! never proves itself is dropped.

use super::{Action, Request, Shared};
use axum::extract::ws::{Message, WebSocket};
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

/// How long a new page has to send its secret.
const HELLO_WAIT: Duration = Duration::from_secs(5);

/// What a page sends, as JSON with a `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum FromPage {
    Hello { secret: String },
    Line { text: String },
    Answer { key: String },
    Show { view: usize },
}

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
            message = ws.recv() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let answer = match serde_json::from_str::<FromPage>(&text) {
                    Ok(FromPage::Hello { .. }) => continue,
                    Ok(FromPage::Line { text }) => act(&shared, Action::Line(text)).await,
                    Ok(FromPage::Answer { key }) => match key.chars().next() {
                        Some(c) if key.chars().count() == 1 => act(&shared, Action::Answer(c)).await,
                        _ => Some(say("problem", "an answer is one letter")),
                    },
                    Ok(FromPage::Show { view }) => act(&shared, Action::Show(view)).await,
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
        Ok(Some(line)) => Some(say("restore", &line)),
        Ok(None) => None,
        Err(_) => Some(say("ended", "svs web stopped")),
    }
}
