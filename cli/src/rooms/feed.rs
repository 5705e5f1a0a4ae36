//! Rooms read as they change, on a session of their own (so the message stream of a chat or of
//! `svs listen` is never interrupted): every interval, the new events, or a sentence when
//! reading failed. The device's lock is held only during each round, so other `svs` commands of
//! this name can use the device between rounds.

use super::{RoomEvent, RoomInfo, Rooms};
use crate::error::CliError;
use crate::session::{ConnectOptions, Session};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

/// How often a feed woken by the directory's hints (`svs chat`, `svs listen --rooms`) also looks,
/// should a hint be lost (`--rooms-poll-secs`).
pub const DEFAULT_ROOMS_POLL_SECS: u64 = 5;
/// Key packages are topped up this often while following.
pub const REFRESH_KEY_PACKAGES: Duration = Duration::from_secs(30);

/// What the feed has to say.
#[derive(Debug)]
pub enum RoomNews {
    Events(Vec<RoomEvent>),
    /// The rooms and their members, whenever they changed (and once at the start).
    Rooms(Vec<RoomInfo>),
    /// Reading failed this round (it goes on trying); the sentence is said once until it
    /// changes or reading works again.
    Problem(String),
}

/// How long `RoomFeed::stop` waits for the feed's session to say goodbye.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// A task following this device's rooms. `stop` ends its session (a session counts as the name
/// being online, so it must not linger after the program that started it); dropping it only
/// stops the task.
#[derive(Debug)]
pub struct RoomFeed {
    news: mpsc::Receiver<RoomNews>,
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl RoomFeed {
    /// Starts following as `options` says (registering a session of its own), reading every
    /// `interval` and whenever `wake` is notified (the directory's group activity hints, as
    /// `Inbox::room_activity` receives them).
    pub fn start(options: ConnectOptions, interval: Duration, wake: Option<Arc<Notify>>) -> Self {
        let (sender, news) = mpsc::channel(16);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(follow(options, interval, wake, sender, stopped));
        Self {
            news,
            task,
            stop: Some(stop),
        }
    }

    /// Stops following and ends the feed's session (waiting at most 3 s for the directory).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take()
            && stop.send(()).is_ok()
        {
            let _ = tokio::time::timeout(STOP_WAIT, &mut self.task).await;
        }
    }

    /// The next news; `None` once the feed stopped for good (the directory serves no rooms).
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<RoomNews> {
        self.news.recv().await
    }
}

impl Drop for RoomFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `e` says the directory has no rooms at all (then trying again is pointless).
fn no_rooms_here(e: &CliError) -> bool {
    matches!(e, CliError::Refused(text) if text.contains("does not serve rooms"))
}

async fn follow(
    options: ConnectOptions,
    interval: Duration,
    wake: Option<Arc<Notify>>,
    news: mpsc::Sender<RoomNews>,
    mut stopped: oneshot::Receiver<()>,
) {
    let home = options.home.clone();
    let mut session: Option<Session> = None;
    let mut said: Option<String> = None;
    let mut listed: Option<Vec<RoomInfo>> = None;
    let mut refreshed = tokio::time::Instant::now();
    loop {
        let round = async {
            if session.is_none() {
                let mut fresh = Session::register(&options).await?;
                Rooms::open(&home, &mut fresh).await?;
                session = Some(fresh);
            }
            let Some(session) = session.as_mut() else {
                return Ok((Vec::new(), Vec::new()));
            };
            let (mut rooms, _) = Rooms::load(&home, session).await?;
            let events = rooms.sync(session).await?;
            if refreshed.elapsed() >= REFRESH_KEY_PACKAGES {
                rooms.refresh_key_packages(session).await?;
                refreshed = tokio::time::Instant::now();
            }
            Ok::<_, CliError>((events, rooms.list().await?))
        };
        let told = match round.await {
            Ok((events, list)) => {
                said = None;
                let events_told =
                    events.is_empty() || news.send(RoomNews::Events(events)).await.is_ok();
                let list_told = listed.as_ref() == Some(&list)
                    || news.send(RoomNews::Rooms(list.clone())).await.is_ok();
                listed = Some(list);
                events_told && list_told
            }
            Err(e) => {
                if e.is_lost_connection() {
                    session = None;
                }
                let text = e.to_string();
                let stop = no_rooms_here(&e);
                let told = said.as_deref() == Some(text.as_str())
                    || news.send(RoomNews::Problem(text.clone())).await.is_ok();
                said = Some(text);
                if stop {
                    break;
                }
                told
            }
        };
        if !told {
            break;
        }
        let woken = async {
            match &wake {
                Some(wake) => wake.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stopped => break,
            _ = tokio::time::sleep(interval) => {}
            _ = woken => {}
        }
    }
    // The session counts as this name being online: it ends with the feed.
    if let Some(session) = session.as_mut() {
        let _ = session.quit().await;
    }
}
