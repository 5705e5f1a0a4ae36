//! The model as the page reads it: one JSON object with the person, the connection, the
//! conversations with unread counts, the people with their keys' state, the entries of the open
//! conversation (delivery state per recipient), the playbacks and the open question.

use crate::chat::model::{Body, Delivery, KeyState, Link, Model, Prompt};
use serde_json::{Value, json};
use std::sync::Arc;
use svs_common::names::canonical;

pub(super) fn json(model: &Model) -> Arc<str> {
    Arc::from(state(model).to_string())
}

fn state(model: &Model) -> Value {
    let (link, link_detail) = match &model.link {
        Link::Connected => ("connected", ""),
        Link::Reconnecting(why) => ("reconnecting", why.as_str()),
        Link::Offline(why) => ("offline", why.as_str()),
    };
    let views: Vec<Value> = model
        .views
        .iter()
        .enumerate()
        .map(|(n, view)| {
            let room = view
                .peer
                .as_deref()
                .and_then(|p| model.rooms.get(&canonical(p)));
            json!({
                "label": view.peer.as_deref().unwrap_or("all"),
                "room": room.map(|r| json!({
                    "epoch": r.epoch,
                    "code": r.code,
                    "people": r.people.iter().map(|(name, devices)| json!({"name": name, "devices": devices})).collect::<Vec<_>>(),
                })),
                "unread": model.unread_in(n),
            })
        })
        .collect();
    let people: Vec<Value> = model
        .people
        .values()
        .map(|p| {
            json!({
                "name": p.name,
                "online": p.online,
                "key": match p.key {
                    KeyState::Pinned => "pinned",
                    KeyState::Verified => "verified",
                    KeyState::Changed => "changed",
                },
                "fingerprint": p.fingerprint,
            })
        })
        .collect();
    let shown = model.filter(model.active);
    let marker = model.views[model.active].marker;
    let entries: Vec<Value> = model
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| shown(e))
        .map(|(n, e)| {
            let mut entry = body(&e.body);
            entry["time_ms"] = json!(e.time_ms);
            entry["first_unread"] = json!(marker == Some(n));
            entry
        })
        .collect();
    let playbacks: Vec<Value> = model
        .playbacks
        .values()
        .map(|p| {
            json!({
                "video": p.video,
                "rendition": p.rendition,
                "position_seconds": p.position_seconds,
                "duration_seconds": p.duration_seconds,
            })
        })
        .collect();
    json!({
        "type": "state",
        "me": model.me,
        "fingerprint": model.my_fingerprint,
        "link": link,
        "link_detail": link_detail,
        "views": views,
        "active": model.active,
        "people": people,
        "entries": entries,
        "playbacks": playbacks,
        "prompt": model.prompt.as_ref().map(prompt),
    })
}

fn body(body: &Body) -> Value {
    match body {
        Body::Incoming(m) => json!({
            "kind": "incoming",
            "from": m.from,
            "to": m.to,
            "text": m.text,
            "warning": m.warning,
        }),
        Body::Outgoing {
            to,
            text,
            recipients,
            ..
        } => json!({
            "kind": "outgoing",
            "to": to,
            "text": text,
            "recipients": recipients.iter().map(|r| {
                let (state, detail) = match &r.state {
                    Delivery::Sent => ("sent", ""),
                    Delivery::Stored => ("stored", ""),
                    Delivery::Delivered => ("delivered", ""),
                    Delivery::Failed(why) => ("failed", why.as_str()),
                };
                json!({"name": r.name, "state": state, "detail": detail})
            }).collect::<Vec<_>>(),
        }),
        Body::Event { text, alarm } => json!({
            "kind": if *alarm { "alarm" } else { "event" },
            "text": text,
        }),
        Body::Room { room, from, text } => json!({
            "kind": "room",
            "room": room,
            "from": from,
            "text": text,
        }),
        Body::Info(lines) => json!({ "kind": "info", "lines": lines }),
        Body::Problem(text) => json!({ "kind": "problem", "text": text }),
    }
}

fn prompt(prompt: &Prompt) -> Value {
    let (kind, candidate) = match prompt {
        Prompt::KeyChanged { candidate, .. } => ("key_changed", candidate),
        Prompt::Trust { candidate } => ("trust", candidate),
    };
    json!({
        "kind": kind,
        "name": candidate.peer.name,
        "pinned": candidate.pinned,
        "now": candidate.peer.fingerprint,
    })
}
