//! What a connection is doing: how many gRPC streams it holds open and since when it holds none,
//! so that a connection that keeps no stream for the idle timeout is closed. The `ActivityLayer`
//! counts a stream from its request until its response body is dropped.

use super::address::AddressKey;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::time::Instant;

/// Open streams of one connection.
#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    /// No open streams yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    /// When the connection became idle, or `None` while it holds a stream.
    pub fn idle_since(&self) -> Option<Instant> {
        let since = *self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        (self.open.load(Ordering::SeqCst) == 0).then_some(since)
    }

    fn opened(self: &Arc<Self>) -> StreamGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        StreamGuard {
            activity: self.clone(),
        }
    }
}

/// One open stream; the connection is idle again once every guard is dropped.
#[derive(Debug)]
pub struct StreamGuard {
    activity: Arc<Activity>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut since = self
            .activity
            .idle_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.activity.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            *since = Instant::now();
        }
    }
}

/// What every request learns about its connection (request extension set by tonic from
/// `Connected::connect_info`).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address (the client's, behind a trusted proxy).
    pub remote: Option<SocketAddr>,
    pub(crate) activity: Arc<Activity>,
}

impl ConnectionInfo {
    /// The address key per-address limits use.
    pub fn address(&self) -> Option<AddressKey> {
        self.remote.map(|a| AddressKey::of(a.ip()))
    }
}

/// Counts streams per connection: a stream is open from its request until its response body
/// is dropped.
#[derive(Debug, Clone, Default)]
pub struct CountStreams;

impl super::watched_body::StartWatch for CountStreams {
    type Watcher = StreamGuard;
    fn start<B>(&self, request: &http::Request<B>) -> Option<StreamGuard> {
        request
            .extensions()
            .get::<ConnectionInfo>()
            .map(|c| c.activity.opened())
    }
}

/// The layer that counts streams per connection.
pub type ActivityLayer = super::watched_body::WatchLayer<CountStreams>;

impl super::watched_body::Watcher for StreamGuard {}
