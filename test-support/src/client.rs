//! A registered, subscribed client driven through the real client code.

use crate::fixtures::TestDirectory;
use std::time::Duration;
use svs_cli::inbox::{Inbox, Incoming, Message};
use svs_cli::session::Session;
use svs_common::proto::directory::{Envelope, Event, Peer, event};
use tonic::Streaming;

pub const WAIT: Duration = Duration::from_secs(20);

/// A registered, subscribed client.
#[derive(Debug)]
pub struct Client {
    pub session: Session,
    pub stream: Streaming<Event>,
    pub inbox: Inbox,
    /// Everything processed so far (the last of it is printed when an expected event is late).
    pub seen: Vec<Incoming>,
}

impl Client {
    /// Registers `name` with `dir` and subscribes.
    pub async fn join(dir: &TestDirectory, name: &str, home: &std::path::Path) -> Client {
        let client = Self::subscribed(dir.register(name, home).await).await;
        assert!(
            matches!(client.seen[0], Incoming::Roster(_)),
            "snapshot comes first"
        );
        client
    }

    /// Subscribes a registered `session` and waits for its roster.
    pub async fn subscribed(mut session: Session) -> Client {
        let mut stream = session.subscribe().await.unwrap();
        let mut inbox = session.inbox().unwrap();
        let seen = session.await_roster(&mut stream, &mut inbox).await.unwrap();
        Client {
            session,
            stream,
            inbox,
            seen,
        }
    }

    /// Processes events until `pick` finds something among them.
    pub async fn until<T>(&mut self, pick: impl FnMut(&Incoming) -> Option<T>) -> T {
        self.try_until(pick).await.unwrap()
    }

    /// As `until`, but an error of the client (a lost connection: the caller may reconnect, as
    /// a real client does) is returned instead of failing the test.
    pub async fn try_until<T>(
        &mut self,
        mut pick: impl FnMut(&Incoming) -> Option<T>,
    ) -> Result<T, svs_cli::CliError> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let items = tokio::time::timeout_at(
                deadline,
                self.session
                    .next_incoming(&mut self.stream, &mut self.inbox),
            )
            .await
            .unwrap_or_else(|_| {
                let last = &self.seen[self.seen.len().saturating_sub(8)..];
                panic!("expected event did not arrive in time; the last seen: {last:#?}")
            })?
            .expect("stream ended");
            let found = items.iter().find_map(&mut pick);
            self.seen.extend(items);
            if let Some(found) = found {
                return Ok(found);
            }
        }
    }

    pub async fn message(&mut self) -> Message {
        self.until(|i| match i {
            Incoming::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await
    }

    /// Raw next event (no processing), for tests that inspect envelopes.
    pub async fn raw_envelope(&mut self) -> Envelope {
        loop {
            let event = tokio::time::timeout(WAIT, self.stream.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Some(event::Kind::Envelope(e)) = event.kind {
                return e;
            }
        }
    }

    pub fn peer(&self, name: &str) -> Peer {
        self.inbox
            .online()
            .into_iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} is online"))
    }

    pub async fn wait_for_peer(&mut self, name: &str) -> Peer {
        if let Some(p) = self.inbox.online().into_iter().find(|p| p.name == name) {
            return p;
        }
        self.until(|i| match i {
            Incoming::Joined(p, _) if p.name == name => Some(p.clone()),
            _ => None,
        })
        .await
    }
}
